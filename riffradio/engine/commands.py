"""CLI: ``riffradio riff`` (one spectrogram from the engine) and ``riffradio make-test-model``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from riffradio.core.knobs import number_argument
from riffradio.errors import RiffradioError

logger = logging.getLogger(__name__)


def _riff(args: argparse.Namespace) -> int:
    from riffradio.engine.pipeline import RiffEngine
    from riffradio.core.types import RiffRequest

    for path in (args.out, args.audio):
        if path is not None and not path.parent.is_dir():
            raise RiffradioError(f"{path}: directory {path.parent} does not exist")
    if args.audio is not None and args.audio.suffix.lower() not in (".wav", ".flac"):
        raise RiffradioError(f"{args.audio}: --audio writes .wav or .flac")
    request = RiffRequest(
        start_prompt=args.prompt,
        end_prompt=args.to if args.to is not None else args.prompt,
        start_seed=args.seed,
        end_seed=args.to_seed if args.to_seed is not None else args.seed,
        alpha=args.alpha,
        start_denoising=args.denoising,
        end_denoising=args.denoising,
        start_guidance=args.guidance,
        end_guidance=args.guidance,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        seed_image=f"bpm={args.bpm:g}" if args.bpm is not None else args.seed_image,
        mask_image=args.mask_image,
    )
    engine = RiffEngine.load(
        args.model,
        device=args.device,
        dtype=args.dtype,
        scheduler=args.scheduler,
        compile=args.compile,
        channels_last=args.channels_last,
    )
    result = engine.riff(request)
    try:
        result.image.save(args.out, format="PNG")
    except (OSError, ValueError) as error:
        raise RiffradioError(f"{args.out}: cannot write image ({error})") from None
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings_seconds.items())
    logger.info("%s: %s", args.out, timings)
    if args.audio is not None:
        from riffradio.spectrogram.audio_io import write_audio
        from riffradio.spectrogram.params import SpectrogramParams
        from riffradio.spectrogram.vocoder import Vocoder

        params = SpectrogramParams()
        audio = Vocoder(params, device=engine.device).image_to_audio(result.image)
        write_audio(args.audio, audio, params.sample_rate_hz)
    return 0


def _make_test_model(args: argparse.Namespace) -> int:
    from riffradio.engine.loading import quiet_libraries
    from riffradio.engine.testmodel import build_test_model

    if args.directory.exists() and not args.directory.is_dir():
        raise RiffradioError(f"{args.directory} exists and is not a directory")
    with quiet_libraries():
        build_test_model(args.directory, args.size, seed=args.seed)
    print(args.directory)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from riffradio.core.defaults import DEFAULT_MODEL, DEFAULT_SEED_IMAGE
    from riffradio.engine.loading import SCHEDULER_NAMES

    riff = subparsers.add_parser(
        "riff",
        help="make one spectrogram (and audio) with the diffusion engine",
        description="One Riffusion riff: img2img from a seed spectrogram, prompts lerped, seeds slerped.",
    )
    riff.add_argument("--prompt", required=True, help="text prompt (the start prompt of a transition)")
    riff.add_argument("--to", default=None, metavar="PROMPT2", help="end prompt of a transition (default: --prompt)")
    riff.add_argument("--seed", type=number_argument("seed"), default=42, help="start seed (default 42)")
    riff.add_argument("--to-seed", type=number_argument("seed"), default=None, metavar="SEED2", help="end seed (default: --seed)")
    riff.add_argument(
        "--alpha", type=number_argument("alpha"), default=0.0, help="position from start (0) to end (1), default 0"
    )
    riff.add_argument(
        "--denoising", type=number_argument("denoising"), default=0.75,
        help="img2img strength in [0, 1]; 0 plays the seed image (default 0.75)",
    )
    riff.add_argument("--guidance", type=number_argument("guidance"), default=7.0, help="classifier-free guidance scale (default 7)")
    riff.add_argument("--negative-prompt", default="", help="text to steer away from (default none)")
    riff.add_argument("--steps", type=number_argument("steps"), default=50, help="scheduler steps at strength 1 (default 50)")
    seed_group = riff.add_mutually_exclusive_group()
    seed_group.add_argument(
        "--seed-image",
        default=DEFAULT_SEED_IMAGE,
        help=f"bundled name, PNG/audio path or spec (default {DEFAULT_SEED_IMAGE})",
    )
    seed_group.add_argument("--bpm", type=number_argument("bpm"), default=None, help="synthesise a drum-loop seed at this tempo")
    riff.add_argument("--mask-image", default=None, help="mask image: white is repainted, black kept")
    riff.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local diffusers directory ({DEFAULT_MODEL})")
    riff.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps")
    riff.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on CUDA, else float32)")
    riff.add_argument(
        "--scheduler", default=None, choices=SCHEDULER_NAMES, help="replace the checkpoint's scheduler (PNDM)"
    )
    riff.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    riff.add_argument("--channels-last", action="store_true", help="NHWC memory format for UNet and VAE")
    riff.add_argument("-o", "--out", type=Path, required=True, help="output spectrogram PNG")
    riff.add_argument("--audio", type=Path, default=None, help="also decode it to this .wav/.flac")
    riff.set_defaults(handler=_riff)

    make = subparsers.add_parser(
        "make-test-model",
        help="write a random-weight SD 1.5 model directory (tests, benchmarks, offline demos)",
    )
    make.add_argument("directory", type=Path, help="where to write the diffusers directory")
    make.add_argument(
        "--size", choices=("tiny", "sd15"), default="tiny", help="tiny (fast, tests) or sd15 (real architecture)"
    )
    make.add_argument("--seed", type=number_argument("seed"), default=0, help="seed of the random weights (default 0)")
    make.set_defaults(handler=_make_test_model)
