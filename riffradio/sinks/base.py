"""The contract every output (speakers, file, Icecast, RTMP) fulfils.

A sink is plain blocking code. The station's fan-out (``riffradio.sinks.fanout``) gives each
sink its own thread and bounded queue, calls :meth:`Sink.open` (again, with backoff, after a
failure), :meth:`Sink.write` for each block and :meth:`Sink.close` at the end, so a slow or
dead sink never stalls the audio clock or the other sinks. A sink owns the timeouts of its own
network writes: ``write`` must return or raise within a bounded time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from riffradio.core.types import AudioBlock

if TYPE_CHECKING:
    from riffradio.sinks.encoders import EncoderPool


class SinkError(Exception):
    """A sink failed; ``str(error)`` is one line that names the sink and the problem."""


@dataclass
class SinkStatus:
    """How one output is doing, for /api/nowplaying and /metrics.

    Attributes:
        name: the sink's name (e.g. ``icecast:/riffradio.mp3``).
        state: ``"starting"``, ``"connected"``, ``"reconnecting"``, ``"stopped"`` or ``"failed"``.
        bytes_sent: encoded bytes written so far.
        blocks_written: audio blocks written so far.
        blocks_dropped: blocks dropped because the sink was down or slow.
        reconnects: successful re-opens after a failure.
        last_error: the last failure, one line, or "".
        underflows: output underflows a sound card reported (gaps heard; speakers only).
    """

    name: str
    state: str = "starting"
    bytes_sent: int = 0
    blocks_written: int = 0
    blocks_dropped: int = 0
    reconnects: int = 0
    last_error: str = ""
    underflows: int = 0


class Sink(abc.ABC):
    """One output of the station."""

    #: unique, human-readable name used in logs and status (never contains secrets)
    name: str

    #: exact strings (passwords, stream keys) the fan-out masks as ``***`` in every log line
    secrets: tuple[str, ...] = ()

    #: True for a sink that encodes and shares its encodes (then :meth:`bind_encoders` matters)
    shares_encoders: bool = False

    def bind_encoders(self, pool: EncoderPool) -> None:
        """Share encodes with the station's other outputs of the same settings (no-op by default).

        The fan-out calls it once, before :meth:`open`, for every sink with ``shares_encoders``.
        """

    @abc.abstractmethod
    def open(self) -> None:
        """Connect / open the output. Raises on failure (the fan-out retries with backoff)."""

    @abc.abstractmethod
    def write(self, block: AudioBlock) -> int:
        """Send one block; returns the number of encoded bytes written. Raises on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and close; must not raise for an output that is already broken."""
