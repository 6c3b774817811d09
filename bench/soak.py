"""Soak: play the station in real time for a long while and watch memory, the clock and the outputs.

Runs ``riffradio play`` exactly as systemd would (a child process with ``$NOTIFY_SOCKET`` and
``$WATCHDOG_USEC``), on the tiny random-weight model, with a FLAC file output and an MP3 mount on a
real Icecast server started here. It samples the child's RSS from ``/proc`` and scrapes the
station's own ``/metrics`` every ``--sample-seconds``, and prints:

- RSS at start (after warm-up) and end, and its growth in % per hour after warm-up (least-squares
  slope of all samples after warm-up; target < 1 %/h);
- underruns and seconds of fallback audio;
- audio clock drift against wall time: ``riffradio_audio_seconds_played`` against the wall
  clock, both from the end of warm-up (ms, and ppm);
- sink reconnects and dropped blocks, watchdog pings received, Icecast's view of the mount.

Usage::

    python3 bench/soak.py --minutes 60
    python3 bench/soak.py --minutes 10 --warmup-minutes 2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's riffradio, not whichever one is installed
sys.path.insert(0, str(REPO / "tests"))  # the real-server helpers the tests use

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from servers import IcecastServer, free_port  # noqa: E402

PLAYLIST = """\
station: {{name: Soak, model: "{model}", device: cpu, steps: {steps}}}
outputs:
  - {{type: file, path: "{recording}"}}
  - {{type: icecast, url: "icecast://source:${{ICECAST_PASSWORD}}@127.0.0.1:{icecast_port}/soak.mp3", format: mp3, bitrate_kbps: 128}}
control:
  http: {{host: 127.0.0.1, port: {http_port}}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 4}}
  - {{prompt: church bells on sunday, clips: 4}}
"""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as ``{'name{label=value}': value}``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600 if var else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="real-time play after warm-up (default 60)")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="excluded from growth and drift (default 5)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="how often RSS and metrics are read")
    parser.add_argument("--steps", type=int, default=4, help="scheduler steps per clip on the tiny model")
    parser.add_argument("--model", help="model directory (default: build the tiny test model)")
    parser.add_argument("--workdir", help="keep files here (default: a temp dir)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="riffradio-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = args.model
    if model is None:
        from riffradio.engine.testmodel import build_test_model

        model = str(build_test_model(workdir / "tiny-model", size="tiny"))

    icecast = IcecastServer(workdir / "icecast").start()
    http_port = free_port()
    playlist = workdir / "soak.yaml"
    recording = workdir / "soak.flac"
    playlist.write_text(PLAYLIST.format(model=model, steps=args.steps, recording=recording,
                                        icecast_port=icecast.port, http_port=http_port))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = workdir / "notify.sock"
    notify.bind(str(notify_path))
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="30000000",
               ICECAST_PASSWORD="srcpw-secret",
               # The station child runs this checkout too, wherever the soak is started from.
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    total_seconds = (args.warmup_minutes + args.minutes) * 60
    log_path = workdir / "station.log"
    with open(log_path, "wb") as log:
        station = subprocess.Popen(
            [sys.executable, "-m", "riffradio", "play", str(playlist), "--seconds", str(int(total_seconds) + 60)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    messages: list[tuple[float, str]] = []

    def drain_notify() -> None:
        while True:
            try:
                messages.append((time.monotonic(), notify.recv(4096).decode()))
            except BlockingIOError:
                return

    metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    print(f"soak: workdir {workdir}, station pid {station.pid}, {args.warmup_minutes:g} min warm-up "
          f"+ {args.minutes:g} min measured", flush=True)
    try:
        deadline = time.monotonic() + 600
        while not any("READY=1" in m for _, m in messages):
            if station.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"station did not get ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
            drain_notify()
        ready_at = time.monotonic()
        rss: list[tuple[float, int]] = []
        scrapes: list[tuple[float, dict[str, float]]] = []
        warm: tuple[float, dict[str, float]] | None = None
        next_sample = ready_at
        while time.monotonic() - ready_at < total_seconds:
            if station.poll() is not None:
                raise SystemExit(f"station exited rc={station.returncode}:\n{log_path.read_text()[-3000:]}")
            time.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += args.sample_seconds
            now = time.monotonic()
            samples = scrape(metrics_url)
            rss.append((now - ready_at, rss_bytes(station.pid)))
            scrapes.append((now, samples))
            drain_notify()
            if warm is None and now - ready_at >= args.warmup_minutes * 60:
                warm = (now, samples)
            played = total(samples, "riffradio_audio_seconds_played_total")
            print(f"  t={now - ready_at:7.0f} s  rss={rss[-1][1] / 2**20:7.1f} MiB  played={played:8.1f} s  "
                  f"underruns={total(samples, 'riffradio_underruns_total'):.0f}  "
                  f"ahead={total(samples, 'riffradio_buffer_seconds_ahead'):.1f} s", flush=True)
        end_time, end = scrapes[-1]
        warm = warm or scrapes[0]
        mounts = icecast.mounts()
        station.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        rc = station.wait(30)
        stop_seconds = time.monotonic() - stop_started
        drain_notify()
    finally:
        if station.poll() is None:
            station.kill()
            station.wait()
        icecast.stop()
        notify.close()

    warm_time, warm_samples = warm
    after_warmup = [(t, v) for t, v in rss if t >= warm_time - ready_at]
    rss_start, rss_end = after_warmup[0][1], after_warmup[-1][1]
    growth_pct_per_hour = slope_per_hour(after_warmup) / rss_start * 100
    # RSS swings by ~100 MiB as torch allocates per clip: compare medians of the first and last fifth too
    fifth = max(1, len(after_warmup) // 5)
    median_first = sorted(v for _, v in after_warmup[:fifth])[fifth // 2]
    median_last = sorted(v for _, v in after_warmup[-fifth:])[fifth // 2]
    wall = end_time - warm_time
    audio = total(end, "riffradio_audio_seconds_played_total") - total(warm_samples, "riffradio_audio_seconds_played_total")
    drift_ms = (audio - wall) * 1000
    watchdogs = sum("WATCHDOG=1" in m for _, m in messages)
    print("\nsoak results")
    print(f"  measured: {wall / 60:.1f} min after {(warm_time - ready_at) / 60:.1f} min warm-up "
          f"(station ran {(end_time - ready_at) / 60:.1f} min)")
    print(f"  RSS: first {rss[0][1] / 2**20:.1f} MiB, after warm-up {rss_start / 2**20:.1f} MiB, "
          f"end {rss_end / 2**20:.1f} MiB, growth {growth_pct_per_hour:+.2f} %/h after warm-up (target < 1 %/h)")
    print(f"  RSS medians of the first and last fifth after warm-up: {median_first / 2**20:.1f} -> "
          f"{median_last / 2**20:.1f} MiB ({(median_last / median_first - 1) * 100:+.2f} %)")
    # A leak raises the floor steadily; a one-off step (allocator high-water mark) raises it once.
    windows: dict[int, list[float]] = {}
    for t, v in rss:
        windows.setdefault(int(t // 600), []).append(v)
    print("  RSS per 10 min (min / median MiB): " + ", ".join(
        f"{index * 10}-{index * 10 + 10} min {min(values) / 2**20:.0f} / {sorted(values)[len(values) // 2] / 2**20:.0f}"
        for index, values in sorted(windows.items())
    ))
    print(f"  underruns: {total(end, 'riffradio_underruns_total'):.0f} "
          f"({total(end, 'riffradio_fallback_seconds_total'):.1f} s of fallback audio); "
          f"clips generated: {total(end, 'riffradio_clips_generated_total'):.0f}")
    print(f"  clock drift vs wall: {drift_ms:+.1f} ms over {wall:.0f} s ({drift_ms / 1000 / wall * 1e6:+.0f} ppm; "
          f"one block is 46 ms)")
    print(f"  sink reconnects: {total(end, 'riffradio_sink_reconnects_total'):.0f}, "
          f"dropped blocks: {total(end, 'riffradio_sink_dropped_blocks_total'):.0f}, "
          f"bytes sent: {json.dumps({k: v for k, v in end.items() if k.startswith('riffradio_sink_bytes_sent_total')})}")
    print(f"  icecast mount at the end: {sorted(mounts)}; watchdog pings received: {watchdogs}")
    print(f"  SIGTERM -> exit rc={rc} in {stop_seconds:.2f} s; recording {recording.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
