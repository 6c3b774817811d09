"""CLI: ``check`` (validate a playlist), ``play`` (the station in real time), ``render`` (offline)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from riffradio.app.application import StationApp
from riffradio.app.outputs import check_output
from riffradio.core.knobs import number_argument
from riffradio.errors import RiffradioError
from riffradio.playlist.loader import check_playlist
from riffradio.playlist.model import Playlist
from riffradio.sinks.file import FileSink, cue_path_for

log = logging.getLogger(__name__)


def _load(path: str) -> Playlist:
    """The checked playlist, or every error on stderr and a one-line RiffradioError."""
    playlist, errors = check_playlist(path, check_output=check_output)
    if errors or playlist is None:
        for error in errors[:-1]:
            print(error, file=sys.stderr)
        raise RiffradioError(errors[-1] if errors else f"{path}: cannot be read")
    return playlist


def _check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.playlists:
        playlist, errors = check_playlist(path, check_output=check_output)
        for error in errors:
            print(error)
        if errors or playlist is None:
            failed += 1
            print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        else:
            outputs = ", ".join(o.type for o in playlist.outputs) or "none"
            print(f"{path}: ok ({len(playlist.riffs)} riffs, outputs: {outputs})", file=sys.stderr)
    return 1 if failed else 0


def _exit_hard_if_busy(app: StationApp, code: int) -> int:
    """Leave at once when a worker thread still runs torch (a riff on a slow CPU can take minutes).

    Everything that matters is closed by now: recordings finalised, outputs closed.
    """
    if app.busy:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _install_signals(loop: asyncio.AbstractEventLoop, app: StationApp) -> None:
    """SIGINT/SIGTERM stop the station cleanly; a second one leaves at once."""
    received: list[int] = []

    def on_signal(number: int) -> None:
        received.append(number)
        if len(received) > 1:
            log.warning("second %s: leaving now", signal.Signals(number).name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: stopping (finishing the block, finalising recordings)", signal.Signals(number).name)
        app.stop()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)


async def _serve(app: StationApp, seconds: float | None) -> None:
    """Run ``app`` with SIGINT/SIGTERM handling."""
    _install_signals(asyncio.get_running_loop(), app)
    await app.run(seconds)


def _play(args: argparse.Namespace) -> int:
    playlist = _load(args.playlist)
    if args.seconds is not None and args.seconds <= 0:
        raise RiffradioError(f"--seconds must be positive, got {args.seconds}")
    app = StationApp(
        playlist, model=args.model, device=args.device, dtype=args.dtype, operations=True, worker_grace_seconds=0.0
    )
    asyncio.run(_serve(app, args.seconds))
    return _exit_hard_if_busy(app, 0)


class ProgressBar:
    """``render [#####.....] 12.3/30.0 s  2.1x real time`` on stderr (a line per 10 % when not a tty)."""

    def __init__(self, total_seconds: float, stream: Any = None, width: int = 30) -> None:
        self.total = total_seconds
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done_seconds: float) -> None:
        now = time.monotonic()
        fraction = min(1.0, done_seconds / self.total) if self.total > 0 else 1.0
        decile = int(fraction * 10)
        if self.tty and now - self._last_draw < 0.2 and fraction < 1.0:
            return
        if not self.tty and decile == self._last_decile:
            return
        self._last_draw, self._last_decile = now, decile
        filled = int(fraction * self.width)
        speed = done_seconds / max(now - self.started, 1e-6)
        line = f"render [{'#' * filled}{'.' * (self.width - filled)}] {done_seconds:6.1f}/{self.total:.1f} s  {speed:4.2f}x real time"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _render(args: argparse.Namespace) -> int:
    playlist = _load(args.playlist)
    if args.seconds <= 0:
        raise RiffradioError(f"--seconds must be positive, got {args.seconds}")
    out = Path(args.output)
    existing = [path for path in (out, cue_path_for(out)) if path.exists()]
    if existing and not args.force:
        raise RiffradioError(f"-o {out}: {existing[0]} exists; pass --force to overwrite it")
    try:
        sink = FileSink(out, cue_path=cue_path_for(out), overwrite=True)
    except ValueError as error:
        raise RiffradioError(f"-o {out}: {error}") from None
    app = StationApp(
        playlist, model=args.model, device=args.device, dtype=args.dtype, sinks=[sink], realtime=False,
        control=False, worker_grace_seconds=0.0,
    )  # fmt: skip
    station = app.station
    progress = ProgressBar(args.seconds)
    station.add_block_listener(lambda block: progress.update((block.start_frame + block.frames) / block.sample_rate_hz))
    asyncio.run(_serve(app, args.seconds))
    progress.finish()
    failed = [status for status in station.fanout_statuses() if status.last_error]
    if failed:
        raise RiffradioError(f"{out}: {failed[0].last_error}")
    print(f"{out}: {station.seconds_played:.2f} s rendered, cue sheet {cue_path_for(out)}", file=sys.stderr)
    return _exit_hard_if_busy(app, 0)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = subparsers.add_parser("check", help="validate playlists; print every error as file:line:column")
    check.add_argument("playlists", nargs="+", metavar="PLAYLIST", help="YAML playlist file(s)")
    check.set_defaults(handler=_check)

    model_help = (
        "hub id or local diffusers directory, or 'none' for the rehearsal engine (no diffusion: each clip is"
        " its seed window) (default: the playlist's station.model)"
    )
    dtype_help = "float32, float16, bfloat16 (default: the playlist's station.dtype, else float16 on CUDA, float32 elsewhere)"
    play = subparsers.add_parser("play", help="run the station in real time")
    play.add_argument("playlist", metavar="PLAYLIST", help="YAML playlist file")
    play.add_argument("--model", default=None, metavar="ID_OR_DIR", help=model_help)
    play.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: the playlist's)")
    play.add_argument("--dtype", default=None, help=dtype_help)
    play.add_argument("--seconds", type=number_argument("seconds"), default=None, metavar="N", help="stop cleanly after N seconds of audio")
    play.set_defaults(handler=_play)

    render = subparsers.add_parser("render", help="render the station offline to a file, as fast as possible")
    render.add_argument("playlist", metavar="PLAYLIST", help="YAML playlist file")
    render.add_argument("--seconds", type=number_argument("seconds"), required=True, metavar="N", help="seconds of audio to render")
    render.add_argument("-o", "--output", required=True, metavar="OUT", help="output file: .flac, .wav or .ogg")
    render.add_argument("--force", action="store_true", help="overwrite OUT (and its cue sheet) if it exists")
    render.add_argument("--model", default=None, metavar="ID_OR_DIR", help=model_help)
    render.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: the playlist's)")
    render.add_argument("--dtype", default=None, help=dtype_help)
    render.set_defaults(handler=_render)
