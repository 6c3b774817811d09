"""The station's control address space: one table of the values a controller may set.

OSC (``/riffradio/<name> args``) and HTTP (``POST /api/state {"<name>": value}``) both go
through :data:`FIELDS`: each field names the argument check (type and finiteness, pure
functions raising :class:`Rejected`) and the :class:`~riffradio.station.state.StationState`
setter (range and meaning, raising :class:`ValueError` with a one-line reason). So a value
is accepted by HTTP exactly when OSC accepts it, and both reject it with the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from riffradio.station.state import StationState


class Rejected(Exception):
    """A value the station will not apply.

    Attributes:
        outcome: why, in one word (``bad_type_tags``, ``bad_value``, ...; OSC's metric label).
        reason: one line naming the field and the problem.
    """

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


# -- argument checks (pure functions: name, args -> value, or Rejected) -------------------------


def tag_of(value: Any) -> str:
    """The OSC type tag a Python value would travel as (``?`` for anything else)."""
    if isinstance(value, bool):
        return "T" if value else "F"
    return {int: "i", float: "f", str: "s", type(None): "N"}.get(type(value), "?")


def _one(name: str, args: Sequence[Any], what: str) -> Any:
    if len(args) != 1:
        tags = "".join(tag_of(a) for a in args)
        raise Rejected("bad_type_tags", f"{name} takes one {what}, got type tags ',{tags}'")
    return args[0]


def text_arg(name: str, args: Sequence[Any]) -> str:
    value = _one(name, args, "string (s)")
    if not isinstance(value, str):
        raise Rejected("bad_type_tags", f"{name} takes a string (s), got '{tag_of(value)}'")
    return value


def number_arg(name: str, args: Sequence[Any]) -> int | float:
    """A number; an int knob also takes a whole float (controller faders send floats)."""
    value = _one(name, args, "number (f or i)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected("bad_type_tags", f"{name} takes a number (f or i), got '{tag_of(value)}'")
    if not math.isfinite(value):
        raise Rejected("bad_value", f"{name}: {value} is not a finite number")
    return value


def toggle_arg(name: str, args: Sequence[Any]) -> bool:
    """0 or 1 as i, f (a controller toggle sends 0.0/1.0), T or F."""
    value = _one(name, args, "0 or 1 (i, f, T or F)")
    if isinstance(value, bool):
        return value
    number = number_arg(name, args)
    if number not in (0, 1):
        raise Rejected("bad_value", f"{name} takes 0 or 1, got {number!r}")
    return bool(number)


def trigger_arg(name: str, args: Sequence[Any]) -> bool:
    """No argument fires; a button's 1 (press) fires and its 0 (release) does nothing."""
    return True if not args else toggle_arg(name, args)


ArgParser = Callable[[str, Sequence[Any]], Any]
Setter = Callable[[StationState, Any], None]


@dataclass(frozen=True)
class Field:
    """One settable value of the station.

    Attributes:
        name: the field's name (``/riffradio/<name>`` over OSC, ``{"<name>": …}`` over HTTP).
        parse: the argument check; its result goes to ``apply``.
        apply: the state setter (raises ``ValueError`` with the range).
    """

    name: str
    parse: ArgParser
    apply: Setter


def _knob(name: str) -> Field:
    return Field(name, number_arg, lambda state, value: state.set_knob(name, value))


def _next(state: StationState, fire: bool) -> None:
    if fire:
        state.next_riff()


#: every value a controller may set, in the order docs/osc.md lists them
FIELDS: dict[str, Field] = {
    field.name: field
    for field in (
        Field("prompt", text_arg, StationState.set_prompt),
        Field("to_prompt", text_arg, StationState.set_to_prompt),
        Field("alpha", number_arg, StationState.set_alpha),
        Field("seed", number_arg, StationState.set_seed),
        _knob("denoising"),
        _knob("guidance"),
        _knob("steps"),
        _knob("clips"),
        _knob("continuation_seconds"),
        Field("seed_image", text_arg, StationState.set_seed_image),
        Field("negative_prompt", text_arg, StationState.set_negative_prompt),
        Field("next", trigger_arg, _next),
        Field("goto", number_arg, StationState.goto_riff),
        Field("hold", toggle_arg, StationState.set_hold),
        Field("volume", number_arg, StationState.set_volume),
        Field("crossfade", number_arg, StationState.set_crossfade_seconds),
    )
}


def apply_field(state: StationState, name: str, args: Sequence[Any], shown_as: str | None = None) -> None:
    """Check ``args`` for field ``name`` and set it; raises :class:`Rejected` naming ``shown_as``.

    Args:
        state: the station state to change.
        name: a key of :data:`FIELDS`.
        args: the arguments as they came (OSC arguments; an HTTP value as a one-element list,
            or an empty list for JSON ``null``, which fires a trigger).
        shown_as: how the sender names the field in the rejection (the OSC address); ``name`` if None.
    """
    field = FIELDS.get(name)
    shown = shown_as or name
    if field is None:
        raise Rejected("unknown_address", f"unknown field {shown!r}; fields are {', '.join(FIELDS)}")
    value = field.parse(shown, args)
    try:
        field.apply(state, value)
    except ValueError as error:  # the state's one-line reason
        # the state names the value itself ("alpha must be between 0 and 1"); OSC adds its address
        raise Rejected("bad_value", f"{shown}: {error}" if shown != name else str(error)) from None
