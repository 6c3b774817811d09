"""Talk to systemd: the ``sd_notify`` protocol, written by hand over a datagram socket.

systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) to a
``Type=notify`` service and ``$WATCHDOG_USEC`` when ``WatchdogSec=`` is set. The service sends
newline-separated ``KEY=VALUE`` datagrams: ``READY=1`` once it plays, ``WATCHDOG=1`` at least
once per interval, ``STOPPING=1`` on the way out, ``STATUS=...`` for ``systemctl status``.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op, so the station always
calls them.

Logs: when stderr is the journal (``$JOURNAL_STREAM`` names its device and inode), every line
starts with its syslog priority, ``<4>`` for a warning (sd-daemon(3)), so ``journalctl -p warning``
shows the station's warnings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Python level → syslog priority (sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7)
SYSLOG_PRIORITIES: tuple[tuple[int, int], ...] = (
    (logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
)  # fmt: skip


def syslog_priority(level: int) -> int:
    """The syslog priority of a Python logging level (anything below INFO is debug, 7)."""
    return next((priority for threshold, priority in SYSLOG_PRIORITIES if level >= threshold), 7)


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal's socket: ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of it."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record (a traceback's too) with ``<N>``, its syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def log_formatter(stream: TextIO, environ: Mapping[str, str] | None = None) -> logging.Formatter:
    """:class:`JournalFormatter` when ``stream`` is the journal, else the plain one-line format."""
    if stream_is_journal(stream, environ):
        return JournalFormatter(LOG_FORMAT)
    return logging.Formatter(LOG_FORMAT)


class Notifier:
    """Sends ``sd_notify`` messages to the socket named in ``$NOTIFY_SOCKET``.

    Args:
        environ: where to read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``/``WATCHDOG_PID``
            (default ``os.environ``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace: a leading NUL byte on the wire.
        self.address: str = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_seconds: float | None = _watchdog_seconds(env)
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(self.address)

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines, e.g. ``notify(READY=1, STATUS="on air")``.

        Returns True if it was sent. The send never blocks (the audio clock calls this): when the
        manager's queue is full the message is dropped. A failure is logged once and never
        raised: systemd going away must not take the music down with it.
        """
        if not self.enabled:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._socket.setblocking(False)
                self._socket.sendto(message.encode("utf-8"), self.address)
            except OSError as error:
                if not self._warned:
                    log.warning("systemd notify to %s failed: %s", self.address.replace("\0", "@"), error)
                    self._warned = True
                return False
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1``: startup finished, the audio clock runs."""
        return self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def stopping(self, status: str = "") -> bool:
        """``STOPPING=1``: shutdown began (recordings are being finalised)."""
        return self.notify(STOPPING=1, STATUS=status) if status else self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1``: the playlist is being re-read."""
        return self.notify(RELOADING=1)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping."""
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class StatusReporter:
    """Keeps systemd's ``STATUS=`` on what is on air: ``on air: NAME: PROMPT``, sent from the
    audio clock each time another title becomes audible (``systemctl status`` shows it).

    Args:
        notifier: where to send it.
        station_name: the playlist's station name (read again on each title, so a reload shows).
    """

    def __init__(self, notifier: Notifier, station_name: Callable[[], str]) -> None:
        self.notifier = notifier
        self.station_name = station_name
        self.title: str | None = None

    def on_block(self, block: Any) -> None:
        title = block.now_playing.title
        if title == self.title or not self.notifier.enabled:
            return
        self.title = title
        self.notifier.status(status_line(self.station_name(), title, block.now_playing.fallback))


def status_line(station_name: str, title: str, fallback: bool = False) -> str:
    """``on air: Late Night Lofi: jazzy lofi → church bells`` (``(repeating: the next clip is late)``)."""
    line = f"on air: {station_name}: {title}"
    return line + " (repeating: the next clip is late)" if fallback else line


class Watchdog:
    """Pets systemd's watchdog from the audio clock, at most every half interval.

    The consumer calls :meth:`pet` after every block it plays; only a running clock pets, so a
    stalled clock lets ``WatchdogSec=`` expire and systemd restarts the service. A slow engine
    does not stall the clock (fallback audio plays), so it never trips the watchdog.

    Args:
        notifier: where to send ``WATCHDOG=1``.
        clock: monotonic seconds (injectable for tests with a real, controlled clock).
    """

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self._clock = clock
        interval = notifier.watchdog_seconds
        # systemd's own advice (sd_watchdog_enabled(3)): ping at half the interval.
        self.pet_interval_seconds: float | None = interval / 2 if interval else None
        self._last_pet: float | None = None

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled and self.pet_interval_seconds is not None

    def pet(self) -> bool:
        """Send ``WATCHDOG=1`` if half an interval passed since the last one; True if sent."""
        if not self.enabled:
            return False
        now = self._clock()
        if self._last_pet is not None and now - self._last_pet < self.pet_interval_seconds:
            return False
        if not self.notifier.watchdog():
            return False  # try again at the next block
        self._last_pet = now
        return True


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """The watchdog interval, if it is meant for this process (``WATCHDOG_PID`` matches)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6


def _one_line(value: str | int) -> str:
    return " ".join(str(value).split())
