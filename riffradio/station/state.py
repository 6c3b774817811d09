"""The station's live state: the one place control (OSC, HTTP, reload) writes to.

Control flows one way: a controller calls the setters here; the producer takes a
:meth:`StationState.snapshot` before it plans each clip; the consumer reads volume and
crossfade. Setters validate and raise :class:`ValueError` with a one-line reason, so a bad
value never reaches the plan. Every change that alters what is planned bumps ``version``:
the producer drops clips planned under an older version that are not audible yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from riffradio.core.knobs import RIFF_KNOBS, check_knob, check_number, check_text

Listener = Callable[[str, Any], None]
#: checks a state before it is taken (plans its next clip, resolves its seed image); raises
#: ValueError with a one-line reason, and the state stays as it was
Validator = Callable[["StateSnapshot"], None]
#: what a DJ sets that changes the music; :meth:`StationState.roll_back` puts these back
LIVE_FIELDS: tuple[str, ...] = ("live_prompt", "live_seed", "live_to_prompt", "live_alpha", "hold", "knobs")


@dataclass(frozen=True)
class Knobs:
    """Live overrides of a playlist riff's values; ``None`` means "as the playlist says"."""

    denoising: float | None = None
    guidance: float | None = None
    steps: int | None = None
    clips: int | None = None
    seed_image: str | None = None
    negative_prompt: str | None = None
    continuation_seconds: float | None = None


@dataclass(frozen=True)
class StateSnapshot:
    """An immutable view of the state, taken by the producer before it plans a clip.

    Attributes:
        version: bumps on every change that alters what is planned.
        riff_index: playlist riff the plan is on (set by ``next``/``goto``, advanced by the plan).
        jump_count: bumps on every ``next``/``goto``, so the plan restarts that riff even when the
            index stays the same (``goto`` to the current riff).
        live_prompt: a prompt the DJ asked for (transition to it, then hold), or ``None``.
        live_seed: a seed the DJ asked for, or ``None``.
        live_to_prompt: a second prompt: with ``live_prompt`` set, clips blend the two at
            ``live_alpha`` (a DJ's fader between two prompts), or ``None``.
        live_alpha: the blend position, 0 = ``live_prompt`` … 1 = ``live_to_prompt`` (``None``: 0.5).
        hold: stay on the current prompt, walking seeds, instead of moving on in the playlist.
        knobs: live overrides of riff values.
        volume: linear output gain (1.0 = unchanged).
        crossfade_seconds: crossfade length at joins, or ``None`` for the station's default.
    """

    version: int = 0
    riff_index: int = 0
    jump_count: int = 0
    live_prompt: str | None = None
    live_seed: int | None = None
    live_to_prompt: str | None = None
    live_alpha: float | None = None
    hold: bool = False
    knobs: Knobs = Knobs()
    volume: float = 1.0
    crossfade_seconds: float | None = None


class StationState:
    """Thread-safe live state of one station. Setters validate, bump the version and notify.

    Args:
        playlist_riff_count: riffs in the playlist (``goto`` takes 0 … count − 1).
        initial: the state to start from.
        validator: checks every change that alters the music before the state takes it (the
            station plans the next clip with it and resolves its seed image, see
            :func:`riffradio.station.producer.check_live_state`); its ``ValueError`` reaches the
            setter's caller, so a controller hears why, and nothing changes.
    """

    def __init__(
        self, playlist_riff_count: int = 1, initial: StateSnapshot | None = None, validator: Validator | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._write_lock = threading.RLock()  # one change at a time: checked, then taken
        self._riff_count = max(1, playlist_riff_count)
        self._snapshot = initial or StateSnapshot()
        self._listeners: list[Listener] = []
        self._validator = validator

    def set_validator(self, validator: Validator | None) -> None:
        """Check every later change that alters the music with ``validator`` first."""
        self._validator = validator

    # -- reading -----------------------------------------------------------------------------
    def snapshot(self) -> StateSnapshot:
        with self._lock:
            return self._snapshot

    @property
    def riff_count(self) -> int:
        return self._riff_count

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(name, value)`` after every change; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- writing -----------------------------------------------------------------------------
    def _update(
        self,
        name: str,
        value: Any,
        replans: bool = True,
        derive: Callable[[StateSnapshot], dict[str, Any]] | None = None,
        **changes: Any,
    ) -> None:
        """Apply ``changes`` (and what ``derive`` makes of the current snapshot) in one step under the lock.

        ``derive`` is how a change that depends on the state (a knob among the knobs, the jump
        counter) reads and writes without another writer slipping in between.
        """
        with self._write_lock:
            validator = self._validator
            if replans and validator is not None:
                candidate = dict(changes)
                if derive is not None:
                    candidate.update(derive(self.snapshot()))
                validator(replace(self.snapshot(), **candidate))  # ValueError: nothing changes
            with self._lock:
                if derive is not None:
                    changes.update(derive(self._snapshot))
                version = self._snapshot.version + (1 if replans else 0)
                self._snapshot = replace(self._snapshot, version=version, **changes)
                listeners = list(self._listeners)
        for listener in listeners:
            listener(name, value)

    def roll_back(self, good: StateSnapshot, reason: str) -> list[str]:
        """Put back the live values of ``good`` (:data:`LIVE_FIELDS`: prompts, seed, blend, hold,
        knobs) without checking them: they made a clip. Listeners hear ``("rollback", reason)``.

        Returns:
            the fields that changed (empty: nothing to roll back, nobody notified).
        """
        with self._write_lock:
            with self._lock:
                current = self._snapshot
                changes = {f: getattr(good, f) for f in LIVE_FIELDS if getattr(current, f) != getattr(good, f)}
                if not changes:
                    return []
                self._snapshot = replace(current, version=current.version + 1, **changes)
                listeners = list(self._listeners)
        for listener in listeners:
            listener("rollback", reason)
        return list(changes)

    def set_prompt(self, prompt: str) -> None:
        """Transition from what plays now to ``prompt``, then stay on it (walking seeds)."""
        self._update("prompt", prompt, live_prompt=check_text("prompt", prompt).strip())

    def set_to_prompt(self, prompt: str) -> None:
        """A second prompt to blend with the live prompt at ``alpha``; ``""`` ends the blend."""
        if isinstance(prompt, str) and not prompt.strip():
            self._update("to_prompt", "", live_to_prompt=None)
            return
        self._update("to_prompt", prompt, live_to_prompt=check_text("to_prompt", prompt, "prompt").strip())

    def set_alpha(self, alpha: float) -> None:
        """Where the blend of prompt and to_prompt sits: 0 = prompt, 1 = to_prompt."""
        alpha = check_knob("alpha", alpha)
        self._update("alpha", alpha, live_alpha=alpha)

    def set_seed(self, seed: int) -> None:
        seed = check_knob("seed", seed)
        self._update("seed", seed, live_seed=seed)

    def set_knob(self, name: str, value: Any) -> None:
        """Set one of ``denoising``, ``guidance``, ``steps``, ``clips``, ``continuation_seconds`` (see :data:`~riffradio.core.knobs.KNOBS`)."""
        if name not in RIFF_KNOBS:
            raise ValueError(f"unknown knob {name!r}; knobs are {', '.join(sorted(RIFF_KNOBS))}")
        checked = check_knob(name, value)
        self._set_knobs(name, checked, **{name: checked})

    def _set_knobs(self, name: str, value: Any, **knobs: Any) -> None:
        """Change some of the knobs, keeping the others (read and written under the lock)."""
        self._update(name, value, derive=lambda snapshot: {"knobs": replace(snapshot.knobs, **knobs)})

    def set_seed_image(self, reference: str) -> None:
        """Seed image by bundled name, path or spec (resolved by the validator before it is taken)."""
        check_text("seed_image", reference)
        self._set_knobs("seed_image", reference, seed_image=reference.strip())

    def set_negative_prompt(self, text: str) -> None:
        check_text("negative_prompt", text, allow_empty=True)
        self._set_knobs("negative_prompt", text, negative_prompt=text)

    def next_riff(self) -> None:
        """Move to the next riff of the playlist (wrapping), dropping live prompt and hold."""
        snap = self.snapshot()
        self.goto_riff((snap.riff_index + 1) % self._riff_count)

    def goto_riff(self, index: int) -> None:
        index = check_number("riff index", index, int, 0, self._riff_count - 1)
        self._update(
            "goto",
            index,
            derive=lambda snapshot: {"jump_count": snapshot.jump_count + 1},
            riff_index=index,
            live_prompt=None,
            live_seed=None,
            live_to_prompt=None,
            live_alpha=None,
            hold=False,
        )

    def set_hold(self, hold: bool | int) -> None:
        if isinstance(hold, float) or not isinstance(hold, (bool, int)) or int(hold) not in (0, 1):
            raise ValueError(f"hold must be 0 or 1, got {hold!r}")
        self._update("hold", bool(hold), hold=bool(hold))

    def set_volume(self, volume: float) -> None:
        volume = check_knob("volume", volume)
        self._update("volume", volume, replans=False, volume=volume)

    def set_crossfade_seconds(self, seconds: float) -> None:
        seconds = check_knob("crossfade_seconds", seconds, "crossfade")
        self._update("crossfade", seconds, replans=False, crossfade_seconds=seconds)

    def set_riff_count(self, count: int) -> None:
        """The playlist was reloaded with ``count`` riffs (``goto`` accepts 0 … count-1 from now on)."""
        with self._lock:
            self._riff_count = max(1, int(count))
            if self._snapshot.riff_index >= self._riff_count:
                self._snapshot = replace(self._snapshot, riff_index=0)

    def advance_riff(self, index: int) -> None:
        """The plan moved on to ``index`` by itself: record it without a re-plan or a jump."""
        with self._lock:
            self._snapshot = replace(self._snapshot, riff_index=index % self._riff_count)
