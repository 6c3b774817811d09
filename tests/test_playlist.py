"""Playlists: the issue's spellings load; broken ones give every error with its file:line:column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from riffradio.app.outputs import check_output
from riffradio.playlist import PlaylistError, check_playlist, check_playlist_text, load_playlist
from riffradio.playlist.model import OscConfig

REPO = Path(__file__).resolve().parents[1]

ISSUE_EXAMPLE = """\
station: {name: Late Night Lofi, model: riffusion/riffusion-model-v1, device: auto, steps: 50}
outputs:
  - {type: file, path: recordings/late-night.flac}
control:
  osc: {host: 127.0.0.1, port: 9000}
  http: {host: 127.0.0.1, port: 8080}
riffs:
  - {prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 4,
     denoising: 0.75, guidance: 7, seed_image: {bpm: 93.75}}
  - {prompt: church bells on sunday, clips: 8}     # same prompt: walk seeds
"""


def test_the_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "late.yaml"
    path.write_text(ISSUE_EXAMPLE)
    playlist = load_playlist(path)
    assert playlist.station.name == "Late Night Lofi"
    assert playlist.station.steps == 50
    first, second = playlist.riffs
    assert (first.prompt, first.seed, first.to, first.to_seed, first.clips) == (
        "jazzy lofi hip hop", 42, "church bells on sunday", 43, 4,
    )  # fmt: skip
    assert first.seed_image == "bpm=93.75"
    assert first.guidance == 7.0 and isinstance(first.guidance, float)
    # the held riff continues from the transition's end seed
    assert (second.prompt, second.to, second.seed, second.clips) == ("church bells on sunday", None, 43, 8)
    assert (first.line, first.column) == (8, 5)
    (output,) = playlist.outputs
    assert output.type == "file" and output.options == {"path": "recordings/late-night.flac"}
    assert (output.line, output.column) == (3, 5)
    assert playlist.control.osc == OscConfig("127.0.0.1", 9000, [], line=5, column=8)
    assert playlist.control.http is not None and playlist.control.http.port == 8080


def test_environment_variables_are_expanded_and_typed(tmp_path: Path) -> None:
    text = """\
control:
  osc:
    host: ${OSC_HOST}
    port: ${OSC_PORT}
  http: {port: "${HTTP_PORT:-8081}"}
riffs:
  - prompt: "${MOOD} piano"
    seed: ${SEED}
"""
    env = {"OSC_HOST": "0.0.0.0", "OSC_PORT": "9100", "MOOD": "sad", "SEED": "0123"}
    playlist, errors = check_playlist_text(text, tmp_path / "env.yaml", environ=env)
    assert errors == []
    assert playlist is not None
    assert playlist.control.osc is not None and playlist.control.osc.port == 9100
    assert playlist.control.osc.host == "0.0.0.0"
    assert playlist.control.http is not None and playlist.control.http.port == 8081
    assert playlist.riffs[0].prompt == "sad piano"


def test_every_error_is_reported_with_its_position(tmp_path: Path) -> None:
    text = """\
station: {name: X, stepz: 4}
outputs:
  - {type: fiel, path: a.flac}
  - {type: file, path: a.mp3}
control:
  osc: {port: 70000, allow: [10.0.0.0/8, nothost]}
riffs:
  - {prompt: jazz, seed: -1, denoising: 1.5, guidance: high, seed_image: missing.png}
  - prompt: "${RIFFRADIO_TEST_UNDEFINED}"
    clips: 0
  - {promt: x}
"""
    playlist, errors = check_playlist_text(text, "bad.yaml", environ={}, check_output=check_output)
    assert playlist is None
    expected = [
        "bad.yaml:1:20: unknown key 'stepz' in station (did you mean 'steps'?)",
        "bad.yaml:3:5: output 1: unknown output type 'fiel' (did you mean 'file'?",
        "bad.yaml:4:5: output 2: file output 'a.mp3': use a .flac, .wav or .ogg name",
        "bad.yaml:6:15: control.osc.port must be between 1 and 65535, got 70000",
        "bad.yaml:6:42: control.osc.allow: 'nothost' is not an IP address or network",
        "bad.yaml:8:26: riff 1: seed must be between 0 and",
        "bad.yaml:8:41: riff 1: denoising must be between 0 and 1, got 1.5",
        "bad.yaml:8:56: riff 1: guidance must be a number, got str 'high'",
        "bad.yaml:8:74: riff 1: seed_image: image file",
        "bad.yaml:9:13: environment variable RIFFRADIO_TEST_UNDEFINED is not defined",
        "bad.yaml:10:12: riff 2: clips must be between 1 and 10000, got 0",
        "bad.yaml:11:6: unknown key 'promt' in riff 3 (did you mean 'prompt'?)",
    ]
    for start in expected:
        assert any(error.startswith(start) for error in errors), (start, errors)


def test_yaml_syntax_errors_and_empty_files_name_the_place(tmp_path: Path) -> None:
    _, errors = check_playlist_text("riffs:\n  - {prompt: a\n", "broken.yaml")
    assert len(errors) == 1 and errors[0].startswith("broken.yaml:3:1: invalid YAML")
    _, errors = check_playlist_text("", "empty.yaml")
    assert errors == ["empty.yaml:1:1: the playlist is empty; it needs at least 'riffs:'"]
    _, errors = check_playlist_text("station: {name: x}\n", "noriffs.yaml")
    assert errors == ["noriffs.yaml:1:1: the playlist has no 'riffs:' list; add at least one {prompt: ...}"]
    _, errors = check_playlist_text("riffs:\n  - {prompt: a}\n  - {prompt: a, prompt: b}\n", "dup.yaml")
    assert errors == ["dup.yaml:3:17: duplicate key 'prompt' in riff 2"]


def test_seed_image_references_are_resolved(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    from riffradio.spectrogram.seeds import load_seed_image

    load_seed_image("og_beat").save(tmp_path / "images" / "mine.png")
    text = """\
riffs:
  - {prompt: a, seed_image: og_beat}
  - {prompt: b, seed_image: images/mine.png}
  - {prompt: c, seed_image: {bpm: 140.625, swing: 0.1}}
  - {prompt: f, seed_image: {file: images/mine.png, bpm: 93.75}}
  - {prompt: d, seed_image: no_such_bundled_name}
  - {prompt: e, seed_image: {bpm: -5}}
"""
    playlist, errors = check_playlist_text(text, tmp_path / "p.yaml")
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"{tmp_path / 'p.yaml'}:6:29: riff 5: seed_image: ")
    assert "no_such_bundled_name" in errors[0]
    assert errors[1].startswith(f"{tmp_path / 'p.yaml'}:7:29: riff 6: seed_image: ")
    assert "bpm must be within 40 … 240" in errors[1]
    text_ok = "\n".join(text.splitlines()[:5]) + "\n"
    playlist, errors = check_playlist_text(text_ok, tmp_path / "p.yaml")
    assert errors == [] and playlist is not None
    assert playlist.riffs[1].seed_image == str(tmp_path / "images" / "mine.png")  # relative to the playlist
    assert playlist.riffs[2].seed_image == "bpm=140.625,swing=0.1"
    assert playlist.riffs[3].seed_image == f"bpm=93.75,file={tmp_path / 'images' / 'mine.png'}"


def test_load_playlist_raises_one_line_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("riffs:\n  - {prompt: a, clips: 0, seed: x}\n")
    with pytest.raises(PlaylistError) as caught:
        load_playlist(path)
    assert len(caught.value.errors) == 2
    assert "\n" not in str(caught.value) and "and 1 more" in str(caught.value)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "playlists").glob("*.yaml")))
def test_bundled_playlists_pass_check(name: str) -> None:
    playlist, errors = check_playlist(REPO / "playlists" / name, environ={}, check_output=check_output)
    assert errors == []
    assert playlist is not None and playlist.riffs


def test_check_command_prints_all_errors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("station: {steps: 0}\nriffs:\n  - {prompt: a, denoising: 2}\n  - {prompt: b, clipz: 3}\n")
    good = tmp_path / "good.yaml"
    good.write_text("riffs:\n  - {prompt: a}\n")
    result = subprocess.run(
        [sys.executable, "-m", "riffradio", "check", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad}:1:18: station.steps must be between 1 and 500, got 0",
        f"{bad}:3:28: riff 1: denoising must be between 0 and 1, got 2.0",
        f"{bad}:4:17: unknown key 'clipz' in riff 2 (did you mean 'clips'?)",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "riffradio", "check", str(good)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "ok (1 riffs" in result.stderr


def test_station_engine_options_load_and_bad_ones_name_the_place() -> None:
    playlist, errors = check_playlist_text(
        "station: {dtype: BF16, scheduler: DPM++, compile: true}\nriffs:\n  - {prompt: a}\n", "engine.yaml"
    )
    assert errors == [] and playlist is not None
    assert (playlist.station.dtype, playlist.station.scheduler, playlist.station.compile) == ("bfloat16", "dpm++", True)
    defaults, _ = check_playlist_text("riffs:\n  - {prompt: a}\n", "defaults.yaml")
    assert defaults is not None
    assert (defaults.station.dtype, defaults.station.scheduler, defaults.station.compile) == (None, None, False)
    _, errors = check_playlist_text(
        "station: {dtype: float8, scheduler: eular, compile: yes please}\nriffs:\n  - {prompt: a}\n", "bad.yaml"
    )
    assert errors == [
        "bad.yaml:1:18: station.dtype must be one of float32, fp32, float16, fp16, half, bfloat16, bf16, got 'float8'"
        " (did you mean 'float32'?)",
        "bad.yaml:1:37: station.scheduler must be one of pndm, dpm++, ddim, euler, got 'eular' (did you mean 'euler'?)",
        "bad.yaml:1:53: station.compile must be true or false, got str 'yes please'",
    ], errors
