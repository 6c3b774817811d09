"""The station's one audio timeline: where each clip sits, which window of the seed loop it
starts from, where the bar lines are. Pure functions of integers (samples) and small frozen
dataclasses; no I/O.

Positions are **timeline samples** at the codec's rate (44 100 Hz) since the station started
(position 0 is the first clip's first sample). A seed loop (``loop_samples`` long, ``bars``
whole bars) is laid end to end from a :class:`Grid`'s ``origin_samples``; clip ``k`` starts at
``start_k = start_{k-1} + hop`` with ``hop = clip_samples − overlap`` and its init image is the
5.12 s window of the loop from ``(start_k − origin) mod loop_samples``. So the seed's kicks fall
on one grid for as long as the station plays, whatever the crossfade: the crossfade (and the
continuation of ``seams``) only sets the overlap, never where a clip's audio belongs.

A new seed (the next riff, or a live ``seed_image``) starts its grid on the old grid's next bar
line at or after the first clip that uses it (:func:`next_bar_line_samples`), so the new tempo's
first downbeat lands on a downbeat of the old one.

The buffer plays every clip at ``start + shift``, where ``shift`` is the station's lag after an
underrun, always a whole number of loops, bars or beats (:func:`repeat_back_samples`,
:func:`late_start_offset_samples`), so the grid survives underruns too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class WholeBars:
    """Bars and beats of a loop of ``bars`` whole bars of ``beats_per_bar`` beats, ``loop_samples`` long.

    The one place the bar and beat lengths are worked out (a :class:`Grid`, a :class:`LoopShape`
    and ``riffradio.spectrogram.seeds.SeedLoop`` share it); a class with these three
    attributes mixes it in.
    """

    loop_samples: int
    bars: int
    beats_per_bar: int

    @property
    def bar_samples(self) -> float:
        """Samples per bar (fractional: the loop is exact in samples, a bar is its share)."""
        return self.loop_samples / self.bars

    @property
    def beat_samples(self) -> float:
        """Samples per beat (fractional)."""
        return self.bar_samples / self.beats_per_bar


@dataclass(frozen=True)
class Grid(WholeBars):
    """A seed loop laid end to end on the timeline.

    Attributes:
        seed_image: the seed reference the loop comes from (a new reference is a new grid).
        origin_samples: timeline position of one of the loop's first samples (a downbeat).
        loop_samples: the loop's length, samples (> 0).
        bars: whole bars in the loop (≥ 1).
        beats_per_bar: beats in a bar (≥ 1).
    """

    seed_image: str
    origin_samples: int
    loop_samples: int
    bars: int = 1
    beats_per_bar: int = 4


@dataclass(frozen=True)
class Placement:
    """Where one clip sits on the timeline (what the producer planned, the buffer obeys).

    Attributes:
        start_samples: timeline position of the clip's first sample.
        clip_samples: the clip's length, samples (225 792 = 5.12 s).
        overlap_samples: how many of its last samples the next clip overlaps (crossfade or
            continuation), so the next clip starts at ``start + clip − overlap``.
        window_start_samples: where in the seed loop the clip's init window starts, in
            ``[0, grid.loop_samples)``: ``loop_offset_samples(grid, start_samples)``.
        grid: the seed loop's grid in force for this clip.
    """

    start_samples: int
    clip_samples: int
    overlap_samples: int
    window_start_samples: int
    grid: Grid

    @property
    def hop_samples(self) -> int:
        """Distance from this clip's start to the next one's, samples."""
        return self.clip_samples - self.overlap_samples

    @property
    def next_start_samples(self) -> int:
        return self.start_samples + self.hop_samples

    @property
    def end_samples(self) -> int:
        return self.start_samples + self.clip_samples


@dataclass(frozen=True)
class TimelineCursor:
    """Where the next clip goes: its start and the grid in force (None before the first clip)."""

    next_start_samples: int = 0
    grid: Grid | None = None


@dataclass(frozen=True)
class LoopShape(WholeBars):
    """What the timeline needs to know of a seed loop (``riffradio.spectrogram.seeds.SeedLoop``)."""

    seed_image: str
    loop_samples: int
    bars: int = 1
    beats_per_bar: int = 4


def loop_offset_samples(grid: Grid, position_samples: int) -> int:
    """Where in the loop timeline sample ``position_samples`` falls: ``(position − origin) mod loop``, in ``[0, loop)``."""
    return (position_samples - grid.origin_samples) % grid.loop_samples


def bar_line_samples(grid: Grid, bar: int) -> int:
    """Timeline position of bar line ``bar`` (0 = the origin; negative bars lie before it), rounded to a sample."""
    return grid.origin_samples + int(round(bar * grid.bar_samples))


def next_bar_line_samples(grid: Grid, position_samples: int) -> int:
    """The first bar line of ``grid`` at or after ``position_samples`` (samples)."""
    bar = math.ceil((position_samples - grid.origin_samples) / grid.bar_samples)
    while bar_line_samples(grid, bar) < position_samples:  # the rounding of a fractional bar
        bar += 1
    while bar_line_samples(grid, bar - 1) >= position_samples:
        bar -= 1
    return bar_line_samples(grid, bar)


def overlap_samples(
    crossfade_seconds: float,
    continuation_seconds: float,
    sample_rate_hz: int,
    clip_samples: int,
    column_samples: int = 1,
    frame_samples: int = 1,
) -> int:
    """How much of a clip the next one overlaps, samples (pure).

    Without continuation (fewer than half a column of it): the crossfade rounded up to whole
    frames of ``frame_samples`` (an image column, 441 samples at 44.1 kHz, so the two clips'
    STFT frames line up and the vocoder can continue the phase; the buffer's fade stays the
    crossfade and lies inside), at most half a clip (the buffer's longest crossfade). With
    continuation: whole columns of ``column_samples`` (a latent column, 3 528 samples at
    44.1 kHz), the continuation rounded to columns or the crossfade rounded up to columns,
    whichever is longer, at most the whole columns in half a clip — the next clip keeps all of
    it, so the crossfade lies inside what both clips share.
    """
    crossfade = min(int(round(max(0.0, float(crossfade_seconds)) * sample_rate_hz)), clip_samples // 2)
    column = max(1, int(column_samples))
    kept_columns = round(max(0.0, float(continuation_seconds)) * sample_rate_hz / column)
    if kept_columns == 0:
        frame = max(1, int(frame_samples))
        return min(-(-crossfade // frame), clip_samples // 2 // frame) * frame
    most_columns = clip_samples // 2 // column
    return min(max(kept_columns, -(-crossfade // column)), most_columns) * column


def continuation_region_samples(previous: Placement, continuation_samples: int) -> tuple[int, int]:
    """The region of ``previous`` the next clip keeps (``seams``' continuation): ``(timeline start, samples)``.

    The next clip's first ``samples`` are ``previous``'s samples from ``previous.hop_samples``
    on, i.e. what ``previous`` plays at those same timeline positions (its last ``samples``
    when the overlap is the continuation; inside a longer crossfade otherwise). 0 = none.
    """
    return previous.next_start_samples, max(0, min(continuation_samples, previous.overlap_samples))


def place_clip(
    cursor: TimelineCursor, loop: LoopShape, clip_samples: int, overlap: int
) -> tuple[Placement, TimelineCursor]:
    """Place the next clip at the cursor; a new seed starts its grid on the next bar line. Pure.

    Args:
        cursor: where the previous clip left the timeline.
        loop: the seed loop this clip's request uses.
        clip_samples: the clip's length, samples.
        overlap: samples the clip after this one will overlap (:func:`overlap_samples`).

    Returns:
        The clip's :class:`Placement` and the cursor for the clip after it.
    """
    start = cursor.next_start_samples
    grid = cursor.grid
    if grid is None or grid.seed_image != loop.seed_image:
        origin = start if grid is None else next_bar_line_samples(grid, start)
        grid = Grid(loop.seed_image, origin, loop.loop_samples, loop.bars, loop.beats_per_bar)
    placement = Placement(start, clip_samples, overlap, loop_offset_samples(grid, start), grid)
    return placement, TimelineCursor(placement.next_start_samples, grid)


def cursor_after(placement: Placement) -> TimelineCursor:
    """The cursor just after ``placement`` (where a re-plan after that clip continues)."""
    return TimelineCursor(placement.next_start_samples, placement.grid)


def repeat_back_samples(played_samples: int, grid: Grid) -> float:
    """How far back the fallback jumps when no next clip is ready, samples.

    The longest whole number of loops that fits in the ``played_samples`` of the clip heard so
    far (so a seed window repeats as the seed loop itself), else of bars, else of beats; the
    clip then continues from ``played − jump`` and stays on the grid. 0 if not even a beat fits.
    """
    for unit in (float(grid.loop_samples), grid.bar_samples, grid.beat_samples):
        if 0 < unit <= played_samples:
            return math.floor(played_samples / unit) * unit
    return 0.0


def late_start_offset_samples(late_samples: int, usable_samples: int, grid: Grid) -> float:
    """Where to start a clip whose place on the timeline began ``late_samples`` ago, samples into it.

    Within its first ``usable_samples`` it starts exactly where the timeline is (offset =
    lateness, no shift). Later than that, it starts the same distance after a bar line (a beat,
    if a bar is longer than usable): the station's shift grows by whole bars, the grid holds.
    """
    if late_samples < usable_samples:
        return float(max(0, late_samples))
    for unit in (grid.bar_samples, grid.beat_samples):
        if 0 < unit < usable_samples:
            return math.fmod(late_samples, unit)
    return 0.0
