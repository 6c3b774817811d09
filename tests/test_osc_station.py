"""End to end: a running station (tiny random-weight model, file output) steered by ``oscsend``.

A prompt sent over OSC reaches the next planned clip, the now-playing title, the subscribers and
the cue sheet; a flood of bad packets meanwhile changes nothing and the music keeps going.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile

from riffradio.control.osc import OUTCOMES
from servers import OscListener, free_udp_port, join_generate_threads
from test_osc_fuzz import mutate, msg

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("oscsend") is None, reason="needs liblo-tools (tests/setup-debian.sh)"),
]

NEW_PROMPT = "church bells on sunday"
WAIT_SECONDS = 400.0  # a tiny-model clip takes 5-35 s on a loaded 2-core machine


def write_playlist(directory: Path, port: int) -> Path:
    path = directory / "osc-station.yaml"
    path.write_text(
        f"""station: {{name: OSC test, steps: 4, crossfade_seconds: 0.25, lookahead_clips: 1}}
outputs:
  - {{type: file, path: {directory / "osc.flac"}}}
control:
  osc: {{host: 127.0.0.1, port: {port}}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, clips: 8}}
"""
    )
    return path


async def oscsend(port: int, *args: str) -> None:
    process = await asyncio.create_subprocess_exec("oscsend", "127.0.0.1", str(port), *args)
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def until(predicate: Any, what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def title_on_air(station: Any) -> str | None:
    now = station.nowplaying()["now"]
    return now["title"] if now else None


def test_prompt_over_oscsend_reaches_next_clip_title_subscribers_and_cue_sheet(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from riffradio.app.application import StationApp
    from riffradio.app.outputs import check_output
    from riffradio.playlist.loader import check_playlist

    port = free_udp_port()
    playlist, errors = check_playlist(write_playlist(tmp_path, port), check_output=check_output)
    assert not errors and playlist is not None
    # the test joins a clip still being made itself (below): stop must not wait for it on a loaded machine
    app = StationApp(playlist, model=str(tiny_model_dir), device="cpu", worker_grace_seconds=0.0)
    station = app.station
    next_index: list[int] = []

    def on_change(name: str, value: Any) -> None:  # runs inside the OSC handler, before the producer moves
        if name == "prompt" and station.producer is not None:
            next_index.append(station.producer.position.index)

    station.state.subscribe(on_change)

    async def body() -> None:
        on_air = asyncio.Event()
        station.add_on_air_listener(on_air.set)
        task = asyncio.create_task(app.run())
        listener = OscListener()
        echoes = listener.heard
        collector = asyncio.create_task(listener.collect())
        try:
            await asyncio.wait_for(on_air.wait(), WAIT_SECONDS)
            await listener.send(msg("/riffradio/subscribe"), port)
            await until(lambda: any(a == "/riffradio/state" for a, _ in echoes), "the subscription", 30)
            old_title = title_on_air(station)
            assert old_title == "jazzy lofi hip hop"

            await oscsend(port, "/riffradio/clips", "i", "1")  # a one-clip transition: the next clip IS the prompt
            await oscsend(port, "/riffradio/prompt", "s", NEW_PROMPT)
            await until(lambda: next_index, "the prompt to reach the state", 30)
            assert station.state.snapshot().live_prompt == NEW_PROMPT

            # a flood of bad packets while it plays: all rejected, nothing changes, music goes on
            played_before = station.seconds_played
            rng = random.Random(7)
            flood = [mutate(rng) for _ in range(1000)]
            counted = station.metrics.registry.get_sample_value
            handled_before = sum(counted("riffradio_osc_messages_total", {"outcome": o}) or 0 for o in OUTCOMES)
            for start in range(0, len(flood), 50):
                for packet in flood[start : start + 50]:
                    await listener.send(packet, port)
                # a batch the socket buffer holds, then wait for it: a loaded machine must not drop datagrams here
                sent = start + len(flood[start : start + 50])
                await until(lambda: sum(counted("riffradio_osc_messages_total", {"outcome": o}) or 0 for o in OUTCOMES)
                            >= handled_before + sent, "the flood to be handled", 60)  # fmt: skip

            await until(lambda: title_on_air(station) == NEW_PROMPT, "the new prompt on air")
            assert station.seconds_played > played_before
            assert station.state.snapshot().live_prompt == NEW_PROMPT
            rejected = sum(
                station.metrics.registry.get_sample_value("riffradio_osc_messages_total", {"outcome": o}) or 0
                for o in ("malformed", "unknown_address", "bad_type_tags", "bad_value", "rate_limited")
            )
            assert rejected == 1000
            await until(lambda: ("/riffradio/nowplaying", [NEW_PROMPT]) in echoes, "the title echo", 30)
            echoes.clear()
            await listener.send(msg("/riffradio/state"), port)
            await until(lambda: any(a == "/riffradio/state" for a, _ in echoes), "the state answer", 30)
            answer = dict(echoes)
            assert answer["/riffradio/prompt"] == [NEW_PROMPT]
            assert json.loads(answer["/riffradio/state"][0])["nowplaying"]["now"]["title"] == NEW_PROMPT
        finally:
            collector.cancel()
            listener.close()
            app.stop()
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(body())
    finally:
        join_generate_threads()

    # the cue sheet: the clip planned next after the change is the new prompt, and so is all after it
    cues = [json.loads(line) for line in (tmp_path / "osc.cue.jsonl").read_text().splitlines()]
    first_new = next_index[0]
    by_index = {cue["clip_index"]: cue for cue in cues}
    assert by_index[first_new]["title"] == NEW_PROMPT
    assert by_index[first_new]["to_prompt"] == NEW_PROMPT
    later = [cue for cue in cues if cue["clip_index"] >= first_new]
    assert later and all(cue["to_prompt"] == NEW_PROMPT for cue in later)
    assert all(cue["to_prompt"] == "jazzy lofi hip hop" for cue in cues if cue["clip_index"] < first_new)
    info = soundfile.info(str(tmp_path / "osc.flac"))
    assert info.samplerate == 44100 and info.frames > 0
