"""Kick onsets in rendered audio and their distance to a beat grid (for the timing tests).

Made for the synthetic ``four_on_the_floor`` loops of :mod:`riffradio.spectrogram.seeds`: one
kick per beat, a 45–150 Hz sweep that decays in about 0.3 s, so the low band is quiet again
before the next beat at any tempo up to 240 BPM.
"""

from __future__ import annotations

import numpy as np

_FRAME_SECONDS = 0.001


def _frame_samples(sample_rate_hz: int) -> int:
    return max(1, int(round(_FRAME_SECONDS * sample_rate_hz)))


def low_band_envelope(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Energy below 150 Hz in frames of about 1 ms, shape ``(frames,)``: the squared Hilbert
    envelope, so a 45 Hz kick has no ripple at twice its pitch (zero-phase filter: no delay)."""
    from scipy.signal import butter, hilbert, sosfiltfilt

    mono = np.asarray(audio, dtype=np.float64)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    low = sosfiltfilt(butter(4, 150, btype="lowpass", fs=sample_rate_hz, output="sos"), mono)
    frame = _frame_samples(sample_rate_hz)
    frames = low.size // frame
    envelope = np.abs(hilbert(low)) ** 2
    return envelope[: frames * frame].reshape(frames, frame).mean(axis=1)


def kick_onsets_seconds(
    audio: np.ndarray,
    sample_rate_hz: int,
    rise: float = 0.3,
    quiet: float = 0.08,
    quiet_seconds: float = 0.04,
    attack: float = 0.25,
    attack_seconds: float = 0.05,
) -> np.ndarray:
    """Times (s) where kicks start: one per rise of the low band through ``rise`` × its loudest
    frame after ``quiet_seconds`` below ``quiet`` × that.

    The time is where that kick's own attack crosses ``attack`` × its peak (the loudest frame in
    the ``attack_seconds`` after the rise), found by walking back from the rise: a kick made
    quieter (two renderings crossfading can partly cancel) then still starts where it starts,
    not where it happens to reach a global level.
    """
    energy = low_band_envelope(audio, sample_rate_hz)
    peak = float(np.percentile(energy, 99.5)) if energy.size else 0.0
    if peak <= 0:
        return np.zeros(0)
    frame_seconds = _frame_samples(sample_rate_hz) / sample_rate_hz
    quiet_frames = int(round(quiet_seconds / frame_seconds))
    attack_frames = int(round(attack_seconds / frame_seconds))
    below = energy < quiet * peak
    onsets: list[float] = []
    run = 0
    armed = False
    for index, value in enumerate(energy):
        if below[index]:
            run += 1
            armed = armed or run >= quiet_frames
            continue
        run = 0
        if armed and value >= rise * peak:
            level = attack * float(energy[index : index + attack_frames].max())
            start = index
            while start > 0 and index - start < attack_frames and energy[start - 1] >= level:
                start -= 1
            # interpolate the crossing between the frame before and this one, frame centres
            before, after = (energy[start - 1], energy[start]) if start > 0 else (0.0, energy[start])
            fraction = (level - before) / max(after - before, 1e-30)
            onsets.append((start - 1 + min(max(fraction, 0.0), 1.0) + 0.5) * frame_seconds)
            armed = False
    return np.asarray(onsets)


def grid_deviations_seconds(onsets_seconds: np.ndarray, beat_seconds: float, origin_seconds: float = 0.0) -> np.ndarray:
    """Signed distance (s) of each onset to the nearest line of the grid ``origin + n × beat``."""
    beats = (np.asarray(onsets_seconds) - origin_seconds) / beat_seconds
    return (beats - np.round(beats)) * beat_seconds
