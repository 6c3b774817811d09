"""How far does a Riffusion image pin its audio down? Image-equivalent signals, on real music.

For each excerpt of bench/vocoder.py, build a second signal that the image describes as well as
a decoder could wish: the original's own STFT phase below ``--split-hz`` (a gift no decoder
gets), a seeded random phase above it, the original's magnitude as the start, then
``--iterations`` rounds of Griffin-Lim whose magnitude target is re-fitted to the image's mel
every round (each bin scaled by the mean over its bands of image mel / current mel; momentum
0.5), on the 4 410-point grid. Print, for that signal and for the original:

- consistency with the image (the image's mel against the mel re-analysed from the audio, dB,
  as in bench/vocoder.py; the original's own figure is the 8-bit image's rounding),
- spectral convergence against the original over 0–10 kHz (bench/vocoder.py's measure).

A signal that matches the image about as well as a decoder's output does, yet sits far from the
original, shows what the image leaves open above the split: a decoder that sees only the image
cannot tell such a signal from the original, so it cannot be expected to land closer than that.

With ``--fit-waveform K`` (default 200; 0 skips it), a third signal: riffradio's vocoder output,
then K L-BFGS iterations on its waveform (in steps of 20, strong-Wolfe line search) that minimise
the squared error between the image's mel and the mel of the signal's exact Riffusion analysis
(17 640-point STFT, mel filterbank), on a linear amplitude scale like the spectral convergence.
If fitting the image closer and closer does not bring the signal closer to the original, the
image does not single the original out at that level of detail.

Run: ``python3 bench/image_ambiguity.py`` (``--iterations 150 --split-hz 2000 --fit-waveform 200
--threads 1``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vocoder import PARAMS, measure  # noqa: E402
from riffradio.spectrogram.image import audio_to_image  # noqa: E402
from riffradio.spectrogram.mel import mel_amplitudes, stft  # noqa: E402
from riffradio.spectrogram.phase import _FramePair  # noqa: E402
from riffradio.spectrogram.vocoder import Vocoder, _image_mel, _inverse_mel_operators  # noqa: E402
from tests.music import EXCERPTS, music_excerpt  # noqa: E402

GRID_N_FFT = 4410
MOMENTUM = 0.5  # fits the image closer than 0 or 0.99 in 150 rounds


def image_equivalent_signal(
    original: np.ndarray, image, split_hz: float, iterations: int, seed: int = 0
) -> np.ndarray:
    """A signal with the original's phase below ``split_hz`` and a random one above, fitted to the image."""
    mel_array, params = _image_mel(image, PARAMS)
    mel = torch.from_numpy(mel_array)
    frames = mel.shape[-1]
    length = frames * params.hop_length_samples
    operators = _inverse_mel_operators(params, GRID_N_FFT)
    bins = operators.active_bins
    matrix = operators.dense().clamp(min=0)  # the Lanczos taps' small negative lobes would let the ratio flip sign
    band_count = (matrix.T @ torch.ones(operators.num_mels, 1)).clamp(min=1e-6)
    spectrum = stft(torch.from_numpy(np.ascontiguousarray(original[..., :length])), params, GRID_N_FFT)[..., :bins, :frames]
    phase = spectrum.angle()
    above = torch.arange(bins) * (params.sample_rate_hz / GRID_N_FFT) >= split_hz
    generator = torch.Generator().manual_seed(seed)
    phase[..., above, :] = torch.rand(phase[..., above, :].shape, generator=generator) * 2 * np.pi
    pair = _FramePair(params, GRID_N_FFT, frames, length, mel.device)
    current = previous = torch.polar(spectrum.abs(), phase)
    floor = 1e-4 * float(mel.max())
    for _ in range(iterations):
        rebuilt = pair.analyse(pair.synthesise(current))[..., :bins, :]
        magnitude = rebuilt.abs().clamp(min=1e-12)
        ratio = (mel + floor) / (matrix @ magnitude + floor)
        target = magnitude * (matrix.T @ ratio) / band_count
        projected = rebuilt * (target / magnitude)
        current = projected + MOMENTUM * (projected - previous)  # as in Fast Griffin-Lim
        previous = projected
    audio = pair.synthesise(previous).numpy()
    return audio / max(float(np.abs(audio).max()), 1e-12)


def waveform_fitted_to_image(audio: np.ndarray, image, iterations: int) -> np.ndarray:
    """``audio`` after ``iterations`` L-BFGS iterations on its samples toward the image's exact mel."""
    mel_array, params = _image_mel(image, PARAMS)
    target = torch.from_numpy(mel_array).to(torch.float32)
    frames = target.shape[-1]

    def mel_of(signal: torch.Tensor) -> torch.Tensor:
        return mel_amplitudes(signal, params)[..., :frames]

    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    with torch.no_grad():  # the image's level, so the loss starts at the decoder's own error
        start = mel_of(signal)
        signal = signal * (start * target).sum() / (start * start).sum()
    signal.requires_grad_(True)
    energy = float(target.pow(2).sum())
    optimiser = torch.optim.LBFGS([signal], lr=1, max_iter=20, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (mel_of(signal) - target).pow(2).sum() / energy
        loss.backward()
        return loss

    for _ in range(math.ceil(iterations / 20)):
        optimiser.step(closure)
    fitted = signal.detach().numpy()
    return fitted / max(float(np.abs(fitted).max()), 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-hz", type=float, default=2000.0, help="the original's phase below this")
    parser.add_argument("--iterations", type=int, default=150, help="mel-fitted Griffin-Lim rounds")
    parser.add_argument("--fit-waveform", type=int, default=200,
                        help="L-BFGS iterations fitting the vocoder's output to the image (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, split {args.split_hz:g} Hz, "
          f"{args.iterations} iterations")
    rows = []
    fits = []
    vocoder = Vocoder(PARAMS)
    for track, start in EXCERPTS:
        original = music_excerpt(track, start)
        image = audio_to_image(original, PARAMS.sample_rate_hz, PARAMS)
        started = time.perf_counter()
        other = image_equivalent_signal(original, image, args.split_hz, args.iterations)
        with np.errstate(divide="ignore"):  # the original against itself: SC −∞
            own = measure(original, image, original)
        figures = measure(original, image, other)
        rows.append((own["consistency_db"], figures["consistency_db"], figures["sc_band_db"]))
        print(f"{track}@{start:g}s  original: consistency {own['consistency_db']:6.2f} dB | image-equivalent signal: "
              f"consistency {figures['consistency_db']:6.2f} dB, SC 0–10 kHz vs the original {figures['sc_band_db']:6.2f} dB"
              f"  ({time.perf_counter() - started:.1f} s)", flush=True)
        if args.fit_waveform:
            started = time.perf_counter()
            decoded = vocoder.image_to_audio(image)
            fitted = waveform_fitted_to_image(decoded, image, args.fit_waveform)
            before, after = measure(original, image, decoded), measure(original, image, fitted)
            fits.append((before["consistency_db"], before["sc_band_db"], after["consistency_db"], after["sc_band_db"]))
            print(f"    vocoder output: consistency {before['consistency_db']:6.2f} dB, SC {before['sc_band_db']:6.2f} dB | "
                  f"fitted to the image ({args.fit_waveform} L-BFGS iterations): consistency "
                  f"{after['consistency_db']:6.2f} dB, SC {after['sc_band_db']:6.2f} dB  ({time.perf_counter() - started:.1f} s)",
                  flush=True)
    means = np.mean(rows, axis=0)
    print(f"\n| signal | consistency with the image (mean dB) | SC 0–10 kHz vs the original (mean dB) |\n|---|---|---|\n"
          f"| the original | {means[0]:.1f} | — |\n"
          f"| original phase below {args.split_hz:g} Hz, random above, fitted to the image | {means[1]:.1f} | {means[2]:.1f} |")
    if fits:
        fit_means = np.mean(fits, axis=0)
        print(f"| riffradio's vocoder output | {fit_means[0]:.1f} | {fit_means[1]:.1f} |\n"
              f"| the same, its waveform fitted to the image ({args.fit_waveform} L-BFGS iterations) | "
              f"{fit_means[2]:.1f} | {fit_means[3]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
