"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations

from collections.abc import Callable


class RiffradioError(Exception):
    """A problem the user can fix; ``str(error)`` is one line that names what and where.

    The CLI prints it as ``riffradio: error: <message>`` and exits with ``exit_code``.
    """

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


CancelCheck = Callable[[], bool]
"""Asked between steps of long work (UNet steps, Griffin-Lim iterations); True abandons it."""


class Cancelled(Exception):
    """Work was abandoned between steps because its ``should_cancel`` returned True.

    The station uses it to stop making a clip that a DJ's change has just made obsolete.
    """
