"""Loudness of what is played: a stereo render of the real station, measured by pyloudnorm and ffmpeg.

The engine is a stand-in for a perfect model: it hands the station spectrogram images of recorded
music (planetblupi's tracks, see tests/music.py), so everything after the engine — the vocoder,
the loudness normaliser, the crossfading buffer, the true-peak limiter and the file output — is
the station's own. The vocoder makes mono clips; the station plays them in stereo, and BS.1770
sums the power of both channels, so the measurement must be of the two-channel stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile

from riffradio.core.types import RiffRequest, RiffResult
from riffradio.playlist import load_playlist
from riffradio.spectrogram.image import audio_to_image
from riffradio.app.application import StationApp
from riffradio.core.defaults import SAMPLE_RATE_HZ
from tests.music import EXCERPTS, music_excerpt

TARGET_LUFS = -14.0

PLAYLIST = """\
station: {{name: Loudness, steps: 2, crossfade_seconds: 0.5, lookahead_clips: 1, loudness_lufs: {target}}}
outputs:
  - {{type: file, path: "{recording}"}}
riffs:
  - {{prompt: recorded music, clips: 100}}
"""


class RecordedMusicEngine:
    """Answers clip k with the spectrogram image of recorded excerpt k (cycling through ``EXCERPTS``)."""

    device = "cpu"

    def __init__(self) -> None:
        self.images = [audio_to_image(music_excerpt(track, start), SAMPLE_RATE_HZ) for track, start in EXCERPTS]
        self.calls = 0

    def riff(self, request: RiffRequest, should_cancel: Callable[[], bool] | None = None) -> RiffResult:
        image = self.images[self.calls % len(self.images)]
        self.calls += 1
        return RiffResult(request=request, image=image)


def _ffmpeg_loudness(path: Path) -> dict[str, float]:
    """ffmpeg's own measurement: ebur128 (integrated, true peak) and loudnorm's analysis pass."""
    ebur = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    summary = ebur[ebur.rindex("Summary:") :]
    loudnorm = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "loudnorm=print_format=json", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    analysis = json.loads(loudnorm[loudnorm.rindex("{") :])
    return {
        "ebur128_lufs": float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),  # type: ignore[union-attr]
        "ebur128_true_peak_dbtp": float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1)),  # type: ignore[union-attr]
        "loudnorm_lufs": float(analysis["input_i"]),
        "loudnorm_true_peak_dbtp": float(analysis["input_tp"]),
    }


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (tests/setup-debian.sh)")
def test_a_stereo_render_of_recorded_music_is_on_target(tmp_path: Path) -> None:
    recording = tmp_path / "render.wav"
    playlist_path = tmp_path / "station.yaml"
    playlist_path.write_text(PLAYLIST.format(recording=recording, target=TARGET_LUFS))
    engine = RecordedMusicEngine()
    app = StationApp(load_playlist(playlist_path), engine=engine, realtime=False, control=False)
    asyncio.run(app.run(seconds=25.0))

    audio, rate = soundfile.read(recording, dtype="float64")
    assert rate == SAMPLE_RATE_HZ and audio.shape[1] == 2
    meter = pyloudnorm.Meter(rate)
    stereo_lufs = meter.integrated_loudness(audio)
    assert abs(stereo_lufs - TARGET_LUFS) <= 1.0, stereo_lufs
    # the mono clips are played in both channels: each alone is 3 dB under the stereo figure
    assert meter.integrated_loudness(audio[:, 0]) == pytest.approx(stereo_lufs - 3.01, abs=0.1)

    measured: dict[str, Any] = _ffmpeg_loudness(recording)
    assert abs(measured["ebur128_lufs"] - TARGET_LUFS) <= 1.0, measured
    assert abs(measured["loudnorm_lufs"] - TARGET_LUFS) <= 1.0, measured
    assert measured["ebur128_true_peak_dbtp"] <= -1.0, measured
    assert measured["loudnorm_true_peak_dbtp"] <= -1.0, measured

    # each clip as heard (from the middle of one crossfade to the middle of the next, the cue
    # sheet's times) is on target, and consecutive clips are within 1 LU of each other
    cue = [json.loads(line) for line in recording.with_suffix(".cue.jsonl").read_text().splitlines()]
    assert len(cue) >= 5 and engine.calls >= len(cue)
    starts = [entry["time_seconds"] for entry in cue] + [len(audio) / rate]
    clip_lufs = [
        meter.integrated_loudness(audio[int(start * rate) : int(end * rate)])
        for start, end in zip(starts[:-1], starts[1:])
        if end - start >= 3.0  # the last, cut off by the end of the render, only if long enough to measure
    ]
    print(f"stereo render: pyloudnorm {stereo_lufs:.2f} LUFS, {measured}, clips {np.round(clip_lufs, 2).tolist()}")
    assert all(abs(lufs - TARGET_LUFS) <= 1.0 for lufs in clip_lufs), clip_lufs
    assert max(abs(np.diff(clip_lufs))) <= 1.0, clip_lufs
