"""The ``riffradio`` command line: one dispatcher; the tools of each stage register their commands.

The codec's, the engine's and the sinks' tools (``seed-image``, ``riff``, ``devices``, …) and the
application's ``check``/``play``/``render`` each have ``register(subparsers)``; torch and
diffusers are imported inside the command handlers, so ``riffradio check`` stays quick.
A :class:`~riffradio.errors.RiffradioError` is printed as one line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from riffradio import __version__
from riffradio.app import commands as station_commands
from riffradio.control.systemd import LOG_FORMAT, log_formatter
from riffradio.engine import commands as engine_commands
from riffradio.errors import RiffradioError
from riffradio.sinks import commands as sinks_commands
from riffradio.spectrogram import commands as spectrogram_commands

# Stage order = data-flow order; each module defines register(subparsers).
COMMAND_MODULES = (spectrogram_commands, engine_commands, station_commands, sinks_commands)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (``riffradio render: error: argument
    --seconds: must be finite, got inf``) and exit code 2, with no usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="riffradio",
        description="An endless, live-steerable AI radio station (Riffusion on diffusers).",
    )
    parser.add_argument("--version", action="version", version=f"riffradio {__version__}")
    log_level_help = "logging level: DEBUG, INFO, WARNING, ERROR (default INFO)"
    parser.add_argument("--log-level", default="INFO", help=log_level_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    # ``riffradio play x.yaml --log-level DEBUG`` as well as ``riffradio --log-level DEBUG play x.yaml``
    for command in subparsers.choices.values():
        command.add_argument("--log-level", default=argparse.SUPPRESS, help=log_level_help)
    return parser


def configure_logging(level_name: str) -> None:
    """One line per event on stderr; with a ``<N>`` syslog priority prefix when stderr is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(sys.stderr))
    logging.basicConfig(level=getattr(logging, str(level_name).upper(), logging.INFO), format=LOG_FORMAT,
                        handlers=[handler])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        result = args.handler(args)
    except RiffradioError as error:
        print(f"riffradio: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
