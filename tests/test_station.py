"""The whole station on the tiny random-weight model, through the commands and objects users run.

Each test pays for real generation (engine + vocoder, several seconds a clip on a loaded CPU), so
they are few and each checks several things.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile

from riffradio.app.application import StationApp
from riffradio.core.types import RiffRequest, RiffResult
from riffradio.playlist import load_playlist
from riffradio.sinks.file import FileSink
from riffradio.station.consumer import DEFAULT_BLOCK_FRAMES
from riffradio.station.plan import plan_clips
from riffradio.station.state import StateSnapshot
from riffradio.core.defaults import SAMPLE_RATE_HZ

CLIP_FRAMES = 225_792  # 5.12 s at 44.1 kHz, Riffusion's 512-pixel image
BLOCK_SECONDS = DEFAULT_BLOCK_FRAMES / SAMPLE_RATE_HZ

PLAYLIST = """\
station: {{name: Test Station, steps: 4, crossfade_seconds: 0.5, lookahead_clips: {lookahead}}}
outputs:
  - {{type: file, path: "{recording}"}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 2, seed_image: og_beat}}
  - {{prompt: church bells on sunday, clips: 2, denoising: 0.6}}
"""


def _write_playlist(directory: Path, recording: Path, lookahead: int = 2) -> Path:
    path = directory / "station.yaml"
    path.write_text(PLAYLIST.format(recording=recording, lookahead=lookahead))
    return path


def _cue(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _rms_windows(audio: np.ndarray, seconds: float = 0.1) -> np.ndarray:
    size = int(seconds * SAMPLE_RATE_HZ)
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    usable = (len(mono) // size) * size
    return np.sqrt((mono[:usable].reshape(-1, size) ** 2).mean(axis=1))


@pytest.mark.slow
def test_render_30_seconds_matches_the_plan_and_the_cue_sheet(tmp_path: Path, tiny_model_dir: Path) -> None:
    playlist_path = _write_playlist(tmp_path, tmp_path / "unused.flac")
    out = tmp_path / "out" / "render.flac"
    result = subprocess.run(
        [sys.executable, "-m", "riffradio", "render", str(playlist_path), "--model", str(tiny_model_dir),
         "--seconds", "30", "-o", str(out)],
        capture_output=True, text=True, timeout=900, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "render [" in result.stderr and "30.0/30.0 s" in result.stderr  # the progress bar
    assert not (tmp_path / "unused.flac").exists()  # render writes only -o

    audio, rate = soundfile.read(out)
    playlist_loudness_lufs = load_playlist(playlist_path).station.loudness_lufs
    assert rate == SAMPLE_RATE_HZ and audio.shape[1] == 2
    assert abs(len(audio) / rate - 30.0) <= BLOCK_SECONDS
    assert _rms_windows(audio).min() > 1e-3  # never silent
    assert 20 * np.log10(np.abs(audio).max()) <= -0.9  # the true-peak limiter's ceiling (sample peak)
    # the loudness target holds for what is played: both channels (tests/test_loudness_render.py
    # measures recorded music with ffmpeg too)
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) - playlist_loudness_lufs) <= 1.0

    cue = _cue(out.with_suffix(".cue.jsonl"))
    playlist = load_playlist(playlist_path)
    planned = plan_clips(playlist, StateSnapshot(), len(cue))
    fade_frames = int(0.5 * SAMPLE_RATE_HZ)
    assert [entry["clip_index"] for entry in cue] == list(range(len(cue)))
    assert len(cue) == 1 + int((30 * SAMPLE_RATE_HZ - fade_frames / 2) // (CLIP_FRAMES - fade_frames))
    for entry, plan in zip(cue, planned):
        assert not entry["fallback"]  # offline render waits for clips: no underruns
        request = plan.request
        assert (entry["prompt"], entry["to_prompt"], entry["seed"], entry["to_seed"]) == (
            request.start_prompt, request.end_prompt, request.start_seed, request.end_seed,
        )  # fmt: skip
        assert entry["alpha"] == pytest.approx(request.alpha) and entry["title"] == request.title
        # a clip counts as heard from the middle of its crossfade in, sample-exact up to one block
        expected = 0.0 if entry["clip_index"] == 0 else (
            entry["clip_index"] * (CLIP_FRAMES - fade_frames) + fade_frames / 2
        ) / SAMPLE_RATE_HZ  # fmt: skip
        assert abs(entry["time_seconds"] - expected) <= BLOCK_SECONDS + 1e-6
        # the init window starts where the timeline is in the seed loop (og_beat: a 5.12 s loop)
        window_samples = entry["clip_index"] * (CLIP_FRAMES - fade_frames) % CLIP_FRAMES
        assert entry["seed_window_seconds"] == pytest.approx(window_samples / SAMPLE_RATE_HZ, abs=1e-4)
        assert entry["continuation_seconds"] == 0.0


class DelayedEngine:
    """The real engine, made slower than real time by a fixed delay per riff (a slow GPU)."""

    def __init__(self, engine: Any, delay_seconds: float) -> None:
        self.engine = engine
        self.delay_seconds = delay_seconds
        self.device = engine.device

    def riff(self, request: RiffRequest, should_cancel: Callable[[], bool] | None = None) -> RiffResult:
        time.sleep(self.delay_seconds)
        return self.engine.riff(request, should_cancel)


@pytest.mark.slow
def test_a_slow_engine_underruns_but_never_goes_silent_and_a_dj_change_cuts_in(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from riffradio.engine.pipeline import RiffEngine

    recording = tmp_path / "live.wav"
    playlist = load_playlist(_write_playlist(tmp_path, recording, lookahead=1))
    # 5 s a riff on top of the real work: slower than the 4.6 s each clip adds to the stream
    engine = DelayedEngine(RiffEngine.load(str(tiny_model_dir), device="cpu"), delay_seconds=5.0)
    app = StationApp(playlist, engine=engine)
    station = app.station
    on_air: list[float] = []
    station.add_on_air_listener(lambda: on_air.append(time.monotonic()))
    change: dict[str, Any] = {}

    def dj(block: Any) -> None:
        change["last_block"] = (block.start_seconds + block.duration_seconds, time.monotonic())
        if "at" not in change and block.start_seconds >= 0.5:
            # the DJ asks for a new prompt while clip 0 plays (and another may be in the making)
            generating = station.producer.generating if station.producer else None
            change["in_flight"] = generating.index if generating else None
            change["next_index"] = station.producer.position.index if station.producer else None
            station.state.set_prompt("deep house at dawn")
            change["at"] = block.start_seconds
        request = block.now_playing.request
        if "heard" not in change and request is not None and request.end_prompt == "deep house at dawn":
            change["heard"] = block.start_seconds
        if "heard" in change and block.start_seconds >= change["heard"] + 2.0:
            station.stop()

    station.add_block_listener(dj)
    caplog.set_level(logging.INFO)

    async def run_with_guard() -> None:
        asyncio.get_running_loop().call_later(600, station.stop)  # a guard, never the normal end
        await app.run()

    asyncio.run(run_with_guard())
    assert "heard" in change, "the DJ's prompt never became audible"
    played, last_wall = change["last_block"]
    assert played == pytest.approx(station.seconds_played)
    assert last_wall - on_air[0] == pytest.approx(played, abs=1.0)  # a real-time clock, not a render

    # Too slow an engine is heard as fallback audio: the seed material until the first clip (not
    # an underrun: nothing generated was late yet), then repeats of a late clip (underruns).
    assert station.metrics.underruns._value.get() == station.buffer.underruns
    assert station.metrics.fallback_seconds._value.get() > 1.0
    underrun_logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("underrun:")]
    assert len(underrun_logs) == station.buffer.underruns
    assert all("real-time factor" in line for line in underrun_logs)

    audio, _ = soundfile.read(recording)
    assert abs(len(audio) / SAMPLE_RATE_HZ - station.seconds_played) <= BLOCK_SECONDS
    # never silent, seed material and fallback included (0.5 s windows: the seed drum loop's
    # hits are 0.32 s apart, with near-silence between them)
    assert _rms_windows(audio[int(0.1 * SAMPLE_RATE_HZ) :], seconds=0.5).min() > 1e-3
    assert audio[: int(0.5 * SAMPLE_RATE_HZ)].std() > 1e-3  # on air at once: the seed material
    cue = _cue(recording.with_suffix(".cue.jsonl"))
    assert any(entry["fallback"] for entry in cue)
    live = [entry for entry in cue if entry["to_prompt"] == "deep house at dawn"]
    assert live, cue
    # the change was planned next: right after the clip in the making (if any) when it came
    assert live[0]["clip_index"] == change["next_index"]
    if change["in_flight"] is not None:
        # ...and that old-state clip was never heard: abandoned mid-generation (or dropped)
        assert all(entry["clip_index"] != change["in_flight"] for entry in cue)
        assert station.producer is not None and station.producer.clips_dropped >= 1
    assert not live[0]["fallback"]
    # ...and cut in as soon as it was ready: heard within one crossfade of its arrival, long
    # before the fallback loop of the clip playing would have ended
    assert station.producer is not None
    nowplaying = station.nowplaying()
    assert nowplaying["station"] == "Test Station" and nowplaying["underruns"] == station.buffer.underruns
    assert nowplaying["now"]["to_prompt"] == "deep house at dawn"
    assert nowplaying["outputs"][0]["name"] == f"file:{recording}"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tiny model", "rehearsal"])
def test_a_fader_being_moved_is_followed_not_frozen_and_its_final_value_wins(
    tmp_path: Path, tiny_model_dir: Path, engine: str
) -> None:
    """A DJ sweeps the denoising fader (a message every 30 ms) for as long as it takes: clips made
    during the move must be heard (the station follows it instead of abandoning every clip), and
    the value the fader stops at is heard after it. The rehearsal engine makes a clip much faster
    than the timeline plays one (like a GPU): a committed clip must not be replaced by the next
    one before its place comes."""
    import threading

    recording = tmp_path / "sweep.wav"
    model = str(tiny_model_dir) if engine == "tiny model" else "none"
    app = StationApp(load_playlist(_write_playlist(tmp_path, recording, lookahead=1)), model=model)
    station = app.station
    heard: dict[str, Any] = {}
    stop_sweep = threading.Event()
    final_denoising = 0.95

    def dj_moves_the_fader() -> None:
        step = 0
        while not stop_sweep.is_set():
            station.state.set_knob("denoising", 0.40 + (step % 90) / 1000)  # 0.400 … 0.489
            step += 1
            time.sleep(0.03)
        station.state.set_knob("denoising", final_denoising)  # the fader stops

    def listen(block: Any) -> None:
        request = block.now_playing.request
        if block.start_seconds >= 0.5 and "sweep" not in heard:
            heard["sweep"] = block.start_seconds
            threading.Thread(target=dj_moves_the_fader, daemon=True).start()
        if request is None or block.now_playing.fallback:
            return
        if 0.40 <= request.start_denoising < 0.49 and "mid_move" not in heard:
            heard["mid_move"] = block.start_seconds  # a clip made while the fader moved
            stop_sweep.set()
        if request.start_denoising == final_denoising and "final" not in heard:
            heard["final"] = block.start_seconds
        if "final" in heard and block.start_seconds >= heard["final"] + 1.0:
            station.stop()

    station.add_block_listener(listen)

    async def run_with_guard() -> None:
        asyncio.get_running_loop().call_later(300, station.stop)  # a guard, never the normal end
        await app.run()

    asyncio.run(run_with_guard())
    stop_sweep.set()
    assert "mid_move" in heard, "no clip made while the fader moved was ever heard: every one was abandoned"
    assert "final" in heard and heard["final"] > heard["mid_move"]
    assert station.producer is not None and station.producer.clips_committed >= 1
    assert station.metrics.clips_committed._value.get() == station.producer.clips_committed
    assert station.nowplaying()["clips_committed"] == station.producer.clips_committed
    audio, _ = soundfile.read(recording)
    assert _rms_windows(audio[int(0.1 * SAMPLE_RATE_HZ) :], seconds=0.5).min() > 1e-3  # never silent (seed included)


@pytest.mark.slow
def test_sigterm_finalises_a_readable_recording_within_5_seconds(tmp_path: Path, tiny_model_dir: Path) -> None:
    recording = tmp_path / "rec" / "station.flac"
    playlist_path = _write_playlist(tmp_path, recording)
    process = subprocess.Popen(
        [sys.executable, "-m", "riffradio", "play", str(playlist_path), "--model", str(tiny_model_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    try:
        cue_path = recording.with_suffix(".cue.jsonl")
        deadline = time.monotonic() + 600
        while not (cue_path.exists() and cue_path.stat().st_size > 0):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the station never went on air"
            time.sleep(0.2)
        time.sleep(2.5)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    assert took < 5.0, output[-3000:]
    info = soundfile.info(recording)  # finalised: the header knows its length
    assert info.samplerate == SAMPLE_RATE_HZ and 2.0 <= info.duration <= 10.0
    audio, _ = soundfile.read(recording)
    assert len(audio) == info.frames and _rms_windows(audio).max() > 1e-3
    cue = _cue(recording.with_suffix(".cue.jsonl"))
    # on air at once: the seed material first, then the generated clips
    assert cue[0]["clip_index"] == -1 and cue[0]["fallback"] and cue[0]["time_seconds"] == 0.0
    assert "SIGTERM: stopping" in output


def test_station_engine_options_reach_the_loaded_engine(tmp_path: Path, tiny_model_dir: Path) -> None:
    """station.dtype / scheduler from the playlist, --dtype over it, as the station loads the model."""
    path = tmp_path / "engine.yaml"
    path.write_text("station: {dtype: bfloat16, scheduler: ddim}\nriffs:\n  - {prompt: a}\n")
    playlist = load_playlist(path)
    from_playlist = StationApp(playlist, model=str(tiny_model_dir), device="cpu", control=False)
    asyncio.run(from_playlist.load_engine())
    assert from_playlist.engine is not None
    assert str(from_playlist.engine.dtype) == "torch.bfloat16"
    assert type(from_playlist.engine.model.scheduler).__name__ == "DDIMScheduler"
    overridden = StationApp(playlist, model=str(tiny_model_dir), device="cpu", dtype="float32", control=False)
    asyncio.run(overridden.load_engine())
    assert overridden.engine is not None and str(overridden.engine.dtype) == "torch.float32"


def test_render_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    playlist_path = _write_playlist(tmp_path, tmp_path / "unused.flac")
    out = tmp_path / "kept.flac"
    out.write_bytes(b"an earlier render")
    # --log-level after the subcommand works too
    command = [sys.executable, "-m", "riffradio", "render", str(playlist_path), "--seconds", "1", "-o", str(out),
               "--log-level", "WARNING"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"riffradio: error: -o {out}: {out} exists; pass --force to overwrite it"
    assert out.read_bytes() == b"an earlier render"
