"""RTPGHI written the plain, sequential way (numpy float64): the reference the torch scans must equal.

This was riffradio's own PGHI until the heap order and the frame integration became parallel
scans (riffradio/spectrogram/phase.py); tests/test_vocoder.py checks that both agree.
"""

from __future__ import annotations

import math

import numpy as np

from riffradio.spectrogram.phase import HANN_GAUSSIAN_LAMBDA_PER_L2


def reference_phase_sources(magnitude: np.ndarray) -> np.ndarray:
    """For every bin of every frame, the bin whose previous-frame phase it continues.

    This is the order a heap of magnitudes (RTPGHI) visits the bins in: a bin is reached along
    the widest path — the one whose weakest visited bin is strongest — that starts at some bin
    ``k`` of the previous frame, steps in time to bin ``k``, then walks along frequency. Since it
    depends on magnitudes only, two scans along frequency (up and down) settle it for all frames
    at once. Frame 0 starts from its strongest bin.
    """
    batch, bins, frames = magnitude.shape
    previous = np.zeros_like(magnitude)
    previous[:, :, 1:] = magnitude[:, :, :-1]
    previous[np.arange(batch), np.argmax(magnitude[:, :, 0], axis=1), 0] = np.inf
    best = []
    for order in (range(bins), range(bins - 1, -1, -1)):
        width = np.empty_like(magnitude)
        source = np.empty(magnitude.shape, dtype=np.int64)
        last = None
        for m in order:
            if last is None:
                width[:, m], source[:, m] = previous[:, m], m
            else:
                through = np.minimum(width[:, last], magnitude[:, last])
                from_time = previous[:, m] >= through
                width[:, m] = np.where(from_time, previous[:, m], through)
                source[:, m] = np.where(from_time, m, source[:, last])
            last = m
        best.append((width, source))
    (width_up, source_up), (width_down, source_down) = best
    return np.where(width_up >= width_down, source_up, source_down)


def reference_pghi_phase(
    magnitude: np.ndarray,
    hop_length_samples: int,
    n_fft_samples: int,
    win_length_samples: int,
    tolerance_db: float = 60.0,
    known_phase: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`riffradio.spectrogram.phase.pghi_phase`, same arguments, on a numpy array.

    numpy float64, sequential over bins (the heap order) and over frames (the integration).
    ``known_phase`` ``(..., bins, known_frames)``: those frames are taken as they are and the
    integration goes on from the last of them.
    """
    shape = magnitude.shape
    mag = np.asarray(magnitude, np.float64).reshape(-1, *shape[-2:])
    batch, bins, frames = mag.shape
    lam = HANN_GAUSSIAN_LAMBDA_PER_L2 * win_length_samples**2
    peak = mag.max(axis=(1, 2), keepdims=True)
    log_mag = np.log(mag + peak * 1e-10 + 1e-30)
    bin_index = np.arange(bins)[None, :, None]
    # Window-centre convention: phase advance per frame is 2π·hop·(m + δ)/N with the
    # frequency offset δ = N²/(2πλ)·∂log|X|/∂m; phase step per bin is −2π/N × the local
    # time offset λ/(2π·hop)·∂log|X|/∂n.
    time_step = (
        2 * math.pi * hop_length_samples * bin_index / n_fft_samples
        + hop_length_samples * n_fft_samples / lam * np.gradient(log_mag, axis=1)
    )
    freq_step = -(lam / (n_fft_samples * hop_length_samples)) * np.gradient(log_mag, axis=2)
    # Trapezoid steps along frequency, cumulated: the walk from bin k to bin m is a difference.
    freq_walk = np.concatenate(
        [np.zeros((batch, 1, frames)), np.cumsum((freq_step[:, 1:] + freq_step[:, :-1]) / 2, axis=1)], axis=1
    )
    significant = mag > peak * 10 ** (-tolerance_db / 20)
    sources = reference_phase_sources(mag)
    rows = np.arange(batch)[:, None]
    phase = np.zeros_like(mag)
    previous = np.zeros((batch, bins))
    known = None if known_phase is None else np.asarray(known_phase, np.float64).reshape(batch, bins, -1)
    for frame in range(frames):
        if known is not None and frame < known.shape[-1]:
            # stored in the window-centre convention, like every other frame here
            previous = known[:, :, frame] - math.pi * (bin_index[:, :, 0] % 2)
            phase[:, :, frame] = previous
            continue
        start = previous + (time_step[:, :, frame - 1] + time_step[:, :, frame]) / 2 if frame else previous
        source = sources[:, :, frame]
        walk = freq_walk[:, :, frame]
        current = start[rows, source] + walk - walk[rows, source]
        previous = np.where(significant[:, :, frame], current, 0.0)
        phase[:, :, frame] = previous
    # Back to torch's convention (phase referenced to the frame start): add π·m.
    phase = np.remainder(phase + math.pi * (bin_index % 2), 2 * math.pi)
    return phase.reshape(shape)
