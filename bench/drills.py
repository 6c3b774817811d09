"""Drills of issue 14 that print their figures (the station's other drills are in tests/).

    python3 bench/drills.py [--seconds 8] [--flood 50000]

1. **descriptors run out**: a child process with 48 file descriptors runs the OSC server (UDP +
   TCP) and a fan-out with two real recordings (FLAC, and hourly WAV), blocks pushed in real
   time; this process opens 300 idle TCP connections to it. Prints the child's log lines per
   second while descriptors are out, the accept errors counted, files and blocks per recording
   (every block exactly once), and the seconds until a new connection is answered once the idle
   ones are gone.
2. **a UDP flood drowns the DJ**: one sender floods the OSC port with datagrams while a DJ sends
   numbered volume changes over UDP and over TCP: the share of the DJ's messages that arrive.
3. **reflection**: bytes answered per byte asked, for a sender from the network that has not
   subscribed (``/riffradio/state``, a refused value) and for a subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not whichever riffradio is installed

from pythonosc import slip  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from riffradio.control.osc import serve_osc  # noqa: E402
from riffradio.metrics import StationMetrics  # noqa: E402
from riffradio.playlist.model import OscConfig  # noqa: E402
from riffradio.station.state import StationState  # noqa: E402

CHILD = r"""
import asyncio, json, logging, os, resource, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from riffradio.control.connections import install_accept_error_log
from riffradio.control.osc import serve_osc
from riffradio.core.types import AudioBlock, NowPlaying, RiffRequest
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OscConfig
from riffradio.sinks.fanout import Fanout
from riffradio.sinks.file import FileSink, cue_path_for
from riffradio.station.state import StationState
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(created).3f %(levelname)s %(name)s: %(message)s")
directory, seconds = Path(sys.argv[2]), float(sys.argv[3])

class Station:
    state, metrics = StationState(1), StationMetrics()
    def nowplaying(self): return {"now": {"title": "drill"}}

async def main():
    loop = asyncio.get_running_loop()
    guard = install_accept_error_log(loop)
    server = await serve_osc(OscConfig(host="127.0.0.1", port=0, tcp=True), Station())
    sinks = [FileSink(directory / "drill.flac", cue_path=cue_path_for(directory / "drill.flac")),
             FileSink(directory / "hourly.wav", cue_path=cue_path_for(directory / "hourly.wav"), rotate_seconds=3600)]
    fanout = Fanout(sinks)
    fanout.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(json.dumps({"tcp": server.tcp_address}), flush=True)
    request = RiffRequest("drill", "drill", 1, 2)
    blocks = int(seconds * 44100 / 2048)
    started = time.monotonic()
    for number in range(blocks):  # real time, as the audio clock pushes
        await asyncio.sleep(max(0.0, started + number * 2048 / 44100 - time.monotonic()))
        samples = np.full((2, 2048), (number % 200) / 256.0, np.float32)
        fanout.push(AudioBlock(samples, 44100, number * 2048, NowPlaying(number // 110, "drill", request, 0.0)))
    await asyncio.to_thread(fanout.close)
    guard.close()
    await server.close()
    print(json.dumps({"blocks": blocks, "accept_errors": guard.errors, "refused": server.counts["too_many_connections"],
                      "statuses": [[s.name, s.blocks_written, s.blocks_dropped] for s in fanout.statuses()],
                      "paths": [[str(p) for p in s.paths_written] for s in sinks]}), flush=True)

asyncio.run(main())
"""


def osc(address: str, *args: tuple[str, object]) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def exhaustion(seconds: float) -> None:
    import numpy as np
    import soundfile

    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), directory, str(seconds)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        host, port = json.loads(child.stdout.readline())["tcp"]
        time.sleep(1.0)
        idle = []
        exhausted_at = time.time()
        for _ in range(300):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex((host, port))
            idle.append(client)
        time.sleep(seconds / 2)
        for client in idle:
            client.close()
        freed_at = time.monotonic()
        recovered = None
        while recovered is None and time.monotonic() - freed_at < 30:
            try:
                with socket.create_connection((host, port), timeout=2) as probe:
                    probe.sendall(slip.encode(osc("/riffradio/state")))
                    if probe.recv(65536):
                        recovered = time.monotonic() - freed_at
            except OSError:
                time.sleep(0.1)
        out, err = child.communicate(timeout=120)
        report = json.loads(out.strip().splitlines()[-1])
        stamps = [float(line.split()[0]) for line in err.splitlines() if line[:1].isdigit() and float(line.split()[0]) >= exhausted_at]
        window = seconds / 2
        lines_out = [s for s in stamps if s <= exhausted_at + window]
        print(f"1. descriptors out ({window:.0f} s, 300 idle TCP connections, 48 descriptors): "
              f"{len(lines_out) / window:.2f} log lines/s ({len(lines_out)} lines), {report['accept_errors']} accept errors, "
              f"{report['refused']} connections over the cap closed; a new connection answered {recovered:.2f} s after the idle ones left")  # fmt: skip
        for (name, written, dropped), paths in zip(report["statuses"], report["paths"]):
            numbers = []
            for path in paths:
                audio, _ = soundfile.read(path, dtype="float32", always_2d=True)
                numbers += [int(round(v * 256)) for v in audio[::2048, 0]]
            once = numbers == [n % 200 for n in range(report["blocks"])]
            print(f"   {name}: {len(paths)} file(s), {written}/{report['blocks']} blocks written, {dropped} dropped, "
                  f"every block exactly once: {once}")


async def flood(datagrams: int) -> None:
    station = type("S", (), {"state": StationState(1), "metrics": StationMetrics(), "nowplaying": lambda self: {}})()
    server = await serve_osc(OscConfig(host="127.0.0.1", port=0, tcp=True, max_messages_per_second=1e9), station)
    seen: set[float] = set()
    station.state.subscribe(lambda name, value: seen.add(value) if name == "volume" else None)
    loop = asyncio.get_running_loop()
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.setblocking(False)
    dj_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _reader, writer = await asyncio.open_connection(*server.tcp_address)
    junk = osc("/riffradio/nonsense", ("f", 1.0))
    sent = {"udp": [], "tcp": []}

    def flood_thread() -> None:
        for number in range(datagrams):
            try:
                flooder.sendto(junk, server.address)
            except BlockingIOError:
                pass
            if number % 500 == 0:  # the DJ's faders, among the flood
                index = number // 500
                udp_value, tcp_value = (2 * index + 1) / 4096, (2 * index + 2) / 4096
                dj_udp.sendto(osc("/riffradio/volume", ("f", udp_value)), server.address)
                sent["udp"].append(udp_value)
                loop.call_soon_threadsafe(writer.write, slip.encode(osc("/riffradio/volume", ("f", tcp_value))))
                sent["tcp"].append(tcp_value)

    started = time.monotonic()
    await asyncio.to_thread(flood_thread)
    await asyncio.sleep(2.0)
    seconds = time.monotonic() - started
    got = {k: sum(1 for v in values if any(abs(v - s) < 1e-7 for s in seen)) for k, values in sent.items()}
    handled = sum(server.counts.values())
    print(f"2. UDP flood of {datagrams} datagrams in {seconds:.1f} s ({handled} reached the server, "
          f"{100 * (1 - handled / (datagrams + 2 * len(sent['udp']))):.0f} % dropped by the kernel): the DJ's messages arrived "
          f"over UDP {got['udp']}/{len(sent['udp'])}, over TCP {got['tcp']}/{len(sent['tcp'])}")  # fmt: skip
    writer.close()
    flooder.close()
    dj_udp.close()
    await server.close()


async def reflection() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        lan = probe.getsockname()[0]
    if lan.startswith("127."):
        print("3. reflection: skipped (no non-loopback address)")
        return
    station = type("S", (), {"state": StationState(1), "metrics": StationMetrics(), "nowplaying": lambda self: {}})()
    station.state.set_prompt("€" * 1000)
    station.state.set_negative_prompt("€" * 1000)
    server = await serve_osc(OscConfig(host="0.0.0.0", port=0), station)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((lan, 0))
    sock.setblocking(False)
    figures = []
    for what, request in (("state", osc("/riffradio/state")), ("refused value", osc("/riffradio/volume", ("f", 9.0))),
                          ("subscribe", osc("/riffradio/subscribe"))):  # fmt: skip
        await loop.sock_sendto(sock, request, (lan, server.address[1]))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        figures.append(f"{what} {len(request)} B → {len(answer)} B (×{len(answer) / len(request):.1f})")
    print("3. reflection, a sender from the network: " + "; ".join(figures) + " (a subscriber: the whole state, one datagram)")
    sock.close()
    await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="audio seconds the exhaustion drill records")
    parser.add_argument("--flood", type=int, default=50_000, help="datagrams in the flood")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the rejections of the flood are the drill, not news
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    exhaustion(args.seconds)
    asyncio.run(flood(args.flood))
    asyncio.run(reflection())


if __name__ == "__main__":
    main()
