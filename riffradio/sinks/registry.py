"""Output ``type`` → sink factory ``(OutputSpec) -> Sink``.

Each factory is named as ``"module:function"`` and imported only when a playlist uses it, so
``riffradio check`` stays fast and a stage that is not built yet is a clear error instead of a
silently missing output. A factory reads ``spec.options``, raises :class:`ValueError` (or
:class:`~riffradio.errors.RiffradioError`) with a one-line reason for a bad option, and opens
nothing: the fan-out calls ``Sink.open`` later.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence

from riffradio.errors import RiffradioError
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink

SinkFactory = Callable[[OutputSpec], Sink]

# One line per output type; each stage adds its own.
SINK_FACTORIES: dict[str, str] = {
    "file": "riffradio.sinks.file:file_sink_from_spec",
    "speakers": "riffradio.sinks.speakers:speakers_sink_from_spec",
    "icecast": "riffradio.sinks.icecast:icecast_sink_from_spec",
    "rtmp": "riffradio.sinks.rtmp:rtmp_sink_from_spec",
    "http": "riffradio.sinks.http:http_sink_from_spec",
}


def sink_factory(output_type: str) -> SinkFactory:
    """The factory of ``output_type``; raises :class:`ValueError` naming the problem."""
    if output_type not in SINK_FACTORIES:
        near = difflib.get_close_matches(output_type, list(SINK_FACTORIES), n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(
            f"unknown output type '{output_type}' ({hint}types are {', '.join(sorted(SINK_FACTORIES))})"
        )
    module_name, _, function_name = SINK_FACTORIES[output_type].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ValueError(f"output type '{output_type}' is not built into this riffradio yet") from None
    factory: SinkFactory = getattr(module, function_name)
    return factory


def check_output(spec: OutputSpec) -> str | None:
    """None when ``spec`` makes a sink, else the one-line reason (nothing is opened)."""
    try:
        sink_factory(spec.type)(spec)
    except (ValueError, TypeError, KeyError, RiffradioError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


def create_sinks(specs: Sequence[OutputSpec], playlist_path: str) -> list[Sink]:
    """Sinks for every output, raising :class:`RiffradioError` at ``file:line:column`` of a bad one."""
    sinks: list[Sink] = []
    for spec in specs:
        try:
            sinks.append(sink_factory(spec.type)(spec))
        except (ValueError, TypeError, KeyError, RiffradioError) as error:
            raise RiffradioError(f"{playlist_path}:{spec.line}:{spec.column}: output: {error}") from None
    return sinks
