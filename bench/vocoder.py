"""Benchmark: riffradio's vocoder vs a faithful Riffusion converter, on real music.

For each 5.12 s excerpt of planetblupi's tracks (tests/music.py): encode with Riffusion's formula,
decode with each vocoder, and print

- seconds per clip, wall and CPU (process time, all threads; after one warm-up clip) — on a
  shared machine the CPU time is the steadier figure,
- spectral convergence 20·log10(‖|S|−|Ŝ|‖/‖|S|‖), |S| = the original's STFT magnitude on
  Riffusion's 17 640-point grid, over 0–10 000 Hz (the band the image holds) and over the
  full band; |Ŝ| is scaled by its least-squares gain first (both decoders define their own level),
- consistency: the same measure between the image's mel and the mel re-analysed from the audio.

The baseline is Riffusion's converter written from its published algorithm: mel amplitudes with
max value 30e6, torchaudio's (≤ 2.0) InverseMelScale — SGD from torch.rand, 200 iterations, lr 0.1,
momentum 0.9, clamped at 0 — then torchaudio's GriffinLim, 32 iterations, momentum 0.99, random
initial phase, on the 17 640-point grid.

Run: ``python3 bench/vocoder.py`` (``--quick``: two excerpts, no baseline; ``--no-baseline``;
``--threads N``: torch threads; ``--grid N --iterations K``: also decode with the phase rebuilt on
an N-point FFT grid with K Fast Griffin-Lim iterations, e.g. 8820 or 17 640 — the trade-off a
machine with time to spare, such as a GPU, can take; ``--device cuda``: riffradio's vocoder on
that torch device, the baseline stays on the CPU; ``--save-excerpts FILE.npz`` / ``--excerpts
FILE.npz``: write the excerpts to a file / read them from it instead of the OGG tracks, for a
machine without the Debian package, such as the GPU machine of bench/gpu.sh;
``--without-fine-low-band``: also decode without the padded-grid phase below 500 Hz;
``--more-excerpts``: 20 other excerpts, two of each track, for a wider look than the five).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riffradio.spectrogram.image import audio_to_image, image_to_mel  # noqa: E402
from riffradio.spectrogram.mel import audio_to_mel, hann_window, mel_filterbank, stft  # noqa: E402
from riffradio.spectrogram.params import SpectrogramParams  # noqa: E402
from riffradio.spectrogram.phase import spectral_convergence_db  # noqa: E402
from riffradio.spectrogram.vocoder import Vocoder, _image_mel, _normalise_peak, mel_to_audio  # noqa: E402
from tests.music import EXCERPTS, MORE_EXCERPTS, music_excerpt  # noqa: E402

PARAMS = SpectrogramParams()
BAND_BINS = 4001  # bins 0 … 10 000 Hz on the 17 640-point grid


def riffusion_converter(image, seed: int = 0) -> np.ndarray:
    """Riffusion's image → audio, from its published algorithm (SGD inverse mel + Griffin-Lim)."""
    generator = torch.Generator().manual_seed(seed)
    mel = torch.from_numpy(image_to_mel(image, PARAMS, max_value=30e6))  # (1, mels, frames)
    filterbank = torch.from_numpy(mel_filterbank(PARAMS).copy())  # (freq, mels)
    # torchaudio.transforms.InverseMelScale (≤ 2.0): SGD on a random non-negative spectrogram.
    melspec = mel.transpose(-1, -2)
    specgram = torch.rand(melspec.shape[0], melspec.shape[1], filterbank.shape[0], generator=generator)
    specgram.requires_grad_(True)
    optimiser = torch.optim.SGD([specgram], lr=0.1, momentum=0.9)
    previous_loss = float("inf")
    for _ in range(200):
        optimiser.zero_grad()
        loss = (melspec - specgram.matmul(filterbank)).pow(2).sum(dim=-1).mean()
        loss.backward()
        optimiser.step()
        specgram.data = specgram.data.clamp(min=0)
        if loss.item() < 1e-5 or abs(previous_loss - loss.item()) < 1e-8:
            break
        previous_loss = loss.item()
    magnitude = specgram.detach().clamp(min=0).transpose(-1, -2)
    # torchaudio.functional.griffinlim with momentum 0.99 and random initial phase.
    window = hann_window(PARAMS)
    kwargs = dict(n_fft=PARAMS.n_fft_samples, hop_length=PARAMS.hop_length_samples, win_length=PARAMS.win_length_samples, window=window)
    angles = torch.rand(magnitude.shape, dtype=torch.complex64, generator=generator)
    tprev = torch.tensor(0.0)
    momentum = 0.99
    for _ in range(32):
        inverse = torch.istft(magnitude * angles, **kwargs)
        rebuilt = torch.stft(inverse, center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True, **kwargs)
        angles = rebuilt - tprev.mul_(momentum / (1 + momentum))
        angles = angles.div(angles.abs().add(1e-16))
        tprev = rebuilt
    return torch.istft(magnitude * angles, **kwargs).numpy()


@torch.inference_mode()
def _decode_on_grid(image, grid: int, iterations: int, device: str, fine_low_band_phase: bool = True) -> np.ndarray:
    """The vocoder's maths with the phase rebuilt on another FFT grid."""
    mel, params = _image_mel(image, PARAMS)
    audio = mel_to_audio(
        torch.from_numpy(mel).to(device), params, fgla_iterations=iterations, grid_n_fft=grid,
        fine_low_band_phase=fine_low_band_phase,
    )[0]
    return _normalise_peak(audio.cpu().numpy())


def _gain_matched_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    gain = float((reference * estimate).sum() / max(float((estimate * estimate).sum()), 1e-30))
    return spectral_convergence_db(reference, gain * estimate)


def measure(original: np.ndarray, image, audio: np.ndarray) -> dict[str, float]:
    frames = 511  # columns both decoders cover
    samples = min(original.shape[-1], audio.shape[-1])
    reference = stft(torch.from_numpy(original[..., :samples]), PARAMS).abs().numpy()[..., :frames]
    estimate = stft(torch.from_numpy(np.ascontiguousarray(audio[..., :samples])), PARAMS).abs().numpy()[..., :frames]
    image_mel = image_to_mel(image, PARAMS)[..., :frames]
    audio_mel = audio_to_mel(np.ascontiguousarray(audio[..., :samples]), PARAMS)[..., :frames]
    return {
        "sc_band_db": _gain_matched_db(reference[..., :BAND_BINS, :], estimate[..., :BAND_BINS, :]),
        "sc_full_db": _gain_matched_db(reference, estimate),
        "consistency_db": _gain_matched_db(image_mel, audio_mel),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two excerpts, no Riffusion baseline")
    parser.add_argument("--more-excerpts", action="store_true",
                        help="the 20 excerpts of tests/music.py's MORE_EXCERPTS instead (45 s and 300 s into each track)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Riffusion converter")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--grid", type=int, action="append", default=[], help="also decode on this FFT grid (repeatable)")
    parser.add_argument("--iterations", type=int, action="append", default=[], help="FGLA iterations for each --grid")
    parser.add_argument("--without-fine-low-band", action="store_true",
                        help="also decode without the padded-grid phase below 500 Hz (what it brings)")
    parser.add_argument("--device", default="cpu", help="torch device for riffradio's vocoder (default cpu)")
    parser.add_argument("--excerpts", type=Path, default=None, help="read the excerpts from this .npz")
    parser.add_argument("--save-excerpts", type=Path, default=None, help="write the excerpts to this .npz and exit")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    excerpts = EXCERPTS[:2] if args.quick else MORE_EXCERPTS if args.more_excerpts else EXCERPTS
    if args.save_excerpts is not None:
        np.savez_compressed(args.save_excerpts, **{f"{track}@{start:g}s": music_excerpt(track, start) for track, start in excerpts})
        print(f"wrote {len(excerpts)} excerpts to {args.save_excerpts}")
        return 0
    vocoder = Vocoder(PARAMS, args.device)
    methods = {"riffradio (PGHI + 32 FGLA, 4410 grid, fine low band)": vocoder.image_to_audio}
    if len(args.iterations) != len(args.grid):
        parser.error("give one --iterations for each --grid")
    if args.without_fine_low_band:
        methods["riffradio without the fine low-band phase"] = functools.partial(
            _decode_on_grid, grid=PARAMS.win_length_samples, iterations=32, device=args.device, fine_low_band_phase=False
        )
    for grid, iterations in zip(args.grid, args.iterations):
        methods[f"riffradio, {grid} grid, {iterations} FGLA"] = functools.partial(
            _decode_on_grid, grid=grid, iterations=iterations, device=args.device
        )
    if not (args.quick or args.no_baseline):
        methods["Riffusion converter (SGD 200 + GLA 32)"] = riffusion_converter
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, vocoder on {device_name}, "
          f"load average before: {os.getloadavg()}")
    clips = []
    if args.excerpts is not None:
        with np.load(args.excerpts) as saved:
            originals = {label: saved[label] for label in saved.files}
    else:
        originals = {f"{track}@{start:g}s": music_excerpt(track, start) for track, start in excerpts}
    for label, original in originals.items():
        clips.append((label, original, audio_to_image(original, PARAMS.sample_rate_hz, PARAMS)))
    rows = []
    for name, decode in methods.items():
        if decode is not riffusion_converter:
            decode(clips[0][2])  # warm-up: operator caches, thread pools, FFT plans
        for label, original, image in clips:
            started, started_cpu = time.perf_counter(), time.process_time()
            audio = decode(image)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
            figures = measure(original, image, audio)
            figures["cpu_s"] = cpu_seconds
            rows.append((name, label, seconds, figures))
            print(f"{name:42s} {label:18s} {seconds:6.2f} s wall {cpu_seconds:6.2f} s CPU  SC 0–10 kHz {figures['sc_band_db']:6.2f} dB  "
                  f"SC full {figures['sc_full_db']:6.2f} dB  consistency {figures['consistency_db']:6.2f} dB", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("\n| vocoder | wall s/clip (mean) | CPU s/clip (mean) | SC 0–10 kHz (mean dB) | SC full band (mean dB) | consistency (mean dB) |")
    print("|---|---|---|---|---|---|")
    for name in methods:
        mine = [row for row in rows if row[0] == name]
        mean = lambda key: np.mean([row[3][key] for row in mine])  # noqa: E731
        print(f"| {name} | {np.mean([row[2] for row in mine]):.2f} | {mean('cpu_s'):.2f} | {mean('sc_band_db'):.1f} | "
              f"{mean('sc_full_db'):.1f} | {mean('consistency_db'):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
