"""Accept errors when descriptors run out: a real asyncio server under a low RLIMIT_NOFILE."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

SERVER = """
import asyncio, json, logging, resource, sys
from riffradio.control.connections import install_accept_error_log
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

async def main():
    held = []
    async def hold(reader, writer):
        held.append(writer)  # idle connections, kept open
    guard = install_accept_error_log(asyncio.get_running_loop(), interval_seconds=float(sys.argv[1]))
    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    guard.close()
    print(json.dumps({"errors": guard.errors, "lines": guard.lines_logged, "held": len(held)}), flush=True)

asyncio.run(main())
"""


def test_descriptor_exhaustion_logs_one_line_per_interval_without_tracebacks() -> None:
    """Drill: 200 idle connections against a server allowed 48 descriptors, for 6 s."""
    child = subprocess.Popen([sys.executable, "-c", SERVER, "10", "6"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        port = int(child.stdout.readline())
        clients = []
        for _ in range(200):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))  # the kernel's backlog takes what the server cannot
            clients.append(client)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
        for client in clients:
            client.close()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["held"] < 48 and report["errors"] >= 3, (report, err[-2000:])  # accept() really failed
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == report["lines"] <= 2, lines  # 6 s at one line per 10 s: the first, and the rest at close
    assert "could not be accepted" in lines[0] and "Too many open files" in lines[0]
    seconds = 6.0
    print(f"accept errors {report['errors']}, log lines {len(lines)} in {seconds:.0f} s: {len(lines) / seconds:.2f} lines/s")
