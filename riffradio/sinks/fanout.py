"""Fan-out: one audio clock, many independent outputs.

The station's consumer calls :meth:`Fanout.push` once per :class:`AudioBlock`, in real time.
Each sink gets its own thread and a bounded queue, so a slow, hung or dead output never stalls
the clock or the other outputs (Liquidsoap's ``output.*`` operators behave the same way):

- ``push`` never blocks: when a sink's queue is full, its OLDEST block is dropped and counted;
- a failing ``open``/``write`` is logged as one line (secrets scrubbed), the sink goes to
  ``"reconnecting"`` and is re-opened with exponential backoff (first retry after
  ``first_retry_seconds``, doubling up to ``max_retry_seconds``), then resumes by itself;
- the block whose write failed is written again first after the re-open (a file sink on a full
  disk loses nothing that still fits in its queue);
- ``close`` drains what is queued (best effort, within a deadline), closes every sink and joins
  the threads.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence

from riffradio.metrics import StationMetrics
from riffradio.sinks.base import Sink, SinkStatus
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

# "scheme://user:password@host" -> "scheme://user:***@host"
_URL_PASSWORD = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)


# a URL in a message, up to whitespace or a quote
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]*", re.IGNORECASE)
# one component of a URL: between / ? & = : @ # ; separators
_URL_COMPONENT = re.compile(r"[^/?&=:@#;]+")
# a value outside URLs: a quoted string, or what follows "key=" up to whitespace or punctuation
_QUOTED_OR_ASSIGNED = re.compile(r"""(?P<q>['"])(?P<quoted>[^'"\s]*)(?P=q)|=(?P<assigned>[^\s,;&)'"]+)""")


def scrub_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` as one line with URL passwords and the given secret values masked.

    A secret is masked where it stands as a whole value: a component of a URL (a path segment,
    a query value), a quoted string, or the value of ``key=value``; never inside the prose
    around it (a password ``wrong`` leaves "(wrong source password?)" as it is).

    Args:
        text: an error message, possibly multi-line, possibly quoting a URL.
        secrets: exact strings (stream keys, passwords) to replace with ``***``.
    """
    wanted = {secret for secret in secrets if secret}
    line = " ".join(str(text).split())
    line = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", line)
    if not wanted:
        return line

    def mask_components(url: re.Match[str]) -> str:
        return _URL_COMPONENT.sub(lambda c: "***" if c[0] in wanted else c[0], url[0])

    def mask_value(match: re.Match[str]) -> str:
        if match["q"] is not None:
            return f"{match['q']}***{match['q']}" if match["quoted"] in wanted else match[0]
        return "=***" if match["assigned"] in wanted else match[0]

    pieces = []
    last = 0
    for url in _URL.finditer(line):  # URLs first, so a query's key=value is not read twice
        pieces.append(_QUOTED_OR_ASSIGNED.sub(mask_value, line[last : url.start()]))
        pieces.append(mask_components(url))
        last = url.end()
    pieces.append(_QUOTED_OR_ASSIGNED.sub(mask_value, line[last:]))
    return "".join(pieces)


def describe_error(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """One safe line for a sink failure: the exception's type and message, secrets masked."""
    message = scrub_secrets(str(error), secrets)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _SinkWorker:
    """The thread, queue and status of one sink."""

    def __init__(
        self,
        sink: Sink,
        metrics: StationMetrics | None,
        queue_blocks: int,
        first_retry_seconds: float,
        max_retry_seconds: float,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        # Sinks may list strings that must never reach a log line (stream keys, passwords).
        self.secrets: tuple[str, ...] = tuple(s for s in sink.secrets if s)
        self.metrics = metrics
        self.first_retry_seconds = first_retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.queue: collections.deque[AudioBlock] = collections.deque()
        self.queue_blocks = queue_blocks
        self.cond = threading.Condition()
        self.status = SinkStatus(name=self.name)
        self.stopping = False  # no more blocks will come; drain until drain_deadline
        self.drain_deadline = float("inf")
        self.sink_closed = False  # guarded by cond: close() the sink exactly once
        self.last_warning = ""  # the failure last logged at WARNING
        self.thread = threading.Thread(target=self._run, name=f"sink {self.name}", daemon=True)

    # -- called from the consumer thread -------------------------------------------------
    def push(self, block: AudioBlock) -> None:
        with self.cond:
            if self.stopping:
                return
            if len(self.queue) >= self.queue_blocks:
                self.queue.popleft()
                self._count_dropped(1)
            self.queue.append(block)
            self.cond.notify()

    # -- the sink's own thread -------------------------------------------------------------
    def _run(self) -> None:
        retry_seconds = self.first_retry_seconds
        pending: AudioBlock | None = None  # a block whose write failed, written again first
        failed_once = False
        down_since = 0.0
        while True:
            # 1. open (again), with backoff between failures
            try:
                self.sink.open()
            except Exception as error:  # noqa: BLE001 - any failure of a sink means "retry later"
                if not self._fail("open", error, retry_seconds, first=not failed_once):
                    break
                if not failed_once:
                    down_since = time.monotonic()
                failed_once = True
                retry_seconds = min(retry_seconds * 2, self.max_retry_seconds)
                continue
            if failed_once:
                log.info("%s: back after %.1f s", self.name, time.monotonic() - down_since)
                self.status.reconnects += 1
                if self.metrics is not None:
                    self.metrics.sink_reconnects.labels(sink=self.name).inc()
            self._set_state("connected")
            failed_once = False

            # 2. write until the queue is drained at close, or a write fails
            while True:
                if pending is None:
                    pending = self._next_block()
                    if pending is None:
                        self._close_sink()
                        self._set_state("stopped")
                        return
                try:
                    sent = int(self.sink.write(pending) or 0)
                except Exception as error:  # noqa: BLE001
                    self._close_sink(reopen_later=True)
                    down_since = time.monotonic()
                    failed_once = True
                    if not self._fail("write", error, retry_seconds, first=True):
                        self._set_state("stopped")
                        return
                    retry_seconds = min(retry_seconds * 2, self.max_retry_seconds)
                    break
                pending = None
                # Only a block that went out proves the sink works again: an output that opens
                # and then fails at once (a full disk, a server that drops the source) keeps
                # backing off instead of re-opening every first_retry_seconds.
                retry_seconds = self.first_retry_seconds
                self.status.blocks_written += 1
                self.status.bytes_sent += sent
                if self.metrics is not None and sent:
                    self.metrics.sink_bytes_sent.labels(sink=self.name).inc(sent)
                self._count_underflows()
        self._close_sink()
        self._set_state("stopped")

    def _next_block(self) -> AudioBlock | None:
        """The next queued block; None once stopping and drained (or past the drain deadline)."""
        with self.cond:
            while True:
                if self.stopping and (not self.queue or time.monotonic() >= self.drain_deadline):
                    return None
                if self.queue:
                    return self.queue.popleft()
                self.cond.wait(0.5)

    def _fail(self, what: str, error: BaseException, retry_seconds: float, first: bool) -> bool:
        """Log the failure, wait out the backoff; False when the fan-out is closing."""
        message = describe_error(error, self.secrets)
        self.status.last_error = message
        self._set_state("reconnecting")
        # One line per outage at WARNING, and one more for each new answer while down (the server
        # back but refusing the source: 401, 403); the same failure repeated only at DEBUG.
        level = logging.WARNING if first or message != self.last_warning else logging.DEBUG
        if level == logging.WARNING:
            self.last_warning = message
        log.log(level, "%s: %s failed (%s); retrying in %.1f s", self.name, what, message, retry_seconds)
        deadline = time.monotonic() + retry_seconds
        with self.cond:
            while not self.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self.cond.wait(left)
            # closing while down: whatever is queued for this sink cannot be delivered
            self._count_dropped(len(self.queue))
            self.queue.clear()
            return False

    def _close_sink(self, reopen_later: bool = False) -> None:
        with self.cond:
            if self.sink_closed:
                return
            self.sink_closed = not reopen_later
        try:
            self.sink.close()
        except Exception as error:  # noqa: BLE001 - close must not take the thread down
            log.debug("%s: close failed (%s)", self.name, describe_error(error, self.secrets))

    def _set_state(self, state: str) -> None:
        self.status.state = state
        if self.metrics is not None:
            self.metrics.sink_up.labels(sink=self.name).set(1 if state == "connected" else 0)

    def _count_underflows(self) -> None:
        """A sound card's underflows (``sink.underflows``, if it counts them) into status and metrics."""
        total = getattr(self.sink, "underflows", None)
        if not isinstance(total, int) or total <= self.status.underflows:
            return
        if self.metrics is not None:
            self.metrics.sink_underflows.labels(sink=self.name).inc(total - self.status.underflows)
        self.status.underflows = total

    def _count_dropped(self, blocks: int) -> None:
        if blocks <= 0:
            return
        self.status.blocks_dropped += blocks
        if self.metrics is not None:
            self.metrics.sink_dropped_blocks.labels(sink=self.name).inc(blocks)


class Fanout:
    """Feeds every sink from one audio clock; each sink on its own thread with a bounded queue.

    Args:
        sinks: the outputs; their ``name`` must be unique (it labels logs and metrics).
        metrics: the station's metrics (``sink_up``, ``sink_reconnects``, ``sink_dropped_blocks``,
            ``sink_bytes_sent`` per sink), or None.
        queue_blocks: blocks each sink may have waiting; beyond that the oldest is dropped.
        first_retry_seconds: wait before the first re-open after a failure.
        max_retry_seconds: cap of the exponential backoff between re-opens.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        metrics: StationMetrics | None = None,
        queue_blocks: int = 64,
        first_retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        if queue_blocks < 1:
            raise ValueError(f"queue_blocks must be >= 1, got {queue_blocks}")
        if first_retry_seconds <= 0 or max_retry_seconds < first_retry_seconds:
            raise ValueError("need 0 < first_retry_seconds <= max_retry_seconds")
        names = [sink.name for sink in sinks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"sink names must be unique; repeated: {', '.join(duplicates)}")
        self._workers = [
            _SinkWorker(sink, metrics, queue_blocks, first_retry_seconds, max_retry_seconds) for sink in sinks
        ]
        # Mounts of the same format share one encode (Liquidsoap's shared encoders).
        self._encoders = None
        sharing = [sink for sink in sinks if sink.shares_encoders]
        if sharing:
            from riffradio.sinks.encoders import EncoderPool  # PyAV: only when a sink encodes

            self._encoders = EncoderPool()
            for sink in sharing:
                sink.bind_encoders(self._encoders)
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Start one thread per sink; each opens its sink (retrying in the background on failure)."""
        if self._started:
            return
        self._started = True
        for worker in self._workers:
            worker.thread.start()

    def push(self, block: AudioBlock) -> None:
        """Queue ``block`` for every sink. Never blocks; a full queue drops its oldest block."""
        for worker in self._workers:
            worker.push(block)

    def statuses(self) -> list[SinkStatus]:
        """A snapshot of every sink's status, in the order the sinks were given."""
        return [dataclasses.replace(worker.status) for worker in self._workers]

    def close(self, timeout_seconds: float = 4.0) -> None:
        """Write what is queued (best effort, up to ``timeout_seconds``), close every sink, join threads."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_seconds
        for worker in self._workers:
            with worker.cond:
                worker.stopping = True
                worker.drain_deadline = deadline
                worker.cond.notify_all()
        if not self._started:
            for worker in self._workers:
                worker._close_sink()
                worker._set_state("stopped")
            self._close_encoders()
            return
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if worker.thread.is_alive():
                # Stuck in a write past the deadline: closing the sink from here unblocks
                # socket-based sinks; the thread is a daemon either way.
                log.warning("%s: still busy after %.1f s; closing it anyway", worker.name, timeout_seconds)
                worker._close_sink()
                worker.thread.join(1.0)
                worker._set_state("stopped")
        self._close_encoders()

    def _close_encoders(self) -> None:
        if self._encoders is not None and not any(w.thread.is_alive() for w in self._workers):
            self._encoders.close()
