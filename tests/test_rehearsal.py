"""The rehearsal engine (``--model none``) through the whole station: one beat grid across every
join, from the start (seed material on air at once).

Each render pays the real vocoder (about 1 s a clip on an idle CPU, more on a busy one) for ≥ 21
clips, so the combinations are few and chosen to cover every tempo (99.5, 128, 174 BPM), every
crossfade (0, 0.5, 1.3 s) and loops of 1, 3 and 4 bars, synthesised and from audio files; the
buffer's joins at every tempo × crossfade are in test_timeline.py without the vocoder.

Tolerance: every kick onset within 10 ms of the grid line ``n × beat`` from the timeline's
origin (the vocoder's phase reconstruction moves a kick's attack by a few ms; the old station was
off by 31–500 ms after its first join).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from riffradio.app.cli import main
from riffradio.playlist import load_playlist
from riffradio.sinks.file import FileSink
from riffradio.spectrogram.audio_io import read_audio
from riffradio.spectrogram.seeds import load_seed_loop
from riffradio.app.application import StationApp
from riffradio.station.station import SAMPLE_RATE_HZ
from tests.beats import grid_deviations_seconds, kick_onsets_seconds

GRID_TOLERANCE_SECONDS = 0.010
CLIP_SECONDS = 225_792 / SAMPLE_RATE_HZ


def _playlist(directory: Path, seed_image: str, crossfade_seconds: float) -> Path:
    path = directory / "rehearsal.yaml"
    path.write_text(
        f"station: {{name: Rehearsal, model: none, crossfade_seconds: {crossfade_seconds}, lookahead_clips: 2}}\n"
        f"riffs:\n  - {{prompt: kicks, clips: 100, seed_image: {seed_image}}}\n"
    )
    return path


def _render(playlist_path: Path, out: Path, seconds: float) -> None:
    app = StationApp(load_playlist(playlist_path), sinks=[FileSink(out, cue_path=out.with_suffix(".cue.jsonl"))],
                     realtime=False, control=False)  # fmt: skip
    asyncio.run(app.run(seconds))
    assert app.station.buffer.underruns == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bpm", "crossfade_seconds", "bars", "source"),
    [(99.5, 0.0, 1, "synthesis"), (128.0, 0.5, 4, "audio file"), (174.0, 1.3, 3, "audio file")],
)
def test_a_rehearsal_render_keeps_every_kick_on_one_grid_across_20_joins(
    tmp_path: Path, bpm: float, crossfade_seconds: float, bars: int, source: str
) -> None:
    spec = f"bpm={bpm:g},bars={bars},pattern=four_on_the_floor"
    if source == "audio file":  # the loop as a file, written by the CLI; the whole file is the loop
        loop_file = tmp_path / "loop.wav"
        assert main(["seed-image", "--bpm", f"{bpm:g}", "--bars", str(bars), "--pattern", "four_on_the_floor",
                     "-o", str(tmp_path / "loop.png"), "--audio-out", str(loop_file)]) == 0  # fmt: skip
        seed_image, reference = f"{{file: loop.wav, bpm: {bpm:g}}}", f"bpm={bpm:g},file={loop_file}"
    else:
        seed_image, reference = "{" + spec.replace("=", ": ").replace(",", ", ") + "}", spec
    loop = load_seed_loop(reference)
    assert loop.bars == bars
    hop_seconds = CLIP_SECONDS - crossfade_seconds
    seconds = 20 * hop_seconds + CLIP_SECONDS + 0.2  # 21 clips: 20 joins
    out = tmp_path / "render.wav"
    _render(_playlist(tmp_path, seed_image, crossfade_seconds), out, seconds)

    cue = [json.loads(line) for line in out.with_suffix(".cue.jsonl").read_text().splitlines()]
    assert len(cue) >= 21 and not any(entry["fallback"] for entry in cue)
    # one hop apart: a cue line is written when a crossfade is half done, at a block's start
    heard = [entry["time_seconds"] for entry in cue[1:21]]
    assert heard == pytest.approx([k * hop_seconds + crossfade_seconds / 2 for k in range(1, 21)], abs=0.05)
    audio = read_audio(out, SAMPLE_RATE_HZ, mono=True)[0]
    onsets = kick_onsets_seconds(audio, SAMPLE_RATE_HZ)
    beat = loop.beat_samples / SAMPLE_RATE_HZ
    deviations = grid_deviations_seconds(onsets, beat)
    assert np.abs(deviations).max() <= GRID_TOLERANCE_SECONDS, np.round(deviations * 1000, 1)
    # a kick on (nearly) every beat: the first, at 0, has no quiet before it, and a crossfade of
    # two vocodings of the same kick can cancel one below the detector's threshold
    beats = int(audio.size / SAMPLE_RATE_HZ / beat)
    assert len(set(np.round(onsets / beat).astype(int))) >= 0.97 * beats, (len(onsets), beats)


@pytest.mark.slow
def test_on_air_at_once_with_the_seed_material(tmp_path: Path) -> None:
    """In real time the station plays the vocoded seed window before any clip is generated,
    loudness-normalised, marked as fallback in the cue sheet; generated clips follow on the grid."""
    out = tmp_path / "live.wav"
    app = StationApp(load_playlist(_playlist(tmp_path, "{bpm: 128, pattern: four_on_the_floor}", 0.5)),
                     sinks=[FileSink(out, cue_path=out.with_suffix(".cue.jsonl"))], control=False)  # fmt: skip
    station = app.station
    on_air: list[tuple[float, int]] = []
    station.add_on_air_listener(
        lambda: on_air.append((time.monotonic(), station.producer.clips_generated if station.producer else -1))
    )
    asyncio.run(app.run(6.0))
    assert on_air and on_air[0][1] == 0  # on air before the first generated clip
    cue = [json.loads(line) for line in out.with_suffix(".cue.jsonl").read_text().splitlines()]
    assert cue[0]["clip_index"] == -1 and cue[0]["fallback"] and cue[0]["time_seconds"] == 0.0
    audio = read_audio(out, SAMPLE_RATE_HZ, mono=True)[0]
    assert audio.size == pytest.approx(6.0 * SAMPLE_RATE_HZ, abs=4096)
    first_second = audio[:SAMPLE_RATE_HZ]
    assert np.sqrt(np.mean(first_second**2)) > 0.05  # music from the first second: not silence
    beat = load_seed_loop("bpm=128,pattern=four_on_the_floor").beat_samples / SAMPLE_RATE_HZ
    deviations = grid_deviations_seconds(kick_onsets_seconds(audio, SAMPLE_RATE_HZ), beat)
    assert np.abs(deviations).max() <= GRID_TOLERANCE_SECONDS, np.round(deviations * 1000, 1)
