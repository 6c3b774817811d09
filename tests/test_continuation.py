"""Continuation on the diffusion path, on the tiny random-weight model.

The reference is Riffusion's own mask maths (``RiffusionPipeline.interpolate_img2img``),
written out here from its published source with diffusers' parts: the init latents whose first
columns are the previous clip's last ones, noised to the first timestep, and after every step
the original latents re-noised to that step's timestep put back where the mask keeps them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from riffradio.core.types import RiffRequest, RiffResult
from riffradio.engine.continuation import (
    continuation_mask,
    continuation_samples,
    continued_init_latents,
    kept_latent_columns,
    latent_column_seconds,
    restore_kept_columns,
)
from riffradio.engine.loading import stock_img2img_pipeline
from riffradio.engine.pipeline import RiffEngine
from tests.test_engine import _request as engine_request


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> RiffEngine:
    return RiffEngine.load(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def riff(engine: RiffEngine) -> Callable[..., RiffResult]:
    """``engine.riff`` remembered per (request, previous latents), so the tests share their riffs."""
    return functools.cache(engine.riff)


@pytest.fixture(scope="module")
def previous(riff: Callable[..., RiffResult]) -> torch.Tensor:
    """The final latents of the clip the continued riffs continue."""
    return riff(_request(start_seed=3, end_seed=4)).latents


def _request(**changes: object) -> RiffRequest:
    """tests/test_engine.py's riff with guidance 7.5 and seeds 5 → 6, changed by ``changes``."""
    return engine_request(**{"start_seed": 5, "end_seed": 6, "start_guidance": 7.5, "end_guidance": 7.5, **changes})


def test_continuation_is_rounded_to_whole_latent_columns() -> None:
    assert latent_column_seconds() == pytest.approx(0.08)
    assert kept_latent_columns(0.0) == 0
    assert kept_latent_columns(1.28) == 16
    assert kept_latent_columns(0.5) == 6  # 0.48 s
    assert kept_latent_columns(0.03) == 0
    assert kept_latent_columns(9.0) == 32  # at most half a clip
    assert continuation_samples(1.28) == 16 * 8 * 441


def test_the_continuation_maths_on_its_own() -> None:
    generator = torch.Generator().manual_seed(0)
    init, previous = torch.randn(1, 4, 8, 64, generator=generator), torch.randn(1, 4, 8, 64, generator=generator)
    continued = continued_init_latents(init, previous, 16)
    assert torch.equal(continued[..., :16], previous[..., 48:]) and torch.equal(continued[..., 16:], init[..., 16:])
    assert continued_init_latents(init, previous, 0) is init
    mask = continuation_mask(init, 16)
    assert mask[..., :16].eq(1).all() and mask[..., 16:].eq(0).all()
    noisy = torch.randn(1, 4, 8, 64, generator=generator)
    restored = restore_kept_columns(noisy, continued, 16)
    assert torch.equal(restored[..., :16], previous[..., 48:]) and torch.equal(restored[..., 16:], noisy[..., 16:])
    with pytest.raises(ValueError, match="do not match"):
        continued_init_latents(init, previous[..., :32], 4)


def _riffuse_reference(engine: RiffEngine, request: RiffRequest, previous: torch.Tensor, kept: int) -> torch.Tensor:
    """Riffusion's interpolate_img2img at alpha 0 with a mask keeping the first ``kept`` columns."""
    model = engine.model
    tokenizer, text_encoder, unet, vae, scheduler = (
        model.tokenizer, model.text_encoder, model.unet, model.vae, model.scheduler,
    )  # fmt: skip
    from riffradio.spectrogram.seeds import load_seed_image

    def embed(text: str) -> torch.Tensor:
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        return text_encoder(ids.input_ids)[0]

    with torch.inference_mode():
        text_embeddings = torch.cat([embed(request.negative_prompt), embed(request.start_prompt)])
        pixels = stock_img2img_pipeline(model).image_processor.preprocess(load_seed_image(request.seed_image))
        generator = torch.Generator().manual_seed(request.start_seed)
        seed_latents = 0.18215 * vae.encode(pixels).latent_dist.sample(generator=generator)
        # the previous clip's last ``kept`` columns, then the seed window's
        init_latents = torch.cat([previous[..., 64 - kept :], seed_latents[..., kept:]], dim=-1)
        mask = torch.zeros_like(init_latents)
        mask[..., :kept] = 1.0
        scheduler.set_timesteps(request.num_inference_steps)
        offset = scheduler.config.get("steps_offset", 0)
        init_timestep = min(int(request.num_inference_steps * request.start_denoising) + offset, request.num_inference_steps)
        first = torch.tensor([scheduler.timesteps[-init_timestep]])
        noise = torch.randn(init_latents.shape, generator=torch.Generator().manual_seed(request.start_seed))
        init_latents_orig = init_latents
        latents = scheduler.add_noise(init_latents, noise, first)
        t_start = max(request.num_inference_steps - init_timestep + offset, 0)
        for t in scheduler.timesteps[t_start:]:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, text = unet(model_input, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
            latents = scheduler.step(uncond + request.start_guidance * (text - uncond), t, latents).prev_sample
            init_latents_proper = scheduler.add_noise(init_latents_orig, noise, torch.tensor([t]))
            latents = (init_latents_proper * mask) + (latents * (1 - mask))
        # and, after the loop, the kept columns themselves (not their last re-noised copy)
        latents[..., :kept] = init_latents_orig[..., :kept]
    return latents


def test_continuation_keeps_the_previous_clips_last_columns_by_riffuses_mask_maths(
    engine: RiffEngine, riff: Callable[..., RiffResult], previous: torch.Tensor
) -> None:
    request = _request(continuation_seconds=1.28)
    continued = riff(request, previous_latents=previous)
    assert torch.equal(continued.latents[..., :16], previous[..., 48:])  # kept, exactly
    assert torch.equal(continued.latents, _riffuse_reference(engine, request, previous, 16))
    plain = riff(_request())
    assert not torch.equal(continued.latents[..., 16:], plain.latents[..., 16:])  # the rest is generated anew


def test_continuation_zero_or_no_previous_clip_is_todays_riff_bit_for_bit(
    riff: Callable[..., RiffResult], previous: torch.Tensor
) -> None:
    plain = riff(_request())
    for result in (
        riff(_request(continuation_seconds=0.0), previous_latents=previous),
        riff(_request(continuation_seconds=1.28)),  # the first clip: nothing to continue
    ):
        assert torch.equal(result.latents, plain.latents)
        assert np.array_equal(np.asarray(result.image), np.asarray(plain.image))


def test_a_batch_of_continued_riffs_equals_them_one_by_one(
    engine: RiffEngine, riff: Callable[..., RiffResult], previous: torch.Tensor
) -> None:
    other = riff(_request(start_seed=8, end_seed=9)).latents
    requests = [_request(continuation_seconds=1.28), _request(continuation_seconds=0.64, start_seed=12)]
    engine.max_batch_size = 4  # the CPU default is 1
    try:
        batched = engine.riff_batch(requests, previous_latents=[previous, other])
    finally:
        engine.max_batch_size = 1
    singles = [riff(requests[0], previous_latents=previous), riff(requests[1], previous_latents=other)]
    for result, single in zip(batched, singles):
        torch.testing.assert_close(result.latents, single.latents, rtol=1e-4, atol=1e-4)
    assert torch.equal(batched[0].latents[..., :16], previous[..., 48:])
    assert torch.equal(batched[1].latents[..., :8], other[..., 56:])
    with pytest.raises(ValueError, match="2 previous latents for 1 requests"):
        engine.riff_batch(requests[:1], previous_latents=[previous, other])


def test_a_continuation_outside_its_range_is_a_one_line_error(engine: RiffEngine, previous: torch.Tensor) -> None:
    from riffradio.errors import RiffradioError

    with pytest.raises(RiffradioError, match=r"continuation_seconds must be between 0 and 2.56, got 3.0"):
        engine.riff(_request(continuation_seconds=3.0), previous_latents=previous)


class RecordingEngine(RiffEngine):
    """The real engine, remembering what it was handed and what it made (for the station test)."""

    def __init__(self, model) -> None:  # noqa: ANN001 - a LoadedModel
        super().__init__(model)
        self.calls: list[tuple[RiffRequest, torch.Tensor | None, RiffResult]] = []

    def riff(self, request, should_cancel=None, previous_latents=None):  # noqa: ANN001, ANN201 - RiffEngine's
        result = super().riff(request, should_cancel, previous_latents)
        self.calls.append((request, previous_latents, result))
        return result


def test_the_producer_hands_each_clip_the_previous_clips_latents_and_phase(engine: RiffEngine) -> None:
    from riffradio.metrics import StationMetrics
    from riffradio.playlist import check_playlist_text
    from riffradio.spectrogram.vocoder import Vocoder
    from riffradio.station.buffer import CrossfadeBuffer
    from riffradio.station.plan import plan_next
    from riffradio.station.producer import Producer
    from riffradio.station.state import StationState

    playlist, errors = check_playlist_text(
        "station: {steps: 3, continuation_seconds: 1.28, crossfade_seconds: 0.5}\n"
        "riffs:\n  - {prompt: lofi hip hop beat, to: church bells, clips: 3}\n",
        Path("continue.yaml"),
    )
    assert playlist is not None, errors
    recording = RecordingEngine(engine.model)
    state = StationState(len(playlist.riffs))
    vocoder = Vocoder()
    producer = Producer(playlist, state, recording, vocoder, CrossfadeBuffer(2, 44100, 0.5), 44100, StationMetrics())
    clips = []
    for _ in range(3):
        planned, producer.position = plan_next(playlist, state.snapshot(), producer.position)
        overlap = producer.overlap_samples(0.5, planned.request.continuation_seconds)
        assert overlap == 16 * 3528  # 1.28 s: whole latent columns, the 0.5 s crossfade inside
        clip, _ = producer.generate(producer.place(planned, overlap))
        clips.append(clip)
    (first, none, first_result), (second, handed, second_result), (third, handed_again, _) = recording.calls
    assert none is None and first.continuation_seconds == 0.0  # the first clip has nothing to continue
    assert second.continuation_seconds == third.continuation_seconds == pytest.approx(1.28)
    assert handed is first_result.latents and handed_again is second_result.latents
    assert torch.equal(second_result.latents[..., :16], first_result.latents[..., 48:])
    assert clips[1].placement.start_samples == clips[0].placement.start_samples + 225_792 - 16 * 3528
    # Both clips render the shared 1.28 s; with the phase handed on they decode to nearly the same
    # waveform there (the first clip's last 1.28 s against the second's first), so the crossfade
    # inside it mixes two renderings of one sound.
    shared = 16 * 3528
    middle = slice(shared // 2 - 11025, shared // 2 + 11025)
    outgoing, incoming = clips[0].audio[0, -shared:][middle], clips[1].audio[0, :shared][middle]
    assert float(np.corrcoef(outgoing, incoming)[0, 1]) > 0.9
