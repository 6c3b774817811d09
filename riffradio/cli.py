"""The ``riffradio`` command line: one dispatcher, each stage registers its own commands.

Every stage has a ``commands`` module with ``register(subparsers)``; heavy imports (torch,
diffusers, PyAV) happen inside the command handlers, so ``riffradio check`` stays fast.
A :class:`~riffradio.errors.RiffradioError` is printed as one line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from riffradio import __version__
from riffradio.errors import RiffradioError

# Stage order = data-flow order; each module defines register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "riffradio.spectrogram.commands",
    "riffradio.engine.commands",
    "riffradio.station.commands",
    "riffradio.sinks.commands",
    "riffradio.control.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riffradio",
        description="An endless, live-steerable AI radio station (Riffusion on diffusers).",
    )
    parser.add_argument("--version", action="version", version=f"riffradio {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level: DEBUG, INFO, WARNING, ERROR (default INFO)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a stage without commands yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
