"""CLI: ``audio-to-image``, ``image-to-audio``, ``seed-image``."""

from __future__ import annotations

import argparse
from pathlib import Path

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.core.knobs import SEED_MAX, number_argument
from riffradio.errors import RiffradioError


def _audio_to_image(args: argparse.Namespace) -> int:
    from riffradio.spectrogram.audio_io import read_audio
    from riffradio.spectrogram.image import audio_to_image, save_spectrogram_image
    from riffradio.spectrogram.params import SpectrogramParams

    params = SpectrogramParams(stereo=args.stereo)
    if args.start_seconds < 0:
        raise RiffradioError(f"--start-seconds must be ≥ 0, got {args.start_seconds}")
    audio = read_audio(
        args.audio,
        params.sample_rate_hz,
        mono=not args.stereo,
        start_seconds=args.start_seconds,
        duration_seconds=params.clip_seconds,
    )
    if audio.shape[-1] < params.min_clip_samples:
        have = audio.shape[-1] / params.sample_rate_hz
        raise RiffradioError(
            f"{args.audio}: too short: {audio.shape[-1]} samples ({have:.2f} s) of audio from {args.start_seconds:g} s,"
            f" needs {params.min_clip_samples} ({params.min_clip_samples / params.sample_rate_hz:.2f} s)"
        )
    save_spectrogram_image(audio_to_image(audio, params.sample_rate_hz, params), args.out)
    return 0


def _image_to_audio(args: argparse.Namespace) -> int:
    from riffradio.spectrogram.audio_io import write_audio
    from riffradio.spectrogram.image import load_spectrogram_image, params_from_image
    from riffradio.spectrogram.vocoder import Vocoder

    image = load_spectrogram_image(args.image)
    params = params_from_image(image)
    if image.height != params.num_frequencies:
        raise RiffradioError(
            f"{args.image}: wrong size {image.width}x{image.height}: a spectrogram image is {params.num_frequencies} pixels high"
        )
    audio = Vocoder(params, device=args.device).image_to_audio(image)
    write_audio(args.out, audio, params.sample_rate_hz)
    return 0


def _seed_image(args: argparse.Namespace) -> int:
    from riffradio.spectrogram.audio_io import write_audio
    from riffradio.spectrogram.image import save_spectrogram_image
    from riffradio.spectrogram.seeds import DrumLoopSpec, loop_to_image, render_drum_loop, validate_drum_loop_spec

    spec = DrumLoopSpec(
        bpm=args.bpm,
        beats_per_bar=args.beats_per_bar,
        bars=args.bars,
        pattern=args.pattern,
        swing=args.swing,
        bass_hz=args.bass_hz,
        seed=args.seed,
    )
    validate_drum_loop_spec(spec, "seed-image")
    loop = render_drum_loop(spec)
    save_spectrogram_image(loop_to_image(loop), args.out)
    if args.audio_out is not None:
        write_audio(args.audio_out, loop, SAMPLE_RATE_HZ)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from riffradio.spectrogram.seeds import PATTERNS

    encode = subparsers.add_parser(
        "audio-to-image", help="encode 5.12 s of audio as a Riffusion spectrogram image"
    )
    encode.add_argument("audio", type=Path, help="audio file (wav, flac, ogg, mp3, ...)")
    encode.add_argument("out", type=Path, help="output PNG")
    encode.add_argument("--start-seconds", type=number_argument("seconds"), default=0.0, help="where the excerpt starts (default 0)")
    encode.add_argument("--stereo", action="store_true", help="encode left/right as green/blue")
    encode.set_defaults(handler=_audio_to_image)

    decode = subparsers.add_parser("image-to-audio", help="decode a spectrogram image to audio")
    decode.add_argument("image", type=Path, help="spectrogram PNG (512 high)")
    decode.add_argument("out", type=Path, help="output .wav or .flac")
    decode.add_argument("--device", default="cpu", help="torch device for the vocoder (default cpu)")
    decode.set_defaults(handler=_image_to_audio)

    seed = subparsers.add_parser("seed-image", help="synthesise a drum-loop seed (any tempo, whole bars)")
    seed.add_argument("--bpm", type=number_argument("bpm"), default=93.75, help="tempo, 40 … 240, fractional allowed (default 93.75)")
    seed.add_argument("--beats-per-bar", type=number_argument(kind=int, low=1, high=32), default=4, help="beats per bar (default 4)")
    seed.add_argument(
        "--bars", type=number_argument(kind=int, low=0), default=0, help="bars in the loop (default: the whole number nearest 5.12 s, at least 1)"
    )
    seed.add_argument("--pattern", default="rock", choices=sorted(PATTERNS), help="drum pattern (default rock)")
    seed.add_argument("--swing", type=number_argument(low=0.0, high=0.5), default=0.0, help="0 … 0.5 of a 16th (default 0)")
    seed.add_argument("--bass-hz", type=number_argument(low=0.0, high=20_000.0), default=0.0, help="bass note on each kick, 0 = none")
    seed.add_argument("--seed", type=number_argument(kind=int, low=0, high=SEED_MAX), default=0, help="noise seed for snares and hats")
    seed.add_argument("-o", "--out", type=Path, required=True, help="output PNG: the loop's first 5.12 s window")
    seed.add_argument(
        "--audio-out", type=Path, default=None,
        help="also write the whole loop as .wav/.flac (a seed of the loop's own length)",
    )
    seed.set_defaults(handler=_seed_image)
