"""The HTTP server (aiohttp), spoken to by real HTTP clients (urllib, raw sockets, aiohttp's
WebSocket client) over TCP: API, limits, origins, token, WebSocket pushes and the stream output."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from riffradio.control.http import HttpConfig, StudioViews, TokenBuckets, icecast_listeners, origin_allowed, serve_http
from riffradio.metrics import StationMetrics
from riffradio.sinks.base import SinkStatus
from riffradio.sinks.http import HttpStreamSink, IcyInterleaver, icy_metadata_block
from riffradio.station.state import StationState
from riffradio.core.types import AudioBlock, NowPlaying

TOKEN = "s3cret-edit-token"
TITLE = "jazzy lofi hip hop → church bells on sunday"


class SmallStation:
    """What the server reads from a station, with a real state, real metrics and sink statuses."""

    def __init__(self) -> None:
        self.metrics = StationMetrics()
        self.state = StationState(3)
        self.statuses = [
            SinkStatus(name="file:/var/lib/riffradio/late-night.flac", state="connected", bytes_sent=1234, blocks_written=10),
            SinkStatus(name="icecast:ice.example.org:8000/riffradio.mp3", state="reconnecting", blocks_dropped=3,
                       last_error="ConnectionRefusedError: [Errno 111] Connection refused"),
        ]
        self.listeners: list[Any] = []

    def nowplaying(self) -> dict[str, Any]:
        now = {"title": TITLE, "prompt": "jazzy lofi hip hop", "to_prompt": "church bells on sunday", "seed": 42,
               "alpha": 0.25, "denoising": 0.75, "guidance": 7.0, "steps": 50, "continuation_seconds": 0.0,
               "clip_index": 7,
               "elapsed_seconds": 1.5, "duration_seconds": 5.12, "fallback": False}
        upcoming = {"title": "church bells on sunday", "clip_index": 8, "duration_seconds": 5.12}
        return {"station": "Late Night Lofi", "playlist": "/etc/riffradio/station.yaml", "now": now, "next": upcoming,
                "played_seconds": 12.0, "outputs": [vars(s) for s in self.statuses]}

    def views(self, streams: tuple[HttpStreamSink, ...] = ()) -> StudioViews:
        return StudioViews(
            name="Late Night Lofi", state=self.state, metrics=self.metrics, nowplaying=self.nowplaying,
            outputs=lambda: list(self.statuses), add_block_listener=self.listeners.append,
            riffs=lambda: ["jazzy lofi hip hop", "church bells on sunday", "rainy jazz"], seed_images=("og_beat",),
            streams=streams,
        )  # fmt: skip


def request(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def post(server: Any, body: Any, token: str | None = TOKEN, **headers: str) -> tuple[int, Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = request(f"{server.url}/api/state", "POST", body, headers)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def raw(address: tuple[str, int], data: bytes, seconds: float = 10) -> bytes:
    with socket.create_connection(address, timeout=seconds) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def serve(station: SmallStation, check: Any, config: HttpConfig | None = None, token: str | None = TOKEN,
          streams: tuple[HttpStreamSink, ...] = ()) -> None:  # fmt: skip
    """Run ``check(server)`` in a thread against a live server (or ``await check(server)`` if a coroutine)."""
    config = config or HttpConfig(host="127.0.0.1", port=0, token_env="EDIT_TOKEN" if token else None)

    async def main() -> None:
        server = await serve_http(config, station.views(streams), environ={"EDIT_TOKEN": token} if token else {})
        try:
            if asyncio.iscoroutinefunction(check):
                await check(server)
            else:
                await asyncio.to_thread(check, server)
        finally:
            await server.close()

    asyncio.run(main())


def test_nowplaying_is_azuracast_shaped_and_names_no_paths_or_hosts() -> None:
    station = SmallStation()

    def check(server: Any) -> None:
        status, headers, body = request(f"{server.url}/api/nowplaying")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        doc = json.loads(body)
        assert doc["station"]["name"] == "Late Night Lofi" and doc["is_online"] is True
        now = doc["now_playing"]
        assert now["song"]["text"] == now["song"]["title"] == TITLE  # UTF-8 arrow intact
        assert now["song"]["art"] == "/api/art/7.png"
        assert (now["elapsed"], now["duration"], now["remaining"]) == (1.5, 5.12, 3.62)
        assert doc["playing_next"]["song"]["title"] == "church bells on sunday"
        assert (doc["prompt"], doc["to_prompt"], doc["alpha"], doc["seed"]) == (
            "jazzy lofi hip hop", "church bells on sunday", 0.25, 42)  # fmt: skip
        assert doc["knobs"] == {"denoising": 0.75, "guidance": 7.0, "steps": 50, "continuation_seconds": 0.0}
        assert doc["listeners"] == {"total": 0, "unique": 0, "current": 0}
        text = body.decode()
        for secret in ("/var/lib", "/etc/riffradio", "ice.example.org", "8000", "Connection refused"):
            assert secret not in text, secret
        assert doc["riffradio"]["outputs"] == [
            {"type": "file", "state": "connected", "connected": True},
            {"type": "icecast", "state": "reconnecting", "connected": False},
        ]
        assert "Access-Control-Allow-Origin" not in headers  # CORS off unless configured
        # the operator's view (the edit token) names outputs and the playlist
        doc = json.loads(request(f"{server.url}/api/nowplaying", headers={"Authorization": f"Bearer {TOKEN}"})[2])
        outputs = {o["name"]: o for o in doc["riffradio"]["outputs"]}
        assert outputs["icecast:ice.example.org:8000/riffradio.mp3"]["blocks_dropped"] == 3
        assert doc["riffradio"]["playlist"] == "/etc/riffradio/station.yaml"
        assert doc["riffradio"]["now"]["title"] == TITLE
        # read fresh for every request
        station.statuses[1].state = "connected"
        doc = json.loads(request(f"{server.url}/api/nowplaying?x=1")[2])
        assert doc["riffradio"]["outputs"][1]["connected"] is True

    serve(station, check)


def test_cors_only_for_configured_origins() -> None:
    config = HttpConfig(port=0, cors=("https://widgets.example.org",))

    def check(server: Any) -> None:
        url = f"{server.url}/api/nowplaying"
        headers = request(url, headers={"Origin": "https://widgets.example.org"})[1]
        assert headers["Access-Control-Allow-Origin"] == "https://widgets.example.org"
        assert "Access-Control-Allow-Origin" not in request(url, headers={"Origin": "https://evil.example"})[1]
        status, headers, _ = request(url, "OPTIONS", headers={"Origin": "https://widgets.example.org"})
        assert status == 204 and headers["Access-Control-Allow-Methods"] == "GET"

    serve(SmallStation(), check, config)


def test_metrics_exposition() -> None:
    station = SmallStation()
    m = station.metrics
    m.clips_generated.inc(3)
    m.generation_seconds.observe(0.7)
    m.underruns.inc()
    m.buffer_seconds_ahead.set(12.5)
    m.sink_reconnects.labels(sink="icecast:/riffradio.mp3").inc(2)
    m.osc_messages.labels(outcome="rejected").inc()

    def check(server: Any) -> None:
        status, headers, body = request(f"{server.url}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert samples[("riffradio_clips_generated_total", ())] == 3
        assert samples[("riffradio_generation_seconds_bucket", (("le", "1.0"),))] == 1
        assert samples[("riffradio_underruns_total", ())] == 1
        assert samples[("riffradio_buffer_seconds_ahead", ())] == 12.5
        assert samples[("riffradio_sink_reconnects_total", (("sink", "icecast:/riffradio.mp3"),))] == 2
        assert all(name.startswith("riffradio_") for name, _ in samples)  # no global registry leaks in

    serve(station, check)


def test_the_page_and_other_paths_and_methods() -> None:
    def check(server: Any) -> None:
        status, headers, body = request(f"{server.url}/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        page = body.decode()
        assert 'name="prompt"' in page and "/static/studio.js" in page and "://" not in page.split("<body>")[0]
        assert TOKEN not in page
        for name in ("studio.js", "studio.css"):
            status, headers, body = request(f"{server.url}/static/{name}")
            assert status == 200 and TOKEN.encode() not in body and b"//cdn" not in body
        assert request(f"{server.url}/static/../../etc/passwd")[0] == 404
        assert request(f"{server.url}/static/nosuch.js")[0] == 404
        assert request(f"{server.url}/nosuch")[0] == 404
        assert request(f"{server.url}/api/art/9999.png")[0] == 404
        assert request(f"{server.url}/metrics", method="POST")[0] == 405
        assert request(f"{server.url}/api/nowplaying", method="DELETE")[0] == 405
        status, _, body = request(f"{server.url}/metrics", method="HEAD")
        assert status == 200 and body == b""
        assert raw(server.address, b"BREW /pot\r\n\r\n").split(b" ", 2)[1] == b"400"

    serve(SmallStation(), check)


def test_bare_lf_and_oversize_requests_are_answered_at_once() -> None:
    def check(server: Any) -> None:
        # answered (served or refused), not left waiting for a CR that never comes
        answer = raw(server.address, b"GET /api/nowplaying HTTP/1.1\nHost: x\nConnection: close\n\n", seconds=30)
        assert answer.split(b" ", 2)[1] in (b"200", b"400"), answer[:100]
        for too_big in (
            # just over the limits, so the server has read all of it before it answers and closes
            b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9_000 + b"\r\n\r\n",
            b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n",
        ):
            answer = raw(server.address, too_big, seconds=30)
            assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:100]

    serve(SmallStation(), check)


def test_idle_connections_are_closed_and_the_limit_answers_503() -> None:
    config = HttpConfig(port=0, max_connections=8)

    async def check(server: Any) -> None:
        server.guard.idle_timeout_seconds = 1.5
        loop = asyncio.get_running_loop()
        idle = [socket.create_connection(server.address, timeout=10) for _ in range(8)]
        idle[0].sendall(b"GET /metr")  # a head that never ends
        await asyncio.sleep(0.3)
        answer = await loop.run_in_executor(None, raw, server.address, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]
        assert server.guard.refused >= 1
        # every idle one is closed by the server within the timeout and a sweep
        for sock in idle:
            data = await loop.run_in_executor(None, sock.recv, 100)
            assert data == b""
            sock.close()
        assert server.guard.closed_idle >= 8
        status = (await loop.run_in_executor(None, request, f"{server.url}/metrics"))[0]
        assert status == 200

    serve(SmallStation(), check, config)


def test_a_silent_client_does_not_block_others() -> None:
    def check(server: Any) -> None:
        with socket.create_connection(server.address, timeout=10) as idle:
            idle.sendall(b"GET /metr")  # and then nothing
            assert request(f"{server.url}/api/nowplaying")[0] == 200

    serve(SmallStation(), check)


def test_post_state_needs_the_token_and_checks_fields_like_osc() -> None:
    station = SmallStation()

    def check(server: Any) -> None:
        assert post(server, {"prompt": "rainy jazz"}, token=None)[0] == 401
        assert post(server, {"prompt": "rainy jazz"}, token="wrong")[0] == 403
        assert station.state.snapshot().live_prompt is None  # nothing changed
        status, answer = post(server, {"prompt": "rainy jazz", "alpha": 0.3, "to_prompt": "church organ"})
        assert status == 200 and answer["state"]["prompt"] == "rainy jazz" and answer["state"]["alpha"] == 0.3
        snapshot = station.state.snapshot()
        assert (snapshot.live_prompt, snapshot.live_to_prompt, snapshot.live_alpha) == ("rainy jazz", "church organ", 0.3)
        assert post(server, {"next": True})[1]["state"]["goto"] == 1
        assert post(server, {"goto": 2, "volume": 0.5, "seed": 7, "denoising": 0.6})[0] == 200
        snapshot = station.state.snapshot()
        assert (snapshot.riff_index, snapshot.volume, snapshot.live_seed, snapshot.knobs.denoising) == (2, 0.5, 7, 0.6)
        # refusals name the field, with OSC's words
        for body, field, words in (
            ({"alpha": 1.5}, "alpha", "alpha must be between 0 and 1"),
            ({"volume": "loud"}, "volume", "takes a number (f or i), got 's'"),
            ({"volume": float("nan")}, "volume", ""),  # json.dumps writes NaN: not JSON
            ({"goto": 3}, "goto", "riff index must be between 0 and 2"),
            ({"prompt": " "}, "prompt", "non-empty"),
            ({"tempo_bpm": 120}, "tempo_bpm", "unknown field"),
            ({"hold": 2}, "hold", "takes 0 or 1"),
        ):
            status, answer = post(server, body)
            assert status == 400, (body, answer)
            if isinstance(answer, dict):
                assert answer["field"] == field and words in answer["error"], answer
        # a request applies whole or not at all when a type is wrong
        assert post(server, {"seed": 9, "prompt": 5})[0] == 400 and station.state.snapshot().live_seed == 7
        assert post(server, b"not json")[0] == 400
        assert post(server, [1, 2])[0] == 400
        assert post(server, b"{" + b" " * 20_000 + b"}")[0] == 413
        assert post(server, {"volume": 1.0}, Origin="https://evil.example")[0] == 403
        assert post(server, {"volume": 1.0}, Origin=server.url)[0] == 200
        status, _, body = request(f"{server.url}/api/state")
        state = json.loads(body)
        assert state["writable"] is True and state["riffs"][2] == "rainy jazz" and "prompt" in state["fields"]
        assert TOKEN not in body.decode()

    serve(station, check)


def test_without_token_env_nobody_steers() -> None:
    station = SmallStation()

    def check(server: Any) -> None:
        status, answer = post(server, {"volume": 0.1}, token="anything")
        assert status == 403 and "token_env" in answer
        assert json.loads(request(f"{server.url}/api/state")[2])["writable"] is False
        assert station.state.snapshot().volume == 1.0

    serve(station, check, token=None)


def test_rate_limit_per_client() -> None:
    buckets = TokenBuckets(burst=3, per_second=1.0, clock=lambda: clock[0])
    clock = [0.0]
    assert [buckets.allow("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b")
    clock[0] = 1.0
    assert buckets.allow("a") and not buckets.allow("a")

    def check(server: Any) -> None:
        server.buckets = TokenBuckets(burst=5, per_second=1e-6)  # no refill within the test, however slow
        statuses = [request(f"{server.url}/api/state")[0] for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        assert request(f"{server.url}/")[0] == 200  # the page and streams are not rate-limited

    serve(SmallStation(), check)


def test_origins() -> None:
    assert origin_allowed(None, "radio:8080", ())
    assert origin_allowed("http://radio:8080", "radio:8080", ())
    assert not origin_allowed("http://evil.example", "radio:8080", ())
    assert origin_allowed("https://radio.example.org", "127.0.0.1:8080", ("https://radio.example.org",))


def test_websocket_pushes_state_changes_and_clips_and_checks_origin() -> None:
    station = SmallStation()

    async def check(server: Any) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/api/live", headers={"Origin": "http://evil.example"}) as response:
                assert response.status == 403
            async with session.ws_connect(f"{server.url}/api/live", origin=server.url) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["type"] == "hello" and hello["state"]["prompt"] is None
                assert hello["nowplaying"]["now_playing"]["song"]["title"] == TITLE
                await asyncio.to_thread(station.state.set_prompt, "changed by OSC")  # another controller
                message = await _receive(ws, "state")
                assert message["state"]["prompt"] == "changed by OSC"
                # a clip heard: the audio clock's listener pushes it with its art URL
                block = _block(0, NowPlaying(3, "rainy jazz", None, 0.5, image=None, duration_seconds=5.12))
                for listener in station.listeners:
                    listener(block)
                message = await _receive(ws, "clip")
                assert message["clip"]["clip_index"] == 3 and message["clip"]["start_seconds"] == -0.5
                # the same clip again from its start (the fallback while the next is late): a new start
                for offset, frame in ((2.0, 44100 * 2), (0.1, 44100 * 5)):
                    block = _block(frame, NowPlaying(3, "rainy jazz", None, offset, image=None, duration_seconds=5.12))
                    for listener in station.listeners:
                        listener(block)
                message = await _receive(ws, "clip")
                assert message["clip"]["clip_index"] == 3 and message["clip"]["start_seconds"] == 4.9

    serve(station, check)


async def _receive(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = await ws.receive_json(timeout=10)
        if message["type"] == kind:
            return message


def _block(start_frame: int, now: NowPlaying, frames: int = 2048) -> AudioBlock:
    t = (start_frame + np.arange(frames)) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return AudioBlock(np.stack([tone, tone]), 44100, start_frame, now)


def test_icy_metadata_blocks() -> None:
    block = icy_metadata_block("rainy jazz")
    assert block[0] * 16 == len(block) - 1 and block[1:].rstrip(b"\0") == b"StreamTitle='rainy jazz';"
    icy = IcyInterleaver(metaint=10)
    out = icy.feed(b"a" * 25, "one")
    assert out[:10] == b"a" * 10 and out[10] == 2 and out[43:53] == b"a" * 10 and out[53:54] == b"\0"
    assert len(out) == 25 + 1 + 32 + 1


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg (tests/setup-debian.sh)")
@pytest.mark.parametrize("path, codec", [("/stream.mp3", "mp3"), ("/stream.opus", "opus")])
def test_the_http_stream_output_decodes_and_carries_icy_titles(tmp_path: Path, path: str, codec: str) -> None:
    sink = HttpStreamSink(path)
    station = SmallStation()
    stop = threading.Event()

    def feed() -> None:  # the fan-out's thread: one block after another, titles changing
        sink.open()
        frame = 0
        while not stop.is_set():
            title = f"clip {frame // 44100}"
            sink.write(_block(frame, NowPlaying(frame // 44100, title, None, 0.0, duration_seconds=1.0)))
            frame += 2048
            time.sleep(0.005)

    async def check(server: Any) -> None:
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            async with aiohttp.ClientSession() as session:
                headers = {"Icy-MetaData": "1"} if codec == "mp3" else {}
                async with session.get(f"{server.url}{path}?listener=abc", headers=headers) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == ("audio/mpeg" if codec == "mp3" else "audio/ogg")
                    assert sink.listeners == 1
                    doc = json.loads(await asyncio.to_thread(lambda: request(f"{server.url}/api/nowplaying")[2]))
                    assert doc["listeners"]["current"] == 1 and doc["station"]["listen_url"] == path
                    data = b""
                    while len(data) < 120_000:
                        data += await response.content.read(65536)
        finally:
            stop.set()
            feeder.join(5)
        if codec == "mp3":
            metaint = int(response.headers["icy-metaint"])
            audio, titles, index = b"", [], 0
            while index + metaint < len(data):
                audio += data[index : index + metaint]
                length = data[index + metaint] * 16
                meta = data[index + metaint + 1 : index + metaint + 1 + length]
                if meta:
                    titles.append(meta.rstrip(b"\0").decode())
                index += metaint + 1 + length
            assert titles and titles[0].startswith("StreamTitle='clip ")
            data = audio
        stream = tmp_path / f"stream.{codec}"
        stream.write_bytes(data)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels", "-of", "json", str(stream)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        info = json.loads(probe.stdout)["streams"][0]
        assert info["codec_name"] == codec and info["channels"] == 2
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(stream), "-f", "null", "-"], capture_output=True, text=True, timeout=60)
        # ffmpeg names each new chained Ogg stream (a new title) this way; nothing else may show
        problems = [line for line in decoded.stderr.splitlines() if "failed to create or replace stream" not in line]
        assert decoded.returncode == 0 and problems == [], decoded.stderr

    serve(station, check, streams=(sink,))


def test_icecast_listener_counts() -> None:
    status = {"icestats": {"source": [{"listenurl": "http://127.0.0.1:8000/a.mp3", "listeners": 3},
                                      {"listenurl": "http://127.0.0.1:8000/b.opus", "listeners": 1}]}}  # fmt: skip
    assert icecast_listeners(status, "/a.mp3") == 3 and icecast_listeners(status, "/b.opus") == 1
    assert icecast_listeners({"icestats": {"source": status["icestats"]["source"][1]}}, "/b.opus") == 1
    assert icecast_listeners({"icestats": {}}, "/a.mp3") is None and icecast_listeners({}, "/a.mp3") is None


@pytest.mark.skipif(shutil.which("icecast2") is None, reason="needs icecast2 (tests/setup-debian.sh)")
def test_now_playing_counts_the_listeners_icecast_reports(tmp_path: Path) -> None:
    from servers import IcecastServer, wait_until

    from riffradio.sinks.icecast import IcecastSink

    icecast = IcecastServer(tmp_path / "icecast").start()
    source = IcecastSink(icecast.source_url("/radio.mp3"))
    stop = threading.Event()

    def feed() -> None:  # an Icecast source in about real time
        source.open()
        frame = 0
        while not stop.is_set():
            source.write(_block(frame, NowPlaying(0, "rainy jazz", None, 0.0, duration_seconds=5.12)))
            frame += 2048
            time.sleep(2048 / 44100)
        source.close()

    def listen() -> None:
        with urllib.request.urlopen(icecast.listen_url("/radio.mp3"), timeout=10) as response:
            while not stop.is_set() and response.read(4096):
                pass

    threads = [threading.Thread(target=feed, daemon=True)]
    station = SmallStation()
    views = station.views()
    config = HttpConfig(port=0)

    async def main() -> None:
        server = await serve_http(config, replace(views, icecast_mounts=(("127.0.0.1", icecast.port, "/radio.mp3"),)))
        server.icecast_poll_seconds = 0.2
        try:
            def check() -> None:
                threads[0].start()
                icecast.wait_mount("/radio.mp3")
                assert json.loads(request(f"{server.url}/api/nowplaying")[2])["listeners"]["current"] == 0
                threads.append(threading.Thread(target=listen, daemon=True))
                threads[1].start()
                wait_until(lambda: json.loads(request(f"{server.url}/api/nowplaying")[2])["listeners"]["current"] == 1,
                           30, "Icecast's listener in now playing")  # fmt: skip

            await asyncio.to_thread(check)
        finally:
            await server.close()

    try:
        asyncio.run(main())
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        icecast.stop()


def test_port_in_use_is_an_oserror() -> None:
    async def main() -> None:
        first = await serve_http(HttpConfig(port=0), SmallStation().views())
        try:
            with pytest.raises(OSError):
                await serve_http(HttpConfig(port=first.address[1]), SmallStation().views())
        finally:
            await first.close()

    asyncio.run(main())


def test_http_output_paths_and_playlist_needs_control_http(tmp_path: Path) -> None:
    from riffradio.playlist import check_playlist_text

    for bad in ("/api/stream.mp3", "/", "stream.mp3", "/metrics", "/static/x.mp3"):
        with pytest.raises(Exception, match="path"):
            HttpStreamSink(bad)
    text = "outputs:\n  - {type: http, path: /stream.mp3}\nriffs:\n  - {prompt: jazz}\n"
    _, errors = check_playlist_text(text, tmp_path / "p.yaml")
    assert errors == [f"{tmp_path / 'p.yaml'}:2:5: an http output needs control.http (the server that serves it)"]
    text += "control:\n  http: {port: 8080, token_env: EDIT_TOKEN, cors: ['*'], origins: [https://radio.example.org]}\n"
    playlist, errors = check_playlist_text(text, tmp_path / "p.yaml")
    assert errors == [] and playlist is not None
    assert replace(playlist.control.http, line=0, column=0) == HttpConfig(
        port=8080, token_env="EDIT_TOKEN", cors=("*",), origins=("https://radio.example.org",))  # fmt: skip
    _, errors = check_playlist_text(text.replace("EDIT_TOKEN", "no such var"), tmp_path / "p.yaml")
    assert "token_env names an environment variable" in errors[0]

