"""Every kind of output at once, as a playlist's ``outputs:`` makes them; killing one server loses nothing elsewhere."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile

from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.fanout import Fanout
from riffradio.app.outputs import build_sinks
from servers import (  # fixtures are imported by name; pytest finds them in this module
    IcecastServer,
    Music,
    PulseServer,
    RtmpServer,
    icecast_server,
    match_audio,
    music,
    music_blocks,
    play_realtime,
    pulse_server,
    record_url,
    rms,
    rtmp_server,
    wait_until,
    with_outage,
)

pytestmark = pytest.mark.slow


def test_all_outputs_play_together_and_an_icecast_crash_costs_the_others_nothing(
    tmp_path, monkeypatch, icecast_server: IcecastServer, rtmp_server: RtmpServer, pulse_server: PulseServer, music: Music
) -> None:
    monkeypatch.setenv("STREAM_KEY", "all-outputs-key")
    specs = [  # the playlist spelling, after ${ENV} expansion
        OutputSpec("speakers", {"device": "pulse"}),
        OutputSpec("icecast", {"url": icecast_server.source_url("/riffradio.mp3"), "format": "mp3", "bitrate_kbps": 128}),
        OutputSpec("icecast", {"url": icecast_server.source_url("/riffradio.opus"), "format": "opus"}),
        OutputSpec("rtmp", {"url": rtmp_server.url("all-outputs-key"), "width": 640, "height": 360, "fps": 15}),
        OutputSpec("file", {"path": str(tmp_path / "station.flac"), "cue": False}),
    ]
    sinks = build_sinks(specs, "playlist.yaml")
    metrics = StationMetrics()
    fanout = Fanout(sinks, metrics=metrics)
    blocks = music_blocks(music)[: int(14 * 44100 / 4096)]
    recorder = pulse_server.record_monitor(rate_hz=16000)
    opus_heard: list[np.ndarray] = []

    def listen_opus() -> None:
        icecast_server.wait_mount("/riffradio.opus")
        opus_heard.append(record_url(icecast_server.listen_url("/riffradio.opus"), 3.0))

    listeners = [threading.Thread(target=listen_opus, daemon=True)]
    fanout.start()
    listeners[0].start()

    def listen_again_after_restart() -> None:  # the re-connected Ogg mount must start with its headers
        listeners.append(threading.Thread(target=listen_opus, daemon=True))
        listeners[-1].start()

    push = with_outage(fanout.push, icecast_server, down_at_seconds=6.0, down_for_seconds=1.5, on_restart=listen_again_after_restart)
    try:
        play_realtime(push, blocks)
        wait_until(lambda: {"/riffradio.mp3", "/riffradio.opus"} <= set(icecast_server.mounts()), 8, "both mounts back")
        statuses = {s.name.split(":")[0] + ":" + s.name.rsplit("/", 1)[-1]: s for s in fanout.statuses()}
        fanout.close(timeout_seconds=6.0)
    finally:
        heard = recorder.stop()
    for listener in listeners:
        listener.join(20)

    # Icecast came back by itself; everything else never noticed the crash
    for name, status in statuses.items():
        if name.startswith("icecast"):
            assert status.reconnects >= 1 and status.state == "connected", status
        else:
            assert status.reconnects == 0 and status.blocks_dropped == 0 and status.state == "connected", status
    recorded, _ = soundfile.read(tmp_path / "station.flac", dtype="float32", always_2d=True)
    assert recorded.shape[0] == len(blocks) * 4096
    assert rms(heard) > 0.01
    assert len(opus_heard) == 2, "a listener before and one after the crash"
    for opus in opus_heard:
        assert len(opus) >= 2.9 * 16000 and match_audio(opus, 16000, music)[1] > 0.9
    assert "all-outputs-key" not in " ".join(s.name + s.last_error for s in statuses.values())
    assert metrics.sink_up.labels(sink=sinks[3].name)._value.get() == 0  # after close
