"""Live control over OSC: a DJ's controller (TouchOSC, Open Stage Control, ``oscsend``) steers
the station while it plays.

python-osc's :class:`AsyncIOOSCUDPServer` receives datagrams on the event loop; a strict
dispatcher checks each one before anything reaches :class:`StationState`:

1. the sender must be on the allow-list, when there is one;
2. the datagram must be a well-formed OSC 1.0 message or bundle: a type-tag string, only the tags
   ``i h f d s T F N``, zero padding, and exactly as many bytes as its tags say (python-osc alone
   pads a truncated float with zeros, ignores trailing bytes and skips unknown tags);
3. the address must be one of :data:`ADDRESSES` (address patterns are not supported);
4. the arguments must have the types the address takes, and the state's setter must accept the
   value (finite, in range).

Anything else is rejected, counted in ``riffradio_osc_messages{outcome=...}`` and logged with its
reason through a token bucket, so a flood costs a few log lines a second, never the disk.
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
from pythonosc.osc_server import AsyncIOOSCUDPServer
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
)
SUPPORTED_TAGS = frozenset("ihfdsTFN")
MAX_MESSAGES_PER_PACKET = 64
MAX_BUNDLE_DEPTH = 4
MAX_SUBSCRIBERS = 16
MAX_STATE_JSON_BYTES = 32 * 1024
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


def state_bundle(snapshot: StateSnapshot, nowplaying: dict[str, Any]) -> bytes:
    """The answer to ``/riffradio/state``: one bundle of field messages, the title on air and
    the whole state as JSON."""
    bundle = OscBundleBuilder(IMMEDIATELY)
    fields = state_fields(snapshot)
    title = now_title(nowplaying)
    if title is not None:
        fields.append(("nowplaying", title))
    for name, value in fields:
        bundle.add_content(OscMessage(field_message(name, value)))
    document: dict[str, Any] = {"state": dataclasses.asdict(snapshot), "nowplaying": nowplaying}
    text = json.dumps(document, default=str, ensure_ascii=False)
    if len(text.encode()) > MAX_STATE_JSON_BYTES:  # keep the datagram far below UDP's 64 KiB
        document["nowplaying"] = {"truncated": True}
        text = json.dumps(document, default=str, ensure_ascii=False)
    builder = OscMessageBuilder(f"{PREFIX}/state")
    builder.add_arg(text, "s")
    bundle.add_content(builder.build())
    return bundle.build().dgram


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


# -- the server ----------------------------------------------------------------------------------

Action = Callable[[Any, tuple[str, int]], None]


class _StrictDispatcher(Dispatcher):
    """python-osc's dispatcher holds the address map; every packet goes through ``on_packet``."""

    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        super().__init__(strict_timing=False)  # True would time.sleep() in the event loop
        self._on_packet = on_packet

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        self._on_packet(data, client_address)
        return []  # replies are sent by the server itself, to the port the sender asked for


class _GuardedProtocol(AsyncIOOSCUDPServer._OSCProtocolFactory):
    """Whatever a datagram does, the exception stops here, is counted and logged."""

    def __init__(self, dispatcher: Dispatcher, on_error: Callable[[tuple[str, int], Exception], None]) -> None:
        super().__init__(dispatcher)
        self._on_error = on_error

    def datagram_received(self, data: bytes, client_address: tuple[str, int]) -> None:
        try:
            super().datagram_received(data, client_address)
        except Exception as error:  # a bug must not reach asyncio's loop-wide handler
            self._on_error(client_address, error)


class _GuardedOSCUDPServer(AsyncIOOSCUDPServer):
    def __init__(
        self,
        server_address: tuple[str, int],
        dispatcher: Dispatcher,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[tuple[str, int], Exception], None],
    ) -> None:
        super().__init__(server_address, dispatcher, loop)  # type: ignore[arg-type]
        self._on_error = on_error

    def create_serve_endpoint(self):  # type: ignore[override]
        return self._loop.create_datagram_endpoint(
            lambda: _GuardedProtocol(self.dispatcher, self._on_error), local_addr=self._server_address
        )


def parse_allow_list(entries: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``control.osc.allow`` as networks: addresses (``10.0.0.7``) or networks (``10.0.0.0/24``)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise RiffradioError(f"control.osc.allow: {entry!r} is not an IP address or network") from None
    return networks


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OscServer:
    """The station's OSC endpoint. Create it with :func:`serve_osc`; stop it with :meth:`close`.

    Attributes:
        address: (host, port) actually bound (port 0 in the config picks a free one).
        counts: messages by outcome (the same numbers as ``riffradio_osc_messages``).
        rejection_log: the rate-limited log of rejections (lines logged and suppressed).
    """

    def __init__(self, station: OscViews, allow: Sequence[str]) -> None:
        self._state = station.state
        self._metrics = station.metrics
        self._nowplaying = station.nowplaying
        self._allow = parse_allow_list(allow)
        self._subscribers: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._unsubscribe_state: Callable[[], None] | None = None
        self._title_on_air: str | None = None
        self._closed = False
        self.address: tuple[str, int] = ("", 0)
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
    async def _start(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        server = _GuardedOSCUDPServer((host, port), self.dispatcher, self._loop, self._on_guard_error)
        try:
            transport, _protocol = await server.create_serve_endpoint()
        except OSError as error:
            raise RiffradioError(f"OSC: cannot listen on udp {host}:{port}: {error.strerror or error}") from None
        self._transport = transport  # type: ignore[assignment]
        self.address = transport.get_extra_info("sockname")[:2]
        self._unsubscribe_state = self._state.subscribe(self._on_state_change)
        if not _is_loopback(host) and not self._allow:
            log.warning("OSC listens on %s:%d and accepts every sender; set control.osc.allow", *self.address)
        log.info("OSC control on udp %s:%d", *self.address)

    async def close(self) -> None:
        """Stop listening and echoing; log what the rate limit still holds."""
        self._closed = True
        if self._unsubscribe_state is not None:
            self._unsubscribe_state()
            self._unsubscribe_state = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0)  # let the transport finish closing the socket
        self.rejection_log.flush()

    @property
    def subscribers(self) -> tuple[tuple[str, int], ...]:
        return tuple(self._subscribers)

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

    def _on_packet(self, data: bytes, sender: tuple[str, int]) -> None:
        if not self._allowed(sender[0]):
            self._reject(sender, OscRejected("denied", "sender is not in control.osc.allow"))
            return
        try:
            dgrams = split_packet(data)
        except OscRejected as rejected:
            self._reject(sender, rejected)
            return
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

    def _dispatch(self, message: OscMessage, sender: tuple[str, int]) -> None:
        address = message.address
        if not _ADDRESS_RE.fullmatch(address):
            raise OscRejected("unknown_address", f"{_show(address)} is not a riffradio address (no patterns)")
        handlers = list(self.dispatcher.handlers_for_address(address))
        if not handlers:
            raise OscRejected("unknown_address", f"unknown address {_show(address)} (see docs/osc.md)")
        for handler in handlers:
            handler.invoke(sender, message)

    @staticmethod
    def _handle(parse: ArgParser, action: Action, sender: tuple[str, int], address: str, *args: Any) -> None:
        value = parse(address, args)
        try:
            action(value, sender)
        except ValueError as error:  # the state's one-line reason
            raise OscRejected("bad_value", f"{address}: {error}") from None

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._metrics.osc_messages.labels(outcome=outcome).inc()

    def _reject(self, sender: tuple[str, int], rejected: OscRejected) -> None:
        self._count(rejected.outcome)
        line = f"OSC message from {sender[0]}:{sender[1]} rejected ({rejected.outcome}): {rejected.reason}"
        if not self.rejection_log.warning(line, rejected.outcome) and self._flush_timer is None and self._loop:
            self._flush_timer = self._loop.call_later(5.0, self._flush_rejections)

    def _flush_rejections(self) -> None:
        self._flush_timer = None
        self.rejection_log.flush()

    def _on_guard_error(self, sender: tuple[str, int], error: Exception) -> None:
        self._reject(sender, OscRejected("error", f"datagram handling failed: {error!r}"))

    # -- answering -----------------------------------------------------------------------------
    def _send(self, dgram: bytes, target: tuple[str, int]) -> None:
        transport = self._transport
        if transport is None or transport.get_write_buffer_size() > MAX_SEND_BUFFER_BYTES:
            return
        transport.sendto(dgram, target)

    def _reply_to(self, sender: tuple[str, int], port: int | None) -> tuple[str, int]:
        # Only ever the sender's own address: the server cannot be used to flood a third party.
        return (sender[0], port if port is not None else sender[1])

    def _reply_state(self, port: int | None, sender: tuple[str, int]) -> None:
        self._send(state_bundle(self._state.snapshot(), self._nowplaying()), self._reply_to(sender, port))

    def _subscribe(self, port: int | None, sender: tuple[str, int]) -> None:
        target = self._reply_to(sender, port)
        self._subscribers.pop(target, None)
        self._subscribers[target] = None
        while len(self._subscribers) > MAX_SUBSCRIBERS:
            dropped, _ = self._subscribers.popitem(last=False)
            log.info("OSC subscriber %s:%d dropped: more than %d subscribers", *dropped, MAX_SUBSCRIBERS)
        self._reply_state(port, sender)  # so a controller's faders start where the station is

    def _unsubscribe(self, port: int | None, sender: tuple[str, int]) -> None:
        self._subscribers.pop(self._reply_to(sender, port), None)

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
        dgram = field_message(name, value)
        for target in list(self._subscribers):
            self._send(dgram, target)


async def serve_osc(config: OscConfigLike, station: OscViews) -> OscServer:
    """Listen for OSC on ``config.host:config.port`` (port 0 = a free one) and steer ``station``.

    Raises:
        RiffradioError: the port cannot be bound, or ``config.allow`` holds something that is
            not an IP address or network.
    """
    server = OscServer(station, list(getattr(config, "allow", None) or ()))
    await server._start(str(config.host), int(config.port))
    station.add_block_listener(server.on_block)  # subscribers follow the title on air
    return server
