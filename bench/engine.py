"""Benchmark of the diffusion engine on the real SD 1.5 architecture (random weights).

Speed does not depend on the weights, so the model is ``build_test_model(DIR, "sd15")`` unless
``--model`` names another directory. For each dtype it prints the wall time of one clip split
into text encoding, VAE encode, UNet loop, VAE decode, vocoder and everything else, for a cold
clip (empty caches) and a warm one (prompt and seed image cached, new seed), then the same
riff through diffusers' stock ``StableDiffusionImg2ImgPipeline`` on the same components, as a
ratio. On a GPU add ``--compile``, ``--channels-last``, ``--batch 1,2,4,8`` and
``--scheduler dpm++ --steps 20`` to see what each gives.

    python3 bench/engine.py --steps 10 --dtypes float32,bfloat16            # CPU, minutes
    python3 bench/engine.py --device cuda --steps 50 --batch 1,4 --compile  # GPU, Riffusion defaults
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIP_SECONDS = 5.12
UNET_TFLOP_PER_GUIDED_STEP = 1.35  # SD 1.5 UNet at 64x64 latents, batch 2 (CFG)


def _sync(device: object) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.synchronize()


def _row(label: str, timings: dict[str, float]) -> str:
    total = sum(timings.values())
    other = timings.get("text", 0.0) + timings.get("other", 0.0)
    cells = " ".join(f"{timings.get(key, 0.0):8.3f}" for key in ("text", "vae_encode", "unet", "vae_decode", "vocoder", "other"))
    return f"{label:<34} {cells} {total:9.3f} {100 * other / total:7.2f}% {CLIP_SECONDS / total:7.3f}"


HEADER = f"{'clip':<34} {'text':>8} {'vae_enc':>8} {'unet':>8} {'vae_dec':>8} {'vocoder':>8} {'other':>8} {'total s':>9} {'non-net':>8} {'RTF':>7}"


def _stock_seconds(engine: object, request: object, repeats: int) -> float:
    """Wall time of the same riff through diffusers' stock img2img pipeline (same components)."""
    import torch

    from riffradio.engine.loading import stock_img2img_pipeline
    from riffradio.spectrogram.seeds import load_seed_image

    model = engine.model  # type: ignore[attr-defined]
    stock = stock_img2img_pipeline(model)
    image = load_seed_image(request.seed_image)  # type: ignore[attr-defined]
    times = []
    for _ in range(repeats):
        generator = torch.Generator(device=model.device).manual_seed(request.start_seed)  # type: ignore[attr-defined]
        started = time.perf_counter()
        with torch.inference_mode():
            stock(
                prompt=request.start_prompt,  # type: ignore[attr-defined]
                image=image,
                strength=request.start_denoising,  # type: ignore[attr-defined]
                num_inference_steps=request.num_inference_steps,  # type: ignore[attr-defined]
                guidance_scale=request.start_guidance,  # type: ignore[attr-defined]
                generator=generator,
            )
        _sync(model.device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _continued_figures(
    engine: object, request: object, continuation_seconds: float, repeats: int, warm_seconds: float, latents: object
) -> None:
    """Clips that continue the clip before (its final latents kept by the mask): wall time per
    clip and per second of *new* audio (a continued clip brings ``5.12 − S`` s), against warm
    independent clips."""
    from riffradio.engine.continuation import continuation_samples

    kept_seconds = continuation_samples(continuation_seconds) / 44_100
    times = []
    for repeat in range(repeats):
        continued_request = dataclasses.replace(
            request, start_seed=200 + repeat, end_seed=200 + repeat, continuation_seconds=continuation_seconds
        )  # type: ignore[type-var]
        started = time.perf_counter()
        result = engine.riff(continued_request, previous_latents=latents)  # type: ignore[attr-defined]
        _sync(engine.device)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        latents = result.latents
    continued = statistics.median(times)
    new_seconds = CLIP_SECONDS - kept_seconds
    print(f"continued {kept_seconds:.2f} s: {continued:.3f} s per clip ({continued / warm_seconds:.3f}x an "
          f"independent clip), {new_seconds:.2f} s of new audio per clip, RTF of new audio {new_seconds / continued:.3f} "
          f"(independent clips with a 0.5 s crossfade: {(CLIP_SECONDS - 0.5) / warm_seconds:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="diffusers directory (default: build SD1.5 random weights)")
    parser.add_argument("--build-dir", default="/tmp/riffradio-bench-sd15", help="where the SD1.5 test model goes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", default=None, help="comma list (default: the device's default dtype)")
    parser.add_argument("--scheduler", default=None, help="dpm++, ddim, euler, pndm (default: checkpoint's PNDM)")
    parser.add_argument("--steps", type=int, default=None, help="steps (default 50 on GPU, 10 on CPU)")
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--batch", default="1", help="comma list of batch sizes for riff_batch (e.g. 1,2,4,8)")
    parser.add_argument("--repeats", type=int, default=1, help="warm clips per configuration (median)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-stock", action="store_true", help="skip diffusers' stock pipeline")
    parser.add_argument("--no-vocoder", action="store_true", help="skip the vocoder timing")
    parser.add_argument("--continuation", type=float, default=0.0,
                        help="also time clips continuing the one before by this many seconds (e.g. 1.28), "
                             "and the real-time factor of new audio per clip")
    args = parser.parse_args()

    import torch

    from riffradio.engine.loading import quiet_libraries, resolve_device
    from riffradio.engine.pipeline import RiffEngine
    from riffradio.core.types import RiffRequest
    from riffradio.engine.testmodel import build_test_model

    device = resolve_device(args.device)
    model_dir = args.model
    if model_dir is None:
        model_dir = args.build_dir
        if not (Path(model_dir) / "model_index.json").is_file():
            print(f"building SD1.5-architecture random-weight model in {model_dir} ...", flush=True)
            with quiet_libraries():
                build_test_model(model_dir, "sd15")
    steps = args.steps or (50 if device.type == "cuda" else 10)
    dtypes = args.dtypes.split(",") if args.dtypes else [None]
    batches = [int(size) for size in args.batch.split(",")]
    request = RiffRequest(
        start_prompt="lofi hip hop beat for studying",
        end_prompt="lofi hip hop beat for studying",
        start_seed=1,
        end_seed=1,
        start_denoising=args.strength,
        end_denoising=args.strength,
        num_inference_steps=steps,
        seed_image="og_beat",
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"riff: {steps} steps, strength {args.strength}, scheduler {args.scheduler or 'checkpoint (PNDM)'}, "
          f"compile {args.compile}, channels_last {args.channels_last}")
    for dtype in dtypes:
        started = time.perf_counter()
        engine = RiffEngine.load(
            model_dir,
            device=args.device,
            dtype=dtype,
            scheduler=args.scheduler,
            compile=args.compile,
            channels_last=args.channels_last,
        )
        dtype_name = str(engine.dtype).removeprefix("torch.")
        print(f"\n== {dtype_name}: loaded in {time.perf_counter() - started:.1f} s")
        vocoder = None
        if not args.no_vocoder:
            from riffradio.spectrogram.vocoder import Vocoder

            vocoder = Vocoder(device=engine.device)
        print(HEADER)
        cold = engine.riff(request)
        timings = dict(cold.timings_seconds)
        if vocoder is not None:
            started = time.perf_counter()
            vocoder.image_to_audio(cold.image)
            timings["vocoder"] = time.perf_counter() - started
        print(_row("cold (empty caches)", timings), flush=True)
        if args.compile:
            engine.riff(dataclasses.replace(request, start_seed=99))  # compile warm-up
        warm_totals = []
        for repeat in range(args.repeats):
            warm = engine.riff(dataclasses.replace(request, start_seed=2 + repeat, end_seed=2 + repeat))
            timings = dict(warm.timings_seconds)
            if vocoder is not None:
                started = time.perf_counter()
                vocoder.image_to_audio(warm.image)
                timings["vocoder"] = time.perf_counter() - started
            warm_totals.append(sum(warm.timings_seconds.values()))
            print(_row(f"warm (cached prompt+seed image) #{repeat + 1}", timings), flush=True)
        warm_seconds = statistics.median(warm_totals)
        unet_calls = int(steps * args.strength) + (1 if args.scheduler in (None, "pndm") else 0)
        unet = warm.timings_seconds["unet"]
        # The FLOP count is SD 1.5's (~860 M UNet parameters); a tiny test model gets no TFLOP/s.
        is_sd15 = sum(p.numel() for p in engine.model.unet.parameters()) > 500e6
        flops = f", {UNET_TFLOP_PER_GUIDED_STEP * unet_calls / unet:.3f} TFLOP/s" if is_sd15 else ""
        print(f"UNet: {unet_calls} guided calls, {unet / unet_calls:.3f} s each{flops}")
        for size in batches:
            if size == 1:
                continue
            if args.compile:
                engine.riff_batch([dataclasses.replace(request, start_seed=50 + i) for i in range(size)])
            engine.max_batch_size = size
            started = time.perf_counter()
            engine.riff_batch([dataclasses.replace(request, start_seed=100 + i) for i in range(size)])
            _sync(engine.device)
            per_clip = (time.perf_counter() - started) / size
            print(f"batch {size}: {per_clip:.3f} s per clip (engine batch size {engine.max_batch_size}), "
                  f"RTF {CLIP_SECONDS / per_clip:.2f}, {warm_seconds / per_clip:.2f}x batch 1")
        if args.continuation > 0:
            _continued_figures(engine, request, args.continuation, args.repeats, warm_seconds, warm.latents)
        if not args.no_stock:
            stock = _stock_seconds(engine, request, args.repeats)
            print(f"stock StableDiffusionImg2ImgPipeline: {stock:.3f} s per clip; "
                  f"engine warm {warm_seconds:.3f} s -> engine is {stock / warm_seconds:.3f}x the stock speed")
        del engine
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
