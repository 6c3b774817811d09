"""``riffradio devices``: the sound outputs a ``{type: speakers, device: ...}`` entry can name."""

from __future__ import annotations

import argparse

from riffradio.errors import RiffradioError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list sound output devices (for outputs: - {type: speakers, device: NAME or INDEX})",
        description="List the sound output devices PortAudio sees; '*' marks the default.",
    )
    parser.set_defaults(handler=_devices)


def _devices(args: argparse.Namespace) -> int:
    from riffradio.sinks.base import SinkError
    from riffradio.sinks.speakers import ALTERNATIVES, output_devices

    try:
        devices = output_devices()
    except SinkError as error:
        raise RiffradioError(str(error)) from None
    if not devices:
        raise RiffradioError(f"no sound output devices found (is a sound server running?); {ALTERNATIVES}")
    print(f"  {'index':>5}  {'name':<32} {'host API':<10} {'channels':>8}  default rate")
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f"{mark} {d.index:>5}  {d.name:<32} {d.host_api:<10} {d.channels:>8}  {d.default_sample_rate_hz:.0f} Hz")
    return 0
