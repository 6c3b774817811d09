"""Excerpts of real recorded music for tests and benchmarks: planetblupi's OGG tracks.

Debian's ``planetblupi-music-ogg`` package (installed by tests/setup-debian.sh) ships ten
10–30 minute stereo tracks at 44.1 kHz under ``/usr/share/planetblupi/music``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MUSIC_DIR = Path("/usr/share/planetblupi/music")

# (track, start seconds): varied material, used by the tests and bench/vocoder.py.
EXCERPTS: tuple[tuple[str, float], ...] = (
    ("music001.ogg", 30.0),
    ("music003.ogg", 60.0),
    ("music005.ogg", 100.0),
    ("music007.ogg", 20.0),
    ("music009.ogg", 200.0),
)

# Two more excerpts of every track (45 s and 300 s in), for a wider look (bench/vocoder.py
# --more-excerpts); chosen by position only, not by how well they decode.
MORE_EXCERPTS: tuple[tuple[str, float], ...] = tuple(
    (f"music{number:03d}.ogg", start) for number in range(10) for start in (45.0, 300.0)
)


def music_path(track: str) -> Path:
    """Path of one track; raises FileNotFoundError naming the package when it is missing."""
    path = MUSIC_DIR / track
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install the Debian package planetblupi-music-ogg")
    return path


def music_excerpt(
    track: str, start_seconds: float, duration_seconds: float = 5.12, mono: bool = True
) -> np.ndarray:
    """float32 ``(channels, samples)`` at 44 100 Hz from ``track``, starting at ``start_seconds``."""
    from riffradio.spectrogram.audio_io import read_audio

    return read_audio(
        music_path(track), 44_100, mono=mono, start_seconds=start_seconds, duration_seconds=duration_seconds
    )
