"""Benchmark of the station's own cost: render speed on the tiny model, buffer + consumer CPU, memory.

    python3 bench/station.py [--seconds 30] [--model DIR]

Prints:
* render real-time factor with the tiny random-weight model (audio seconds per wall second), and
  how much of the wall time the engine + vocoder took (the rest is the station's overhead);
* CPU seconds per audio second of the buffer + consumer (crossfades, volume, true-peak limiter,
  cue sheet and FLAC writing) alone, fed with ready clips;
* peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riffradio.core.types import Clip, RiffRequest  # noqa: E402
from riffradio.metrics import StationMetrics  # noqa: E402
from riffradio.playlist import check_playlist_text  # noqa: E402
from riffradio.sinks.file import FileSink, cue_path_for  # noqa: E402
from riffradio.station.buffer import CrossfadeBuffer  # noqa: E402
from riffradio.station.consumer import Consumer  # noqa: E402
from riffradio.station.state import StationState  # noqa: E402
from riffradio.core.defaults import SAMPLE_RATE_HZ  # noqa: E402
from riffradio.spectrogram.vocoder import Vocoder  # noqa: E402
from riffradio.station.station import Station  # noqa: E402

PLAYLIST = """\
station: {name: Bench, steps: 4, crossfade_seconds: 0.5, lookahead_clips: 2}
riffs:
  - {prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, clips: 4}
  - {prompt: church bells on sunday, clips: 4}
"""


def bench_render(model: Path, seconds: float, directory: Path) -> None:
    from riffradio.engine.pipeline import RiffEngine

    playlist, errors = check_playlist_text(PLAYLIST, directory / "bench.yaml")
    assert playlist is not None, errors
    engine = RiffEngine.load(str(model), device="cpu")
    out = directory / "render.flac"
    sink = FileSink(out, cue_path=cue_path_for(out), overwrite=True)
    station = Station(playlist, sinks=[sink], realtime=False)
    vocoder = Vocoder(device=engine.device)
    started = time.perf_counter()
    asyncio.run(station.run(engine, vocoder, seconds))
    wall = time.perf_counter() - started
    producer = station.producer
    assert producer is not None
    generation = station.metrics.generation_seconds.collect()[0].samples
    generation_sum = next(s.value for s in generation if s.name.endswith("_sum"))
    print(f"render: {seconds:.0f} s of audio in {wall:.1f} s wall: real-time factor {seconds / wall:.2f}x")
    print(
        f"render: {producer.clips_generated} clips, engine+vocoder {generation_sum:.1f} s "
        f"({generation_sum / producer.clips_generated:.2f} s/clip, {100 * generation_sum / wall:.0f} % of wall); "
        f"station overhead {wall - generation_sum:.1f} s"
    )


def bench_consumer(seconds: float, directory: Path) -> None:
    rng = np.random.default_rng(0)
    buffer = CrossfadeBuffer(2, SAMPLE_RATE_HZ, crossfade_seconds=0.5)
    clip_frames = 225_792
    clips_needed = int(seconds * SAMPLE_RATE_HZ / (clip_frames - 22_050)) + 2
    for index in range(clips_needed):
        audio = (0.3 * rng.standard_normal((2, clip_frames))).astype(np.float32)  # loud: the limiter works
        buffer.push(Clip(index, RiffRequest("a", "b", index, index + 1, 0.5), audio, SAMPLE_RATE_HZ))
    sink = FileSink(directory / "consumer.flac", cue_path=directory / "consumer.cue.jsonl", overwrite=True)
    sink.open()

    class Direct:
        def push(self, block) -> None:  # type: ignore[no-untyped-def]
            sink.write(block)

    consumer = Consumer(
        buffer, Direct(), StationState(), StationMetrics(), SAMPLE_RATE_HZ, 2, realtime=False,
        max_frames=int(seconds * SAMPLE_RATE_HZ),
    )  # fmt: skip
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    consumer.start()
    consumer.finished.wait()
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    sink.close()
    print(
        f"buffer+consumer+FLAC: {seconds:.0f} s of audio, {cpu:.2f} CPU s ({1000 * cpu / seconds:.1f} ms CPU per "
        f"audio second, {100 * cpu / seconds:.1f} % of one core in real time), {wall:.2f} s wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio seconds to render (default 30)")
    parser.add_argument("--model", type=Path, default=None, help="a tiny model directory (built if missing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        model = args.model
        if model is None:
            from riffradio.engine.testmodel import build_test_model

            model = build_test_model(directory / "tiny", "tiny")
        bench_consumer(60.0, directory)
        bench_render(model, args.seconds, directory)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
