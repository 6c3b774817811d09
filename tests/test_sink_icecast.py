"""Icecast sinks against a real icecast2: listeners decode the music, titles follow it, faults heal."""

from __future__ import annotations

import http.client
import logging
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile

from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.fanout import Fanout
from riffradio.sinks.file import FileSink
from riffradio.sinks.icecast import IcecastSink, icecast_sink_from_spec
from servers import (  # fixtures are imported by name; pytest finds them in this module
    ADMIN_PASSWORD,
    SOURCE_PASSWORD,
    IcecastServer,
    Music,
    icecast_server,
    match_audio,
    music,
    music_blocks,
    play_realtime,
    record_url,
    wait_until,
    with_outage,
)

pytestmark = pytest.mark.slow


class Listener(threading.Thread):
    """ffmpeg reading a mount from the moment it appears until the source goes away."""

    def __init__(self, server: IcecastServer, mount: str, max_seconds: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.server, self.mount, self.max_seconds = server, mount, max_seconds
        self.samples: np.ndarray | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.server.wait_mount(self.mount)
            self.samples = record_url(self.server.listen_url(self.mount), self.max_seconds)
        except BaseException as error:  # noqa: BLE001 - reported by result()
            self.error = error

    def result(self) -> np.ndarray:
        self.join(90)
        if self.error is not None:
            raise self.error
        assert self.samples is not None, f"listener of {self.mount} still running"
        return self.samples


def ogg_titles(server: IcecastServer, mount: str, seconds: float) -> list[str]:
    """TITLE tags of every OpusTags packet a raw HTTP listener sees in ``seconds``."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(server.listen_url(mount), timeout=10) as response:
        while time.monotonic() < deadline:
            chunk = response.read1(4096)
            if not chunk:
                break
            data += chunk
    return [tags.get("title", "") for tags in opus_tags(bytes(data))]


def opus_tags(data: bytes) -> list[dict[str, str]]:
    """Every OpusTags packet in an Ogg byte stream, as {lower-case key: value}."""
    found = []
    at = data.find(b"OpusTags")
    while at >= 0:
        try:
            pos = at + 8
            vendor_length = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4 + vendor_length
            count = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
            tags = {}
            for _ in range(count):
                length = int.from_bytes(data[pos : pos + 4], "little")
                key, _, value = data[pos + 4 : pos + 4 + length].decode("utf-8").partition("=")
                tags[key.lower()] = value
                pos += 4 + length
            found.append(tags)
        except (UnicodeDecodeError, ValueError):
            pass  # cut off at the end of the capture
        at = data.find(b"OpusTags", at + 8)
    return found


def icy_titles(server: IcecastServer, mount: str, seconds: float) -> list[str]:
    """``StreamTitle`` of each ICY metadata block an ICY listener gets in ``seconds``."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", mount, headers={"Icy-MetaData": "1"})
    response = connection.getresponse()
    metaint, titles = int(response.getheader("icy-metaint")), []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            response.read(metaint)
            length = response.read(1)
            if not length:
                break
            if length[0]:
                m = re.search(rb"StreamTitle='(.*?)';", response.read(length[0] * 16))
                if m:
                    titles.append(m.group(1).decode())
    except OSError:
        pass  # the source went away: keep what was seen
    finally:
        connection.close()
    return titles


def test_listeners_decode_mp3_and_opus_of_the_right_duration(icecast_server: IcecastServer, music: Music) -> None:
    # Two MP3 mounts and one Opus mount: three connections, two encodes.
    blocks = music_blocks(music, title_every_seconds=4.0)[: int(10 * 44100 / 4096)]
    played_seconds = sum(b.duration_seconds for b in blocks)
    mounts = ["/radio.mp3", "/copy.mp3", "/radio.opus"]
    sinks = [IcecastSink(icecast_server.source_url(m), bitrate_kbps=128 if m.endswith("mp3") else 96) for m in mounts]
    fanout = Fanout(sinks)
    assert fanout._encoders is not None and len(fanout._encoders) == 0
    listeners = {m: Listener(icecast_server, m) for m in mounts}
    tags: list[str] = []
    fanout.start()
    tag_reader = threading.Thread(
        target=lambda: (icecast_server.wait_mount("/radio.opus"), tags.extend(ogg_titles(icecast_server, "/radio.opus", 11))),
        daemon=True,
    )
    tag_reader.start()
    play_realtime(fanout.push, blocks)
    assert len(fanout._encoders) == 2  # one per format, shared by both MP3 mounts
    status = icecast_server.mounts()
    assert status["/radio.opus"]["server_type"] == "audio/ogg"  # our own content type, not audio/mpeg
    assert status["/radio.mp3"]["server_name"] == "riffradio"
    fanout.close()
    tag_reader.join(20)
    for mount, listener in listeners.items():
        heard = listener.result()
        heard_seconds = len(heard) / 16000
        assert played_seconds - 0.6 <= heard_seconds <= played_seconds + 0.3, (mount, heard_seconds, played_seconds)
        offset, likeness = match_audio(heard, 16000, music)
        assert abs(offset) < 0.1 and likeness > 0.9, (mount, offset, likeness)
    # Opus listeners learn titles in-stream: a new chained stream per title, in the order heard.
    assert tags[:3] == ["lofi hip hop beat", "jazzy piano → techno", "church bells on sunday"], tags
    assert all(s.blocks_dropped == 0 and s.state == "stopped" for s in fanout.statuses())


def test_status_and_icy_titles_follow_the_prompt(icecast_server: IcecastServer, music: Music) -> None:
    blocks = music_blocks(music, title_every_seconds=3.0)[: int(9.5 * 44100 / 4096)]
    fanout = Fanout([IcecastSink(icecast_server.source_url("/radio.mp3"))])
    fanout.start()
    seen: list[tuple[float, str]] = []  # (audio seconds pushed, status-json title)
    icy: list[str] = []
    icy_reader = threading.Thread(
        target=lambda: (icecast_server.wait_mount("/radio.mp3"), icy.extend(icy_titles(icecast_server, "/radio.mp3", 9))),
        daemon=True,
    )
    icy_reader.start()

    def push_and_look(block):
        fanout.push(block)
        title = icecast_server.mounts().get("/radio.mp3", {}).get("title")
        if title and (not seen or seen[-1][1] != title):
            seen.append((block.start_seconds, title))

    play_realtime(push_and_look, blocks)
    fanout.close()
    icy_reader.join(20)
    titles = [t for _, t in seen]
    assert titles[:3] == ["lofi hip hop beat", "jazzy piano → techno", "church bells on sunday"], seen
    # each new title shows within one second of the audio that carries it (clips here: 3 s)
    for (pushed_at, _), clip_start in zip(seen[1:3], (3.0, 6.0)):
        assert clip_start - 0.1 <= pushed_at <= clip_start + 1.5, seen
    assert "jazzy piano → techno" in icy, icy  # ICY listeners get UTF-8 titles in the stream


def test_icecast_killed_and_restarted_source_returns_and_file_loses_nothing(
    tmp_path, icecast_server: IcecastServer, music: Music, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blocks = music_blocks(music)[: int(12 * 44100 / 4096)]
    recording = FileSink(tmp_path / "station.flac", cue_path=None)
    metrics = StationMetrics()
    fanout = Fanout([IcecastSink(icecast_server.source_url("/radio.mp3")), recording], metrics=metrics)
    fanout.start()
    icecast_server.wait_mount("/radio.mp3")
    back_after: list[float] = []

    def time_the_return() -> None:
        restarted = time.monotonic()
        threading.Thread(
            target=lambda: back_after.append(icecast_server.wait_mount("/radio.mp3", 10) and time.monotonic() - restarted),
            daemon=True,
        ).start()

    push = with_outage(fanout.push, icecast_server, down_at_seconds=3.0, down_for_seconds=2.0, on_restart=time_the_return)
    play_realtime(push, blocks)
    wait_until(lambda: back_after, 10, "the source to come back")
    assert back_after[0] <= 5.0, back_after
    icecast_status, file_status = fanout.statuses()
    assert icecast_status.state == "connected" and icecast_status.reconnects >= 1
    assert metrics.sink_reconnects.labels(sink=icecast_status.name)._value.get() >= 1
    fanout.close()
    # the file sink did not notice: every frame, bit for bit (24-bit FLAC)
    recorded, rate = soundfile.read(tmp_path / "station.flac", dtype="float32", always_2d=True)
    pushed = np.concatenate([b.samples for b in blocks], axis=1).T
    assert rate == 44100 and recorded.shape == pushed.shape
    assert np.max(np.abs(recorded - pushed)) < 1e-5
    assert fanout.statuses()[1].blocks_dropped == 0
    # one warning line for the outage, no password anywhere in the log
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "icecast" in r.getMessage()]
    assert 1 <= len(warnings) <= 2, warnings
    assert all("\n" not in w for w in warnings)
    assert SOURCE_PASSWORD not in caplog.text


def test_refused_source_is_one_clear_line_without_the_password(
    icecast_server: IcecastServer, music: Music, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password"
    fanout = Fanout([IcecastSink(icecast_server.source_url("/radio.mp3", password=wrong))], first_retry_seconds=0.5)
    fanout.start()
    wait_until(lambda: fanout.statuses()[0].last_error, 10, "the refusal")
    status = fanout.statuses()[0]
    fanout.close()
    assert status.state in ("reconnecting", "stopped")
    assert "401" in status.last_error and "password" in status.last_error
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "icecast:127.0.0.1" in lines[0], lines
    assert wrong not in caplog.text and SOURCE_PASSWORD not in caplog.text and ADMIN_PASSWORD not in caplog.text


def test_hung_icecast_is_cut_off_by_the_sinks_own_timeout(icecast_server: IcecastServer, music: Music) -> None:
    blocks = music_blocks(music, loops=10)
    sink = IcecastSink(icecast_server.source_url("/radio.mp3"), bitrate_kbps=320, timeout_seconds=2.0)
    fanout = Fanout([sink], first_retry_seconds=0.5, max_retry_seconds=1.0)
    fanout.start()
    play_realtime(fanout.push, blocks[:30])
    icecast_server.pause()  # accepts, never reads: the socket buffers fill, then sends time out
    try:
        for block in blocks[30:]:  # faster than real time, so the buffers fill in a second or two
            fanout.push(block)
            time.sleep(0.002)
            if fanout.statuses()[0].state == "reconnecting":
                break
        status = fanout.statuses()[0]
    finally:
        icecast_server.resume()
    assert status.state == "reconnecting" and "timed out" in status.last_error, status
    wait_until(lambda: fanout.statuses()[0].state == "connected", 15, "the source to come back")
    fanout.close()


def test_second_icecast_as_relay_serves_the_same_stream(tmp_path, icecast_server: IcecastServer, music: Music) -> None:
    relay = IcecastServer(tmp_path / "relay", relay_of=icecast_server.port).start()
    try:
        blocks = music_blocks(music)[: int(14 * 44100 / 4096)]
        fanout = Fanout([IcecastSink(icecast_server.source_url("/radio.mp3"))])
        fanout.start()
        heard: list[np.ndarray] = []

        def listen_to_relay():
            relay.wait_mount("/radio.mp3", 20)
            heard.append(record_url(relay.listen_url("/radio.mp3"), 4.0))

        listener = threading.Thread(target=listen_to_relay, daemon=True)
        listener.start()
        play_realtime(fanout.push, blocks)
        listener.join(30)
        fanout.close()
        assert heard, "the relay never served /radio.mp3"
        offset, likeness = match_audio(heard[0], 16000, music)
        assert likeness > 0.9, (offset, likeness)
        assert len(heard[0]) / 16000 >= 3.9
    finally:
        relay.stop()


def test_factory_reads_the_playlist_spelling() -> None:
    sink = icecast_sink_from_spec(
        OutputSpec("icecast", {"url": "icecast://source:pw@127.0.0.1:8000/riffradio.opus"}, line=3, column=5)
    )
    assert sink.settings.format == "opus" and sink.settings.bitrate_kbps == 96
    assert "pw" not in sink.name
    with pytest.raises(ValueError, match="did you mean 'bitrate_kbps'"):
        icecast_sink_from_spec(OutputSpec("icecast", {"url": "icecast://s:p@h/m.mp3", "bitrate": 128}))
    with pytest.raises(ValueError, match="no password"):
        icecast_sink_from_spec(OutputSpec("icecast", {"url": "icecast://127.0.0.1:8000/m.mp3"}))


def test_after_an_outage_the_servers_refusal_is_the_warning(
    tmp_path, icecast_server: IcecastServer, music: Music, caplog: pytest.LogCaptureFixture
) -> None:
    """Drill: Icecast comes back answering 401 (another password), then 403 (mount taken): each
    answer is a WARNING line of its own, with the prose intact, not a DEBUG line after "Broken pipe"."""
    caplog.set_level(logging.DEBUG, logger="riffradio")
    sink = IcecastSink(icecast_server.source_url("/radio.mp3"))
    recording = FileSink(tmp_path / "station.flac", cue_path=None)
    fanout = Fanout([sink, recording], first_retry_seconds=1.0, max_retry_seconds=4.0)
    blocks = music_blocks(music, loops=3)  # 90 s of audio, more than the drill needs
    stop = threading.Event()

    def feed() -> None:
        play_realtime(lambda block: None if stop.is_set() else fanout.push(block), blocks)

    feeder = threading.Thread(target=feed, daemon=True)
    fanout.start()
    feeder.start()
    intruder = IcecastSink(icecast_server.source_url("/radio.mp3"))

    def answers(code: str) -> int:
        return sum(code in r.getMessage() for r in caplog.records if r.name.startswith("riffradio.sinks"))

    try:
        icecast_server.wait_mount("/radio.mp3")
        icecast_server.kill()
        icecast_server.configure("another-password")
        icecast_server.start()
        wait_until(lambda: answers("401") >= 2, 30, "two 401 answers")
        # the sink just failed and backs off (4 s): the mount is taken before it tries again
        icecast_server.kill()
        icecast_server.configure(SOURCE_PASSWORD)
        icecast_server.start()
        intruder.open()
        wait_until(lambda: answers("403") >= 2, 30, "two 403 answers")
        intruder.close()
        wait_until(lambda: fanout.statuses()[0].state == "connected", 30, "the source back")
    finally:
        stop.set()
        intruder.close()
        fanout.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "icecast" in r.getMessage()]
    refusals = [w for w in warnings if "refused the source" in w]
    # one WARNING per new answer; the same answer repeated only at DEBUG
    assert [("401" in w, "403" in w) for w in refusals] == [(True, False), (False, True)], warnings
    assert "(wrong source password?)" in refusals[0]  # secret masking left the prose alone
    assert "(mount already in use or not allowed)" in refusals[1]
    assert len(warnings) <= 5, warnings  # write failed, (refused,) 401, refused/403 and nothing per retry
    assert any("back after" in r.getMessage() for r in caplog.records)
    assert fanout.statuses()[1].blocks_dropped == 0
    assert SOURCE_PASSWORD not in caplog.text and "another-password" not in caplog.text
