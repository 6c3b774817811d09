"""Hot reload: a valid playlist switches at the next clip; a broken one changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from riffradio.playlist import load_playlist
from riffradio.app.application import StationApp


def test_reload_switches_or_keeps_the_old_playlist(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("riffs:\n  - {prompt: a}\n  - {prompt: b}\n  - {prompt: c}\n")
    app = StationApp(load_playlist(path), sinks=[])
    station = app.station
    station.state.goto_riff(2)
    path.write_text("riffs:\n  - {prompt: x}\n  - {prompt: y, clips: 0}\n  - {promt: z}\n")
    caplog.set_level(logging.INFO)
    errors = app.reload(path)
    assert [e.split(": ")[0] for e in errors] == [f"{path}:3:24", f"{path}:4:5", f"{path}:4:6"]
    assert [r.prompt for r in station.playlist.riffs] == ["a", "b", "c"]  # still the old one
    assert any(f"{path}:3:24" in record.getMessage() for record in caplog.records)

    path.write_text("riffs:\n  - {prompt: x}\n  - {prompt: y}\n")
    assert app.reload(path) == []
    assert [r.prompt for r in station.playlist.riffs] == ["x", "y"]
    assert station.state.riff_count == 2 and station.state.snapshot().riff_index == 0
    station.state.goto_riff(1)  # the new bounds apply to control at once
    with pytest.raises(ValueError):
        station.state.goto_riff(2)
    now = station.nowplaying()
    assert now["now"] is None and now["underruns"] == 0 and now["outputs"] == []


def test_reload_says_which_engine_keys_wait_for_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("station: {steps: 20}\nriffs:\n  - {prompt: a}\n")
    app = StationApp(load_playlist(path), sinks=[])
    station = app.station
    path.write_text("station: {steps: 30, dtype: bfloat16, scheduler: dpm++}\nriffs:\n  - {prompt: a}\n")
    caplog.set_level(logging.INFO)
    assert app.reload(path) == []
    assert station.playlist.station.steps == 30  # what the plan reads switches at the next clip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"reload: station.dtype, station.scheduler changed in {path}; the loaded model is kept until a restart"
    ]


def test_a_reloaded_playlist_starts_at_its_first_riff(tmp_path: Path) -> None:
    """Decided (issue 14, item 6): new riffs start from the top, as written; the same riffs keep their place."""
    from riffradio.station.plan import plan_next

    path = tmp_path / "station.yaml"
    path.write_text("riffs:\n  - {prompt: a, seed: 1, clips: 4}\n  - {prompt: b, clips: 4}\n")
    app = StationApp(load_playlist(path), sinks=[])
    station = app.station
    producer = station_producer(station)
    for _ in range(6):  # into riff b
        _, producer.position = plan_next(station.playlist, station.state.snapshot(), producer.position)
    assert producer.position.riff_index == 1 and producer.position.clip == 2
    path.write_text("station: {steps: 30}\nriffs:\n  - {prompt: a, seed: 1, clips: 4}\n  - {prompt: b, clips: 4}\n")
    assert app.reload(path) == []
    assert (producer.position.riff_index, producer.position.clip) == (1, 2)  # same riffs: same place
    path.write_text("riffs:\n  - {prompt: x, seed: 5, clips: 2}\n  - {prompt: y, clips: 4}\n")
    assert app.reload(path) == []
    clip, _ = plan_next(station.playlist, station.state.snapshot(), producer.position)
    assert (clip.request.start_prompt, clip.request.start_seed, clip.request.alpha) == ("x", 5, 0.0)
    assert station.state.snapshot().riff_index == 0


def station_producer(station):  # type: ignore[no-untyped-def]
    """The station's producer as ``run`` makes it, without an engine (none is called here)."""
    from riffradio.station.producer import Producer

    station.producer = Producer(station.playlist, station.state, None, None, station.buffer, 44100, station.metrics)  # type: ignore[arg-type]
    return station.producer
