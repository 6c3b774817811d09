"""Reading one ``outputs:`` entry's options with one-line errors (for the sink factories)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

_MISSING = object()


class OutputOptions:
    """Typed access to a playlist output's options; every problem is a one-line ``ValueError``.

    Args:
        kind: the output type, for messages (``"icecast"``).
        options: the YAML mapping after ``${ENV}`` expansion.
        allowed: every option name the sink understands (unknown names are errors, with a hint).
    """

    def __init__(self, kind: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
        self.kind = kind
        self.options = dict(options)
        for name in self.options:
            if name not in allowed:
                near = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean '{near[0]}'?" if near else f"options: {', '.join(allowed)}"
                raise ValueError(f"unknown {kind} option '{name}' ({hint})")

    def text(self, name: str, default: Any = _MISSING, example: str = "") -> str | None:
        value = self.options.get(name, default)
        if value is _MISSING:
            raise ValueError(f"a {self.kind} output needs '{name}'" + (f" (e.g. {example})" if example else ""))
        if value is None or isinstance(value, str):
            if isinstance(value, str) and "${" in value:
                raise ValueError(f"{self.kind} option '{name}' still holds an unset variable: {value.split('${')[1].split('}')[0]}")
            return value
        raise ValueError(f"{self.kind} option '{name}' must be text, got {type(value).__name__}")

    def number(self, name: str, default: float | None, minimum: float = 0.0, integer: bool = False) -> Any:
        value = self.options.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            kind = "a whole number" if integer else "a number"
            raise ValueError(f"{self.kind} option '{name}' must be {kind}, got {value!r}")
        if value < minimum or (minimum == 0.0 and value == 0):
            raise ValueError(f"{self.kind} option '{name}' must be more than {minimum:g}, got {value!r}")
        return int(value) if integer else float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name, default)
        if not isinstance(value, bool):
            raise ValueError(f"{self.kind} option '{name}' must be true or false, got {value!r}")
        return value

    def choice(self, name: str, default: str | None, choices: Sequence[str]) -> str | None:
        value = self.text(name, default)
        if value is not None and value not in choices:
            raise ValueError(f"{self.kind} option '{name}' must be one of {', '.join(choices)}, got {value!r}")
        return value
