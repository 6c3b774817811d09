"""Fault drills on a running station, as systemd runs it, with real servers and the tiny model.

One ``riffradio play`` process (``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` set, like under
systemd) plays a playlist with four outputs: a reference FLAC on the normal disk, a FLAC on a
1 MiB tmpfs (the recording disk that fills up), an MP3 mount on a real icecast2 and an RTMP
stream to a real nginx-rtmp. The tests below run in order against it, each drill one fault:

- Icecast killed (SIGKILL) and started again;
- the RTMP server killed and started again;
- the recording disk filling up, then grown (``mount -o remount,size=``);
- a broken playlist reloaded (SIGHUP), then an engine stalled longer than the buffer (a
  playlist reload to a riff with many more steps) and its recovery;
- SIGTERM: exit within 5 s with the recordings finalised.

Each drill checks that the audio clock keeps running at real-time rate, that the other outputs
lose nothing (no dropped blocks, still writing), and that the fault shows in ``/api/nowplaying``
and ``/metrics``. All checks go through the station's own HTTP endpoints, the notify socket,
the servers' status pages and the files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families
from servers import SOURCE_PASSWORD, IcecastServer, RtmpServer, free_port, wait_until

pytestmark = pytest.mark.slow

STREAM_KEY = "drill-key-0123456789"
EDIT_TOKEN = "drill-edit-token"
BLOCK_SECONDS = 2048 / 44100
LOOKAHEAD_CLIPS = 1  # a 5.12 s buffer: a stall longer than that must play fallback audio

PLAYLIST = """\
station: {{name: Drill FM, model: "{model}", device: cpu, steps: 4, lookahead_clips: {lookahead}}}
outputs:
  - {{type: file, path: "{reference}"}}
  - {{type: file, path: "{small_disk}/recording.flac"}}
  - {{type: icecast, url: "icecast://source:${{ICECAST_PASSWORD}}@127.0.0.1:{icecast_port}/drill.mp3", format: mp3}}
  - {{type: rtmp, url: "rtmp://127.0.0.1:{rtmp_port}/live/${{STREAM_KEY}}", width: 320, height: 180, fps: 10, preset: ultrafast}}
control:
  http: {{host: 127.0.0.1, port: {http_port}, token_env: DRILL_TOKEN}}
riffs:
{riffs}
"""
NORMAL_RIFFS = "  - {prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 4}"


# `riffradio play`, plus a dump of every thread's stack on SIGUSR1 for a drill that fails.
RUN_WITH_THREAD_DUMPS = (
    "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
    "from riffradio.app.cli import main; sys.exit(main())"
)


class DrillStation:
    """The station process and every way of looking at it from outside."""

    def __init__(self, workdir: Path, model: Path, small_disk: Path, icecast: IcecastServer, rtmp: RtmpServer) -> None:
        self.workdir = workdir
        self.small_disk = small_disk
        self.icecast = icecast
        self.rtmp = rtmp
        self.reference = workdir / "reference.flac"
        self.playlist = workdir / "station.yaml"
        self.http_port = free_port()
        self.format = dict(model=model, lookahead=LOOKAHEAD_CLIPS, reference=self.reference, small_disk=small_disk,
                           icecast_port=icecast.port, rtmp_port=rtmp.port, http_port=self.http_port)  # fmt: skip
        self.write_playlist(NORMAL_RIFFS)
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        # systemd reads its notify socket at once; so does this thread (a full queue drops messages)
        self._reading = True
        self._reader = threading.Thread(target=self._read_notifications, daemon=True)
        self._reader.start()
        self.log_path = workdir / "station.log"
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="4000000",
                   ICECAST_PASSWORD=SOURCE_PASSWORD, STREAM_KEY=STREAM_KEY, DRILL_TOKEN=EDIT_TOKEN, HF_HUB_OFFLINE="1")  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", RUN_WITH_THREAD_DUMPS, "play", str(self.playlist)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )  # fmt: skip

    def write_playlist(self, riffs: str) -> None:
        """Replace the playlist the way an editor saves: a new file renamed over the old one."""
        text = PLAYLIST.format(riffs=riffs, **self.format)
        temporary = self.playlist.with_name(".station.yaml.new")
        temporary.write_text(text)
        os.replace(temporary, self.playlist)

    # -- looking ---------------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _read_notifications(self) -> None:
        while self._reading:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def notifications(self) -> list[str]:
        return list(self.messages)

    def get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        assert self.process.poll() is None, f"station exited rc={self.process.returncode}:\n{self.log()[-4000:]}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def nowplaying(self) -> dict[str, Any]:
        """The station's own document: the operator's view of /api/nowplaying (with the edit token)."""
        document = json.loads(self.get("/api/nowplaying", {"Authorization": f"Bearer {EDIT_TOKEN}"}))
        return document["riffradio"]

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {o["name"]: o for o in self.nowplaying()["outputs"]}

    def output(self, prefix: str) -> dict[str, Any]:
        (match,) = [o for name, o in self.outputs().items() if name.startswith(prefix)]
        return match

    def metrics(self) -> dict[str, float]:
        families = text_string_to_metric_families(self.get("/metrics").decode())
        return {
            s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
            for family in families
            for s in family.samples
        }

    def metric(self, name: str, sink_prefix: str = "") -> float:
        return sum(v for k, v in self.metrics().items()
                   if k.split("{", 1)[0] == name and (not sink_prefix or f"{{sink={sink_prefix}" in k))  # fmt: skip

    def played_seconds(self) -> float:
        return self.metric("riffradio_audio_seconds_played_total")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)  # where was it stuck?
            time.sleep(1)
            self.process.kill()
            self.process.wait(30)
        self._reading = False
        self._reader.join(5)
        self.notify.close()


class ClockWatch:
    """Played audio seconds against wall seconds over a drill: the clock must keep real time."""

    def __init__(self, station: DrillStation) -> None:
        self.station = station
        self.wall0 = time.monotonic()
        self.played0 = station.played_seconds()

    def check(self, min_seconds: float = 3.0) -> float:
        while (wall := time.monotonic() - self.wall0) < min_seconds:
            time.sleep(0.2)
        played = self.station.played_seconds() - self.played0
        rate = played / wall
        # two HTTP reads bracket the window; a block is 46 ms
        assert abs(played - wall) < 0.05 * wall + 0.5, f"clock played {played:.2f} s in {wall:.2f} s wall"
        return rate


def assert_output_whole(station: DrillStation, prefix: str, before: dict[str, Any]) -> dict[str, Any]:
    """The output ``prefix`` kept writing and dropped nothing since ``before``."""
    now = station.output(prefix)
    assert now["state"] == "connected", now
    assert now["blocks_dropped"] == before["blocks_dropped"] == 0, now
    assert now["blocks_written"] > before["blocks_written"], (before, now)
    return now


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 1 MiB tmpfs: the recording disk that fills up."""
    mount = tmp_path_factory.mktemp("small-disk")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, small_disk: Path) -> Iterator[DrillStation]:
    workdir = tmp_path_factory.mktemp("drill")
    icecast = IcecastServer(workdir / "icecast").start()
    rtmp = RtmpServer(workdir / "rtmp").start()
    station = DrillStation(workdir, tiny_model_dir, small_disk, icecast, rtmp)
    try:
        wait_until(lambda: any("READY=1" in m for m in station.notifications()) or station.process.poll() is not None,
                   300, "READY=1 from the station")  # fmt: skip
        assert station.process.poll() is None, station.log()[-4000:]
        yield station
    finally:
        station.stop()
        icecast.stop()
        rtmp.stop()
        print(station.log()[-6000:])


def test_on_air_under_a_watchdog(drill: DrillStation) -> None:
    # the small disk may be full already: it is the drill after next
    others = ("file:" + str(drill.reference), "icecast:", "rtmp:")
    wait_until(lambda: all(drill.output(p)["state"] == "connected" for p in others), 60, "the outputs connected")
    assert len(drill.outputs()) == 4
    now = drill.nowplaying()
    assert now["station"] == "Drill FM" and now["now"]["prompt"] == "jazzy lofi hip hop"
    assert STREAM_KEY not in json.dumps(now) and SOURCE_PASSWORD not in json.dumps(now)
    # WATCHDOG_USEC=4 s: the clock pets every 2 s
    wait_until(lambda: sum(m == "WATCHDOG=1" for m in drill.notifications()) >= 3, 30, "3 watchdog pets")
    # systemctl status shows what is on air (STATUS= from the audio clock, one per title)
    assert any(m.startswith("STATUS=on air: Drill FM: jazzy lofi hip hop") for m in drill.notifications())
    ClockWatch(drill).check()
    assert drill.metric("riffradio_sink_up") >= 3
    drill.icecast.wait_mount("/drill.mp3")
    wait_until(lambda: drill.rtmp.publishing(STREAM_KEY), 30, "the RTMP stream")


def test_icecast_killed_and_restarted(drill: DrillStation) -> None:
    clock = ClockWatch(drill)
    reference, rtmp = drill.output("file:" + str(drill.reference)), drill.output("rtmp:")
    reconnects = drill.metric("riffradio_sink_reconnects_total", "icecast")
    drill.icecast.kill()
    down = wait_until(lambda: (o := drill.output("icecast:"))["state"] == "reconnecting" and o, 30, "icecast down")
    assert down["last_error"] and SOURCE_PASSWORD not in down["last_error"]
    assert drill.metric("riffradio_sink_up", "icecast") == 0
    time.sleep(2)
    drill.icecast.start()
    wait_until(lambda: drill.output("icecast:")["state"] == "connected", 30, "icecast source back")
    drill.icecast.wait_mount("/drill.mp3")
    assert drill.metric("riffradio_sink_reconnects_total", "icecast") >= reconnects + 1
    assert drill.metric("riffradio_sink_up", "icecast") == 1
    assert_output_whole(drill, "file:" + str(drill.reference), reference)
    assert_output_whole(drill, "rtmp:", rtmp)
    clock.check()


def test_rtmp_server_killed(drill: DrillStation) -> None:
    clock = ClockWatch(drill)
    reference, icecast = drill.output("file:" + str(drill.reference)), drill.output("icecast:")
    drill.rtmp.kill()
    down = wait_until(lambda: (o := drill.output("rtmp:"))["state"] == "reconnecting" and o, 30, "rtmp down")
    assert down["last_error"] and STREAM_KEY not in down["last_error"] and STREAM_KEY not in down["name"]
    assert drill.metric("riffradio_sink_up", "rtmp") == 0
    time.sleep(2)
    drill.rtmp.start()
    wait_until(lambda: drill.output("rtmp:")["state"] == "connected", 60, "rtmp back")
    wait_until(lambda: drill.rtmp.publishing(STREAM_KEY), 30, "the RTMP stream back")
    assert drill.metric("riffradio_sink_reconnects_total", "rtmp") >= 1
    assert_output_whole(drill, "file:" + str(drill.reference), reference)
    # icecast may have dropped what queued while it reconnected in the drill before, not since
    now = drill.output("icecast:")
    assert now["state"] == "connected" and now["blocks_dropped"] == icecast["blocks_dropped"]
    assert now["blocks_written"] > icecast["blocks_written"]
    clock.check()
    assert STREAM_KEY not in drill.log()


def test_recording_disk_full(drill: DrillStation) -> None:
    clock = ClockWatch(drill)
    name = f"file:{drill.small_disk}/recording.flac"
    reference, icecast = drill.output("file:" + str(drill.reference)), drill.output("icecast:")
    # 24-bit FLAC fills 1 MiB within seconds of play
    full = wait_until(lambda: (o := drill.output(name))["state"] != "connected" and o, 90, "the small disk full")
    assert full["state"] == "reconnecting" and full["last_error"], full
    wait_until(lambda: "no space left" in drill.output(name)["last_error"], 30, "a disk-full error that says so")
    assert shutil.disk_usage(drill.small_disk).free < 64 * 1024
    first_part = drill.small_disk / "recording.flac"
    kept = soundfile.info(str(first_part))  # what fit is a readable recording
    assert kept.frames > 44100 and kept.samplerate == 44100
    wait_until(lambda: drill.metric("riffradio_sink_dropped_blocks_total", name) > 0, 60, "dropped blocks counted")
    assert drill.metric("riffradio_sink_up", name) == 0
    assert drill.output(name)["blocks_dropped"] > 0
    written = drill.output(name)["blocks_written"]
    time.sleep(3)
    assert drill.output(name)["blocks_written"] == written  # nothing more fits
    # the operator grows the disk: the output comes back by itself (at most 30 s backoff), in a new file
    subprocess.run(["mount", "-o", "remount,size=64m", str(drill.small_disk)], check=True)
    two_seconds = int(2 / BLOCK_SECONDS)
    wait_until(lambda: drill.output(name)["blocks_written"] > written + two_seconds, 60, "the recording back")
    assert drill.output(name)["state"] == "connected"
    assert drill.metric("riffradio_sink_reconnects_total", name) >= 1
    assert soundfile.info(str(first_part)).frames == kept.frames  # the first part is left as it was
    assert_output_whole(drill, "file:" + str(drill.reference), reference)
    assert drill.output("icecast:")["blocks_dropped"] == icecast["blocks_dropped"]
    clock.check()


def test_broken_playlist_reload_keeps_playing(drill: DrillStation) -> None:
    clock = ClockWatch(drill)
    title = drill.nowplaying()["now"]["title"]
    drill.write_playlist("  - {promt: misspelt, seed: 1}")
    drill.process.send_signal(signal.SIGHUP)
    line = PLAYLIST.count("\n", 0, PLAYLIST.index("{riffs}")) + 1
    wait_until(lambda: f"station.yaml:{line}:" in drill.log() and "still playing the previous playlist" in drill.log(),
               30, "the reload error with file:line:column")  # fmt: skip
    assert "promt" in drill.log()
    clock.check()
    assert drill.nowplaying()["now"]["title"] in (title, "jazzy lofi hip hop → church bells on sunday",
                                                 "church bells on sunday", "jazzy lofi hip hop")  # fmt: skip


def test_engine_stalled_longer_than_the_buffer(drill: DrillStation) -> None:
    """A riff with 30 times the steps: one clip takes far longer than the 5.12 s buffer holds."""
    reference = drill.output("file:" + str(drill.reference))
    underruns, fallback = drill.metric("riffradio_underruns_total"), drill.metric("riffradio_fallback_seconds_total")
    drill.write_playlist("  - {prompt: stalled engine, seed: 7, clips: 1, steps: 120}")  # picked up by the file watcher
    stalled = wait_until(
        lambda: (n := drill.nowplaying()["next"]) and n["prompt"] == "stalled engine" and n.get("generating") and n,
        120, "the slow clip to start")  # fmt: skip
    stall_started = time.monotonic()
    clock = ClockWatch(drill)
    drill.write_playlist("  - {prompt: recovered, seed: 9, clips: 50}")  # the next clip is quick again
    drill.process.send_signal(signal.SIGHUP)
    assert stalled["steps"] == 120
    saw_fallback = False

    def slow_clip_done() -> bool:
        nonlocal saw_fallback
        now = drill.nowplaying()
        saw_fallback = saw_fallback or bool(now["now"] and now["now"]["fallback"])
        upcoming = now["next"] or {}
        return not (upcoming.get("prompt") == "stalled engine" and upcoming.get("generating"))

    wait_until(slow_clip_done, 300, "the slow clip to finish", interval_seconds=0.5)
    stall_seconds = time.monotonic() - stall_started
    assert stall_seconds > LOOKAHEAD_CLIPS * 5.12, f"the stall lasted only {stall_seconds:.1f} s"
    clock.check()  # the clock ran through the whole stall
    assert saw_fallback, "nowplaying never showed fallback audio during the stall"
    assert drill.metric("riffradio_underruns_total") > underruns
    assert drill.metric("riffradio_fallback_seconds_total") - fallback > 1.0
    assert drill.nowplaying()["underruns"] >= drill.metric("riffradio_underruns_total")
    assert_output_whole(drill, "file:" + str(drill.reference), reference)
    # and it recovers: the new playlist's clips come and are heard
    wait_until(lambda: (drill.nowplaying()["now"] or {}).get("prompt") == "recovered", 240, "the recovered riff on air",
               interval_seconds=0.5)  # fmt: skip
    assert "underrun" in drill.log()


def test_sigterm_finalises_within_five_seconds(drill: DrillStation) -> None:
    reference = drill.output("file:" + str(drill.reference))
    assert reference["blocks_dropped"] == 0
    played = drill.played_seconds()
    started = time.monotonic()
    drill.process.send_signal(signal.SIGTERM)
    rc = drill.process.wait(30)
    exit_seconds = time.monotonic() - started
    assert rc == 0, drill.log()[-3000:]
    assert exit_seconds < 5.0, f"exit took {exit_seconds:.2f} s"
    assert "STOPPING=1" in drill.notifications()
    info = soundfile.info(str(drill.reference))
    # the reference recording holds every block played, without a gap, up to the stop
    assert played - BLOCK_SECONDS <= info.duration <= played + 2.0, (info.duration, played)
    # after the disk grew, the recording went on in a new file (recording.N.flac)
    parts = sorted(drill.small_disk.glob("recording.*.flac"), key=lambda p: p.stat().st_mtime)
    assert parts and soundfile.info(str(parts[-1])).frames > 44100, parts
    # retries while the disk was full left no empty recordings behind: one new part only
    assert len(parts) == 1, parts
