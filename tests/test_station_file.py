"""The file output: FLAC/WAV/Ogg recordings readable after a crash, and a cue sheet that matches the audio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from riffradio.metrics import StationMetrics
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.file import FileSink, file_sink_from_spec
from riffradio.app.outputs import build_sinks, check_output
from riffradio.station.buffer import CrossfadeBuffer
from riffradio.station.consumer import Consumer
from riffradio.station.state import StationState
from riffradio.core.types import AudioBlock, Clip, NowPlaying, RiffRequest

RATE = 44100


def _tone_clip(index: int, hz: float, seconds: float = 2.0) -> Clip:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    request = RiffRequest(f"tone {hz:g} Hz", f"tone {hz:g} Hz", index, index + 1)
    return Clip(index, request, np.stack([wave, wave]), RATE)


def _dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / RATE)[np.argmax(spectrum)])


class _Collect:
    """The fan-out's place: hands blocks straight to one sink (the real fan-out is tested by its stage)."""

    def __init__(self, sink: FileSink) -> None:
        self.sink = sink

    def push(self, block) -> None:  # type: ignore[no-untyped-def]
        self.sink.write(block)


def test_the_cue_sheet_matches_the_audio(tmp_path: Path) -> None:
    tones = [220.0, 330.0, 495.0, 660.0]
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.2)
    for index, hz in enumerate(tones):
        buffer.push(_tone_clip(index, hz))
    sink = FileSink(tmp_path / "tones.wav", cue_path=tmp_path / "tones.cue.jsonl")
    sink.open()
    consumer = Consumer(
        buffer, _Collect(sink), StationState(), StationMetrics(), RATE, 2, realtime=False, max_frames=int(7.0 * RATE)
    )
    consumer.start()
    assert consumer.finished.wait(60)
    sink.close()
    audio, rate = soundfile.read(tmp_path / "tones.wav")
    assert rate == RATE and len(audio) == int(7.0 * RATE)
    cue = [json.loads(line) for line in (tmp_path / "tones.cue.jsonl").read_text().splitlines()]
    assert [entry["clip_index"] for entry in cue] == [0, 1, 2, 3]
    for number, entry in enumerate(cue):
        assert entry["title"] == f"tone {tones[number]:g} Hz"
        start = int(entry["time_seconds"] * RATE)
        end = int(cue[number + 1]["time_seconds"] * RATE) if number + 1 < len(cue) else len(audio)
        # away from the crossfades, what the cue sheet says is what plays
        middle = audio[start + int(0.15 * RATE) : end - int(0.15 * RATE), 0]
        assert _dominant_hz(middle) == pytest.approx(tones[number], abs=3)
        assert entry["fallback"] is False


def test_factory_options_and_numbered_files(tmp_path: Path) -> None:
    spec = OutputSpec("file", {"path": str(tmp_path / "rec" / "a.flac")}, line=3, column=5)
    sink = file_sink_from_spec(spec)
    assert sink.cue_path == tmp_path / "rec" / "a.cue.jsonl"
    assert check_output(OutputSpec("file", {"path": "a.flac", "cue": False, "overwrite": True})) is None
    assert "unknown file option 'pth'" in str(check_output(OutputSpec("file", {"pth": "a.flac"})))
    assert "needs 'path" in str(check_output(OutputSpec("file", {})))
    with pytest.raises(Exception, match=r"^station.yaml:7:5: output: unknown output type 'nope'"):
        build_sinks([OutputSpec("nope", {}, line=7, column=5)], "station.yaml")
    # an opened recording that got no audio leaves no empty file behind
    sink.open()
    sink.close()
    assert not sink.path.exists() and not sink.cue_path.exists()
    # an existing recording is never overwritten: the next one is numbered
    sink.open()
    now = NowPlaying(clip_index=0, title="a", request=RiffRequest("a", "a", 1, 2), offset_seconds=0.0)
    sink.write(AudioBlock(np.zeros((1, 4410), np.float32), 44100, 0, now))
    sink.close()
    again = file_sink_from_spec(spec)
    again.open()
    assert again.current_path == tmp_path / "rec" / "a.1.flac"
    again.close()


@pytest.mark.parametrize("suffix", [".flac", ".wav", ".ogg"])
def test_a_killed_writer_leaves_a_readable_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"crash{suffix}"
    script = textwrap.dedent(
        f"""
        import os, sys, numpy as np
        from riffradio.sinks.file import FileSink
        from riffradio.core.types import AudioBlock, NowPlaying, RiffRequest
        sink = FileSink({str(path)!r}, cue_path={str(path.with_suffix(".cue.jsonl"))!r}, flush_seconds=0.5)
        sink.open()
        request = RiffRequest("a", "a", 1, 2)
        rng = np.random.default_rng(0)
        for number in range(60):  # 60 blocks of 2048 frames: 2.8 s
            samples = (0.1 * rng.standard_normal((2, 2048))).astype(np.float32)
            now = NowPlaying(number // 20, "a", request, 0.0)
            sink.write(AudioBlock(samples, 44100, number * 2048, now))
        print("written", flush=True)
        os.kill(os.getpid(), 9)  # no close(): a crash or a power cut
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "written" in result.stdout and result.returncode == -9, result.stderr
    audio, rate = soundfile.read(path)
    assert rate == RATE
    assert len(audio) / RATE >= 2.0  # everything up to the last flush (0.5 s) is there
    cue = [json.loads(line) for line in path.with_suffix(".cue.jsonl").read_text().splitlines()]
    assert [entry["clip_index"] for entry in cue] == [0, 1, 2]


def test_consumer_volume_is_ramped_and_live(tmp_path: Path) -> None:
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.1)
    buffer.push(_tone_clip(0, 440.0, seconds=3.0))
    state = StationState()
    blocks = []

    class Keep:
        def push(self, block) -> None:  # type: ignore[no-untyped-def]
            blocks.append(block)
            if len(blocks) == 10:
                state.set_volume(0.25)

    consumer = Consumer(buffer, Keep(), state, StationMetrics(), RATE, 2, realtime=False, max_frames=RATE)
    started = time.monotonic()
    consumer.start()
    assert consumer.finished.wait(30)
    assert time.monotonic() - started < 10
    audio = np.concatenate([b.samples for b in blocks], axis=1)[0]
    assert [b.start_frame for b in blocks] == [n * 2048 for n in range(len(blocks))]
    before = np.abs(audio[5 * 2048 : 9 * 2048]).max()
    after = np.abs(audio[13 * 2048 :]).max()
    assert after == pytest.approx(before / 4, rel=0.02)
    assert np.abs(np.diff(audio)).max() < 0.1  # no click where the volume changed


_EXHAUSTION_SCRIPT = """
import json, logging, os, resource, sys, time
from pathlib import Path
import numpy as np
from riffradio.core.types import AudioBlock, NowPlaying, RiffRequest
from riffradio.sinks.fanout import Fanout
from riffradio.sinks.file import FileSink, cue_path_for
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
directory = sys.argv[1]
clock = [1_800_000_000.0]  # rotation on a clock the drill moves: one period = 10 blocks
sinks = [FileSink(os.path.join(directory, name), cue_path=cue_path_for(Path(directory, name)), flush_seconds=0.05,
                  rotate_seconds=rotate, clock=lambda: clock[0])
         for name, rotate in (("plain.flac", None), ("wave.wav", None), ("hourly.flac", 3600))]
fanout = Fanout(sinks, first_retry_seconds=0.1, max_retry_seconds=0.2)
fanout.start()
request = RiffRequest("a", "a", 1, 2)
hog = []

def push(number):
    # every block holds its own number: a block written twice or lost shows in the file
    samples = np.full((2, 2048), (number % 200) / 256.0, np.float32)
    fanout.push(AudioBlock(samples, 44100, number * 2048, NowPlaying(number // 20, "a", request, 0.0)))
    time.sleep(0.01)

for number in range(60):
    push(number)
time.sleep(0.5)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))  # every descriptor the process may have
except OSError as error:
    print("exhausted", error.errno, len(hog), flush=True)
clock[0] += 3600  # the next hour starts while no file can be opened
for number in range(60, 160):
    push(number)
time.sleep(1.0)
for fd in hog:
    os.close(fd)
for number in range(160, 200):
    push(number)
fanout.close()
print(json.dumps({"statuses": [[s.name, s.blocks_written, s.blocks_dropped, s.last_error] for s in fanout.statuses()],
                  "paths": [[str(p) for p in sink.paths_written] for sink in sinks]}), flush=True)
"""


def test_descriptor_exhaustion_never_splits_a_recording_or_writes_a_block_twice(tmp_path: Path) -> None:
    """Drill: the process runs out of file descriptors mid-recording (idle connections elsewhere):
    each plain recording stays one file holding every block once; the hourly one rotates late,
    once the new hour's file can be opened, and the blocks in between stay in the old hour's."""
    result = subprocess.run(
        [sys.executable, "-c", _EXHAUSTION_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exhausted 24" in result.stdout, result.stdout  # EMFILE really happened
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, written, dropped, last_error in report["statuses"]:
        assert (written, dropped, last_error) == (200, 0, ""), (name, written, dropped, last_error)
    plain_flac, plain_wav, hourly = report["paths"]
    assert plain_flac == [str(tmp_path / "plain.flac")] and plain_wav == [str(tmp_path / "wave.wav")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".flac", ".wav")) == [
        "hourly.2027-01-15T08.flac", "hourly.2027-01-15T09.flac", "plain.flac", "wave.wav",
    ]  # fmt: skip

    def block_numbers(path: Path) -> list[int]:
        audio, _ = soundfile.read(path, dtype="float32", always_2d=True)
        assert len(audio) % 2048 == 0
        return [int(round(v * 256)) for v in audio[::2048, 0]]

    expected = [n % 200 for n in range(200)]
    assert block_numbers(tmp_path / "plain.flac") == expected
    assert block_numbers(tmp_path / "wave.wav") == expected
    first_hour = block_numbers(tmp_path / "hourly.2027-01-15T08.flac")
    second_hour = block_numbers(tmp_path / "hourly.2027-01-15T09.flac")
    assert first_hour + second_hour == expected
    assert len(first_hour) >= 160  # the rotation waited until a descriptor was free again
    cues = [json.loads(line) for line in (tmp_path / "hourly.2027-01-15T09.cue.jsonl").read_text().splitlines()]
    assert cues[0]["time_seconds"] == 0.0  # each file's cue sheet starts with what plays at its start
    assert "rotate failed" in result.stderr and result.stderr.count("rotate failed") == 1
