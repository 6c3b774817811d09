"""The OSC server's defences, against real sockets: OSC over TCP (liblo's ``oscsend osc.tcp://``
and python-osc's SLIP client), connection limit and idle timeout, the per-sender rate limit,
answers that fit a datagram and never amplify, and live values refused before the state takes
them (with the reason answered to the sender)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from pythonosc import slip
from pythonosc.osc_packet import OscPacket
from pythonosc.tcp_client import SimpleTCPClient

from riffradio.control.osc import AMPLIFICATION_FACTOR, MAX_REPLY_BYTES, StreamDeframer, serve_osc, state_bundle
from riffradio.playlist.loader import load_playlist
from riffradio.playlist.model import OscConfig
from riffradio.station.plan import START
from riffradio.station.producer import check_live_state
from riffradio.station.state import StateSnapshot, StationState
from test_osc import StateStation, message, oscsend, receive, run, udp_socket, wait_until

pytestmark = pytest.mark.skipif(shutil.which("oscsend") is None, reason="needs liblo-tools (tests/setup-debian.sh)")
REPO = Path(__file__).resolve().parents[1]


def parsed(packet: bytes) -> list[tuple[str, list[Any]]]:
    return [(m.message.address, m.message.params) for m in OscPacket(packet).messages]


def lan_address() -> str:
    """An address of this machine that is not loopback (a sender whose address could be forged)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    return address


def test_stream_framing_slip_and_size_prefixed() -> None:
    packet = message("/riffradio/prompt", ("s", "a\xc0b"))  # an END byte inside is escaped
    slip_stream = StreamDeframer(65536)
    framed = slip.encode(packet) + slip.encode(message("/riffradio/hold", ("i", 1)))
    assert slip_stream.feed(framed[:7]) == [] and slip_stream.feed(framed[7:]) == [packet, message("/riffradio/hold", ("i", 1))]
    assert slip_stream.frame(packet) == slip.encode(packet)
    sized = StreamDeframer(65536)
    assert sized.feed(len(packet).to_bytes(4, "big") + packet) == [packet]
    assert sized.frame(packet) == len(packet).to_bytes(4, "big") + packet
    with pytest.raises(Exception, match="not in 1..65536"):
        StreamDeframer(65536).feed((1 << 30).to_bytes(4, "big"))


def test_osc_over_tcp_from_oscsend_and_a_slip_client_with_answers_on_the_connection() -> None:
    async def body() -> None:
        station = StateStation()
        server = await serve_osc(OscConfig(host="127.0.0.1", port=0, tcp=True), station)
        try:
            host, port = server.tcp_address
            # liblo 0.31's oscsend frames TCP packets with a 4-byte size (OSC 1.0 streams)
            process = await asyncio.create_subprocess_exec("oscsend", f"osc.tcp://{host}:{port}", "/riffradio/volume", "f", "0.5")
            assert await asyncio.wait_for(process.wait(), 20) == 0
            await wait_until(lambda: station.state.snapshot().volume == 0.5, "the volume over tcp")
            # python-osc's client in OSC 1.1 mode: SLIP frames; it subscribes and hears the echoes
            client = SimpleTCPClient(host, port, mode="1.1", timeout=20)
            try:
                await asyncio.to_thread(client.send_message, "/riffradio/subscribe", [])
                answers = await asyncio.to_thread(client.receive, 20)
                assert "/riffradio/state" in dict(parsed(answers[0]))
                await oscsend(server.address[1], "/riffradio/prompt", "s", "rainy jazz")  # another controller, udp
                echo = await asyncio.to_thread(client.receive, 20)
                assert ("/riffradio/prompt", ["rainy jazz"]) in parsed(echo[0])
                await asyncio.to_thread(client.send_message, "/riffradio/steps", [0])  # refused: answered on the connection
                refusal = parsed((await asyncio.to_thread(client.receive, 20))[0])
                assert refusal[0][0] == "/riffradio/error" and refusal[0][1][0] == "/riffradio/steps"
                assert "between 1 and 500" in refusal[0][1][1]
            finally:
                client.close()
            await wait_until(lambda: not server.connections, "the connection to go")
            assert server.subscribers == ()
        finally:
            await server.close()

    run(body)


def test_tcp_connections_are_capped_and_idle_ones_closed() -> None:
    async def body() -> None:
        station = StateStation()
        server = await serve_osc(OscConfig(host="127.0.0.1", port=0, tcp=True), station)
        server.max_connections, server.idle_seconds = 3, 1.0
        writers = []
        try:
            for _ in range(6):
                _reader, writer = await asyncio.open_connection(*server.tcp_address)
                writers.append((_reader, writer))
            await wait_until(lambda: station.accepted("too_many_connections") == 3, "three connections refused")
            assert len(server.connections) == 3
            # idle ones go after idle_seconds: every reader sees its end
            for reader, _writer in writers:
                assert await asyncio.wait_for(reader.read(), 10) == b""
            assert len(server.connections) == 0
        finally:
            for _reader, writer in writers:
                writer.close()
            await server.close()

    run(body)


def test_each_sender_is_rate_limited_alone() -> None:
    lan = lan_address()

    async def body() -> None:
        station = StateStation()
        server = await serve_osc(OscConfig(host="0.0.0.0", port=0, max_messages_per_second=20), station)
        loop = asyncio.get_running_loop()
        flooder = udp_socket()  # 127.0.0.1
        dj = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the DJ's tablet, another address
        dj.bind((lan, 0))
        dj.setblocking(False)
        try:
            for number in range(300):  # in batches the socket buffer holds, as fast as they are read
                await loop.sock_sendto(flooder, message("/riffradio/volume", ("f", number / 300)), ("127.0.0.1", server.address[1]))
                if number % 50 == 49:
                    await wait_until(lambda: sum(server.counts.values()) > number, "the flood to be handled")
            assert 40 <= server.counts["accepted"] <= 60  # a burst of 40, then 20 a second
            assert server.counts["rate_limited"] >= 240
            await loop.sock_sendto(dj, message("/riffradio/prompt", ("s", "the dj")), (lan, server.address[1]))
            await wait_until(lambda: station.state.snapshot().live_prompt == "the dj", "another sender to get through")
        finally:
            flooder.close()
            dj.close()
            await server.close()

    run(body)


def test_answers_fit_one_datagram_and_never_amplify_for_unproven_senders() -> None:
    lan = lan_address()

    async def body() -> None:
        station = StateStation()
        station.state.set_prompt("€" * 1000)  # the longest prompt, 3 bytes a character
        server = await serve_osc(OscConfig(host="0.0.0.0", port=0, allow=[lan]), station)
        target = (lan, server.address[1])
        loop = asyncio.get_running_loop()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((lan, 0))  # a sender from the network: its address could be forged
        sender.setblocking(False)
        try:
            request = message("/riffradio/state")
            await loop.sock_sendto(sender, request, target)
            answer = await asyncio.wait_for(loop.sock_recv(sender, 65536), 20)
            assert len(answer) <= AMPLIFICATION_FACTOR * len(request), (len(answer), len(request))
            truncated = dict(parsed(answer))["/riffradio/truncated"][0]
            assert truncated > MAX_REPLY_BYTES / 4  # the whole state is much bigger; subscribe for it
            refused = message("/riffradio/volume", ("f", 9.0))
            await loop.sock_sendto(sender, refused, target)
            answer = await asyncio.wait_for(loop.sock_recv(sender, 65536), 20)
            assert len(answer) <= AMPLIFICATION_FACTOR * len(refused) and parsed(answer)[0][0] == "/riffradio/error"
            # a subscriber gets all of it, in one datagram
            await loop.sock_sendto(sender, message("/riffradio/subscribe"), target)
            answer = await asyncio.wait_for(loop.sock_recv(sender, 65536), 20)
            assert len(answer) <= MAX_REPLY_BYTES and dict(parsed(answer))["/riffradio/prompt"] == ["€" * 1000]
        finally:
            sender.close()
            await server.close()

    run(body)


def test_the_biggest_state_still_fits_one_datagram() -> None:
    state = StationState(1)
    for setter in (state.set_prompt, state.set_to_prompt):
        setter("€" * 1000)
    title = "€" * 1000 + " → " + "€" * 1000
    nowplaying = {"now": {"title": title, "prompt": "€" * 1000, "to_prompt": "€" * 1000}, "next": {"title": title}}
    packet = state_bundle(state.snapshot(), nowplaying)
    assert len(packet) <= MAX_REPLY_BYTES
    fields = dict(parsed(packet))
    assert fields["/riffradio/prompt"] == ["€" * 1000] and fields["/riffradio/nowplaying"] == [title]
    assert len(state_bundle(StateSnapshot(), {}, max_bytes=64)) <= 64


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("/riffradio/seed_image", "s", "nosuch"), "not a bundled name"),
        (("/riffradio/seed_image", "s", "bpm=nan"), "bpm must be within"),
        (("/riffradio/seed_image", "s", "/no/such/file.png"), "an existing file"),
    ],
)
def test_a_seed_image_is_resolved_before_the_state_takes_it(args: tuple[str, ...], reason: str) -> None:
    """Drill (item 2): such a message used to be accepted, and then every clip failed."""
    playlist = load_playlist(REPO / "playlists" / "late-night-lofi.yaml")

    async def body() -> None:
        station = StateStation(len(playlist.riffs))
        station.state.set_validator(lambda candidate: check_live_state(playlist, candidate, START))
        server = await serve_osc(OscConfig(host="127.0.0.1", port=0), station)
        sock = udp_socket()
        try:
            await oscsend(server.address[1], "/riffradio/subscribe", "i", str(sock.getsockname()[1]))
            await receive(sock)  # the state
            await oscsend(server.address[1], "/riffradio/seed_image", "s", "breakbeat")
            assert ("/riffradio/seed_image", ["breakbeat"]) in await receive(sock)  # the echo of a good one
            await oscsend(server.address[1], *args)
            await wait_until(lambda: station.accepted("bad_value") == 1, "the refusal")
            assert station.state.snapshot().knobs.seed_image == "breakbeat"  # nothing changed
        finally:
            sock.close()
            await server.close()

    run(body)


def test_every_knob_value_the_table_accepts_is_accepted_live_by_the_engines_own_rule(tiny_model_dir: Path) -> None:
    """steps 1 and denoising 0 make clips (no UNet call), so the live check takes them; a value
    outside the table is still refused before the state takes it."""
    from riffradio.engine.pipeline import RiffEngine

    playlist = load_playlist(REPO / "playlists" / "late-night-lofi.yaml")
    engine = RiffEngine.load(str(tiny_model_dir), device="cpu")
    state = StationState(len(playlist.riffs), validator=lambda c: check_live_state(playlist, c, START, engine))
    state.set_knob("steps", 1)
    state.set_knob("denoising", 0.0)
    assert state.snapshot().knobs.steps == 1 and state.snapshot().knobs.denoising == 0.0
    with pytest.raises(ValueError, match="steps must be between 1 and 500"):
        state.set_knob("steps", 501)
    assert state.snapshot().knobs.steps == 1


def test_every_live_text_has_a_length_limit() -> None:
    """A 60 KB negative prompt once made /riffradio/state answer nothing at all."""
    state = StationState(1)
    for setter in (state.set_prompt, state.set_to_prompt, state.set_negative_prompt, state.set_seed_image):
        with pytest.raises(ValueError, match="characters long, at most"):
            setter("x" * 60_000)
    assert state.snapshot().version == 0
