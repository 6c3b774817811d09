"""10 000 random and mutated OSC packets at a live server (loopback only): every one is rejected
with a reason, the state is untouched, the log stays a few lines, and the server still answers."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import struct
import time
from collections.abc import Callable

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from riffradio.control.osc import ADDRESSES, MAX_BUNDLE_DEPTH, MAX_MESSAGES_PER_PACKET, serve_osc
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OscConfig
from riffradio.station.state import StationState

PACKETS = 10_000
BATCH = 50  # small batches, so the kernel's receive buffer never drops a datagram uncounted


def msg(address: str, *args: tuple[str, object]) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def bundle(*contents: bytes) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for content in contents:
        builder.add_content(OscMessage(content))
    return builder.build().dgram


def raw_bundle(*elements: bytes) -> bytes:
    """A bundle of raw elements (python-osc's builder only nests what it parsed itself)."""
    return b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"".join(struct.pack(">i", len(e)) + e for e in elements)


# Valid messages the mutations start from (one per kind of argument).
VALID: list[bytes] = [
    msg("/riffradio/prompt", ("s", "jazzy lofi hip hop")),
    msg("/riffradio/seed", ("i", 42)),
    msg("/riffradio/denoising", ("f", 0.5)),
    msg("/riffradio/guidance", ("d", 7.0)),
    msg("/riffradio/steps", ("i", 20)),
    msg("/riffradio/seed_image", ("s", "og_beat")),
    msg("/riffradio/next"),
    msg("/riffradio/hold", ("T", True)),
    msg("/riffradio/volume", ("f", 0.8)),
    msg("/riffradio/crossfade", ("f", 1.0)),
    msg("/riffradio/state"),
    bundle(msg("/riffradio/volume", ("f", 0.8))),
]

# Semantically wrong messages: right shape, wrong types or values.
WRONG: list[bytes] = [
    *(msg(a, ("f", v)) for a in ("/riffradio/volume", "/riffradio/denoising", "/riffradio/seed")
      for v in (math.nan, math.inf, -math.inf, -1.0, 1e30)),
    *(msg(a, ("s", "x")) for a in ADDRESSES if a not in {
        "/riffradio/prompt", "/riffradio/to_prompt", "/riffradio/seed_image", "/riffradio/negative_prompt", "/riffradio/next",
        "/riffradio/state", "/riffradio/subscribe", "/riffradio/unsubscribe"}),
    msg("/riffradio/next", ("s", "x")), msg("/riffradio/state", ("f", 1.0)),
    msg("/riffradio/prompt", ("i", 1)), msg("/riffradio/prompt", ("s", "")), msg("/riffradio/prompt", ("s", "x" * 1001)),
    msg("/riffradio/prompt", ("s", "a"), ("s", "b")), msg("/riffradio/hold", ("i", 2)), msg("/riffradio/goto", ("i", 4)),
    msg("/riffradio/steps", ("f", 2.5)), msg("/riffradio/steps", ("i", 0)), msg("/riffradio/clips", ("N", None)),
    msg("/riffradio/subscribe", ("i", 0)), msg("/riffradio/subscribe", ("i", 70000)),
    msg("/riffradio/volume", ("b", b"\x01\x02")), msg("/riffradio/volume", ("r", 0x11223344)),
    msg("/riffradio/volume", ("m", (1, 2, 3, 4))), msg("/riffradio/volume", ([ "f"], [0.5])),
    msg("/riffradio/volume"), msg("/riffradio/tempo", ("f", 120.0)), msg("/riffradio/*", ("f", 0.5)),
    msg("/riffradio/{volume,steps}", ("i", 1)), msg("/other/app", ("i", 1)), msg("/", ("i", 1)),
    b"/riffradio/volume\x00\x00\x00",  # no type-tag string
    b"/riffradio/volume\x00\x00\x00f\x00\x00\x00?\x00\x00\x00",  # type tags without ','
    b"/riffradio/v\xffolume\x00\x00\x00\x00,f\x00\x00?\x00\x00\x00",  # invalid UTF-8
    raw_bundle(),  # empty bundle
    raw_bundle(*[msg("/riffradio/volume", ("f", 0.5))] * (MAX_MESSAGES_PER_PACKET + 1)),
]


def nested(depth: int, inner: bytes) -> bytes:
    for _ in range(depth):
        inner = raw_bundle(inner)
    return inner


WRONG.append(nested(MAX_BUNDLE_DEPTH + 1, msg("/riffradio/volume", ("f", 0.5))))


def address_end(dgram: bytes) -> int:
    return dgram.index(b"\x00")


def mutate(rng: random.Random) -> bytes:
    """One packet no careful receiver should apply."""
    kind = rng.randrange(9)
    base = rng.choice(VALID)
    if kind == 0:  # noise that is neither a message nor a bundle
        return bytes([rng.choice(b"abcXYZ\x00\xff")]) + rng.randbytes(rng.randrange(0, 256))
    if kind == 1:  # noise behind a plausible start
        return rng.choice([b"/riffradio/", b"#bundle\x00", b"/"]) + rng.randbytes(rng.randrange(0, 256))
    if kind == 2:  # cut short (every proper prefix, including nothing at all)
        return base[: rng.randrange(0, len(base))]
    if kind == 3:  # trailing bytes
        return base + rng.randbytes(rng.randrange(1, 17))
    if kind == 4 and not base.startswith(b"#"):  # one byte of the address changed
        position = rng.randrange(1, address_end(base))
        new = rng.choice([b for b in range(256) if b != base[position]])
        return base[:position] + bytes([new]) + base[position + 1 :]
    if kind == 5:  # a wrong message as it is
        return rng.choice(WRONG)
    if kind == 6:  # a wrong message in a bundle
        return raw_bundle(rng.choice([w for w in WRONG if w.startswith(b"/")]))
    if kind == 7:  # a bundle element whose size lies
        element = rng.choice(VALID[:-1])
        size = rng.choice([len(element) + 4, len(element) - 3, -4, 0, 2**31 - 1])
        return b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", size) + element
    # bytes of the address of a wrong message changed
    data = bytearray(rng.choice([w for w in WRONG if w.startswith(b"/") and address_end(w) > 1]))
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(1, address_end(data))] = rng.randrange(256)
    return bytes(data)


def test_fuzz_every_packet_rejected_and_server_still_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="riffradio.control.osc")
    rng = random.Random(20261125)
    packets = [mutate(rng) for _ in range(PACKETS)]

    async def body() -> None:
        state, metrics = StationState(4), StationMetrics()
        station = type("S", (), {"state": state, "metrics": metrics, "nowplaying": lambda self: {}})()
        # no rate limit here: every packet must reach the parser (the limit has its own test)
        server = await serve_osc(OscConfig(host="127.0.0.1", port=0, max_messages_per_second=1e9), station)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        started = time.monotonic()
        try:
            for start in range(0, PACKETS, BATCH):
                for packet in packets[start : start + BATCH]:
                    await loop.sock_sendto(sock, packet, server.address)
                await wait(lambda: sum(server.counts.values()) >= start + len(packets[start : start + BATCH]))
            seconds = time.monotonic() - started
            counts = dict(server.counts)
            assert "accepted" not in counts, counts
            assert sum(counts.values()) == PACKETS, counts
            assert state.snapshot().version == 0
            for outcome, count in counts.items():
                assert metrics.registry.get_sample_value("riffradio_osc_messages_total", {"outcome": outcome}) == count
            # every rejection went through the log, either as a line or counted in a summary
            rejection_log = server.rejection_log
            assert rejection_log.lines_logged + rejection_log.lines_suppressed == PACKETS
            assert rejection_log.lines_logged <= 10 + 2 * seconds + 2  # the bucket: burst + rate
            # still answering
            await loop.sock_sendto(sock, msg("/riffradio/state"), server.address)
            addresses: list[str] = []
            while "/riffradio/state" not in addresses:  # after the answers to the refused messages
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 20)
                addresses = [m.message.address for m in OscPacket(data).messages]
                assert set(addresses) <= {"/riffradio/error"} or "/riffradio/state" in addresses, addresses
            assert server.counts["accepted"] == 1
        finally:
            sock.close()
            await server.close()
        lines = [r.getMessage() for r in caplog.records if r.name == "riffradio.control.osc"]
        assert all("rejected (" in line or "more rejected OSC messages not logged" in line for line in lines
                   if "OSC control on" not in line)
        assert "more rejected OSC messages not logged" in lines[-1]  # close() flushes the summary
        assert sum(int(line.split()[0]) for line in lines if "not logged" in line) == rejection_log.lines_suppressed

    asyncio.run(asyncio.wait_for(body(), 300))


async def wait(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline, "the server stopped counting packets"
        await asyncio.sleep(0.001)
