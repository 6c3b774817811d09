"""Fan-out behaviour with real I/O: a named pipe whose reader the test controls, and the file sink.

A named pipe behaves like a network peer: writes block when the reader stalls, fail with EPIPE
when it leaves, and opening fails (ENXIO) while nobody reads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from riffradio.metrics import StationMetrics
from riffradio.sinks.base import Sink
from riffradio.sinks.fanout import Fanout, scrub_secrets
from riffradio.sinks.file import FileSink
from riffradio.core.types import AudioBlock
from servers import Music, music, music_blocks, wait_until  # noqa: F401 - music is a fixture

BLOCK_FRAMES = 4096


class FifoSink(Sink):
    """Raw float32 PCM (block start frame first) into a named pipe."""

    def __init__(self, path: Path, secret: str = "") -> None:
        self.path = path
        self.name = f"fifo:{path.name}"
        self.secrets = (secret,) if secret else ()
        self._fd: int | None = None

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
        os.set_blocking(fd, True)
        self._fd = fd

    def write(self, block: AudioBlock) -> int:
        assert self._fd is not None
        data = np.int64(block.start_frame).tobytes() + block.samples.astype(np.float32).tobytes()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class FifoReader(threading.Thread):
    """Reads whole blocks from the pipe; ``paused`` stops reading (the writer then blocks)."""

    def __init__(self, path: Path, channels: int = 2, stop_after: int = -1) -> None:
        super().__init__(daemon=True)
        self.path, self.size, self.stop_after = path, 8 + channels * BLOCK_FRAMES * 4, stop_after
        self.start_frames: list[int] = []
        self.paused = threading.Event()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        with open(self.path, "rb", buffering=0) as pipe:
            while not self.done.is_set():
                if self.paused.is_set():
                    time.sleep(0.01)
                    continue
                data = b""
                while len(data) < self.size:
                    chunk = pipe.read(self.size - len(data))
                    if not chunk:
                        return
                    data += chunk
                self.start_frames.append(int(np.frombuffer(data[:8], np.int64)[0]))
                if len(self.start_frames) == self.stop_after:
                    return  # closes the pipe: the writer's next write fails with EPIPE

    def leave(self) -> None:
        self.done.set()
        self.paused.clear()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "sink.fifo"
    os.mkfifo(path)
    return path


def test_push_never_blocks_and_a_stalled_sink_keeps_only_the_newest(fifo: Path, music: Music) -> None:
    blocks = music_blocks(music)[:200]
    reader = FifoReader(fifo)
    reader.paused.set()  # the pipe (64 KiB) fills after two blocks; then writes block
    metrics = StationMetrics()
    fanout = Fanout([FifoSink(fifo)], metrics=metrics, queue_blocks=16)
    fanout.start()
    wait_until(lambda: fanout.statuses()[0].state == "connected", 10, "the pipe sink")
    slowest = 0.0
    for block in blocks:
        t0 = time.perf_counter()
        fanout.push(block)
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05  # never waits for the stalled sink
    reader.paused.clear()
    wait_until(lambda: blocks[-1].start_frame in reader.start_frames, 10, "the newest block")
    status = fanout.statuses()[0]
    fanout.close()
    reader.leave()
    # the oldest were dropped, and counted; what arrived is in order and ends with the newest
    assert status.blocks_dropped == len(blocks) - len(reader.start_frames) > 100
    assert reader.start_frames == sorted(reader.start_frames)
    assert reader.start_frames[-16:] == [b.start_frame for b in blocks[-16:]]
    assert metrics.sink_dropped_blocks.labels(sink="fifo:sink.fifo")._value.get() == status.blocks_dropped


def test_sink_that_cannot_open_retries_and_resumes_while_the_file_loses_nothing(
    tmp_path: Path, fifo: Path, music: Music, caplog: pytest.LogCaptureFixture
) -> None:
    blocks = music_blocks(music)[:120]
    metrics = StationMetrics()
    recording = FileSink(tmp_path / "rec.flac", cue_path=None)
    pipe = FifoSink(fifo, secret="hunter2-key")
    fanout = Fanout([pipe, recording], metrics=metrics, queue_blocks=256, first_retry_seconds=0.5)
    fanout.start()  # nobody reads the pipe yet: open fails with ENXIO
    t0 = time.monotonic()
    for block in blocks[:40]:
        fanout.push(block)
    wait_until(lambda: fanout.statuses()[0].state == "reconnecting", 5, "the pipe sink to fail")
    assert metrics.sink_up.labels(sink=pipe.name)._value.get() == 0
    reader = FifoReader(fifo)  # the "server" comes back
    wait_until(lambda: fanout.statuses()[0].state == "connected", 10, "the pipe sink to resume")
    assert time.monotonic() - t0 < 6  # backoff 0.5, 1, 2 s: back within the third retry
    for block in blocks[40:]:
        fanout.push(block)
    wait_until(lambda: len(reader.start_frames) == len(blocks), 10, "every block through the pipe")
    fanout.close()
    reader.leave()
    assert reader.start_frames == [b.start_frame for b in blocks]  # queued while down, then delivered
    status = fanout.statuses()[0]
    assert status.reconnects == 1 and status.blocks_dropped == 0 and status.state == "stopped"
    assert metrics.sink_reconnects.labels(sink=pipe.name)._value.get() == 1
    assert metrics.sink_bytes_sent.labels(sink=pipe.name)._value.get() == status.bytes_sent > 0
    recorded, _ = soundfile.read(tmp_path / "rec.flac", dtype="float32", always_2d=True)
    assert recorded.shape[0] == len(blocks) * BLOCK_FRAMES
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "fifo:sink.fifo: open failed" in warnings[0], warnings


def test_reader_leaving_mid_stream_is_a_reconnect_not_a_crash(fifo: Path, music: Music) -> None:
    blocks = music_blocks(music)[:60]
    fanout = Fanout([FifoSink(fifo)], first_retry_seconds=0.2)
    reader = FifoReader(fifo, stop_after=20)
    fanout.start()
    for block in blocks[:20]:
        fanout.push(block)
    reader.join(10)
    assert not reader.is_alive()
    fanout.push(blocks[20])  # EPIPE on this write
    wait_until(lambda: fanout.statuses()[0].state == "reconnecting", 10, "the failure")
    assert "BrokenPipeError" in fanout.statuses()[0].last_error
    second = FifoReader(fifo)
    for block in blocks[21:]:
        fanout.push(block)
    wait_until(lambda: second.start_frames and second.start_frames[-1] == blocks[-1].start_frame, 10, "resume")
    fanout.close()
    second.leave()
    assert second.start_frames[0] == blocks[20].start_frame  # the failed block is written again first


def test_close_drains_the_queue_and_does_not_hang_on_a_stuck_sink(tmp_path: Path, fifo: Path, music: Music) -> None:
    blocks = music_blocks(music)[:150]
    reader = FifoReader(fifo)
    reader.paused.set()
    recording = FileSink(tmp_path / "rec.wav", cue_path=None)
    fanout = Fanout([recording, FifoSink(fifo)], queue_blocks=256)
    fanout.start()
    for block in blocks:
        fanout.push(block)
    t0 = time.monotonic()
    fanout.close(timeout_seconds=2.0)
    assert time.monotonic() - t0 < 4.0  # the stuck pipe did not hold close() up
    reader.leave()
    info = soundfile.info(tmp_path / "rec.wav")
    assert info.frames == len(blocks) * BLOCK_FRAMES  # everything queued for the file was written
    assert [s.state for s in fanout.statuses()] == ["stopped", "stopped"]


def test_secrets_never_reach_a_log_line() -> None:
    line = scrub_secrets(
        "refused icecast://source:hunter2@radio.example:8000/a.mp3\n and rtmp://x/live/abcd-KEY-1234", ["abcd-KEY-1234"]
    )
    assert line == "refused icecast://source:***@radio.example:8000/a.mp3 and rtmp://x/live/***"
    # whole values only: a password that is also a word leaves the prose around it alone
    prose = "server refused the source: HTTP/1.0 401 Authentication Required (wrong source password?)"
    assert scrub_secrets(prose, ["wrong"]) == prose
    assert scrub_secrets("open 'rtmp://h/live/wrong?k=wrong' failed: key=wrong 'wrong'", ["wrong"]) == (
        "open 'rtmp://h/live/***?k=***' failed: key=*** '***'"
    )


def test_sink_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeated"):
        Fanout([FileSink(tmp_path / "a.wav"), FileSink(tmp_path / "a.wav")])
