"""Every number on the command line goes through the knob table's one check: nan, inf, too big or
out of range is one line naming the argument and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def riffradio(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riffradio", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("seed-image", "--bpm", "nan", "-o", "seed.png"), "argument --bpm: must be finite, got nan"),
        (("render", str(REPO / "playlists" / "sunday-morning.yaml"), "--seconds", "inf", "-o", "out.flac"),
         "argument --seconds: must be finite, got inf"),
        (("audio-to-image", "loop.wav", "x.png", "--start-seconds", "nan"), "argument --start-seconds: must be finite"),
        (("riff", "--prompt", "a", "--to-seed", "99999999999999999999", "-o", "x.png"),
         "argument --to-seed: must be between 0 and 9223372036854775807, got 99999999999999999999"),
        (("riff", "--prompt", "a", "--steps", "2.5", "-o", "x.png"), "argument --steps: must be a whole number, got 2.5"),
        (("riff", "--prompt", "a", "--denoising", "1.5", "-o", "x.png"), "argument --denoising: must be between 0 and 1"),
        (("play", str(REPO / "playlists" / "sunday-morning.yaml"), "--seconds=-inf"), "argument --seconds: must be finite"),
    ],
)  # fmt: skip
def test_bad_numbers_are_one_line_naming_the_argument(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    result = riffradio(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_an_unknown_device_is_one_line(tmp_path: Path) -> None:
    made = riffradio("seed-image", "--bpm", "120", "-o", "seed.png", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = riffradio("image-to-audio", "seed.png", "out.wav", "--device", "bogus", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["riffradio: error: unknown device 'bogus': use cpu, cuda, cuda:N or mps"], result.stderr
