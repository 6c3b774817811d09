"""OSC control against a real StationState, driven by liblo's ``oscsend`` (an independent client),
answered to real UDP sockets and to liblo's ``oscdump``."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from riffradio.control.osc import ADDRESSES, OscServer, RateLimitedLog, serve_osc
from riffradio.errors import RiffradioError
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OscConfig
from riffradio.station.state import StationState

pytestmark = pytest.mark.skipif(shutil.which("oscsend") is None, reason="needs liblo-tools (tests/setup-debian.sh)")

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 20.0


class StateStation:
    """The part of a station the OSC server talks to: a real state and metrics, now-playing from the state."""

    def __init__(self, riff_count: int = 4) -> None:
        self.state = StationState(riff_count)
        self.metrics = StationMetrics()

    def add_block_listener(self, listener: Any) -> None:
        """Nothing plays here: no blocks, no listeners to call."""

    def nowplaying(self) -> dict[str, Any]:
        snap = self.state.snapshot()
        return {"now": {"title": snap.live_prompt or f"riff {snap.riff_index}"}, "state_version": snap.version}

    def accepted(self, outcome: str = "accepted") -> float:
        value = self.metrics.registry.get_sample_value("riffradio_osc_messages_total", {"outcome": outcome})
        return value or 0.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 120))


async def oscsend(port: int, address: str, types: str = "", *values: str) -> None:
    args = [address] + ([types, *values] if types else [])
    process = await asyncio.create_subprocess_exec(
        "oscsend", "127.0.0.1", str(port), *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
    assert process.returncode == 0, err.decode()


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def start(station: StateStation, allow: list[str] | None = None) -> OscServer:
    return await serve_osc(OscConfig(host="127.0.0.1", port=0, allow=allow or []), station)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def receive(sock: socket.socket) -> list[tuple[str, list[Any]]]:
    """One datagram from ``sock``, parsed by python-osc into (address, params) pairs."""
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), TIMEOUT_SECONDS)
    return [(m.message.address, m.message.params) for m in OscPacket(data).messages]


def message(address: str, *args: tuple[str, Any]) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


# (oscsend arguments, what the snapshot must show afterwards)
CHANGES: list[tuple[tuple[str, ...], Callable[[Any], bool]]] = [
    (("/riffradio/prompt", "s", "church bells on sunday"), lambda s: s.live_prompt == "church bells on sunday"),
    (("/riffradio/to_prompt", "s", "rainy jazz"), lambda s: s.live_to_prompt == "rainy jazz"),
    (("/riffradio/alpha", "f", "0.25"), lambda s: s.live_alpha == 0.25),
    (("/riffradio/to_prompt", "s", ""), lambda s: s.live_to_prompt is None),  # "" ends the blend
    (("/riffradio/seed", "i", "7"), lambda s: s.live_seed == 7),
    (("/riffradio/seed", "h", "99999999999"), lambda s: s.live_seed == 99999999999),
    (("/riffradio/denoising", "f", "0.6"), lambda s: math.isclose(s.knobs.denoising, 0.6, rel_tol=1e-6)),
    (("/riffradio/guidance", "d", "9.5"), lambda s: s.knobs.guidance == 9.5),
    (("/riffradio/steps", "i", "12"), lambda s: s.knobs.steps == 12),
    (("/riffradio/steps", "f", "20"), lambda s: s.knobs.steps == 20),  # a fader's whole float
    (("/riffradio/clips", "i", "6"), lambda s: s.knobs.clips == 6),
    (("/riffradio/continuation_seconds", "f", "1.28"), lambda s: math.isclose(s.knobs.continuation_seconds, 1.28, rel_tol=1e-6)),
    (("/riffradio/seed_image", "s", "agile"), lambda s: s.knobs.seed_image == "agile"),
    (("/riffradio/negative_prompt", "s", "vocals"), lambda s: s.knobs.negative_prompt == "vocals"),
    (("/riffradio/hold", "i", "1"), lambda s: s.hold is True),
    (("/riffradio/hold", "F"), lambda s: s.hold is False),
    (("/riffradio/hold", "f", "1"), lambda s: s.hold is True),
    (("/riffradio/goto", "i", "2"), lambda s: s.riff_index == 2 and s.jump_count == 1 and not s.hold),
    (("/riffradio/next",), lambda s: s.riff_index == 3 and s.jump_count == 2),
    (("/riffradio/next", "f", "0"), lambda s: s.riff_index == 3 and s.jump_count == 2),  # button release
    (("/riffradio/next", "f", "1"), lambda s: s.riff_index == 0 and s.jump_count == 3),  # wraps
    (("/riffradio/volume", "f", "0.25"), lambda s: s.volume == 0.25),
    (("/riffradio/crossfade", "f", "1.5"), lambda s: s.crossfade_seconds == 1.5),
]


def test_every_address_changes_the_state_over_oscsend() -> None:
    async def body() -> None:
        station = StateStation()
        server = await start(station)
        try:
            for count, (args, check) in enumerate(CHANGES, start=1):
                await oscsend(server.address[1], *args)
                await wait_until(lambda: station.accepted() == count, f"{args} to be accepted")
                assert check(station.state.snapshot()), (args, station.state.snapshot())
            assert sum(server.counts.values()) == server.counts["accepted"] == len(CHANGES)
        finally:
            await server.close()

    run(body)
    sent = {args[0] for args, _ in CHANGES}
    assert sent | {"/riffradio/state", "/riffradio/subscribe", "/riffradio/unsubscribe"} == set(ADDRESSES)


# (oscsend arguments, outcome, words of the logged reason)
REJECTED: list[tuple[tuple[str, ...], str, str]] = [
    (("/riffradio/volume", "f", "nan"), "bad_value", "not a finite number"),
    (("/riffradio/guidance", "f", "inf"), "bad_value", "not a finite number"),
    (("/riffradio/volume", "f", "9"), "bad_value", "volume must be between 0 and 4"),
    (("/riffradio/denoising", "f", "1.5"), "bad_value", "denoising must be between 0 and 1"),
    (("/riffradio/steps", "f", "2.5"), "bad_value", "whole number"),
    (("/riffradio/seed", "i", "-1"), "bad_value", "seed must be between"),
    (("/riffradio/goto", "i", "99"), "bad_value", "riff index must be between 0 and 3"),
    (("/riffradio/hold", "i", "2"), "bad_value", "takes 0 or 1"),
    (("/riffradio/alpha", "f", "1.5"), "bad_value", "alpha must be between 0 and 1"),
    (("/riffradio/prompt", "s", " "), "bad_value", "non-empty"),
    (("/riffradio/state", "i", "0"), "bad_value", "reply port 0"),
    (("/riffradio/volume", "s", "loud"), "bad_type_tags", "takes a number (f or i), got 's'"),
    (("/riffradio/prompt", "i", "3"), "bad_type_tags", "takes a string (s), got 'i'"),
    (("/riffradio/volume", "ff", "0.1", "0.2"), "bad_type_tags", "got type tags ',ff'"),
    (("/riffradio/volume",), "bad_type_tags", "got type tags ','"),
    (("/riffradio/volume", "S", "sym"), "bad_type_tags", "unsupported type tag(s) 'S'"),
    (("/riffradio/volume", "m", "1", "2", "3", "4"), "bad_type_tags", "unsupported type tag(s) 'm'"),
    (("/riffradio/tempo", "f", "120"), "unknown_address", "unknown address '/riffradio/tempo'"),
    (("/riffradio/*", "f", "0.5"), "unknown_address", "is not a riffradio address"),
]


def test_bad_messages_from_oscsend_are_rejected_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="riffradio.control.osc")

    async def body() -> None:
        station = StateStation()
        server = await start(station)
        # the reasons must all be logged here: a bucket that does not run dry in this test
        server.rejection_log = RateLimitedLog(logging.getLogger("riffradio.control.osc"), burst=100)
        try:
            for count, (args, outcome, words) in enumerate(REJECTED, start=1):
                await oscsend(server.address[1], *args)
                await wait_until(lambda: sum(server.counts.values()) == count, f"{args} to be handled")
                assert server.counts[outcome] == station.accepted(outcome) > 0, args
                last = caplog.records[-1].getMessage()
                assert f"rejected ({outcome})" in last and words in last, (args, last)
                assert "\n" not in last
            assert server.counts["accepted"] == 0
            assert station.state.snapshot().version == 0  # nothing reached the state
        finally:
            await server.close()

    run(body)


def test_state_answers_the_sender_and_a_reply_port() -> None:
    async def body() -> None:
        station = StateStation()
        station.state.set_prompt("jazzy lofi hip hop")
        station.state.set_volume(0.5)
        server = await start(station)
        sock = udp_socket()
        try:
            await asyncio.get_running_loop().sock_sendto(sock, message("/riffradio/state"), server.address)
            reply = dict(await receive(sock))
            assert reply["/riffradio/prompt"] == ["jazzy lofi hip hop"]
            assert reply["/riffradio/volume"] == [0.5]
            assert reply["/riffradio/hold"] == [0] and reply["/riffradio/goto"] == [0]
            import json

            document = json.loads(reply["/riffradio/state"][0])
            assert document["state"]["live_prompt"] == "jazzy lofi hip hop"
            assert document["nowplaying"]["now"]["title"] == "jazzy lofi hip hop"
            assert reply["/riffradio/nowplaying"] == ["jazzy lofi hip hop"]
            # oscsend exits at once, so it names the port to answer on (at its own address)
            await oscsend(server.address[1], "/riffradio/state", "i", str(sock.getsockname()[1]))
            assert dict(await receive(sock))["/riffradio/volume"] == [0.5]
        finally:
            sock.close()
            await server.close()

    run(body)


def _udp_port_bound(port: int) -> bool:
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines):
            return True
    return False


def test_oscdump_receives_the_state() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dump_port = probe.getsockname()[1]
    dump = None

    async def body() -> None:
        nonlocal dump
        station = StateStation()
        station.state.set_knob("steps", 12)
        server = await start(station)
        try:
            dump = await asyncio.create_subprocess_exec(
                "oscdump", "-L", str(dump_port), stdout=asyncio.subprocess.PIPE
            )
            await wait_until(lambda: _udp_port_bound(dump_port), "oscdump to listen")
            await oscsend(server.address[1], "/riffradio/state", "i", str(dump_port))
            lines: list[str] = []
            while not any("/riffradio/state s" in line for line in lines):
                raw = await asyncio.wait_for(dump.stdout.readline(), TIMEOUT_SECONDS)
                assert raw, "oscdump exited"
                lines.append(raw.decode())
            assert any("/riffradio/steps i 12" in line for line in lines), lines
        finally:
            if dump is not None and dump.returncode is None:
                dump.terminate()
                await dump.wait()
            await server.close()

    run(body)


def test_subscribers_get_every_change_echoed() -> None:
    async def body() -> None:
        station = StateStation()
        server = await start(station)
        loop = asyncio.get_running_loop()
        fader, tablet = udp_socket(), udp_socket()
        try:
            await loop.sock_sendto(fader, message("/riffradio/subscribe"), server.address)
            first = dict(await receive(fader))  # the whole state first, so faders start in place
            assert first["/riffradio/volume"] == [1.0] and "/riffradio/state" in first
            # a tablet that sends from one port and listens on another names its port
            await oscsend(server.address[1], "/riffradio/subscribe", "i", str(tablet.getsockname()[1]))
            assert "/riffradio/state" in dict(await receive(tablet))
            assert len(server.subscribers) == 2

            await oscsend(server.address[1], "/riffradio/volume", "f", "0.75")
            for sock in (fader, tablet):
                assert await receive(sock) == [("/riffradio/volume", [0.75])]
            await oscsend(server.address[1], "/riffradio/hold", "T")
            assert await receive(fader) == [("/riffradio/hold", [1])]
            assert await receive(tablet) == [("/riffradio/hold", [1])]
            # a change made by another controller, on another thread, is echoed too
            thread = threading.Thread(target=station.state.set_prompt, args=("church bells",))
            thread.start()
            thread.join()
            assert await receive(fader) == [("/riffradio/prompt", ["church bells"])]
            assert await receive(tablet) == [("/riffradio/prompt", ["church bells"])]
            # a rejected message changes nothing, so nothing is echoed
            await oscsend(server.address[1], "/riffradio/volume", "f", "nan")
            await loop.sock_sendto(fader, message("/riffradio/unsubscribe"), server.address)
            await oscsend(server.address[1], "/riffradio/seed", "i", "5")
            assert await receive(tablet) == [("/riffradio/seed", [5])]
            await loop.sock_sendto(fader, message("/riffradio/state"), server.address)
            assert "/riffradio/state" in dict(await receive(fader))  # the next datagram: no echo before it
            assert server.subscribers == (("127.0.0.1", tablet.getsockname()[1]),)
        finally:
            fader.close()
            tablet.close()
            await server.close()

    run(body)


def test_allow_list_drops_other_senders() -> None:
    async def body() -> None:
        station = StateStation()
        server = await start(station, allow=["10.1.2.3", "192.168.0.0/16"])
        try:
            await oscsend(server.address[1], "/riffradio/volume", "f", "0.5")
            await wait_until(lambda: server.counts["denied"] == 1, "the packet to be denied")
            assert station.state.snapshot().volume == 1.0
            assert station.accepted("denied") == 1
        finally:
            await server.close()
        server = await start(station, allow=["127.0.0.0/8"])
        try:
            await oscsend(server.address[1], "/riffradio/volume", "f", "0.5")
            await wait_until(lambda: server.counts["accepted"] == 1, "the packet to be accepted")
            assert station.state.snapshot().volume == 0.5
        finally:
            await server.close()
        with pytest.raises(RiffradioError, match="control.osc.allow: 'my laptop' is not an IP address"):
            await start(station, allow=["my laptop"])

    run(body)


def test_binds_loopback_by_default_and_reports_a_busy_port() -> None:
    assert OscConfig().host == "127.0.0.1"

    async def body() -> None:
        station = StateStation()
        server = await start(station)
        try:
            assert server.address[0] == "127.0.0.1" and server.address[1] > 0
            busy = OscConfig(host="127.0.0.1", port=server.address[1])
            with pytest.raises(RiffradioError, match=r"OSC: cannot listen on udp 127.0.0.1:\d+: .*in use"):
                await serve_osc(busy, station)
        finally:
            await server.close()

    run(body)


def test_a_failing_state_listener_is_counted_and_the_server_keeps_answering() -> None:
    async def body() -> None:
        station = StateStation()
        server = await start(station)

        def broken_listener(name: str, value: Any) -> None:
            raise RuntimeError("listener bug")

        unsubscribe = station.state.subscribe(broken_listener)
        sock = udp_socket()
        try:
            await oscsend(server.address[1], "/riffradio/volume", "f", "0.5")
            await wait_until(lambda: server.counts["error"] == 1, "the failure to be counted")
            unsubscribe()
            await asyncio.get_running_loop().sock_sendto(sock, message("/riffradio/state"), server.address)
            assert dict(await receive(sock))["/riffradio/volume"] == [0.5]
        finally:
            sock.close()
            await server.close()

    run(body)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback_with_allow_list() -> None:
    async def body() -> None:
        station = StateStation()
        try:
            server = await serve_osc(OscConfig(host="::1", port=0, allow=["::1"]), station)
        except RiffradioError as error:
            pytest.skip(f"no IPv6 loopback here: {error}")
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_sendto(sock, message("/riffradio/hold", ("i", 1)), server.address)
            await asyncio.get_running_loop().sock_sendto(sock, message("/riffradio/state"), server.address)
            assert dict(await receive(sock))["/riffradio/hold"] == [1]
        finally:
            sock.close()
            await server.close()

    run(body)


def test_rate_limited_log_counts_what_it_does_not_write(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.osc"), burst=3, lines_per_second=1.0, clock=lambda: now[0])
    logged = [limited.warning(f"bad {i}", "malformed" if i % 2 else "bad_value") for i in range(10)]
    assert logged == [True] * 3 + [False] * 7
    assert [r.getMessage() for r in caplog.records] == ["bad 0", "bad 1", "bad 2"]
    now[0] = 2.0
    assert limited.warning("bad 10", "malformed")
    assert caplog.records[-2].getMessage() == (
        "7 more rejected OSC messages not logged (rate limit): malformed 4, bad_value 3"
    )
    assert caplog.records[-1].getMessage() == "bad 10"
    assert limited.lines_logged + limited.lines_suppressed == 11


def test_docs_show_every_address_with_oscsend() -> None:
    text = (REPO / "docs" / "osc.md").read_text()
    for address in ADDRESSES:
        assert f"`{address}`" in text, address
        assert f"oscsend 127.0.0.1 9000 {address}" in text, address
