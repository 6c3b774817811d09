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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from riffradio.app.cli import main
from riffradio.core.timeline import overlap_samples
from riffradio.core.types import RiffRequest
from riffradio.engine.continuation import LATENT_COLUMN_PIXELS
from riffradio.engine.rehearsal import RehearsalEngine
from riffradio.errors import Cancelled, RiffradioError
from riffradio.playlist import load_playlist
from riffradio.sinks.file import FileSink
from riffradio.spectrogram.audio_io import read_audio
from riffradio.spectrogram.seeds import load_seed_loop, load_seed_window
from riffradio.app.application import StationApp
from riffradio.station.station import SAMPLE_RATE_HZ
from tests.beats import grid_deviations_seconds, kick_onsets_seconds

GRID_TOLERANCE_SECONDS = 0.010
CLIP_SAMPLES = 225_792
CLIP_SECONDS = CLIP_SAMPLES / SAMPLE_RATE_HZ
COLUMN_SAMPLES = LATENT_COLUMN_PIXELS * 441  # a latent column: 80 ms


def _playlist(directory: Path, seed_image: str, crossfade_seconds: float, continuation_seconds: float = 0.0,
              lookahead_clips: int = 2) -> Path:  # fmt: skip
    path = directory / "rehearsal.yaml"
    path.write_text(
        f"station: {{name: Rehearsal, model: none, crossfade_seconds: {crossfade_seconds}, "
        f"continuation_seconds: {continuation_seconds}, lookahead_clips: {lookahead_clips}}}\n"
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
    ("bpm", "crossfade_seconds", "bars", "source", "continuation_seconds"),
    [
        (99.5, 0.0, 1, "synthesis", 0.0), (128.0, 0.5, 4, "audio file", 0.0), (174.0, 1.3, 3, "audio file", 0.0),
        # each clip continuing the last (the kept tail, phase-continuous joins), the crossfade inside
        (99.5, 0.5, 1, "synthesis", 1.28), (128.0, 0.5, 2, "audio file", 1.28), (174.0, 0.5, 4, "synthesis", 1.28),
    ],
)  # fmt: skip
def test_a_rehearsal_render_keeps_every_kick_on_one_grid_across_20_joins(
    tmp_path: Path, bpm: float, crossfade_seconds: float, bars: int, source: str, continuation_seconds: float
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
    overlap = overlap_samples(crossfade_seconds, continuation_seconds, SAMPLE_RATE_HZ, CLIP_SAMPLES, COLUMN_SAMPLES)
    hop_seconds = CLIP_SECONDS - overlap / SAMPLE_RATE_HZ
    seconds = 20 * hop_seconds + CLIP_SECONDS + 0.2  # 21 clips: 20 joins
    out = tmp_path / "render.wav"
    _render(_playlist(tmp_path, seed_image, crossfade_seconds, continuation_seconds), out, seconds)

    cue = [json.loads(line) for line in out.with_suffix(".cue.jsonl").read_text().splitlines()]
    assert len(cue) >= 21 and not any(entry["fallback"] for entry in cue)
    # every clip after the first keeps the whole overlap of the one before (none without continuation)
    assert [entry["continuation_seconds"] for entry in cue[:21]] == pytest.approx(
        [0.0] + [overlap / SAMPLE_RATE_HZ if continuation_seconds else 0.0] * 20
    )
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


def test_a_continued_rehearsal_clip_is_the_previous_tail_then_the_seed_window() -> None:
    """Continuation in pixels: the first K latent columns (8 K image columns) are the previous
    clip's last, the rest the seed window at the clip's place; continuation 0 is today's clip."""
    engine = RehearsalEngine("cpu")
    old, new = "bpm=128,pattern=four_on_the_floor", "bpm=128,pattern=breakbeat"
    first = engine.riff(RiffRequest("kicks", "kicks", 1, 1, seed_image=old))
    window = np.asarray(load_seed_window(old, 0, loop_scale=True).convert("RGB"))
    assert isinstance(first.latents, np.ndarray) and first.latents.dtype == np.uint8 and first.latents.shape == (512, 512, 3)
    assert np.array_equal(np.asarray(first.image), window) and np.array_equal(first.latents, window)

    start = CLIP_SAMPLES - 16 * COLUMN_SAMPLES  # right after the first clip, 1.28 s kept
    request = RiffRequest("kicks", "kicks", 1, 1, seed_image=new, continuation_seconds=1.28, seed_window_start_samples=start)
    second = engine.riff(request, previous_latents=first.latents)
    pixels, seed_window = np.asarray(second.image), np.asarray(load_seed_window(new, start, loop_scale=True).convert("RGB"))
    assert np.array_equal(pixels, second.latents)
    assert np.array_equal(pixels[:, :128], window[:, -128:])  # 16 latent columns of the previous clip
    assert np.array_equal(pixels[:, 128:], seed_window[:, 128:])  # then the new seed loop's window
    assert not np.array_equal(pixels[:, :128], seed_window[:, :128])  # the two loops differ there

    # continuation 0 or no previous clip: the seed window bit for bit, as before continuation
    for alone, previous in ((replace(request, continuation_seconds=0.0), first.latents), (request, None)):
        assert np.array_equal(np.asarray(engine.riff(alone, previous_latents=previous).image), seed_window)
    # a batch is its requests one by one; 0.5 s rounds to 6 latent columns (48 px)
    half = replace(request, continuation_seconds=0.5)
    batch = engine.riff_batch([request, half], previous_latents=[first.latents, first.latents])
    assert np.array_equal(np.asarray(batch[0].image), pixels)
    assert np.array_equal(np.asarray(batch[1].image)[:, :48], window[:, -48:])
    assert np.array_equal(np.asarray(batch[1].image)[:, 48:], seed_window[:, 48:])
    with pytest.raises(ValueError, match="1 previous latents for 2 requests"):
        engine.riff_batch([request, half], previous_latents=[first.latents])
    with pytest.raises(RiffradioError, match="continuation_seconds must be between 0 and 2.56, got 3"):
        engine.riff(replace(request, continuation_seconds=3.0), previous_latents=first.latents)
    with pytest.raises(Cancelled):
        engine.riff(request, should_cancel=lambda: True, previous_latents=first.latents)


@pytest.mark.slow
def test_a_live_seed_change_bends_the_music_it_does_not_restart_it(tmp_path: Path) -> None:
    """Through the real station: the first clip after a live seed change (another loop) starts
    with the tail of the clip playing when it came, then the new loop's window on the grid."""
    old, new = "bpm=128,pattern=four_on_the_floor", "bpm=128,pattern=breakbeat"
    out = tmp_path / "bend.wav"
    path = _playlist(tmp_path, "{bpm: 128, pattern: four_on_the_floor}", 0.5, 1.28, lookahead_clips=1)
    app = StationApp(load_playlist(path), sinks=[FileSink(out, cue_path=out.with_suffix(".cue.jsonl"))],
                     realtime=False, control=False)  # fmt: skip
    station = app.station
    seen: dict[str, Any] = {}

    def dj(block: Any) -> None:
        if "anchor" in seen or block.start_frame < 6 * SAMPLE_RATE_HZ:
            return
        seen["anchor"] = station.buffer.playing  # the clip heard when the change comes (clip 1)
        station.state.set_seed_image(new)
        version = station.state.snapshot().version
        # Hold the audio clock here (an offline render waits for clips anyway) until the new
        # state's clip is queued, so the clip playing is still the one it continues.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            made = [clip for clip in station.buffer.pending() if clip.state_version >= version]
            if made:
                seen["bent"] = made[0]
                return
            station.buffer.wait_for_change(0.05)

    station.add_block_listener(dj)
    asyncio.run(app.run(14.0))
    anchor, bent = seen["anchor"], seen.get("bent")
    assert bent is not None, "no clip of the new seed was made"
    assert anchor.request.seed_image == old and bent.request.seed_image == new
    # on the timeline right after the clip it continues, keeping the whole 1.28 s overlap
    assert bent.placement.start_samples == anchor.placement.next_start_samples
    assert bent.request.continuation_seconds == pytest.approx(1.28)
    pixels, previous = np.asarray(bent.image), np.asarray(anchor.image)
    seed_window = np.asarray(load_seed_window(new, bent.request.seed_window_start_samples, loop_scale=True).convert("RGB"))
    assert np.array_equal(pixels[:, :128], previous[:, -128:])
    assert np.array_equal(pixels[:, 128:], seed_window[:, 128:])
    assert not np.array_equal(pixels[:, :128], seed_window[:, :128])  # not a restart on the new loop
    # the clips' audio agrees inside the overlap: the new clip's phase continued the old one's there
    shared = 16 * COLUMN_SAMPLES
    middle = slice(shared // 2 - 11025, shared // 2 + 11025)
    correlation = np.corrcoef(anchor.audio[0, -shared:][middle], bent.audio[0, :shared][middle])[0, 1]
    assert correlation > 0.9, correlation
    cue = [json.loads(line) for line in out.with_suffix(".cue.jsonl").read_text().splitlines()]
    heard = [entry["clip_index"] for entry in cue]
    assert heard[heard.index(anchor.index) + 1] == bent.index  # heard next, no fallback between
    assert not any(entry["fallback"] for entry in cue)
