"""On air before the model loads: the seed material plays while the engine loads in its thread.

Through the real StationApp (outputs, systemd notifier, station, producer) with the tiny model,
whose real load is held back until the test has heard seed audio on air and seen READY=1 — the
way a real model takes minutes to load on a CPU. Nothing here is timed: each step waits for the
event before it, so a busy 2-core machine only makes the tests slower.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from riffradio.app.application import StationApp
from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.engine.pipeline import RiffEngine
from riffradio.errors import RiffradioError
from riffradio.playlist import load_playlist
from tests.test_station import _cue, _env, _rms_windows
from tests.test_systemd_notify import ManagerSocket

GUARD_SECONDS = 600  # a guard against a hang, never the normal end

PLAYLIST = """\
station: {{name: Slow Start, steps: 3, crossfade_seconds: 0.5, lookahead_clips: 1}}
outputs:
  - {{type: file, path: "{recording}"}}
riffs:
  - {{prompt: jazzy lofi hip hop, clips: 100, seed_image: {{bpm: 128, pattern: four_on_the_floor}}}}
"""


class HeldBackLoad(StationApp):
    """The real StationApp whose real model load waits until the test releases it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.loading = threading.Event()

    def make_engine(self) -> Any:
        self.loading.set()
        self.release.wait(GUARD_SECONDS)
        return super().make_engine()


class OnAirLog:
    """A block listener: what was heard, whether the engine existed then, READY=1 seen."""

    def __init__(self, app: HeldBackLoad, manager: ManagerSocket, seed_seconds: float = 2.0) -> None:
        self.app, self.manager, self.seed_seconds = app, manager, seed_seconds
        self.messages: list[dict[str, str]] = []
        self.blocks: list[tuple[int, int, bool]] = []  # (start frame, clip index, engine there)
        self.ready_before_engine = False

    def seed_heard_and_ready(self) -> bool:
        """Seed audio on air for ``seed_seconds``, READY=1 sent, the load started, and still no engine."""
        if not self.app.loading.is_set():
            return False
        self.messages += self.manager.pending()
        seed_frames = sum(1 for _, index, engine in self.blocks if index == -1 and not engine)
        ready = any(message.get("READY") == "1" for message in self.messages)
        return ready and seed_frames * self.app.station.block_frames >= self.seed_seconds * SAMPLE_RATE_HZ

    def __call__(self, block: Any) -> None:
        producer = self.app.station.producer
        engine = producer is not None and producer.engine is not None
        self.blocks.append((block.start_frame, block.now_playing.clip_index, engine))


def _app(tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch, manager: ManagerSocket) -> HeldBackLoad:
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "slow.yaml"
    path.write_text(PLAYLIST.format(recording=tmp_path / "air.wav"))
    return HeldBackLoad(load_playlist(path), model=model, device="cpu", control=False, operations=True)


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    socket = ManagerSocket(str(tmp_path / "notify"))
    yield socket
    socket.sock.close()


async def _run_with_guard(app: StationApp) -> None:
    asyncio.get_running_loop().call_later(GUARD_SECONDS, app.stop)
    await app.run()


@pytest.mark.slow
def test_on_air_with_the_seed_material_while_the_model_loads_then_generated_clips(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, manager: ManagerSocket
) -> None:
    app = _app(tmp_path, str(tiny_model_dir), monkeypatch, manager)
    heard = OnAirLog(app, manager)

    def listen(block: Any) -> None:
        heard(block)
        if not app.release.is_set() and heard.seed_heard_and_ready():
            heard.ready_before_engine = app.engine is None
            app.release.set()  # the model may load now
        generated = [frame for frame, index, _ in heard.blocks if index >= 0]
        if generated and block.start_frame - generated[0] >= SAMPLE_RATE_HZ:
            app.stop()  # a generated clip has been on air for a second

    app.station.add_block_listener(listen)
    asyncio.run(_run_with_guard(app))

    assert heard.ready_before_engine, "READY=1 and the seed material were not on air before the engine"
    assert isinstance(app.engine, RiffEngine)  # the real tiny model, loaded after the release
    indices = [index for _, index, _ in heard.blocks]
    first_generated = next(i for i, index in enumerate(indices) if index >= 0)
    assert set(indices[:first_generated]) == {-1}  # the seed material until the first generated clip
    assert not any(engine for _, _, engine in heard.blocks[: int(2 * SAMPLE_RATE_HZ) // app.station.block_frames])
    assert all(engine for _, _, engine in heard.blocks[first_generated:])
    assert app.station.buffer.underruns == 0  # repeating the seed while loading is not an underrun
    audio, rate = soundfile.read(tmp_path / "air.wav")
    assert rate == SAMPLE_RATE_HZ and len(audio) == len(heard.blocks) * app.station.block_frames
    # music from the first block, through the load, into the generated clips (0.5 s windows: the
    # seed loop's kicks are 0.47 s apart)
    assert _rms_windows(audio[int(0.1 * SAMPLE_RATE_HZ) :], seconds=0.5).min() > 1e-3
    cue = _cue(tmp_path / "air.cue.jsonl")
    assert cue[0]["clip_index"] == -1 and cue[0]["fallback"] and cue[0]["time_seconds"] == 0.0
    assert any(entry["clip_index"] >= 0 and not entry["fallback"] for entry in cue)
    assert {"STOPPING": "1"} in heard.messages + manager.pending()


@pytest.mark.slow
def test_a_missing_model_found_while_on_air_stops_the_station_with_its_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manager: ManagerSocket
) -> None:
    missing = tmp_path / "weights" / "gone"
    app = _app(tmp_path, str(missing), monkeypatch, manager)
    heard = OnAirLog(app, manager)

    def listen(block: Any) -> None:
        heard(block)
        if not app.release.is_set() and heard.seed_heard_and_ready():
            app.release.set()

    app.station.add_block_listener(listen)
    with pytest.raises(RiffradioError) as raised:
        asyncio.run(_run_with_guard(app))
    assert str(raised.value) == f"model directory {missing} does not exist"
    assert app.release.is_set() and not app.busy
    # nothing recorded is lost: the seed material up to the failure, finalised
    info = soundfile.info(tmp_path / "air.wav")
    assert info.frames == len(heard.blocks) * app.station.block_frames >= 2 * SAMPLE_RATE_HZ
    audio, _ = soundfile.read(tmp_path / "air.wav")
    assert np.sqrt(np.mean(audio**2)) > 1e-3
    assert {"STOPPING": "1"} in heard.messages + manager.pending()


@pytest.mark.slow
def test_a_stop_while_the_model_loads_does_not_wait_for_the_load(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, manager: ManagerSocket
) -> None:
    app = _app(tmp_path, str(tiny_model_dir), monkeypatch, manager)
    heard = OnAirLog(app, manager, seed_seconds=1.0)

    def listen(block: Any) -> None:
        heard(block)
        if heard.seed_heard_and_ready():
            app.stop()  # SIGTERM's handler calls this

    app.station.add_block_listener(listen)
    try:
        asyncio.run(_run_with_guard(app))
        # run returned with the load still held: the CLI leaves with os._exit when busy
        assert app.loading.is_set() and not app.release.is_set() and app.busy and app.engine is None
    finally:
        app.release.set()
    assert soundfile.info(tmp_path / "air.wav").frames == len(heard.blocks) * app.station.block_frames > 0


def test_play_with_a_missing_model_exits_with_the_one_line_error(tmp_path: Path) -> None:
    """`riffradio play --model DIR` with no such directory: on air with the seed material (the load
    fails meanwhile), then exit 1 with one line that names the directory, the recording finalised."""
    missing = tmp_path / "no" / "model"
    path = tmp_path / "slow.yaml"
    path.write_text(PLAYLIST.format(recording=tmp_path / "air.wav"))
    process = subprocess.run(
        [sys.executable, "-m", "riffradio", "play", str(path), "--model", str(missing), "--device", "cpu"],
        capture_output=True, text=True, env=_env(), timeout=GUARD_SECONDS,
    )  # fmt: skip
    assert process.returncode == 1, process.stderr[-3000:]
    errors = [line for line in process.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"riffradio: error: model directory {missing} does not exist"], process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    assert "on air: Slow Start" in process.stderr  # the seed material went out first
    soundfile.info(tmp_path / "air.wav")  # finalised: a readable file
