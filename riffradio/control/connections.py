"""Guards every server the station runs shares: accept errors logged by the interval, not per attempt.

When the process runs out of file descriptors (or the kernel of buffers), asyncio's accept loop
reports every failed ``accept()`` to the loop's exception handler, with a traceback, and tries
again a second later, once per listening socket: hundreds of multi-line log entries a minute
while the flood lasts. :class:`AcceptErrorLog` takes those reports over: one WARNING per
``interval_seconds`` with the count and the reason, nothing else; every other report goes on to
the handler that was there before.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: errno values of an accept() that fails for want of resources (asyncio retries after 1 s)
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
DEFAULT_INTERVAL_SECONDS = 10.0


def is_accept_resource_error(context: dict[str, Any]) -> bool:
    """True for asyncio's "socket.accept() out of system resource" report (or any report of an
    accept failing with EMFILE/ENFILE/ENOBUFS/ENOMEM)."""
    error = context.get("exception")
    if not isinstance(error, OSError) or error.errno not in ACCEPT_RESOURCE_ERRNOS:
        return False
    return "accept" in str(context.get("message", "")) or "socket" in context


class AcceptErrorLog:
    """The loop's exception handler for accept errors: counts them, logs once per interval.

    Args:
        interval_seconds: at most one line per this many seconds, with the count since the last.
        clock: monotonic seconds.
        previous: the handler other reports go to (``None``: the loop's default handler).

    Attributes:
        errors: accept errors seen in all.
        lines_logged: WARNING lines written about them.
    """

    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.previous = previous
        self.errors = 0
        self.lines_logged = 0
        self._pending: collections.Counter[str] = collections.Counter()
        self._logged_at = -float("inf")
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not is_accept_resource_error(context):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.errors += 1
        error = context["exception"]
        self._pending[error.strerror or errno.errorcode.get(error.errno, str(error.errno))] += 1
        if self.clock() - self._logged_at >= self.interval_seconds:
            self.flush()
        elif self._timer is None:  # the last of a burst is reported too, one interval later
            self._timer = loop.call_later(self.interval_seconds, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if not self._pending:
            return
        reasons = ", ".join(f"{reason} ×{count}" for reason, count in self._pending.most_common())
        log.warning(
            "%d connection(s) could not be accepted in the last %.0f s (%s); they are refused until "
            "descriptors are free again (the station's servers cap their connections; see LimitNOFILE)",
            sum(self._pending.values()), self.interval_seconds, reasons,
        )  # fmt: skip
        self.lines_logged += 1
        self._logged_at = self.clock()
        self._pending.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


def install_accept_error_log(
    loop: asyncio.AbstractEventLoop, interval_seconds: float = DEFAULT_INTERVAL_SECONDS
) -> AcceptErrorLog:
    """Put an :class:`AcceptErrorLog` in front of ``loop``'s exception handler; returns it."""
    handler = AcceptErrorLog(interval_seconds, previous=loop.get_exception_handler())
    loop.set_exception_handler(handler)
    return handler
