"""The consumer: the station's audio clock. It reads fixed blocks from the buffer and fans them out.

It runs in its own thread on the monotonic clock (in real time), or as fast as clips arrive
(offline render). Per block: read (crossfades, fallback), apply the live volume (ramped across the
block, so a fader never clicks), limit the true peak, stamp it with the station clock and push it to
the fan-out, which never blocks: a slow or dead sink cannot stall the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from riffradio.metrics import StationMetrics
from riffradio.station.buffer import CrossfadeBuffer
from riffradio.station.loudness import LiveGain, TruePeakLimiter
from riffradio.station.state import StationState
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

DEFAULT_BLOCK_FRAMES = 2048  # 46 ms at 44.1 kHz
BlockListener = Callable[[AudioBlock], None]


class BlockSink(Protocol):
    """What the consumer pushes to (the fan-out): ``push(block)`` must never block."""

    def push(self, block: AudioBlock) -> None: ...


class Consumer:
    """The audio clock.

    Args:
        buffer: where audio comes from.
        output: the fan-out (``push(block)``).
        state: read every block for volume and crossfade.
        metrics: the station's series.
        sample_rate_hz, channels: of the stream.
        realtime: pace blocks on the monotonic clock; False renders as fast as clips come.
        block_frames: frames per block.
        max_frames: stop after this many frames (the last block is cut to match), or None.
        true_peak_dbtp: limiter ceiling.
        producer_alive: for offline render, tells whether waiting for a clip still makes sense.
    """

    def __init__(
        self,
        buffer: CrossfadeBuffer,
        output: BlockSink,
        state: StationState,
        metrics: StationMetrics,
        sample_rate_hz: int,
        channels: int,
        realtime: bool = True,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        max_frames: int | None = None,
        true_peak_dbtp: float = -1.0,
        producer_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.buffer = buffer
        self.output = output
        self.state = state
        self.metrics = metrics
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.realtime = realtime
        self.block_frames = block_frames
        self.max_frames = max_frames
        self.producer_alive = producer_alive
        self.limiter = TruePeakLimiter(channels, sample_rate_hz, true_peak_dbtp)
        self.frames_played = 0
        self.started_monotonic: float | None = None
        self.last_block_monotonic: float | None = None
        self.finished = threading.Event()  # set when max_frames is reached or the clock stops
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._listeners: list[BlockListener] = []
        self.volume = LiveGain(state.snapshot().volume)
        self._fallback_frames_seen = 0
        self._thread = threading.Thread(target=self._run, name="riffradio audio clock", daemon=True)

    def add_listener(self, listener: BlockListener) -> None:
        """Call ``listener(block)`` on the clock thread after every block (keep it quick)."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Finish the block in hand and stop the clock."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_seconds)

    @property
    def seconds_played(self) -> float:
        return self.frames_played / self.sample_rate_hz

    # -- the clock thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - reported to the station, which stops cleanly
            self.error = error
            log.exception("audio clock stopped by an error")
        finally:
            self.finished.set()

    def _wait_for_audio(self, frames: int) -> bool:
        """Offline: wait until ``frames`` can be read without fallback. False if stopping."""
        while not self._stop.is_set():
            if self.buffer.pending_clips > 0:
                return True
            crossfade = self.state.snapshot().crossfade_seconds
            if self.buffer.frames_until_join(crossfade) >= frames:
                return True
            if not self.producer_alive():
                return True  # nothing more will come: the fallback keeps it going
            self.buffer.wait_for_change(0.05)
        return False

    def _loop(self) -> None:
        start = time.monotonic()
        self.started_monotonic = start
        while not self._stop.is_set():
            frames = self.block_frames
            if self.max_frames is not None:
                frames = min(frames, self.max_frames - self.frames_played)
                if frames <= 0:
                    break
            if self.realtime:
                due = start + self.frames_played / self.sample_rate_hz
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                elif delay < -1.0:
                    # the machine stalled (suspend, overload): resynchronise instead of bursting
                    log.warning("audio clock was %.2f s late; resynchronised", -delay)
                    start = time.monotonic() - self.frames_played / self.sample_rate_hz
            elif not self._wait_for_audio(frames):
                break
            self._play_block(frames)
        self.finished.set()

    def _play_block(self, frames: int) -> None:
        snapshot = self.state.snapshot()
        samples, now = self.buffer.read(frames, snapshot.crossfade_seconds)
        if now is None:  # nothing pushed yet (the station starts the clock after the first clip)
            return
        self.volume.gain = snapshot.volume
        for stage in (self.volume, self.limiter):  # the output chain, in pedalboard's shape
            samples = stage.process(samples, self.sample_rate_hz)
        block = AudioBlock(samples=samples, sample_rate_hz=self.sample_rate_hz, start_frame=self.frames_played, now_playing=now)
        self.output.push(block)
        self.frames_played += frames
        self.last_block_monotonic = time.monotonic()
        seconds = frames / self.sample_rate_hz
        self.metrics.audio_seconds_played.inc(seconds)
        fallback_frames = self.buffer.fallback_frames
        if fallback_frames > self._fallback_frames_seen:
            self.metrics.fallback_seconds.inc((fallback_frames - self._fallback_frames_seen) / self.sample_rate_hz)
            self._fallback_frames_seen = fallback_frames
        self.metrics.buffer_seconds_ahead.set(self.buffer.seconds_ahead(snapshot.crossfade_seconds))
        for listener in self._listeners:
            try:
                listener(block)
            except Exception:  # noqa: BLE001 - a listener must never stop the clock
                log.exception("block listener failed")
