"""Hot reload of the playlist: on SIGHUP (``systemctl reload riffradio``) or when the file changes.

Both triggers end in ``station.reload(path)``, which validates the file and switches at the next
clip, or logs the ``file:line:column`` errors and keeps playing the old playlist. The file is
watched by polling its ``stat`` (inode, size, mtime): no inotify dependency, and editors that save
by writing a new file and renaming it over the old one are seen too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from pathlib import Path
from typing import Any, Protocol

from riffradio.control.systemd import Notifier

log = logging.getLogger(__name__)


class Reloadable(Protocol):
    def reload(self, path: Path) -> Any:
        """Validate ``path`` and switch to it at the next clip; may be a coroutine function."""


FileSignature = tuple[int, int, int, int] | None


def file_signature(path: Path) -> FileSignature:
    """What changes when a file is rewritten or replaced; None while it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PlaylistReloader:
    """Calls ``station.reload(path)`` on SIGHUP and when the playlist file changes.

    Args:
        station: what to reload.
        path: the playlist file.
        poll_seconds: how often the file's stat is checked (0 disables watching).
        notifier: told ``RELOADING=1`` / ``READY=1`` around each reload, if given.
        handle_sighup: install a SIGHUP handler on the running loop (main thread only).
    """

    def __init__(
        self,
        station: Reloadable,
        path: Path | str,
        poll_seconds: float = 1.0,
        notifier: Notifier | None = None,
        handle_sighup: bool = True,
    ) -> None:
        self.station = station
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self.notifier = notifier
        self.handle_sighup = handle_sighup
        self.reloads = 0
        self._wake = asyncio.Event()
        self._reasons: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sighup_installed = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.handle_sighup:
            loop.add_signal_handler(signal.SIGHUP, self.request, "SIGHUP")
            self._sighup_installed = True
        self._tasks.append(asyncio.create_task(self._reload_loop(), name="playlist reload"))
        if self.poll_seconds > 0:
            self._tasks.append(asyncio.create_task(self._watch_loop(), name="playlist watch"))

    def request(self, reason: str) -> None:
        """Ask for a reload (safe from a signal handler on the loop); reloads run one at a time."""
        self._reasons.append(reason)
        self._wake.set()

    async def close(self) -> None:
        if self._sighup_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup_installed = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _watch_loop(self) -> None:
        last = file_signature(self.path)
        while True:
            await asyncio.sleep(self.poll_seconds)
            current = file_signature(self.path)
            if current != last and current is not None:
                # Wait one more poll so a file still being written is read whole.
                await asyncio.sleep(self.poll_seconds)
                current = file_signature(self.path)
                self.request("file changed")
            last = current

    async def _reload_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            reasons = ", ".join(dict.fromkeys(self._reasons))
            self._reasons.clear()
            log.info("reload: %s: re-reading %s", reasons, self.path)
            if self.notifier is not None:
                self.notifier.reloading()
            try:
                result = self.station.reload(self.path)
                if inspect.isawaitable(result):
                    await result
            except Exception as error:  # noqa: BLE001 - a failed reload keeps the old playlist playing
                log.error("reload: %s: %s (still playing the previous playlist)", self.path, error)
            finally:
                self.reloads += 1
                if self.notifier is not None:
                    self.notifier.ready()
