"""The riff pipeline on a tiny random-weight model, loaded the way users load Riffusion.

Reference for "what Riffusion computes": at ``alpha = 0`` Riffusion's riff is plain img2img
whose VAE sample and noise both come from a fresh generator seeded with the start seed, which
diffusers' stock ``StableDiffusionImg2ImgPipeline`` computes when given the sampled init
latents and that generator. The engine must match it bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from riffradio.engine.loading import stock_img2img_pipeline
from riffradio.engine.pipeline import LruCache, RiffEngine, img2img_timesteps
from riffradio.core.types import RiffRequest, RiffResult
from riffradio.errors import RiffradioError
from tests.stock_img2img import stock_img2img_latents

STEPS = 3  # PNDM, strength 0.75: int(3 * 0.75) + 1 = 3 UNet calls


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> RiffEngine:
    return RiffEngine.load(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def riff(engine: RiffEngine) -> Callable[[RiffRequest], RiffResult]:
    """``engine.riff`` remembered per request, so tests that compare the same riff share it."""
    return functools.cache(engine.riff)


def _request(**changes: object) -> RiffRequest:
    base = RiffRequest(
        start_prompt="lofi hip hop beat",
        end_prompt="church bells",
        start_seed=11,
        end_seed=23,
        alpha=0.0,
        num_inference_steps=STEPS,
        seed_image="og_beat",
    )
    return dataclasses.replace(base, **changes)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture()
def unet_calls(engine: RiffEngine) -> Iterator[list[int]]:
    """Counts the UNet's forward calls (with their batch sizes) through a real forward hook."""
    calls: list[int] = []
    handle = engine.model.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    yield calls
    handle.remove()


def test_riff_matches_stock_img2img_bit_for_bit(engine: RiffEngine) -> None:
    request = _request(start_guidance=7.5)
    result = engine.riff(request)
    assert result.image.size == (512, 512) and result.image.mode == "RGB"
    assert result.latents is not None and result.latents.shape == (1, 4, 64, 64)

    model = engine.model
    latents = stock_img2img_latents(model, 11, STEPS, prompt=request.start_prompt)
    with torch.inference_mode():
        decoded = stock_img2img_pipeline(model).image_processor.postprocess(
            model.vae.decode(latents / model.vae.config.scaling_factor).sample, output_type="pil"
        )[0]
    assert torch.equal(result.latents, latents)
    # Riffusion decodes ``(1 / scale) * latents``, diffusers ``latents / scale``: one rounding apart.
    assert np.abs(_pixels(result.image) - _pixels(decoded)).max() <= 1


def test_same_request_gives_the_same_image_and_hits_the_caches(engine: RiffEngine) -> None:
    engine.text_cache.clear()
    engine.init_cache.clear()
    request = _request(start_prompt="cache test a", end_prompt="cache test b", alpha=0.4)
    text_before = (engine.text_cache.hits, engine.text_cache.misses)
    init_before = (engine.init_cache.hits, engine.init_cache.misses)
    first = engine.riff(request)
    # Three prompts embedded once each ("" is the unconditional one); the seed image encoded once.
    assert engine.text_cache.misses - text_before[1] == 3
    assert engine.init_cache.misses - init_before[1] == 1
    second = engine.riff(request)
    assert engine.text_cache.hits - text_before[0] == 3
    assert engine.init_cache.hits - init_before[0] == 1
    assert torch.equal(first.latents, second.latents)
    assert np.array_equal(_pixels(first.image), _pixels(second.image))
    # A cached riff spends (almost) nothing on text or VAE encode.
    assert set(second.timings_seconds) == {"text", "vae_encode", "unet", "vae_decode", "other"}
    assert second.timings_seconds["vae_encode"] < first.timings_seconds["vae_encode"]
    # A different start seed samples the same cached latent distribution differently.
    other = engine.riff(dataclasses.replace(request, start_seed=12))
    assert engine.init_cache.misses - init_before[1] == 1
    assert not torch.equal(other.latents, first.latents)


def test_alpha_zero_is_the_plain_start_riff(riff: Callable[[RiffRequest], RiffResult]) -> None:
    transition = riff(_request(alpha=0.0))
    plain = riff(_request(end_prompt="lofi hip hop beat", end_seed=11))
    assert torch.equal(transition.latents, plain.latents)


def test_alpha_one_is_the_plain_end_riff(riff: Callable[[RiffRequest], RiffResult]) -> None:
    transition = riff(_request(alpha=1.0, start_seed=23, start_denoising=0.5, start_guidance=3.0))
    plain = riff(_request(start_prompt="church bells", start_seed=23))
    assert torch.equal(transition.latents, plain.latents)
    # Riffusion samples the seed image's latent distribution with the START seed at every
    # alpha, so with two seeds the end of a transition is the end riff on another VAE sample.
    two_seeds = riff(_request(alpha=1.0))
    assert not torch.equal(two_seeds.latents, plain.latents)


def test_alpha_moves_smoothly_between_the_ends(riff: Callable[[RiffRequest], RiffResult]) -> None:
    start, middle, end = (riff(_request(alpha=alpha)).latents for alpha in (0.0, 0.5, 1.0))
    assert 0 < (middle - start).abs().mean() < (end - start).abs().mean()


@pytest.mark.parametrize(
    ("steps", "strength", "expected_calls"),
    [(3, 0.75, 3), (6, 0.25, 2)],
)
def test_strength_sets_the_number_of_unet_calls(
    engine: RiffEngine, unet_calls: list[int], steps: int, strength: float, expected_calls: int
) -> None:
    engine.riff(_request(num_inference_steps=steps, start_denoising=strength, end_denoising=strength))
    # PNDM with steps_offset 1 runs int(steps * strength) + 1 calls, each on [uncond, cond].
    assert unet_calls == [2] * expected_calls


def test_riffusion_defaults_are_38_guided_unet_calls(engine: RiffEngine) -> None:
    from diffusers import DDIMScheduler

    scheduler = type(engine.model.scheduler).from_config(engine.model.scheduler.config)
    timesteps, noise_timestep = img2img_timesteps(scheduler, 50, 0.75)
    assert len(timesteps) == 38
    assert torch.equal(timesteps, scheduler.timesteps[13:])
    assert int(timesteps[0]) == int(noise_timestep[0]) == 741
    # so few steps that none runs is an img2img without a UNet call: noised to the least noisy timestep
    ddim = DDIMScheduler.from_config(scheduler.config, steps_offset=0)
    timesteps, noise_timestep = img2img_timesteps(ddim, 4, 0.1)
    assert len(timesteps) == 0 and int(noise_timestep[0]) == int(ddim.timesteps[-1])


def test_no_guidance_runs_the_unet_once_per_step_unbatched(engine: RiffEngine, unet_calls: list[int]) -> None:
    engine.riff(_request(start_guidance=1.0, end_guidance=1.0))
    assert unet_calls == [1] * 3


def test_batch_equals_single_riffs_and_keeps_order(
    engine: RiffEngine, riff: Callable[[RiffRequest], RiffResult], unet_calls: list[int]
) -> None:
    requests = [
        _request(alpha=0.5),
        _request(num_inference_steps=2),  # another schedule: its own group
        _request(alpha=0.5, start_guidance=3.0),  # guidance 5: each request keeps its own
    ]
    engine.max_batch_size = 4
    try:
        batched = engine.riff_batch(requests)
    finally:
        engine.max_batch_size = 1
    assert [result.request for result in batched] == requests
    assert sorted(unet_calls) == [2] * 2 + [4] * 3  # requests 0 and 2 share one UNet batch
    for request, result in zip(requests, batched):
        single = riff(request)
        torch.testing.assert_close(result.latents, single.latents, rtol=1e-4, atol=1e-4)
        assert np.abs(_pixels(result.image) - _pixels(single.image)).max() <= 2


def test_mask_keeps_the_black_part_and_repaints_the_white(
    riff: Callable[[RiffRequest], RiffResult], tmp_path: Path
) -> None:
    def mask(name: str, white_columns: slice) -> str:
        array = np.zeros((512, 512, 3), dtype=np.uint8)
        array[:, white_columns] = 255
        path = tmp_path / f"{name}.png"
        Image.fromarray(array).save(path)
        return str(path)

    plain = riff(_request()).latents
    repaint_all = riff(_request(mask_image=mask("white", slice(0, 512)))).latents
    keep_all = riff(_request(mask_image=mask("black", slice(0, 0)))).latents
    half = riff(_request(mask_image=mask("right", slice(256, 512)))).latents
    assert torch.equal(repaint_all, plain)  # white everywhere: nothing kept
    assert torch.equal(half[..., :32], keep_all[..., :32])  # black left half: the seed, noised
    assert not torch.equal(half[..., 32:], keep_all[..., 32:])


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "euler"])
def test_other_schedulers_run_int_steps_times_strength(tiny_model_dir: Path, scheduler: str) -> None:
    engine = RiffEngine.load(str(tiny_model_dir), device="cpu", scheduler=scheduler)
    assert type(engine.model.scheduler).__name__.lower().startswith(scheduler.rstrip("+")[:3])
    calls: list[int] = []
    engine.model.unet.register_forward_hook(lambda module, args, output: calls.append(1))
    result = engine.riff(_request(alpha=0.5, num_inference_steps=4))
    assert len(calls) == 3  # int(4 * 0.75)
    assert torch.isfinite(result.latents).all()


def test_bfloat16_on_cpu_is_close_to_float32(
    tiny_model_dir: Path, riff: Callable[[RiffRequest], RiffResult]
) -> None:
    engine_bf16 = RiffEngine.load(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert engine_bf16.dtype == torch.bfloat16 and engine_bf16.device == torch.device("cpu")
    low = engine_bf16.riff(_request(alpha=0.5))
    full = riff(_request(alpha=0.5))
    assert low.latents.dtype == torch.bfloat16
    difference = (low.latents.float() - full.latents).abs().mean() / full.latents.abs().mean()
    assert difference < 0.1


def test_invalid_requests_are_one_line_errors(engine: RiffEngine) -> None:
    for changes, message in [
        ({"alpha": 1.5}, "alpha must be between 0 and 1, got 1.5"),
        ({"start_denoising": float("nan")}, "start_denoising must be finite, got nan"),
        ({"start_denoising": 1.01}, "start_denoising must be between 0 and 1"),
        ({"num_inference_steps": 0}, "num_inference_steps must be between 1 and 500, got 0"),
        ({"end_guidance": -1.0}, "end_guidance must be between 0 and 30, got -1.0"),
        ({"seed_image": "/no/such/seed.png"}, "seed image '/no/such/seed.png'"),
    ]:
        with pytest.raises(RiffradioError, match=message) as caught:
            engine.riff(_request(**changes))
        assert "\n" not in str(caught.value)


def test_lru_cache_is_bounded_and_counts() -> None:
    cache: LruCache[str, int] = LruCache(2)
    made: list[str] = []

    def make(key: str) -> int:
        made.append(key)
        return len(made)

    for key in ["a", "b", "a", "c", "b", "a"]:
        cache.get_or_create(key, lambda key=key: make(key))
    # a, b made; a hit; c made (evicts b); b made (evicts a); a made.
    assert made == ["a", "b", "c", "b", "a"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 5, 2)


def test_should_cancel_abandons_the_riff_between_unet_steps(engine: RiffEngine) -> None:
    from riffradio.errors import Cancelled

    asked: list[int] = []

    def cancel_on_third_step() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(Cancelled):
        engine.riff(_request(num_inference_steps=8), cancel_on_third_step)
    assert len(asked) == 3  # asked before each step, stopped at the first True
