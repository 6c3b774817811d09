"""Live-control latency: OSC packet → first audible sample of a clip made with the new state.

Plays a station in real time (tiny random-weight model unless ``--model`` is given, a FLAC file
output, OSC on a free loopback port), then sends ``--changes`` prompt changes as OSC datagrams.
For each it measures, on the monotonic clock:

- **latency**: from just before ``sendto`` of the ``/riffradio/prompt`` packet to the moment the
  audio clock hands the outputs the first block that holds audio of a clip planned under the new
  state (the buffer cuts such a clip in at the start of the next block; sound-card or encoder
  latency after that is not included);
- **generation**: the engine + vocoder time of that clip (``Clip.generation_seconds``);
- **in flight**: from the packet until the producer starts that clip, i.e. finishing the clip
  (of the old state) that was being made when the packet arrived;
- **handover**: the rest (latency − in flight − generation): queueing the clip, the cut-in at the
  next block boundary.

The issue's target is latency ≤ one clip's generation time + the crossfade. ``--via http``
sends each change as the web studio does (``POST /api/state`` with the edit token) instead of
OSC; ``--via both`` alternates OSC and HTTP in one run, so the two paths are compared under the
same load. Usage::

    python3 bench/control_latency.py                      # tiny model on CPU, 3 changes
    python3 bench/control_latency.py --via both --changes 6
    python3 bench/control_latency.py --model riffusion/riffusion-model-v1 --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from riffradio.core.types import AudioBlock  # noqa: E402


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prompt_packet(prompt: str) -> bytes:
    builder = OscMessageBuilder("/riffradio/prompt")
    builder.add_arg(prompt, "s")
    return builder.build().dgram


TOKEN = "latency-bench-token"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_prompt(port: int, prompt: str) -> None:
    """The web studio's way: POST /api/state with the edit token."""
    body = json.dumps({"prompt": prompt}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/state", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


class FirstAudible:
    """Block listener: the monotonic time of the first block that carries a clip of ``version`` or newer."""

    def __init__(self, station: Any) -> None:
        self._station = station
        self._lock = threading.Lock()
        self._version: int | None = None
        self.seen_at: float | None = None
        self.clip: Any = None
        self.event = threading.Event()

    def expect(self, version: int) -> None:
        with self._lock:
            self._version, self.seen_at, self.clip = version, None, None
            self.event.clear()

    def __call__(self, block: AudioBlock) -> None:
        now = time.monotonic()
        with self._lock:
            if self._version is None or self.seen_at is not None:
                return
            # the clip the buffer reads now: the incoming one as soon as its crossfade started
            playing = self._station.buffer.playing
            if playing is not None and playing.state_version >= self._version:
                self.seen_at, self.clip = now, playing
                self.event.set()


async def generation_start(station: Any, version: int, timeout: float) -> float:
    """Monotonic time at which the producer starts a clip planned under ``version`` or newer (10 ms polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        producer = station.producer
        planned = producer.generating if producer is not None else None
        if planned is not None and planned.state_version >= version:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise SystemExit(f"the producer did not start a clip of state version {version} within {timeout} s")


async def measure(args: argparse.Namespace, model: str, workdir: Path) -> list[dict[str, float]]:
    from riffradio.app.application import StationApp
    from riffradio.app.outputs import check_output
    from riffradio.playlist.loader import check_playlist

    port = free_udp_port()
    http_port = free_tcp_port()
    os.environ["LATENCY_BENCH_TOKEN"] = TOKEN
    path = workdir / "latency.yaml"
    path.write_text(
        f"""station: {{name: latency bench, steps: {args.steps}, crossfade_seconds: {args.crossfade},
          lookahead_clips: {args.lookahead}}}
outputs:
  - {{type: file, path: {workdir / "latency.flac"}}}
control:
  osc: {{host: 127.0.0.1, port: {port}}}
  http: {{host: 127.0.0.1, port: {http_port}, token_env: LATENCY_BENCH_TOKEN}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, clips: 8}}
"""
    )
    playlist, errors = check_playlist(path, check_output=check_output)
    if errors or playlist is None:
        raise SystemExit("\n".join(errors))
    app = StationApp(playlist, model=model, device=args.device)
    station = app.station
    probe = FirstAudible(station)
    station.add_block_listener(probe)
    on_air = asyncio.Event()
    station.add_on_air_listener(on_air.set)
    task = asyncio.create_task(app.run())
    rng = random.Random(1)
    results: list[dict[str, float]] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await asyncio.wait_for(on_air.wait(), args.timeout)

        async def engine_ready() -> None:  # on air with the seed material while the model loads
            while station.producer is None or station.producer.engine is None:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(engine_ready(), args.timeout)
        for change in range(args.changes):
            await asyncio.sleep(rng.uniform(0.0, 2.0))  # land at different points of the clip in flight
            version = station.state.snapshot().version + 1
            probe.expect(version)
            via = args.via if args.via != "both" else ("osc", "http")[change % 2]
            prompt = f"church bells, take {change}"
            sent = time.monotonic()
            if via == "osc":
                sock.sendto(prompt_packet(prompt), ("127.0.0.1", port))
            else:
                await asyncio.to_thread(post_prompt, http_port, prompt)
            started = await generation_start(station, version, args.timeout)
            if not await asyncio.to_thread(probe.event.wait, args.timeout):
                raise SystemExit(f"change {change}: no clip of the new state heard within {args.timeout} s")
            assert probe.seen_at is not None
            latency = probe.seen_at - sent
            generation = float(probe.clip.generation_seconds)
            in_flight = started - sent
            result = {"latency": latency, "generation": generation, "in_flight": in_flight,
                      "handover": latency - in_flight - generation, "via": via}  # fmt: skip
            results.append(result)
            print(
                f"change {change} ({via:4}): latency {latency:6.2f} s = in flight {in_flight:6.2f} s "
                f"+ generation {generation:6.2f} s + handover {result['handover']:5.2f} s",
                flush=True,
            )
    finally:
        sock.close()
        app.stop()
        await asyncio.wait_for(task, args.timeout)  # a clip in the making is waited for (slow on a loaded CPU)
        for thread in threading.enumerate():  # a clip still in the making must not outlive us
            if thread.name == "riffradio generate":
                thread.join(args.timeout)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or local directory (default: a tiny random-weight model built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4, help="scheduler steps per clip (default 4)")
    parser.add_argument("--crossfade", type=float, default=0.25, help="crossfade seconds (default 0.25)")
    parser.add_argument("--lookahead", type=int, default=2, help="clips queued ahead (default 2, the station's)")
    parser.add_argument("--changes", type=int, default=3, help="prompt changes to time (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--via", choices=("osc", "http", "both"), default="osc",
                        help="send changes over OSC, HTTP (POST /api/state) or alternately both (default osc)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="riffradio-latency-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            from riffradio.engine.testmodel import build_test_model

            model = str(build_test_model(workdir / "tiny-model", size="tiny"))
        results = asyncio.run(measure(args, model, workdir))
    latencies = [r["latency"] for r in results]
    generations = [r["generation"] for r in results]
    in_flight = [r["in_flight"] for r in results]
    target = [g + args.crossfade for g in generations]
    within = sum(1 for lat, t in zip(latencies, target) if lat <= t)
    print(
        f"\nmodel {args.model or 'tiny (random weights)'}, device {args.device}, steps {args.steps}, "
        f"crossfade {args.crossfade} s, lookahead {args.lookahead}, {len(results)} changes"
    )
    print(f"latency    median {statistics.median(latencies):.2f} s, min {min(latencies):.2f} s, max {max(latencies):.2f} s")
    print(f"generation median {statistics.median(generations):.2f} s (one clip of 5.12 s audio)")
    print(f"in flight  median {statistics.median(in_flight):.2f} s (finishing the old clip being made)")
    print(f"within target (generation + crossfade): {within}/{len(results)}")
    for via in sorted({r["via"] for r in results}):
        mine = [r for r in results if r["via"] == via]
        print(f"{via:4}: latency median {statistics.median(r['latency'] for r in mine):.2f} s, "
              f"handover median {statistics.median(r['latency'] - r['generation'] for r in mine):.2f} s "
              f"(latency − generation), {len(mine)} changes")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
