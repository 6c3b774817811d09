"""The knob table and the one check for numbers and strings.

Every number the station accepts — from a playlist, OSC, the command line or HTTP — is
checked by :func:`check_number` against the range written once in :data:`KNOBS`; every text
by :func:`check_text` against :data:`TEXT_LIMITS`. A failed check raises :class:`ValueError`
with one line that names the value (``"denoising must be between 0 and 1, got 1.5"``); each
caller adds where it came from (a ``file:line:column``, an OSC address, a CLI argument).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from riffradio.core.defaults import SAMPLE_RATE_HZ

SEED_MAX = 2**63 - 1
"""Seeds are torch generator seeds: whole numbers in 0 … 2**63 − 1."""


@dataclass(frozen=True)
class Knob:
    """One row of the knob table.

    Attributes:
        name: the knob's name in playlists, OSC addresses and messages.
        kind: ``int`` (whole numbers only) or ``float``.
        unit: what one unit of the value is (``"seconds"``, ``"LUFS"``, ``"×"``, …).
        low, high: the accepted range, both ends included; every value in it makes music.
        default: the value when nothing sets it.
        meaning: one line for docs and help texts.
    """

    name: str
    kind: type
    unit: str
    low: float
    high: float
    default: Any
    meaning: str

    def check(self, value: Any, name: str | None = None) -> float | int:
        """``value`` as this knob's type, or :class:`ValueError` naming ``name`` (default: the knob)."""
        return check_number(name or self.name, value, self.kind, self.low, self.high)


KNOBS: dict[str, Knob] = {
    knob.name: knob
    for knob in (
        # riff knobs: live-settable over OSC (StationState.set_knob), per riff in playlists
        Knob("denoising", float, "strength", 0.0, 1.0, 0.75,
             "img2img strength: 0 plays the seed image as it is, 1 ignores it"),
        Knob("guidance", float, "×", 0.0, 30.0, 7.0,
             "classifier-free guidance scale; 1 or less turns guidance off"),
        # at most 500: a 1000-step PNDM schedule with steps_offset 1 runs past the training timesteps
        Knob("steps", int, "steps", 1, 500, 50,
             "scheduler steps at denoising 1; img2img runs int(steps × denoising) of them"),
        Knob("clips", int, "clips", 1, 10_000, 4,
             "clips a riff lasts; a transition moves alpha by 1/clips per clip"),
        Knob("alpha", float, "position", 0.0, 1.0, 0.0,
             "where a riff sits between its start (0) and end (1): embeddings lerped, noise slerped"),
        Knob("seed", int, "", 0, SEED_MAX, 42,
             "seed of the noise (and of the VAE sample); a held riff walks seed, seed+1, …"),
        Knob("continuation_seconds", float, "seconds", 0.0, 2.56, 0.0,
             "each clip starts with the previous clip's last seconds, kept (whole 0.08 s latent columns); 0 = off"),
        # station knobs
        Knob("volume", float, "× (linear gain)", 0.0, 4.0, 1.0,
             "output gain before the true-peak limiter"),
        Knob("crossfade_seconds", float, "seconds", 0.0, 5.0, 0.5,
             "equal-power crossfade at each join of two clips"),
        Knob("lookahead_clips", int, "clips", 1, 100, 2,
             "clips the producer may have ready before they are heard"),
        Knob("loudness_lufs", float, "LUFS", -70.0, 0.0, -14.0,
             "integrated loudness (BS.1770) every clip is normalised to"),
        Knob("true_peak_dbtp", float, "dBTP", -20.0, 0.0, -1.0,
             "ceiling of the output's true-peak limiter"),
        # control and command line
        Knob("port", int, "", 1, 65535, 9000, "a TCP/UDP port to listen on"),
        Knob("bpm", float, "beats per minute", 40.0, 240.0, 93.75, "tempo of a synthesised seed loop"),
        Knob("seconds", float, "seconds", 0.0, 7 * 24 * 3600.0, 60.0, "length of audio to render or read"),
        Knob("sample_rate_hz", int, "Hz", 8000, 192_000, SAMPLE_RATE_HZ, "sample rate of audio read or written"),
    )
}  # fmt: skip

RIFF_KNOBS: tuple[str, ...] = ("denoising", "guidance", "steps", "clips", "continuation_seconds")
"""The knobs a DJ may override live (:meth:`StationState.set_knob`) and a riff may set."""

TEXT_LIMITS: dict[str, int] = {
    "prompt": 1000,  # CLIP reads 77 tokens; 1000 characters is far beyond any useful prompt
    "negative_prompt": 1000,
    "seed_image": 512,  # a bundled name, a path or a "bpm=…" spec
    "title": 200,  # what listeners see (station name, stream titles)
}
"""Most characters each text accepts; longer texts are refused, never cut."""


def _bound(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else f"{value:g}"


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def check_number(name: str, value: Any, kind: type, low: float | None = None, high: float | None = None) -> Any:
    """``value`` checked and converted to ``kind`` (``int`` or ``float``).

    Accepts ints and floats (a whole float for an int: controller faders send floats), not
    booleans or strings. Refuses nan and ±inf, a fraction where a whole number is wanted, and
    anything outside ``low`` … ``high`` (both included; ``None`` leaves that side open).

    Raises:
        ValueError: one line naming ``name``, e.g. ``"steps must be a whole number, got 2.5"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        wanted = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {wanted}, got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # ints are finite (and may not fit a float)
        raise ValueError(f"{name} must be finite, got {value}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value}")
        value = int(value)
    else:
        value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        shown_low = "-inf" if low is None else _bound(low, kind)
        shown_high = "inf" if high is None else _bound(high, kind)
        raise ValueError(f"{name} must be between {shown_low} and {shown_high}, got {value}")
    return value


def number_argument(knob: str | None = None, kind: type = float, low: float | None = None,
                    high: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type=`` that reads a number and checks it like everything else.

    With ``knob``, the range and type of that row of :data:`KNOBS`; else ``kind`` and
    ``low`` … ``high``. nan, ±inf, fractions where a whole number is wanted and values out of
    range become argparse errors (one line, naming the argument; see ``riffradio.app.cli``).
    """
    if knob is not None:
        row = KNOBS[knob]
        kind, low, high = row.kind, row.low, row.high

    def parse(text: str) -> Any:
        try:
            value: float | int = int(text) if kind is int and text.strip().lstrip("+-").isdigit() else float(text)
        except ValueError:
            wanted = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        try:
            return check_number("value", value, kind, low, high)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ")) from None

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def check_knob(name: str, value: Any, label: str | None = None) -> Any:
    """``value`` checked against the knob table's row ``name``; messages say ``label`` (default ``name``)."""
    if name not in KNOBS:
        raise ValueError(f"unknown knob {name!r}; knobs are {', '.join(sorted(KNOBS))}")
    return KNOBS[name].check(value, label)


def check_text(name: str, value: Any, limit: str | None = None, allow_empty: bool = False) -> str:
    """``value`` checked as text: a string, not blank (unless ``allow_empty``), not too long.

    Args:
        name: for messages.
        value: the candidate.
        limit: key of :data:`TEXT_LIMITS` (default: ``name`` if it is one, else no limit).

    Raises:
        ValueError: one line naming ``name``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {_shown(value)}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    most = TEXT_LIMITS.get(limit or name)
    if most is not None and len(value) > most:
        raise ValueError(f"{name} is {len(value)} characters long, at most {most} are allowed")
    return value
