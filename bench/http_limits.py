"""Drill: idle connections against the studio's HTTP server (issue 14, item 1, for HTTP).

    python3 bench/http_limits.py [--connections 1100] [--max-connections 256] [--idle-seconds 15]

Starts the real server (aiohttp, its connection guard) on a small stand-in station, opens
``--connections`` idle TCP connections to it (more than the default 1024-descriptor limit of a
unit without ``LimitNOFILE``), and prints: connections held and refused with 503, log lines the
server wrote, whether a request still gets through while the idle ones are open, and the
seconds until the server has closed every idle connection.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not whichever riffradio is installed

from riffradio.control.http import HttpConfig, StudioViews, serve_http  # noqa: E402
from riffradio.metrics import StationMetrics  # noqa: E402
from riffradio.station.state import StationState  # noqa: E402


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the clients live in this process too: room for them, the server keeps to its own limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.connections + 256)), hard))
    counter = CountingHandler()
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.INFO)
    views = StudioViews(name="Drill", state=StationState(1), metrics=StationMetrics(),
                        nowplaying=lambda: {"now": None}, outputs=list)  # fmt: skip

    async def drill() -> None:
        server = await serve_http(HttpConfig(port=0, max_connections=args.max_connections), views)
        server.guard.idle_timeout_seconds = args.idle_seconds
        lines_before = len(counter.lines)
        loop = asyncio.get_running_loop()
        clients = []
        refused = 0
        for _ in range(args.connections):
            client = socket.socket()
            client.setblocking(False)
            try:
                await loop.sock_connect(client, server.address)
            except OSError:
                client.close()
                continue
            clients.append(client)
        await asyncio.sleep(1.5)
        for client in clients:
            try:
                if client.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except BlockingIOError:
                pass
            except OSError:
                pass
        held = len(server._runner.server.connections) if server._runner and server._runner.server else -1
        for client in clients[args.max_connections :]:
            client.close()
        alive = clients[: args.max_connections]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        status_during = await asyncio.to_thread(_status_of, f"{server.url}/metrics")
        while held_now := len(server._runner.server.connections):
            if time.monotonic() - started > args.idle_seconds + 10:
                break
            await asyncio.sleep(0.25)
        closed_after = time.monotonic() - started
        status_after = await asyncio.to_thread(_status_of, f"{server.url}/metrics")
        lines = len(counter.lines) - lines_before
        for client in alive:
            client.close()
        await server.close()
        print(f"idle connections opened: {len(clients)} of {args.connections}; held by the server: {held} "
              f"(limit {args.max_connections}); answered 503: {refused}")  # fmt: skip
        print(f"a request while the idle ones are held: HTTP {status_during}; after they are closed: HTTP {status_after}")
        print(f"log lines written: {lines} ({lines / max(closed_after, 1):.2f} per second)")
        print(f"every idle connection closed by the server {closed_after:.1f} s after the drill "
              f"(idle timeout {args.idle_seconds:g} s; still open: {held_now})")  # fmt: skip
        for line in counter.lines[lines_before:][:5]:
            print("  log:", line)

    asyncio.run(drill())


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


if __name__ == "__main__":
    main()
