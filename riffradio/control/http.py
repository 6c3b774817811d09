"""The station's HTTP endpoints: ``GET /api/nowplaying`` (JSON) and ``GET /metrics`` (Prometheus).

A deliberately tiny HTTP/1.1 server on ``asyncio.start_server``: two read-only routes, one
request per connection (``Connection: close``), bounded header size and read time, so a slow
or hostile client can neither grow memory nor hold the station. It listens on 127.0.0.1 by
default; put a reverse proxy in front of it to publish the now-playing JSON.

The now-playing document follows AzuraCast's ``/api/nowplaying`` shape where it fits
(``station``, ``is_online``, ``now_playing``, ``playing_next``) and adds what a Riffusion
station has on top: seed, alpha, buffer seconds ahead, real-time factor and each output's state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from riffradio.metrics import StationMetrics
from riffradio.playlist.model import HttpConfig  # the playlist's control.http section
from riffradio.sinks.base import SinkStatus

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT_SECONDS = 10.0
ROUTES: tuple[str, ...] = ("/api/nowplaying", "/metrics")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class StationView(Protocol):
    """What the HTTP server reads from the station (all calls quick and thread-safe)."""

    metrics: StationMetrics

    def nowplaying(self) -> dict[str, Any]: ...

    def fanout_statuses(self) -> Iterable[SinkStatus]: ...


class HttpServer:
    """A running HTTP server; :attr:`address` is ``(host, port)`` actually bound."""

    def __init__(self, server: asyncio.base_events.Server, station: StationView) -> None:
        self._server = server
        self._station = station
        self.address: tuple[str, int] = server.sockets[0].getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def serve_http(config: HttpConfig, station: StationView) -> HttpServer:
    """Start serving ``station`` on ``config.host:config.port``; returns once listening.

    Raises:
        OSError: the address cannot be bound (port in use, no such interface).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_connection(reader, writer, station)

    server = await asyncio.start_server(handle, config.host, config.port, limit=MAX_HEADER_BYTES)
    http_server = HttpServer(server, station)
    log.info("http: now playing at %s/api/nowplaying, metrics at %s/metrics", http_server.url, http_server.url)
    return http_server


def nowplaying_document(station: StationView) -> dict[str, Any]:
    """The JSON of ``/api/nowplaying``: the station's own view plus every output's state."""
    document = dict(station.nowplaying())
    if "outputs" not in document:
        document["outputs"] = [output_document(status) for status in station.fanout_statuses()]
    for output in document["outputs"]:
        if isinstance(output, dict):
            output.setdefault("connected", output.get("state") == "connected")
    document.setdefault("served_at", round(time.time(), 3))
    return document


def output_document(status: SinkStatus) -> dict[str, Any]:
    """One output's state for the now-playing JSON (``connected`` is the quick yes/no)."""
    document = dataclasses.asdict(status)
    document["connected"] = status.state == "connected"
    return document


async def _handle_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, station: StationView
) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            return  # closed early, too large or too slow: nothing worth answering
        status, headers, body = _respond(head, station)
        method = head.split(b" ", 1)[0]
        writer.write(_response_bytes(status, headers, b"" if method == b"HEAD" else body, len(body)))
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def _respond(head: bytes, station: StationView) -> tuple[int, dict[str, str], bytes]:
    """Route one request head to ``(status, headers, body)``."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _text(400, f"malformed request line: {request_line[:100]!r}")
    method, target, _version = parts
    path = target.split("?", 1)[0]
    if path not in ROUTES:
        return _text(404, f"not found: {path[:200]}; try /api/nowplaying or /metrics")
    if method not in ("GET", "HEAD"):
        status, headers, body = _text(405, f"{method[:20]} not allowed on {path}; use GET")
        headers["Allow"] = "GET, HEAD"
        return status, headers, body
    try:
        if path == "/metrics":
            return 200, {"Content-Type": CONTENT_TYPE_LATEST}, generate_latest(station.metrics.registry)
        body = json.dumps(nowplaying_document(station), ensure_ascii=False, default=str).encode("utf-8")
        # Now-playing widgets on other origins read this, as they do AzuraCast's.
        headers = {"Content-Type": "application/json; charset=utf-8", "Access-Control-Allow-Origin": "*"}
        return 200, headers, body
    except Exception as error:  # noqa: BLE001 - a broken view must not kill the server
        log.exception("http: %s failed", path)
        return _text(500, f"{path} failed: {type(error).__name__}: {error}")


def _text(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, (message + "\n").encode("utf-8")


def _response_bytes(status: int, headers: dict[str, str], body: bytes, length: int) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Length: {length}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Cache-Control: no-store")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
