"""Live control over OSC: a DJ's controller (TouchOSC, Open Stage Control, ``oscsend``) steers
the station while it plays.

Datagrams (UDP) and, if configured, OSC-over-TCP streams (OSC 1.1 SLIP frames, or OSC 1.0's
size-prefixed packets as liblo sends them) arrive on the event loop; python-osc parses and
builds the packets, and a strict dispatcher checks each one before anything reaches
:class:`StationState`:

1. the sender must be on the allow-list, when there is one;
2. the datagram must be a well-formed OSC 1.0 message or bundle: a type-tag string, only the tags
   ``i h f d s T F N``, zero padding, and exactly as many bytes as its tags say (python-osc alone
   pads a truncated float with zeros, ignores trailing bytes and skips unknown tags);
3. the address must be one of :data:`ADDRESSES` (address patterns are not supported);
4. the arguments must have the types the address takes, and the state's setter must accept the
   value (finite, in range).

Anything else is rejected, counted in ``riffradio_osc_messages{outcome=...}`` and logged with its
reason through a token bucket, so a flood costs a few log lines a second, never the disk; a
well-formed message whose type tags or value are refused is answered ``/riffradio/error s
ADDRESS s REASON``. Each sender has a rate limit (a token bucket per address); TCP connections
are capped in number and closed when idle. Answers fit one datagram, and a sender whose address
is unproven (UDP) and who has not subscribed gets at most three times the bytes it sent.
Bundle time tags are ignored: a change applies at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc import slip
from pythonosc.parsing import osc_types

from riffradio.control.fields import FIELDS, ArgParser, Field, Rejected, number_arg, tag_of, text_arg, toggle_arg, trigger_arg
from riffradio.errors import RiffradioError
from riffradio.metrics import StationMetrics
from riffradio.station.state import StateSnapshot, StationState
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

PREFIX = "/riffradio"
#: every address the station answers to, documented in docs/osc.md
#: (the settable ones are riffradio.control.fields.FIELDS, shared with HTTP)
ADDRESSES: tuple[str, ...] = tuple(f"{PREFIX}/{name}" for name in (*FIELDS, "state", "subscribe", "unsubscribe"))
#: values of the ``outcome`` label of ``riffradio_osc_messages``
OUTCOMES: tuple[str, ...] = (
    "accepted", "denied", "malformed", "unknown_address", "bad_type_tags", "bad_value", "error",
    "rate_limited", "too_many_connections",
)
SUPPORTED_TAGS = frozenset("ihfdsTFN")
MAX_MESSAGES_PER_PACKET = 64
MAX_BUNDLE_DEPTH = 4
MAX_SUBSCRIBERS = 16
#: an answer never exceeds one datagram of this size (UDP takes 65 507; this leaves room)
MAX_REPLY_BYTES = 32 * 1024
#: an answer to a sender whose address is unproven (UDP) and who has not subscribed is at most
#: this many times its request: the station is no reflection amplifier (QUIC allows 3 too)
AMPLIFICATION_FACTOR = 3
#: a full state answer over UDP is rationed station-wide (a forged /subscribe flood gets this size)
FULL_ANSWERS_PER_SECOND = 4.0
MIN_REPLY_BYTES = 512
#: refusals answered per sender and second (``/riffradio/error``); the rest are only counted and logged
ERROR_ANSWERS_PER_SECOND = 10.0
#: each sender's default rate limit (messages a second; a burst of twice as many)
DEFAULT_MAX_MESSAGES_PER_SECOND = 500.0
#: OSC over TCP: connections at once, and how long one may stay silent
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_SECONDS = 60.0
#: the longest packet a TCP stream may carry (the longest datagram UDP could)
MAX_PACKET_BYTES = 65_536
# A subscriber that stops reading must not grow the transport's buffer without bound.
MAX_SEND_BUFFER_BYTES = 1 << 20
_BUNDLE_PREFIX = b"#bundle\x00"
_ADDRESS_RE = re.compile(r"/[A-Za-z0-9_/-]{1,127}")
_INT32_RANGE = range(-(2**31), 2**31)


#: a message the station will not apply; ``outcome`` is one of :data:`OUTCOMES`
OscRejected = Rejected


class OscConfigLike(Protocol):
    """The playlist's ``control.osc`` section (``riffradio.playlist.model.OscConfig``)."""

    host: str
    port: int
    allow: Sequence[str]


@dataclasses.dataclass(frozen=True)
class OscViews:
    """What the OSC server reads from and writes to the station (narrow views, no Station).

    Attributes:
        state: the live state (written by the setters, subscribed for change echoes).
        metrics: the station's Prometheus series (message outcomes).
        nowplaying: the station's now-playing document (state answers).
        add_block_listener: registers a callable the audio clock calls after every block, so
            subscribers follow the title on air (a no-op where nothing plays).
    """

    state: StationState
    metrics: StationMetrics
    nowplaying: Callable[[], dict[str, Any]]
    add_block_listener: Callable[[Callable[[AudioBlock], None]], None] = lambda listener: None


# -- reading datagrams (pure functions) ---------------------------------------------------------


def _show(text: str, limit: int = 60) -> str:
    """A sender's text, quoted and cut, safe to put in one log line."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def split_packet(data: bytes, depth: int = 0) -> list[bytes]:
    """The message datagrams of an OSC packet: the message itself, or a bundle's (nested) elements."""
    if data.startswith(b"/"):
        return [data]
    if not data.startswith(_BUNDLE_PREFIX):
        raise OscRejected("malformed", f"{len(data)}-byte datagram is not an OSC message or bundle")
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscRejected("malformed", f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    index = len(_BUNDLE_PREFIX) + 8  # the 8-byte time tag is ignored: changes apply at once
    if len(data) < index:
        raise OscRejected("malformed", "bundle cut off inside its time tag")
    messages: list[bytes] = []
    while index < len(data):
        size = int.from_bytes(data[index : index + 4], "big", signed=True)
        left = len(data) - index - 4
        if left < 0 or size <= 0 or size % 4 or size > left:
            raise OscRejected(
                "malformed", f"bundle element at byte {index} claims {size} bytes, {max(left, 0)} are left"
            )
        messages += split_packet(data[index + 4 : index + 4 + size], depth + 1)
        if len(messages) > MAX_MESSAGES_PER_PACKET:
            raise OscRejected("malformed", f"bundle holds more than {MAX_MESSAGES_PER_PACKET} messages")
        index += 4 + size
    if not messages:
        raise OscRejected("malformed", "bundle holds no message")
    return messages


def decode_message(dgram: bytes) -> OscMessage:
    """Parse one message strictly: type tags required and supported, length exactly as tagged."""
    try:
        address, index = osc_types.get_string(dgram, 0)
        if index >= len(dgram):
            raise OscRejected("malformed", f"{_show(address)} has no type-tag string")
        tags, _ = osc_types.get_string(dgram, index)
    except OscRejected:
        raise
    except Exception as error:  # ParseError, UnicodeDecodeError
        raise OscRejected("malformed", f"unreadable address or type tags ({error})") from None
    if not tags.startswith(","):
        raise OscRejected("malformed", f"{_show(address)}: type-tag string {_show(tags)} lacks its ','")
    unsupported = sorted(set(tags[1:]) - SUPPORTED_TAGS)
    if unsupported:
        raise OscRejected(
            "bad_type_tags",
            f"{_show(address)}: unsupported type tag(s) {_show(''.join(unsupported))}; riffradio takes i h f d s T F N",
        )
    try:
        message = OscMessage(dgram)
        # Re-encoding tells the exact length the tags call for.
        builder = OscMessageBuilder(address)
        for tag, value in zip(tags[1:], message.params):
            builder.add_arg(value, tag)
        expected = builder.build().dgram
    except Exception as error:
        raise OscRejected("malformed", f"{_show(address)}: arguments do not match type tags {_show(tags)} ({error})") from None
    if len(expected) != len(dgram):
        raise OscRejected(
            "malformed", f"{_show(address)}: {len(dgram)} bytes, but type tags {_show(tags)} make {len(expected)}"
        )
    if expected != dgram and not any(isinstance(p, float) and math.isnan(p) for p in message.params):
        raise OscRejected("malformed", f"{_show(address)}: padding bytes are not zero")
    return message


# -- arguments (pure functions: address, args -> value, or OscRejected) ------------------------


def reply_port_arg(address: str, args: Sequence[Any]) -> int | None:
    """Optional UDP port to answer on (at the sender's address); ``None`` = the sender's port."""
    if not args:
        return None
    if len(args) != 1:
        tags = "".join(tag_of(a) for a in args)
        raise OscRejected("bad_type_tags", f"{address} takes one optional reply port (i), got type tags ',{tags}'")
    value = args[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise OscRejected("bad_type_tags", f"{address} takes an optional reply port (i), got '{tag_of(value)}'")
    if not 1 <= value <= 65535:
        raise OscRejected("bad_value", f"{address}: reply port {value} is not in 1..65535")
    return value


# -- writing datagrams (pure functions) ---------------------------------------------------------


def _tagged(value: Any) -> tuple[str, Any]:
    """OSC type tag and value for a state value; booleans go out as 0/1 so toggles follow."""
    if isinstance(value, bool):
        return "i", int(value)
    if isinstance(value, int):
        return ("i" if value in _INT32_RANGE else "h"), value
    if isinstance(value, float):
        return "f", value
    return "s", str(value)


def field_message(name: str, value: Any) -> bytes:
    """``/riffradio/<name> value``: the echo of one change, at the address that sets it."""
    builder = OscMessageBuilder(f"{PREFIX}/{name}")
    tag, tagged = _tagged(value)
    builder.add_arg(tagged, tag)
    return builder.build().dgram


def state_fields(snapshot: StateSnapshot) -> list[tuple[str, Any]]:
    """The state as (field, value) pairs at the addresses that set them; unset overrides left out."""
    knobs = dataclasses.asdict(snapshot.knobs)
    fields: list[tuple[str, Any]] = [
        ("prompt", snapshot.live_prompt),
        ("to_prompt", snapshot.live_to_prompt),
        ("alpha", snapshot.live_alpha),
        ("seed", snapshot.live_seed),
        *((name, knobs[name]) for name in ("denoising", "guidance", "steps", "clips", "seed_image", "negative_prompt")),
        ("goto", snapshot.riff_index),
        ("hold", snapshot.hold),
        ("volume", snapshot.volume),
        ("crossfade", snapshot.crossfade_seconds),
    ]
    return [(name, value) for name, value in fields if value is not None]


def now_title(nowplaying: dict[str, Any]) -> str | None:
    """The title on air in the station's now-playing document (``now.title``), if any."""
    now = nowplaying.get("now")
    title = now.get("title") if isinstance(now, dict) else None
    return title if isinstance(title, str) else None


def state_bundle(snapshot: StateSnapshot, nowplaying: dict[str, Any], max_bytes: int = MAX_REPLY_BYTES) -> bytes:
    """The answer to ``/riffradio/state``: one bundle of field messages, the title on air and
    the whole state as JSON, in at most ``max_bytes`` (one datagram).

    What does not fit is left out from the end (the now-playing document first, then the JSON,
    then fields); when anything is, the bundle ends with ``/riffradio/truncated i FULL_BYTES``
    (subscribe, or use TCP, for all of it).
    """
    fields = state_fields(snapshot)
    title = now_title(nowplaying)
    if title is not None:
        fields.append(("nowplaying", title))
    messages = [field_message(name, value) for name, value in fields]
    document: dict[str, Any] = {"state": dataclasses.asdict(snapshot), "nowplaying": nowplaying}
    builder = OscMessageBuilder(f"{PREFIX}/state")
    builder.add_arg(json.dumps(document, default=str, ensure_ascii=False), "s")
    full = [*messages, builder.build().dgram]
    if _bundle_bytes(full) <= max_bytes:
        return _bundle(full)
    document["nowplaying"] = {"truncated": True}
    builder = OscMessageBuilder(f"{PREFIX}/state")
    builder.add_arg(json.dumps(document, default=str, ensure_ascii=False), "s")
    for candidate in ([*messages, builder.build().dgram], messages):
        if _bundle_bytes(candidate) + _TRUNCATED_BYTES <= max_bytes:
            return _bundle([*candidate, _truncated(_bundle_bytes(full))])
    kept: list[bytes] = []
    for message in messages:
        if _bundle_bytes([*kept, message]) + _TRUNCATED_BYTES > max_bytes:
            break
        kept.append(message)
    return _bundle([*kept, _truncated(_bundle_bytes(full))])


_BUNDLE_HEADER_BYTES = 16  # "#bundle\0" and the time tag
_TRUNCATED_BYTES = 4 + len(b"/riffradio/truncated\0\0\0\0,i\0\0") + 4


def _bundle_bytes(messages: Sequence[bytes]) -> int:
    return _BUNDLE_HEADER_BYTES + sum(4 + len(m) for m in messages)


def _bundle(messages: Sequence[bytes]) -> bytes:
    bundle = OscBundleBuilder(IMMEDIATELY)
    for message in messages:
        bundle.add_content(OscMessage(message))
    return bundle.build().dgram


def _truncated(full_bytes: int) -> bytes:
    builder = OscMessageBuilder(f"{PREFIX}/truncated")
    builder.add_arg(full_bytes, "i")
    return builder.build().dgram


# -- the rate-limited rejection log ------------------------------------------------------------


class RateLimitedLog:
    """A token bucket in front of a logger: ``burst`` lines at once, then ``lines_per_second``.

    What does not fit is counted by outcome and summarised in one line when tokens come back
    (or on :meth:`flush`), so the log says how much was dropped without growing with the flood.
    """

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 10,
        lines_per_second: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = float(burst)
        self._rate = lines_per_second
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._pending: collections.Counter[str] = collections.Counter()
        self.lines_logged = 0
        self.lines_suppressed = 0

    def warning(self, message: str, outcome: str) -> bool:
        """Log ``message`` if the bucket allows, else count it; True when it was logged."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            self._pending[outcome] += 1
            self.lines_suppressed += 1
            return False
        self._tokens -= 1.0
        self.flush()
        self._logger.warning("%s", message)
        self.lines_logged += 1
        return True

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def flush(self) -> None:
        """Log the summary of what was suppressed since the last summary, if anything."""
        if not self._pending:
            return
        kinds = ", ".join(f"{outcome} {count}" for outcome, count in self._pending.most_common())
        self._logger.warning("%d more rejected OSC messages not logged (rate limit): %s", self.pending, kinds)
        self._pending.clear()


# -- stream framing (OSC 1.1 over TCP: SLIP; OSC 1.0 streams: a 4-byte size) -------------------

SLIP_END = 0xC0  # RFC 1055; the escaping itself is python-osc's (pythonosc.slip)


class StreamDeframer:
    """Cuts a TCP byte stream into OSC packets. The first byte says the framing: SLIP (OSC 1.1:
    ``END`` 0xC0, or a packet's own ``/`` or ``#``) or a 4-byte big-endian size (OSC 1.0, liblo).

    Args:
        max_packet_bytes: a longer packet (or a size prefix claiming one) is malformed.
    """

    def __init__(self, max_packet_bytes: int) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.slip: bool | None = None  # None until the first byte
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The packets completed by ``data``; raises :class:`OscRejected` when the stream is broken."""
        self._buffer += data
        if self.slip is None and self._buffer:
            self.slip = self._buffer[0] in (SLIP_END, ord("/"), ord("#"))
        packets: list[bytes] = []
        if self.slip:
            while (end := self._buffer.find(SLIP_END)) >= 0:
                frame = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if frame:  # double-END framing leaves empty frames between packets
                    try:
                        packets.append(slip.decode(frame))
                    except slip.ProtocolError as error:
                        raise OscRejected("malformed", f"broken SLIP frame ({error})") from None
            if len(self._buffer) > 2 * self.max_packet_bytes + 2:
                raise OscRejected("malformed", f"SLIP frame longer than {self.max_packet_bytes} bytes")
        else:
            while len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if not 0 < size <= self.max_packet_bytes:
                    raise OscRejected("malformed", f"stream packet size {size} is not in 1..{self.max_packet_bytes}")
                if len(self._buffer) < 4 + size:
                    break
                packets.append(bytes(self._buffer[4 : 4 + size]))
                del self._buffer[: 4 + size]
        return packets

    def frame(self, packet: bytes) -> bytes:
        """``packet`` framed the way this stream's sender frames its own."""
        return slip.encode(packet) if self.slip is not False else len(packet).to_bytes(4, "big") + packet


# -- who sent it, and where answers go --------------------------------------------------------


class Peer:
    """A sender, and the way back to it.

    Attributes:
        host, port: its address.
        transport: ``"udp"`` or ``"tcp"``.
        verified: True when its address is proven (TCP's handshake, or a loopback address):
            such a sender gets full answers; an unproven one (UDP from the network: the address
            may be forged) gets no more than :data:`AMPLIFICATION_FACTOR` times what it sent,
            unless it subscribed.
    """

    transport = "udp"
    verified = False

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)

    def send(self, packet: bytes) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "udp" else f"tcp {self.host}:{self.port}"


class _UdpPeer(Peer):
    def __init__(self, server: OscServer, host: str, port: int) -> None:
        super().__init__(host, port)
        self._server = server
        # A loopback source cannot be forged from outside (the kernel drops such martians).
        self.verified = _is_loopback(host.split("%", 1)[0])

    def send(self, packet: bytes) -> None:
        transport = self._server._transport
        if transport is None or transport.get_write_buffer_size() > MAX_SEND_BUFFER_BYTES:
            return
        transport.sendto(packet, (self.host, self.port))


class _TcpConnection(asyncio.Protocol, Peer):
    """One OSC-over-TCP client: framed packets in, answers and echoes out on the same connection;
    closed after ``idle_seconds`` without a packet, or when it stops reading."""

    transport = "tcp"
    verified = True

    def __init__(self, server: OscServer) -> None:
        Peer.__init__(self, "", 0)
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._deframer = StreamDeframer(MAX_PACKET_BYTES)
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.host, self.port = transport.get_extra_info("peername")[:2]
        if not self._server._accept_connection(self):
            transport.close()
            return
        self._touch()

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = self._server._loop
        if loop is not None:
            self._idle = loop.call_later(self._server.idle_seconds, self._close_idle)

    def _close_idle(self) -> None:
        log.info("OSC %s: closed after %.0f s without a message", self, self._server.idle_seconds)
        self.close()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            packets = self._deframer.feed(data)
        except OscRejected as rejected:
            self._server._reject(self, rejected)
            self.close()
            return
        for packet in packets:
            try:
                self._server._on_packet(packet, self)
            except Exception as error:  # noqa: BLE001 - as for datagrams: counted, logged, playing on
                self._server._on_guard_error(self, error)

    def send(self, packet: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_SEND_BUFFER_BYTES:
            log.info("OSC %s: closed, it does not read what it is sent", self)
            self.close()
            return
        transport.write(self._deframer.frame(packet))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._transport = None
        self._server._connection_lost(self)


class SenderRateLimit:
    """A token bucket per sender address: ``burst`` messages at once, then ``per_second``.

    At most ``max_senders`` addresses are tracked (the least recently heard is forgotten), so a
    flood of forged addresses cannot grow it without bound.
    """

    def __init__(self, per_second: float, burst: float, max_senders: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.per_second, self.burst, self.max_senders, self.clock = per_second, burst, max_senders, clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, host: str, messages: int = 1) -> bool:
        """Take ``messages`` tokens from ``host``'s bucket; False (and none taken) if it lacks them."""
        now = self.clock()
        tokens, last = self._buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        allowed = tokens >= messages
        self._buckets[host] = (tokens - messages if allowed else tokens, now)
        while len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        return allowed


# -- the server ----------------------------------------------------------------------------------

Action = Callable[[Any, Peer], None]


class _StrictDispatcher(Dispatcher):
    """python-osc's dispatcher holds the address map; every packet goes through ``on_packet``."""

    def __init__(self, on_packet: Callable[[bytes, Peer], None]) -> None:
        super().__init__(strict_timing=False)  # True would time.sleep() in the event loop
        self._on_packet = on_packet

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        self._on_packet(data, client_address)  # type: ignore[arg-type] - the server passes a Peer
        return []  # replies are sent by the server itself, to the port the sender asked for


class _GuardedProtocol(asyncio.DatagramProtocol):
    """Datagrams to the server; whatever one does, the exception stops here, is counted and logged."""

    def __init__(self, server: OscServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, client_address: tuple[str, int]) -> None:
        peer = _UdpPeer(self._server, *client_address[:2])
        try:
            self._server._on_packet(data, peer)
        except Exception as error:  # a bug must not reach asyncio's loop-wide handler
            self._server._on_guard_error(peer, error)


def parse_allow_list(entries: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``control.osc.allow`` as networks: addresses (``10.0.0.7``) or networks (``10.0.0.0/24``)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise RiffradioError(f"control.osc.allow: {entry!r} is not an IP address or network") from None
    return networks


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OscServer:
    """The station's OSC endpoint. Create it with :func:`serve_osc`; stop it with :meth:`close`.

    Args:
        station: the state, metrics and now-playing document.
        allow: sender addresses or networks (empty: everyone).
        max_messages_per_second: each sender's rate limit (a token bucket of twice as many).
        max_connections: OSC-over-TCP connections at once; more are closed at once.
        idle_seconds: a TCP connection with no packet for this long is closed.

    Attributes:
        address: (host, port) of the UDP socket actually bound (port 0 in the config picks a free one).
        tcp_address: (host, port) of the TCP listener, or None.
        counts: messages by outcome (the same numbers as ``riffradio_osc_messages``).
        rejection_log: the rate-limited log of rejections (lines logged and suppressed).
        connections: open TCP connections.
    """

    def __init__(
        self,
        station: OscViews,
        allow: Sequence[str],
        max_messages_per_second: float = DEFAULT_MAX_MESSAGES_PER_SECOND,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        self._state = station.state
        self._metrics = station.metrics
        self._nowplaying = station.nowplaying
        self._allow = parse_allow_list(allow)
        self._subscribers: collections.OrderedDict[tuple[str, str, int], Peer] = collections.OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._unsubscribe_state: Callable[[], None] | None = None
        self._title_on_air: str | None = None
        self._closed = False
        self._request_bytes = 0  # size of the packet being handled (answers to unproven senders scale with it)
        self._rate_limit = SenderRateLimit(max_messages_per_second, 2 * max_messages_per_second)
        self._full_answers = SenderRateLimit(FULL_ANSWERS_PER_SECOND, 2 * FULL_ANSWERS_PER_SECOND, max_senders=1)
        self._error_answers = SenderRateLimit(ERROR_ANSWERS_PER_SECOND, 2 * ERROR_ANSWERS_PER_SECOND)
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self.connections: set[_TcpConnection] = set()
        self.address: tuple[str, int] = ("", 0)
        self.tcp_address: tuple[str, int] | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.rejection_log = RateLimitedLog(log)
        self.dispatcher = _StrictDispatcher(self._on_packet)
        for address, (parse, action) in self._routes().items():
            self.dispatcher.map(address, functools.partial(self._handle, parse, action), needs_reply_address=True)

    def _routes(self) -> dict[str, tuple[ArgParser, Action]]:
        state = self._state

        def setter(field: Field) -> tuple[ArgParser, Action]:
            return field.parse, lambda value, _sender: field.apply(state, value)

        routes: dict[str, tuple[ArgParser, Action]] = {
            **{f"{PREFIX}/{name}": setter(field) for name, field in FIELDS.items()},
            f"{PREFIX}/state": (reply_port_arg, self._reply_state),
            f"{PREFIX}/subscribe": (reply_port_arg, self._subscribe),
            f"{PREFIX}/unsubscribe": (reply_port_arg, self._unsubscribe),
        }
        assert tuple(routes) == ADDRESSES
        return routes

    # -- lifecycle -----------------------------------------------------------------------------
    async def _start(self, host: str, port: int, tcp_port: int | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            transport, _protocol = await self._loop.create_datagram_endpoint(
                lambda: _GuardedProtocol(self), local_addr=(host, port)
            )
        except OSError as error:
            raise RiffradioError(f"OSC: cannot listen on udp {host}:{port}: {error.strerror or error}") from None
        self._transport = transport  # type: ignore[assignment]
        self.address = transport.get_extra_info("sockname")[:2]
        if tcp_port is not None:
            try:
                self._tcp_server = await self._loop.create_server(
                    lambda: _TcpConnection(self), host, tcp_port, backlog=self.max_connections
                )
            except OSError as error:
                transport.close()
                raise RiffradioError(f"OSC: cannot listen on tcp {host}:{tcp_port}: {error.strerror or error}") from None
            self.tcp_address = self._tcp_server.sockets[0].getsockname()[:2]
        self._unsubscribe_state = self._state.subscribe(self._on_state_change)
        if not _is_loopback(host) and not self._allow:
            log.warning("OSC listens on %s:%d and accepts every sender; set control.osc.allow", *self.address)
        log.info("OSC control on udp %s:%d", *self.address)
        if self.tcp_address is not None:
            log.info(
                "OSC control on tcp %s:%d (SLIP or size-prefixed; at most %d connections, closed after %.0f s idle)",
                *self.tcp_address, self.max_connections, self.idle_seconds,
            )  # fmt: skip

    async def close(self) -> None:
        """Stop listening and echoing; log what the rate limit still holds."""
        self._closed = True
        if self._unsubscribe_state is not None:
            self._unsubscribe_state()
            self._unsubscribe_state = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            for connection in list(self.connections):
                connection.close()
            self._tcp_server = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await asyncio.sleep(0)  # let the transports finish closing their sockets
        self.rejection_log.flush()

    @property
    def subscribers(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of each subscriber (a TCP one: its connection's address)."""
        return tuple((peer.host, peer.port) for peer in self._subscribers.values())

    # -- receiving -----------------------------------------------------------------------------
    def _allowed(self, host: str) -> bool:
        if not self._allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._allow)

    def _accept_connection(self, connection: _TcpConnection) -> bool:
        if not self._allowed(connection.host):
            self._reject(connection, OscRejected("denied", "sender is not in control.osc.allow"))
            return False
        if len(self.connections) >= self.max_connections:
            self._reject(connection, OscRejected(
                "too_many_connections", f"{self.max_connections} OSC connections are open already; closed"
            ))  # fmt: skip
            return False
        self.connections.add(connection)
        return True

    def _connection_lost(self, connection: _TcpConnection) -> None:
        self.connections.discard(connection)
        self._subscribers.pop(connection.key, None)

    def _on_packet(self, data: bytes, sender: Peer) -> None:
        if not self._allowed(sender.host):
            self._reject(sender, OscRejected("denied", "sender is not in control.osc.allow"))
            return
        try:
            dgrams = split_packet(data)
        except OscRejected as rejected:
            self._reject(sender, rejected)
            return
        if not self._rate_limit.allow(sender.host, len(dgrams)):
            self._reject(sender, OscRejected(  # one count per packet, as for every other rejection of a whole packet
                "rate_limited",
                f"more than {self._rate_limit.per_second:g} messages a second from this sender ({len(dgrams)} dropped)",
            ))  # fmt: skip
            return
        self._request_bytes = len(data)
        for dgram in dgrams:
            try:
                message = decode_message(dgram)
                self._dispatch(message, sender)
            except OscRejected as rejected:
                self._reject(sender, rejected)
            except Exception as error:  # a setter or listener bug: the station keeps playing
                self._reject(sender, OscRejected("error", f"applying the message failed: {error!r}"))
            else:
                self._count("accepted")

    def _dispatch(self, message: OscMessage, sender: Peer) -> None:
        address = message.address
        if not _ADDRESS_RE.fullmatch(address):
            raise OscRejected("unknown_address", f"{_show(address)} is not a riffradio address (no patterns)")
        handlers = list(self.dispatcher.handlers_for_address(address))
        if not handlers:
            raise OscRejected("unknown_address", f"unknown address {_show(address)} (see docs/osc.md)")
        for handler in handlers:
            handler.invoke(sender, message)  # type: ignore[arg-type] - python-osc passes it on as is

    def _handle(self, parse: ArgParser, action: Action, sender: Peer, address: str, *args: Any) -> None:
        try:
            value = parse(address, args)
            try:
                action(value, sender)
            except ValueError as error:  # the state's one-line reason
                raise OscRejected("bad_value", f"{address}: {error}") from None
        except OscRejected as rejected:
            self._answer_rejection(sender, address, rejected)
            raise

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._metrics.osc_messages.labels(outcome=outcome).inc()

    def _reject(self, sender: Peer, rejected: OscRejected) -> None:
        self._count(rejected.outcome)
        line = f"OSC message from {sender} rejected ({rejected.outcome}): {rejected.reason}"
        if not self.rejection_log.warning(line, rejected.outcome) and self._flush_timer is None and self._loop:
            self._flush_timer = self._loop.call_later(5.0, self._flush_rejections)

    def _flush_rejections(self) -> None:
        self._flush_timer = None
        self.rejection_log.flush()

    def _on_guard_error(self, sender: Peer, error: Exception) -> None:
        self._reject(sender, OscRejected("error", f"datagram handling failed: {error!r}"))

    # -- answering -----------------------------------------------------------------------------
    def _answer_rejection(self, sender: Peer, address: str, rejected: OscRejected) -> None:
        """``/riffradio/error s ADDRESS s REASON`` to the sender of a well-formed message the
        station refused (type tags or value), cut to what an unproven sender may be sent; at
        most :data:`ERROR_ANSWERS_PER_SECOND` a sender (a flood is not answered in kind)."""
        if not self._error_answers.allow(sender.host):
            return
        budget = self._reply_budget(sender)
        reason = rejected.reason
        while True:
            builder = OscMessageBuilder(f"{PREFIX}/error")
            builder.add_arg(address[:128], "s")
            builder.add_arg(reason, "s")
            packet = builder.build().dgram
            if len(packet) <= budget or len(reason) <= 1:
                break
            reason = reason[: max(1, len(reason) - (len(packet) - budget) - 1)] + "…"
        if len(packet) <= budget:
            sender.send(packet)

    def _reply_budget(self, sender: Peer) -> int:
        """Bytes an answer to ``sender`` may have: a datagram's worth for a proven sender or a
        subscriber, :data:`AMPLIFICATION_FACTOR` × its request for anyone else."""
        if sender.verified or sender.key in self._subscribers:
            return MAX_REPLY_BYTES
        return min(MAX_REPLY_BYTES, AMPLIFICATION_FACTOR * max(self._request_bytes, 1))

    def _reply_to(self, sender: Peer, port: int | None) -> Peer:
        # Only ever the sender's own address: the server cannot be used to flood a third party.
        if sender.transport == "tcp" or port is None or port == sender.port:
            return sender  # a TCP sender gets answers on its connection
        return _UdpPeer(self, sender.host, port)

    def _send_state(self, target: Peer, budget: int) -> None:
        if budget >= MAX_REPLY_BYTES and not target.verified and not self._full_answers.allow("all"):
            budget = MIN_REPLY_BYTES  # full answers over UDP are rationed: a forged-subscribe flood gets little
        target.send(state_bundle(self._state.snapshot(), self._nowplaying(), max_bytes=budget))

    def _reply_state(self, port: int | None, sender: Peer) -> None:
        target = self._reply_to(sender, port)
        self._send_state(target, self._reply_budget(target))

    def _subscribe(self, port: int | None, sender: Peer) -> None:
        target = self._reply_to(sender, port)
        self._subscribers.pop(target.key, None)
        self._subscribers[target.key] = target
        while len(self._subscribers) > MAX_SUBSCRIBERS:
            _, dropped = self._subscribers.popitem(last=False)
            log.info("OSC subscriber %s dropped: more than %d subscribers", dropped, MAX_SUBSCRIBERS)
        self._send_state(target, MAX_REPLY_BYTES)  # so a controller's faders start where the station is

    def _unsubscribe(self, port: int | None, sender: Peer) -> None:
        self._subscribers.pop(self._reply_to(sender, port).key, None)

    def _on_state_change(self, name: str, value: Any) -> None:
        # Setters may run on any thread (HTTP, reload); sending happens on the loop.
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        try:
            loop.call_soon_threadsafe(self._echo, name, value)
        except RuntimeError:  # the loop closed in between
            pass

    def on_block(self, block: AudioBlock) -> None:
        """Audio clock listener: echo ``/riffradio/nowplaying s TITLE`` when another clip is heard."""
        title = block.now_playing.title
        if title != self._title_on_air and not self._closed:
            self._title_on_air = title
            self._on_state_change("nowplaying", title)

    def _echo(self, name: str, value: Any) -> None:
        if not self._subscribers:
            return
        if name == "rollback":  # the station undid a live state that made no clip: say so, then where it is
            log.info("OSC: telling %d subscriber(s) of the rollback", len(self._subscribers))
            for target in list(self._subscribers.values()):
                target.send(field_message("rollback", str(value)))
                self._send_state(target, MAX_REPLY_BYTES)
            return
        dgram = field_message(name, value)
        for target in list(self._subscribers.values()):
            target.send(dgram)


async def serve_osc(config: OscConfigLike, station: OscViews) -> OscServer:
    """Listen for OSC on ``config.host:config.port`` (port 0 = a free one) and steer ``station``.

    ``config.tcp`` (``True``: the same port number, or a port) adds OSC over TCP;
    ``config.max_messages_per_second`` sets each sender's rate limit.

    Raises:
        RiffradioError: a port cannot be bound, or ``config.allow`` holds something that is
            not an IP address or network.
    """
    rate = getattr(config, "max_messages_per_second", None) or DEFAULT_MAX_MESSAGES_PER_SECOND
    server = OscServer(station, list(getattr(config, "allow", None) or ()), max_messages_per_second=float(rate))
    tcp = getattr(config, "tcp", None)
    tcp_port = None if tcp is None or tcp is False else (int(config.port) if tcp is True else int(tcp))
    await server._start(str(config.host), int(config.port), tcp_port)
    add_block_listener = getattr(station, "add_block_listener", None)
    if add_block_listener is not None:  # subscribers follow the title on air
        add_block_listener(server.on_block)
    return server
