"""Output ``type`` → sink factory, and the output checker the playlist loader is given.

Each factory reads ``spec.options``, raises :class:`ValueError` (or
:class:`~riffradio.errors.RiffradioError`) with a one-line reason for a bad option, and opens
nothing: the fan-out calls ``Sink.open`` later.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from riffradio.errors import RiffradioError
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink
from riffradio.sinks.file import file_sink_from_spec
from riffradio.sinks.http import http_sink_from_spec
from riffradio.sinks.icecast import icecast_sink_from_spec
from riffradio.sinks.rtmp import rtmp_sink_from_spec
from riffradio.sinks.speakers import speakers_sink_from_spec

SinkFactory = Callable[[OutputSpec], Sink]

SINK_FACTORIES: dict[str, SinkFactory] = {
    "file": file_sink_from_spec,
    "speakers": speakers_sink_from_spec,
    "icecast": icecast_sink_from_spec,
    "rtmp": rtmp_sink_from_spec,
    "http": http_sink_from_spec,
}


def build_sink(spec: OutputSpec) -> Sink:
    """The sink of one ``outputs:`` entry; raises :class:`ValueError` naming the problem."""
    factory = SINK_FACTORIES.get(spec.type)
    if factory is None:
        near = difflib.get_close_matches(spec.type, list(SINK_FACTORIES), n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(f"unknown output type '{spec.type}' ({hint}types are {', '.join(sorted(SINK_FACTORIES))})")
    return factory(spec)


def check_output(spec: OutputSpec) -> str | None:
    """None when ``spec`` makes a sink, else the one-line reason (nothing is opened).

    This is the output checker the application hands to the playlist loader.
    """
    try:
        build_sink(spec)
    except (ValueError, TypeError, KeyError, RiffradioError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


def build_sinks(specs: Sequence[OutputSpec], playlist_path: str) -> list[Sink]:
    """Sinks for every output, raising :class:`RiffradioError` at ``file:line:column`` of a bad one."""
    sinks: list[Sink] = []
    for spec in specs:
        try:
            sinks.append(build_sink(spec))
        except (ValueError, TypeError, KeyError, RiffradioError) as error:
            raise RiffradioError(f"{playlist_path}:{spec.line}:{spec.column}: output: {error}") from None
    return sinks
