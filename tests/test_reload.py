"""Hot reload triggers: a real SIGHUP to this process and real rewrites of a real file."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from riffradio.control.reload import PlaylistReloader, file_signature


class ReloadLog:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    async def reload(self, path: Path) -> None:
        self.calls.append(path)
        if self.fail:
            raise ValueError(f"{path}:3:5: unknown key 'promt' (did you mean 'prompt'?)")


async def wait_for(predicate, seconds: float = 10.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_sighup_reloads(tmp_path: Path) -> None:
    playlist = tmp_path / "station.yaml"
    playlist.write_text("riffs: []\n")
    station = ReloadLog()

    async def main() -> None:
        reloader = PlaylistReloader(station, playlist, poll_seconds=0)
        await reloader.start()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for(lambda: reloader.reloads == 1)
            assert station.calls == [playlist]
        finally:
            await reloader.close()

    asyncio.run(main())


def test_file_changes_reload_including_rename_over(tmp_path: Path) -> None:
    playlist = tmp_path / "station.yaml"
    playlist.write_text("riffs: []\n")
    station = ReloadLog()

    async def main() -> None:
        reloader = PlaylistReloader(station, playlist, poll_seconds=0.05, handle_sighup=False)
        await reloader.start()
        try:
            await asyncio.sleep(0.2)
            assert station.calls == []  # nothing changed, nothing reloaded
            playlist.write_text("riffs: [{prompt: a}]\n")  # edited in place
            await wait_for(lambda: len(station.calls) == 1)
            replacement = tmp_path / ".station.yaml.swp"
            replacement.write_text("riffs: [{prompt: b}]\n")
            os.replace(replacement, playlist)  # how editors save
            await wait_for(lambda: len(station.calls) == 2)
            playlist.unlink()  # a missing file is not a reload
            await asyncio.sleep(0.3)
            assert len(station.calls) == 2
        finally:
            await reloader.close()

    asyncio.run(main())


def test_a_failed_reload_is_logged_and_watching_goes_on(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    playlist = tmp_path / "station.yaml"
    playlist.write_text("riffs: []\n")
    station = ReloadLog(fail=True)

    async def main() -> None:
        reloader = PlaylistReloader(station, playlist, poll_seconds=0.05, handle_sighup=False)
        await reloader.start()
        try:
            reloader.request("test")
            await wait_for(lambda: reloader.reloads == 1)
            playlist.write_text("riffs: [1]\n")
            await wait_for(lambda: reloader.reloads == 2)
        finally:
            await reloader.close()

    asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("station.yaml:3:5: unknown key" in e and "still playing the previous playlist" in e for e in errors)


def test_file_signature(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert file_signature(path) is None
    path.write_text("a")
    first = file_signature(path)
    path.write_text("ab")
    assert file_signature(path) != first
