"""Drill: a live state that makes no clip is rolled back, and nothing goes silent meanwhile.

A real station (tiny random-weight model, WAV recording, OSC) on an engine that runs out of GPU
memory for more than 100 steps, as a small GPU does: ``/riffradio/steps i 300`` passes every
check (the knob table allows up to 500 steps), then every clip fails. After
three failures in a row the station puts back the last state that made a clip, logs it, and
tells its subscribers (``/riffradio/rollback s REASON`` and the state); the recording never goes
silent (fallback audio plays the last clip). Prints clips lost, seconds to recover, dead air.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from riffradio.core.types import RiffRequest
from servers import OscListener, free_udp_port, join_generate_threads

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("oscsend") is None, reason="needs liblo-tools (tests/setup-debian.sh)"),
]
WAIT_SECONDS = 900.0  # a tiny-model clip took 5-35 s on a loaded 2-core machine, 394 s on an overloaded one


class SmallGpuEngine:
    """The real engine on a GPU too small for more than ``max_steps`` steps: such a riff fails
    the way CUDA does (RuntimeError: out of memory), everything else is the real engine."""

    def __init__(self, engine: Any, max_steps: int) -> None:
        self.engine, self.max_steps, self.device = engine, max_steps, engine.device
        self.check_request = engine.check_request
        self.failures = 0

    def riff(self, request: RiffRequest, should_cancel: Any = None) -> Any:
        if request.num_inference_steps > self.max_steps:
            self.failures += 1
            raise RuntimeError(f"CUDA out of memory: {request.num_inference_steps} steps do not fit this GPU")
        return self.engine.riff(request, should_cancel)


def test_a_live_state_that_makes_no_clip_is_rolled_back(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from riffradio.app.application import StationApp
    from riffradio.engine.pipeline import RiffEngine
    from riffradio.playlist.loader import load_playlist
    from riffradio.station.producer import ROLLBACK_AFTER_FAILED_CLIPS

    caplog.set_level(logging.INFO, logger="riffradio")
    port = free_udp_port()
    recording = tmp_path / "live.wav"
    (tmp_path / "station.yaml").write_text(
        f"""station: {{name: Rollback drill, steps: 4, crossfade_seconds: 0.25, lookahead_clips: 1}}
outputs:
  - {{type: file, path: {recording}}}
control:
  osc: {{host: 127.0.0.1, port: {port}}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, clips: 8}}
"""
    )
    engine = SmallGpuEngine(RiffEngine.load(str(tiny_model_dir), device="cpu"), max_steps=100)
    app = StationApp(load_playlist(tmp_path / "station.yaml"), engine=engine, worker_grace_seconds=0.0)
    station = app.station
    figures: dict[str, float] = {}

    async def body() -> None:
        on_air = asyncio.Event()
        station.add_on_air_listener(on_air.set)
        task = asyncio.create_task(app.run())
        listener = OscListener()
        heard = listener.heard

        async def until(predicate: Any, what: str, seconds: float = WAIT_SECONDS) -> None:
            deadline = time.monotonic() + seconds
            while not predicate():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                assert not task.done(), f"the station stopped: {task}"
                await asyncio.sleep(0.05)

        collector = asyncio.create_task(listener.collect())
        try:
            await asyncio.wait_for(on_air.wait(), WAIT_SECONDS)
            from pythonosc.osc_message_builder import OscMessageBuilder

            def osc(address: str, *args: tuple[str, Any]) -> bytes:
                builder = OscMessageBuilder(address)
                for tag, value in args:
                    builder.add_arg(value, tag)
                return builder.build().dgram

            await listener.send(osc("/riffradio/subscribe"), port)
            await until(lambda: any(a == "/riffradio/state" for a, _ in heard), "the subscription", 30)
            generated = station.producer.clips_generated
            sent = time.monotonic()
            await listener.send(osc("/riffradio/steps", ("i", 300)), port)
            await until(lambda: ("/riffradio/steps", [300]) in heard, "the steps echo", 30)
            await until(lambda: any(a == "/riffradio/rollback" for a, _ in heard), "the rollback")
            figures["rollback_seconds"] = time.monotonic() - sent
            assert station.state.snapshot().knobs.steps is None  # the state before: the playlist's steps
            await until(lambda: station.producer.clips_generated > generated, "a clip after the rollback")
            figures["recover_seconds"] = time.monotonic() - sent
            figures["clips_lost"] = engine.failures
            # the subscriber got the state after the rollback notice, without the bad steps
            after = heard[[a for a, _ in heard].index("/riffradio/rollback") :]
            assert any(a == "/riffradio/state" for a, _ in after)
            assert ("/riffradio/steps", [300]) not in after
        finally:
            collector.cancel()
            listener.close()
            app.stop()
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(body())
    finally:
        join_generate_threads()
    assert figures["clips_lost"] == ROLLBACK_AFTER_FAILED_CLIPS
    lines = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(lines) == 1 and "CUDA out of memory" in lines[0] and "knobs" in lines[0], lines
    # dead air: 0.5 s windows of the recording below -60 dBFS (shorter ones find the rests between
    # the seed loop's drum hits, which the station plays while its first clip is made)
    audio, rate = soundfile.read(recording, always_2d=True)
    window = rate // 2
    usable = len(audio) // window * window
    rms = np.sqrt((audio[:usable].mean(axis=1).reshape(-1, window) ** 2).mean(axis=1))
    dead_air_seconds = float((rms < 1e-3).sum()) / 2
    assert dead_air_seconds == 0.0
    print(
        f"rollback drill: {figures['clips_lost']:.0f} clips lost, rolled back after {figures['rollback_seconds']:.1f} s, "
        f"a clip again after {figures['recover_seconds']:.1f} s, dead air {dead_air_seconds:.1f} s "
        f"in {len(audio) / rate:.1f} s recorded"
    )
