"""Read a YAML playlist into a :class:`~riffradio.playlist.model.Playlist`, reporting every error at once.

PyYAML's composer keeps the position of every node, so each message says
``file:line:column: what is wrong``. ``${NAME}`` (or ``${NAME:-default}``) in any scalar is
replaced by the environment variable ``NAME`` before the value is typed, so ``port: ${PORT}``
is a number and ``password: ${ICECAST_PASSWORD}`` keeps secrets out of the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from riffradio.core.defaults import DEFAULT_SEED_IMAGE
from riffradio.core.knobs import KNOBS, check_number, check_text
from riffradio.engine.loading import DTYPE_NAMES, SCHEDULER_NAMES, canonical_scheduler_name
from riffradio.errors import RiffradioError
from riffradio.playlist.model import (
    ControlConfig,
    HttpConfig,
    OscConfig,
    OutputSpec,
    Playlist,
    RiffSpec,
    StationSpec,
)

_ENV_PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_RESOLVER = yaml.resolver.Resolver()
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".wav", ".flac", ".ogg", ".mp3")

STATION_KEYS = (
    "name", "model", "device", "dtype", "scheduler", "compile", "steps", "crossfade_seconds",
    "lookahead_clips", "loudness_lufs", "true_peak_dbtp", "continuation_seconds",
)  # fmt: skip
RIFF_KEYS = (
    "prompt", "seed", "to", "to_seed", "clips", "denoising", "to_denoising", "guidance", "to_guidance",
    "steps", "seed_image", "negative_prompt", "mask_image", "continuation_seconds",
)  # fmt: skip
TOP_KEYS = ("station", "outputs", "control", "riffs")
CONTROL_KEYS = ("osc", "http")
OSC_KEYS = ("host", "port", "allow", "tcp", "max_messages_per_second")
HTTP_KEYS = ("host", "port", "token_env", "cors", "origins", "max_connections")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORIGIN = re.compile(r"\*|https?://[^/\s]+")


class PlaylistError(RiffradioError):
    """A playlist with errors; ``errors`` holds every ``file:line:column: message``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        more = f" (and {len(errors) - 1} more errors: run 'riffradio check')" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")


@dataclass
class _Value:
    """A plain Python value with the position (1-based) it was written at."""

    value: Any
    line: int
    column: int
    node: yaml.Node
    text: str | None = None  # a scalar's text after ${NAME} expansion


class _Reader:
    """Walks composed YAML nodes, typing values and collecting errors instead of stopping."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.errors: list[tuple[int, int, str]] = []

    # -- errors --------------------------------------------------------------------------------
    def error(self, node: yaml.Node | _Value, message: str) -> None:
        if isinstance(node, _Value):
            self.errors.append((node.line, node.column, message))
        else:
            mark = node.start_mark
            self.errors.append((mark.line + 1, mark.column + 1, message))

    # -- nodes ---------------------------------------------------------------------------------
    def wrap(self, node: yaml.Node, value: Any) -> _Value:
        return _Value(value, node.start_mark.line + 1, node.start_mark.column + 1, node)

    def scalar(self, node: yaml.Node) -> _Value:
        """Type a scalar node after ``${NAME}`` expansion; lists and mappings become plain data."""
        if not isinstance(node, yaml.ScalarNode):
            return self.wrap(node, self.plain(node))
        text = str(node.value)
        tag = node.tag
        if "${" in text or "$$" in text:
            # typed after expansion, quoted or not (flow mappings need quotes): port: "${PORT}"
            text = self.expand(node, text)
            tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
        constructor = yaml.constructor.SafeConstructor()
        try:
            value = constructor.construct_object(yaml.ScalarNode(tag, text, style=node.style))
        except yaml.constructor.ConstructorError as error:
            self.error(node, f"cannot read value {text!r}: {error.problem}")
            value = text
        wrapped = self.wrap(node, value)
        wrapped.text = text
        return wrapped

    def plain(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {self.scalar(k).value: self.plain(v) for k, v in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(item) for item in node.value]
        return self.scalar(node).value

    def expand(self, node: yaml.Node, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.error(node, f"environment variable {name} is not defined (used as ${{{name}}})")
            return ""

        return _ENV_PATTERN.sub(replace, text)

    def mapping(
        self, node: yaml.Node, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Keys of a mapping node → (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping ({' / '.join(allowed[:4])}: ...), got {_kind(node)}")
            return None
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node).value
            if not isinstance(key, str) or key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                hint = f" (did you mean '{near[0]}'?)" if near else f" (valid keys: {', '.join(allowed)})"
                self.error(key_node, f"unknown key '{key}' in {what}{hint}")
                continue
            if key in result:
                self.error(key_node, f"duplicate key '{key}' in {what}")
                continue
            result[key] = (key_node, value_node)
        return result

    # -- typed fields --------------------------------------------------------------------------
    def string(self, node: yaml.Node, name: str, allow_empty: bool = False, limit: str | None = None) -> str | None:
        """A scalar's text as written; ``limit`` names its length limit in the text table."""
        value = self.scalar(node)
        expanded = isinstance(node, yaml.ScalarNode) and "${" in str(node.value)
        if value.text is None or (value.value is None and not expanded):
            self.error(node, f"{name} must be a string, got {_describe(value.value)}")
            return None
        text = value.text  # as written: 'prompt: 1999' and 'password: "0123"' stay what they say
        try:
            return check_text(name, text, limit or "", allow_empty)
        except ValueError as error:
            self.error(node, str(error))
            return None

    def number(
        self, node: yaml.Node, name: str, kind: type, low: float | None = None, high: float | None = None
    ) -> float | int | None:
        """A number checked by the one check (:func:`~riffradio.core.knobs.check_number`)."""
        try:
            return check_number(name, self.scalar(node).value, kind, low, high)
        except ValueError as error:
            self.error(node, str(error))
            return None

    def knob(self, node: yaml.Node, name: str, knob: str) -> float | int | None:
        """A number in the range of the knob table's row ``knob``."""
        row = KNOBS[knob]
        return self.number(node, name, row.kind, row.low, row.high)

    def boolean(self, node: yaml.Node, name: str) -> bool | None:
        value = self.scalar(node).value
        if not isinstance(value, bool):
            self.error(node, f"{name} must be true or false, got {_describe(value)}")
            return None
        return value

    def choice(
        self, node: yaml.Node, name: str, allowed: Iterable[str], canonical: Callable[[str], str | None]
    ) -> str | None:
        """One of ``allowed`` (case-insensitive), as ``canonical`` spells it."""
        text = self.string(node, name)
        if text is None:
            return None
        options = list(allowed)
        if text.lower() not in options:
            near = difflib.get_close_matches(text.lower(), options, n=1, cutoff=0.5)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            self.error(node, f"{name} must be one of {', '.join(options)}, got '{text}'{hint}")
            return None
        return canonical(text.lower())


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"'{node.value}'"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"{type(value).__name__} {value!r}"


def seed_image_spec(mapping: Mapping[str, Any]) -> str:
    """``{bpm: 93.75, swing: 0.1}`` → ``"bpm=93.75,swing=0.1"`` (keys sorted)."""
    return ",".join(f"{key}={mapping[key]}" for key in sorted(mapping))


def _looks_like_path(reference: str) -> bool:
    return "/" in reference or "\\" in reference or reference.lower().endswith(_IMAGE_SUFFIXES)


def _check_seed_reference(reference: str) -> str | None:
    """None if ``riffradio.spectrogram.seeds`` resolves ``reference``, else the one-line reason."""
    try:
        from riffradio.spectrogram.seeds import load_seed_image
    except ModuleNotFoundError:  # the codec stage is not installed: paths are still checked
        return None
    try:
        load_seed_image(reference)
    except Exception as error:  # any failure to resolve is the user's to fix
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


OutputChecker = Callable[[OutputSpec], str | None]
"""Given an ``outputs:`` entry, None if it makes a sink, else the one-line reason (the
application passes ``riffradio.app.outputs.check_output``; the loader does not know the sinks)."""


class _PlaylistBuilder:
    def __init__(self, reader: _Reader, check_references: bool, check_output: OutputChecker | None) -> None:
        self.r = reader
        self.check_references = check_references
        self.check_output = check_output

    def station(self, node: yaml.Node | None) -> StationSpec:
        if node is None:
            return StationSpec()
        fields = self.r.mapping(node, STATION_KEYS, "station")
        if fields is None:
            return StationSpec()
        values: dict[str, Any] = {}
        readers: dict[str, Callable[[yaml.Node], Any]] = {
            "name": lambda n: self.r.string(n, "station.name", limit="title"),
            "model": lambda n: self.r.string(n, "station.model"),
            "device": lambda n: self.r.string(n, "station.device"),
            "dtype": lambda n: self.r.choice(n, "station.dtype", DTYPE_NAMES, DTYPE_NAMES.get),
            "scheduler": lambda n: self.r.choice(n, "station.scheduler", SCHEDULER_NAMES, canonical_scheduler_name),
            "compile": lambda n: self.r.boolean(n, "station.compile"),
            **{
                key: (lambda n, key=key: self.r.knob(n, f"station.{key}", key))
                for key in (
                    "steps", "crossfade_seconds", "lookahead_clips", "loudness_lufs", "true_peak_dbtp",
                    "continuation_seconds",
                )
            },
        }
        for key, (_, value_node) in fields.items():
            value = readers[key](value_node)
            if value is not None:
                values[key] = value
        return StationSpec(**values)

    def riffs(self, node: yaml.Node | None, top: yaml.Node) -> tuple[RiffSpec, ...]:
        if node is None:
            self.r.error(top, "the playlist has no 'riffs:' list; add at least one {prompt: ...}")
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.r.error(node, f"riffs must be a list of riffs ({{prompt: ...}}), got {_kind(node)}")
            return ()
        if not node.value:
            self.r.error(node, "riffs must hold at least one riff")
            return ()
        riffs: list[RiffSpec] = []
        previous_end_seed = 42
        for number, item in enumerate(node.value, start=1):
            riff = self.riff(item, number, previous_end_seed)
            if riff is not None:
                riffs.append(riff)
                previous_end_seed = riff.end_seed
        return tuple(riffs)

    def riff(self, node: yaml.Node, number: int, default_seed: int) -> RiffSpec | None:
        what = f"riff {number}"
        fields = self.r.mapping(node, RIFF_KEYS, what)
        if fields is None:
            return None
        if "prompt" not in fields:
            self.r.error(node, f"{what} has no 'prompt'")
        values: dict[str, Any] = {}
        for key, (_, value_node) in fields.items():
            name = f"{what}: {key}"
            value: Any
            if key in ("prompt", "to"):
                value = self.r.string(value_node, name, limit="prompt")
            elif key in ("negative_prompt",):
                value = self.r.string(value_node, name, allow_empty=True, limit="negative_prompt")
            elif key in (
                "seed", "to_seed", "clips", "steps", "denoising", "to_denoising", "guidance", "to_guidance",
                "continuation_seconds",
            ):
                value = self.r.knob(value_node, name, key.removeprefix("to_"))
            elif key == "seed_image":
                value = self.seed_image(value_node, name)
            else:  # mask_image
                value = self.image_reference(value_node, name)
            if value is not None:
                values[key] = value
        if "prompt" not in values:
            return None
        if "seed" not in values:
            values["seed"], values["seed_from_previous"] = default_seed, number > 1
        values.setdefault("seed_image", DEFAULT_SEED_IMAGE)
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        return RiffSpec(**values, line=line, column=column)

    def seed_image(self, node: yaml.Node, name: str) -> str | None:
        if isinstance(node, yaml.MappingNode):
            spec = self.r.plain(node)
            bad = [k for k, v in spec.items() if isinstance(v, (list, dict)) or v is None]
            if bad:
                self.r.error(node, f"{name}: each synthesis setting must be a single value ({bad[0]})")
                return None
            if "file" in spec:  # a file loop with its tempo: the path is relative to the playlist
                path = Path(str(spec["file"])).expanduser()
                spec["file"] = str(path if path.is_absolute() else self.r.path.parent / path)
            reference = seed_image_spec(spec)
            if self.check_references:
                reason = _check_seed_reference(reference)
                if reason:
                    self.r.error(node, f"{name}: {reason}")
                    return None
            return reference
        return self.image_reference(node, name)

    def image_reference(self, node: yaml.Node, name: str) -> str | None:
        reference = self.r.string(node, name, limit="seed_image")
        if reference is None:
            return None
        if _looks_like_path(reference):
            path = Path(reference).expanduser()
            if not path.is_absolute():
                path = self.r.path.parent / path  # images travel with their playlist
            if not path.is_file():
                self.r.error(node, f"{name}: image file {str(path)!r} does not exist")
                return None
            reference = str(path)
        if self.check_references and not reference.startswith("${"):
            reason = _check_seed_reference(reference)
            if reason:
                self.r.error(node, f"{name}: {reason}")
                return None
        return reference

    def outputs(self, node: yaml.Node | None) -> tuple[OutputSpec, ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.r.error(node, f"outputs must be a list of {{type: ..., ...}}, got {_kind(node)}")
            return ()
        outputs: list[OutputSpec] = []
        for number, item in enumerate(node.value, start=1):
            what = f"output {number}"
            if not isinstance(item, yaml.MappingNode):
                self.r.error(item, f"{what} must be a mapping with a 'type', got {_kind(item)}")
                continue
            options: dict[str, Any] = {}
            output_type: str | None = None
            for key_node, value_node in item.value:
                key = self.r.scalar(key_node).value
                if key == "type":
                    output_type = self.r.string(value_node, f"{what}: type")
                else:
                    options[str(key)] = self.r.plain(value_node)
            line, column = item.start_mark.line + 1, item.start_mark.column + 1
            if output_type is None:
                if not any(self.r.scalar(k).value == "type" for k, _ in item.value):
                    self.r.error(item, f"{what} has no 'type' (file, speakers, icecast, rtmp)")
                continue
            spec = OutputSpec(type=output_type, options=options, line=line, column=column)
            problem = self.check_output(spec) if self.check_output is not None else None
            if problem:
                self.r.error(item, f"{what}: {problem}")
                continue
            outputs.append(spec)
        return tuple(outputs)

    def control(self, node: yaml.Node | None) -> ControlConfig:
        if node is None:
            return ControlConfig()
        fields = self.r.mapping(node, CONTROL_KEYS, "control")
        if fields is None:
            return ControlConfig()
        osc = http = None
        if "osc" in fields:
            osc = self.osc(fields["osc"][1])
        if "http" in fields:
            http = self.http(fields["http"][1])
        return ControlConfig(osc=osc, http=http)

    def _endpoint(
        self, node: yaml.Node, what: str, keys: tuple[str, ...]
    ) -> tuple[dict[str, Any], dict[str, tuple[yaml.Node, yaml.Node]]] | None:
        fields = self.r.mapping(node, keys, what)
        if fields is None:
            return None
        values: dict[str, Any] = {}
        if "host" in fields:
            host = self.r.string(fields["host"][1], f"{what}.host")
            if host is not None:
                values["host"] = host
        if "port" in fields:
            port = self.r.knob(fields["port"][1], f"{what}.port", "port")
            if port is not None:
                values["port"] = port
        values["line"], values["column"] = node.start_mark.line + 1, node.start_mark.column + 1
        return values, fields

    def osc(self, node: yaml.Node) -> OscConfig | None:
        endpoint = self._endpoint(node, "control.osc", OSC_KEYS)
        if endpoint is None:
            return None
        values, fields = endpoint
        if "allow" in fields:
            allow = self.allow_list(fields["allow"][1])
            if allow is not None:
                values["allow"] = allow
        if "tcp" in fields:
            tcp_node = fields["tcp"][1]
            if tcp_node.tag.endswith(":bool"):
                tcp = self.r.boolean(tcp_node, "control.osc.tcp")
            else:
                tcp = self.r.number(tcp_node, "control.osc.tcp (true, false or a port)", int, 1, 65535)
            if tcp is not None:
                values["tcp"] = tcp
        if "max_messages_per_second" in fields:
            rate = self.r.number(fields["max_messages_per_second"][1], "control.osc.max_messages_per_second", float, 1, 100_000)
            if rate is not None:
                values["max_messages_per_second"] = rate
        return OscConfig(**values)

    def allow_list(self, node: yaml.Node) -> list[str] | None:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        allowed: list[str] = []
        for item in items:
            text = self.r.string(item, "control.osc.allow")
            if text is None:
                continue
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.r.error(item, f"control.osc.allow: {text!r} is not an IP address or network")
                continue
            allowed.append(text)
        return allowed

    def http(self, node: yaml.Node) -> HttpConfig | None:
        endpoint = self._endpoint(node, "control.http", HTTP_KEYS)
        if endpoint is None:
            return None
        values, fields = endpoint
        if "token_env" in fields:
            name = self.r.string(fields["token_env"][1], "control.http.token_env")
            if name is not None and not _ENV_NAME.fullmatch(name):
                self.r.error(fields["token_env"][1], f"control.http.token_env names an environment variable (EDIT_TOKEN), got {name!r}")
            elif name is not None:
                values["token_env"] = name
        for key in ("cors", "origins"):
            if key in fields:
                values[key] = self.origin_list(fields[key][1], f"control.http.{key}")
        if "max_connections" in fields:
            limit = self.r.number(fields["max_connections"][1], "control.http.max_connections", int, 1, 100_000)
            if limit is not None:
                values["max_connections"] = limit
        return HttpConfig(**values)

    def origin_list(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        origins: list[str] = []
        for item in items:
            text = self.r.string(item, what)
            if text is None:
                continue
            if not _ORIGIN.fullmatch(text.rstrip("/")):
                self.r.error(item, f"{what}: {text!r} is not an origin (https://host[:port], or *)")
                continue
            origins.append(text.rstrip("/"))
        return tuple(origins)


def check_playlist_text(
    text: str,
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    check_references: bool = True,
    check_output: OutputChecker | None = None,
) -> tuple[Playlist | None, list[str]]:
    """Parse and check a playlist; returns the playlist (None on errors) and every error message.

    Args:
        text: the YAML.
        path: where it was read from (for messages; relative image paths are relative to it).
        environ: for ``${NAME}`` (``os.environ`` if None).
        check_references: resolve seed and mask images now.
        check_output: checks each ``outputs:`` entry's options; None checks only their shape.
    """
    path = Path(path)
    reader = _Reader(path, os.environ if environ is None else environ)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = error.problem or error.context or "invalid YAML"
        return None, [f"{path}:{line}:{column}: invalid YAML: {problem}"]
    except yaml.YAMLError as error:
        return None, [f"{path}:1:1: invalid YAML: {str(error).splitlines()[0]}"]
    if root is None:
        return None, [f"{path}:1:1: the playlist is empty; it needs at least 'riffs:'"]
    builder = _PlaylistBuilder(reader, check_references, check_output)
    sections = reader.mapping(root, TOP_KEYS, "the playlist")
    playlist = None
    if sections is not None:
        get = lambda key: sections[key][1] if key in sections else None  # noqa: E731
        station = builder.station(get("station"))
        outputs = builder.outputs(get("outputs"))
        control = builder.control(get("control"))
        riffs = builder.riffs(get("riffs"), root)
        for spec in outputs:
            if spec.type == "http" and control.http is None:  # served by the studio's server
                reader.errors.append((spec.line, spec.column, "an http output needs control.http (the server that serves it)"))
        playlist = Playlist(path=path, station=station, riffs=riffs, outputs=outputs, control=control)
    errors = [f"{path}:{line}:{column}: {message}" for line, column, message in sorted(reader.errors)]
    return (None if errors else playlist), errors


def check_playlist(
    path: str | Path, environ: Mapping[str, str] | None = None, check_output: OutputChecker | None = None
) -> tuple[Playlist | None, list[str]]:
    """Read and check the playlist file at ``path``; see :func:`check_playlist_text`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"{path}:1:1: no such playlist file"]
    except (OSError, UnicodeDecodeError) as error:
        return None, [f"{path}:1:1: cannot read the playlist: {error}"]
    return check_playlist_text(text, path, environ, check_output=check_output)


def load_playlist(
    path: str | Path, environ: Mapping[str, str] | None = None, check_output: OutputChecker | None = None
) -> Playlist:
    """Read a playlist, raising :class:`PlaylistError` (with every error) if anything is wrong."""
    playlist, errors = check_playlist(path, environ, check_output)
    if errors or playlist is None:
        raise PlaylistError(errors or [f"{path}:1:1: the playlist could not be read"])
    return playlist
