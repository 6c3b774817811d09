"""Benchmark of the loudness stage on recorded music: what is played, and what the normaliser costs.

    python3 bench/loudness.py

For each excerpt of tests/music.py (planetblupi's recorded tracks): its spectrogram image is
vocoded by the station's vocoder, copied to the two output channels, normalised to −14 LUFS the
plain way (the clip's own loudness) and the limiter-aware way (the gain at which the clip *after*
the −1 dBTP limiter meets the target), then played through the station's limiter. Prints the
clip's peak-to-loudness ratio, both gains, the loudness after the limiter (pyloudnorm) and the
CPU seconds each normalisation took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riffradio.spectrogram.image import audio_to_image  # noqa: E402
from riffradio.spectrogram.vocoder import Vocoder  # noqa: E402
from riffradio.station.buffer import match_channels  # noqa: E402
from riffradio.station.loudness import (  # noqa: E402
    TruePeakLimiter,
    integrated_loudness_lufs,
    normalise_clip,
    true_peak_dbtp,
)
from tests.music import EXCERPTS, music_excerpt  # noqa: E402

RATE = 44_100
TARGET_LUFS = -14.0
CEILING_DBTP = -1.0


def played(audio: np.ndarray) -> np.ndarray:
    """``audio`` through the station's limiter in 2048-frame blocks, its delay taken off."""
    limiter = TruePeakLimiter(audio.shape[0], RATE, CEILING_DBTP)
    delay = limiter.lookahead + limiter.future
    padded = np.concatenate([audio, np.zeros((audio.shape[0], delay), np.float32)], axis=1)
    return np.concatenate([limiter.process(padded[:, i : i + 2048], RATE) for i in range(0, padded.shape[1], 2048)], axis=1)[:, delay:]


def main() -> None:
    vocoder = Vocoder()
    normalise_clip(np.zeros((2, RATE), np.float32), RATE, ceiling_dbtp=CEILING_DBTP)  # imports, not timed
    print("excerpt            PLR dB  plain gain → played LUFS (CPU s)  limiter-aware gain → played LUFS (CPU s)")
    for track, start in EXCERPTS:
        audio = match_channels(vocoder.image_to_audio(audio_to_image(music_excerpt(track, start), RATE)), 2)
        plr_db = true_peak_dbtp(audio, 8) - integrated_loudness_lufs(audio, RATE)
        row = f"{track} @{start:5.0f} s  {plr_db:6.1f}"
        for ceiling in (None, CEILING_DBTP):
            started = time.process_time()
            result = normalise_clip(audio, RATE, TARGET_LUFS, ceiling_dbtp=ceiling)
            seconds = time.process_time() - started
            row += f"  {result.gain_db:+6.2f} dB → {integrated_loudness_lufs(played(result.audio), RATE):6.2f} ({seconds:.2f})"
        print(row)


if __name__ == "__main__":
    main()
