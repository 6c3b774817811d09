"""Speakers sink through sounddevice into a real PulseAudio null sink, recorded from its monitor."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import SinkError
from riffradio.sinks.fanout import Fanout
from riffradio.sinks.speakers import SpeakersSink, speakers_sink_from_spec
from servers import (  # fixtures are imported by name; pytest finds them in this module
    Music,
    PulseServer,
    match_audio,
    music,
    music_blocks,
    play_realtime,
    pulse_server,
    rms,
)


@pytest.mark.slow
def test_speakers_play_the_music_into_pulseaudio(pulse_server: PulseServer, music: Music) -> None:
    blocks = music_blocks(music)[: int(6 * 44100 / 4096)]
    with pulse_server.record_monitor(rate_hz=16000) as recording:
        fanout = Fanout([SpeakersSink(device="pulse")])
        fanout.start()
        play_realtime(fanout.push, blocks)
        fanout.close(timeout_seconds=6.0)
        time.sleep(1.5)  # the default latency (1.0 s) is still in the device's buffer after close
    heard = recording.samples
    assert len(heard) > 5 * 16000
    assert rms(heard) > 0.01  # not silence
    # the recording is this music (after the silence before playback started). One-second
    # probes: on a loaded machine an underrun may put a gap into a longer stretch.
    start = int(np.argmax(np.abs(heard) > 0.01))
    matches = [match_audio(heard[start:], 16000, music, probe_seconds=1.0, skip_seconds=s) for s in (0.5, 1.5, 2.5, 3.5)]
    assert max(likeness for _, likeness in matches) > 0.8, matches
    assert fanout.statuses()[0].blocks_dropped == 0


def test_missing_device_is_one_line_naming_the_alternatives(pulse_server: PulseServer) -> None:
    sink = SpeakersSink(device="no-such-card")
    with pytest.raises(SinkError) as caught:
        sink.open()
    message = str(caught.value)
    assert "\n" not in message and "no-such-card" in message
    assert "type: file" in message and "type: icecast" in message


def test_riffradio_devices_lists_the_pulse_device(pulse_server: PulseServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "riffradio", "devices"], env=pulse_server.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pulse" in result.stdout and "*" in result.stdout


def test_riffradio_devices_without_any_sound_server(tmp_path) -> None:
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/nothing-here", HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "riffradio", "devices"], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        pytest.skip(f"this machine has a sound card without a sound server: {result.stdout.splitlines()[:2]}")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("riffradio: error: no sound output devices") and "type: file" in last


def test_factory_reads_the_playlist_spelling() -> None:
    assert speakers_sink_from_spec(OutputSpec("speakers", {"device": "default"})).device is None
    assert speakers_sink_from_spec(OutputSpec("speakers", {"device": 2, "block_frames": 1024})).device == 2
    with pytest.raises(ValueError, match="did you mean 'device'"):
        speakers_sink_from_spec(OutputSpec("speakers", {"devices": "pulse"}))


@pytest.mark.slow
def test_underflows_are_counted_in_metrics_and_logged_once(pulse_server: PulseServer, music: Music, caplog) -> None:
    """Drill: the station's blocks come late (a busy machine): every gap PortAudio reports is
    counted in ``riffradio_sink_underflows_total`` and the status, and logged once with the count."""
    from riffradio.metrics import StationMetrics

    caplog.set_level("WARNING", logger="riffradio.sinks.speakers")
    blocks = music_blocks(music)[: int(4 * 44100 / 4096)]
    metrics = StationMetrics()
    fanout = Fanout([SpeakersSink(device="pulse", latency=0.1)], metrics=metrics)
    fanout.start()
    play_realtime(fanout.push, blocks[:10])
    for block in blocks[10:16]:  # each block 1 s late: the card runs dry between them
        time.sleep(1.0)
        fanout.push(block)
    time.sleep(1.0)
    status = fanout.statuses()[0]
    fanout.close(timeout_seconds=6.0)
    assert status.underflows >= 1, status  # PortAudio over ALSA/pulse flags a run of late blocks once or more
    assert metrics.sink_underflows.labels(sink=status.name)._value.get() == status.underflows
    lines = [r.getMessage() for r in caplog.records if "underflow" in r.getMessage()]
    assert len(lines) == 1 and "output underflow(s)" in lines[0], lines  # once a minute, not per gap


def test_default_latency_survives_a_busy_machine() -> None:
    assert speakers_sink_from_spec(OutputSpec("speakers", {})).latency == 1.0
    assert speakers_sink_from_spec(OutputSpec("speakers", {"latency": "high"})).latency == "high"
