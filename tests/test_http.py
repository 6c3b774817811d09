"""The HTTP endpoints, spoken to by real HTTP clients (urllib, raw sockets) over TCP."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from riffradio.control.http import HttpConfig, serve_http
from riffradio.metrics import StationMetrics
from riffradio.sinks.base import SinkStatus


class SmallStation:
    """The three things the server reads from a station, with real metrics and sink statuses."""

    def __init__(self) -> None:
        self.metrics = StationMetrics()
        self.statuses = [
            SinkStatus(name="file:late-night.flac", state="connected", bytes_sent=1234, blocks_written=10),
            SinkStatus(name="icecast:/riffradio.mp3", state="reconnecting", blocks_dropped=3,
                       last_error="ConnectionRefusedError: [Errno 111] Connection refused"),
        ]
        self.title = "jazzy lofi hip hop → church bells on sunday"

    def nowplaying(self) -> dict[str, Any]:
        return {"station": {"name": "Late Night Lofi"}, "is_online": True,
                "now_playing": {"song": {"text": self.title}, "seed": 42, "alpha": 0.25}}

    def fanout_statuses(self) -> list[SinkStatus]:
        return list(self.statuses)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def raw(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def with_server(station: SmallStation, check) -> None:  # noqa: ANN001
    server = await serve_http(HttpConfig(host="127.0.0.1", port=0), station)
    try:
        await asyncio.to_thread(check, server)
    finally:
        await server.close()


def test_nowplaying_json() -> None:
    station = SmallStation()

    def check(server) -> None:  # noqa: ANN001
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        status, headers, body = get(f"{server.url}/api/nowplaying")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        doc = json.loads(body)
        assert doc["station"]["name"] == "Late Night Lofi"
        assert doc["now_playing"]["song"]["text"] == station.title  # UTF-8 arrow intact
        outputs = {o["name"]: o for o in doc["outputs"]}
        assert outputs["file:late-night.flac"]["connected"] is True
        assert outputs["file:late-night.flac"]["bytes_sent"] == 1234
        ice = outputs["icecast:/riffradio.mp3"]
        assert ice["connected"] is False and ice["state"] == "reconnecting" and ice["blocks_dropped"] == 3
        assert "Connection refused" in ice["last_error"]
        # the document is read fresh for every request
        station.statuses[1].state = "connected"
        doc = json.loads(get(f"{server.url}/api/nowplaying?x=1")[2])
        assert {o["name"]: o for o in doc["outputs"]}["icecast:/riffradio.mp3"]["connected"] is True

    asyncio.run(with_server(station, check))


def test_metrics_exposition() -> None:
    station = SmallStation()
    m = station.metrics
    m.clips_generated.inc(3)
    m.generation_seconds.observe(0.7)
    m.underruns.inc()
    m.buffer_seconds_ahead.set(12.5)
    m.sink_reconnects.labels(sink="icecast:/riffradio.mp3").inc(2)
    m.osc_messages.labels(outcome="rejected").inc()

    def check(server) -> None:  # noqa: ANN001
        status, headers, body = get(f"{server.url}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert samples[("riffradio_clips_generated_total", ())] == 3
        assert samples[("riffradio_generation_seconds_count", ())] == 1
        assert samples[("riffradio_generation_seconds_bucket", (("le", "1.0"),))] == 1
        assert samples[("riffradio_underruns_total", ())] == 1
        assert samples[("riffradio_buffer_seconds_ahead", ())] == 12.5
        assert samples[("riffradio_sink_reconnects_total", (("sink", "icecast:/riffradio.mp3"),))] == 2
        assert samples[("riffradio_osc_messages_total", (("outcome", "rejected"),))] == 1
        assert all(name.startswith("riffradio_") for name, _ in samples)  # no global registry leaks in

    asyncio.run(with_server(station, check))


def test_other_paths_and_methods() -> None:
    def check(server) -> None:  # noqa: ANN001
        assert get(f"{server.url}/")[0] == 404
        assert get(f"{server.url}/api/nowplaying/../../etc/passwd")[0] == 404
        status, headers, _ = get(f"{server.url}/metrics", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert get(f"{server.url}/api/nowplaying", method="DELETE")[0] == 405
        status, headers, body = get(f"{server.url}/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        assert raw(server.address, b"BREW /pot\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        # a header block over the limit is dropped, not buffered without end
        assert raw(server.address, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n") == b""

    asyncio.run(with_server(SmallStation(), check))


def test_a_silent_client_does_not_block_others() -> None:
    def check(server) -> None:  # noqa: ANN001
        with socket.create_connection(server.address, timeout=10) as idle:
            idle.sendall(b"GET /metr")  # and then nothing
            assert get(f"{server.url}/api/nowplaying")[0] == 200

    asyncio.run(with_server(SmallStation(), check))


def test_a_failing_view_answers_500_and_the_server_lives_on() -> None:
    station = SmallStation()

    def broken() -> dict[str, Any]:
        raise RuntimeError("no clip yet")

    station.nowplaying = broken  # type: ignore[method-assign]

    def check(server) -> None:  # noqa: ANN001
        status, _, body = get(f"{server.url}/api/nowplaying")
        assert status == 500 and b"no clip yet" in body
        assert get(f"{server.url}/metrics")[0] == 200

    asyncio.run(with_server(station, check))


def test_port_in_use_is_an_oserror() -> None:
    async def main() -> None:
        first = await serve_http(HttpConfig(port=0), SmallStation())
        try:
            with pytest.raises(OSError):
                await serve_http(HttpConfig(port=first.address[1]), SmallStation())
        finally:
            await first.close()

    asyncio.run(main())
