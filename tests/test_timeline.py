"""The one audio timeline: its maths, and the buffer's joins with perfect clips.

A "perfect" clip here is what a perfect model and vocoder would give for a clip's seed window:
the seed loop's own samples from the window's start (wrapping). Played through the real
:class:`CrossfadeBuffer` at their placements, every kick must stay on the seed's beat grid at any
tempo and crossfade, through underruns and late clips; the plain queue (no placements, the old
behaviour) must not, which shows the check can fail. The vocoder's part is in test_rehearsal.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riffradio.core.timeline import (
    Grid,
    LoopShape,
    Placement,
    TimelineCursor,
    continuation_region_samples,
    cursor_after,
    late_start_offset_samples,
    loop_offset_samples,
    next_bar_line_samples,
    overlap_samples,
    place_clip,
    repeat_back_samples,
)
from riffradio.core.types import RiffRequest
from riffradio.engine.continuation import LATENT_COLUMN_PIXELS, continuation_samples
from riffradio.spectrogram.seeds import load_seed_loop
from riffradio.station.buffer import CrossfadeBuffer
from riffradio.core.types import Clip
from tests.beats import grid_deviations_seconds, kick_onsets_seconds

RATE_HZ = 44_100
CLIP = 225_792
REQUEST = RiffRequest("a", "a", 1, 2)
# The detector leads a perfect kick by about 2 ms (its zero-phase filter and envelope spread the
# attack both ways), the same for every kick, within 0.5 ms: 3 ms is on the grid.
ON_GRID_SECONDS = 0.003


def test_place_clip_walks_the_timeline_by_a_fixed_hop_and_windows_follow_it() -> None:
    loop = LoopShape("bpm=128", loop_samples=248_062, bars=3)
    cursor = TimelineCursor()
    starts, windows = [], []
    for _ in range(5):
        placement, cursor = place_clip(cursor, loop, CLIP, overlap=22_050)
        starts.append(placement.start_samples)
        windows.append(placement.window_start_samples)
    hop = CLIP - 22_050
    assert starts == [k * hop for k in range(5)]
    assert windows == [(k * hop) % 248_062 for k in range(5)]  # the window is where the timeline is
    assert placement.grid.origin_samples == 0 and cursor.next_start_samples == 5 * hop


def test_a_new_seed_starts_its_grid_on_the_old_grids_next_bar_line() -> None:
    old = LoopShape("bpm=128", loop_samples=248_062, bars=3)  # bar = 82 687.3 samples
    new = LoopShape("bpm=99.5", loop_samples=106_386, bars=1)
    cursor = TimelineCursor()
    for _ in range(3):
        _, cursor = place_clip(cursor, old, CLIP, overlap=22_050)
    start = cursor.next_start_samples  # 611 226
    placement, after = place_clip(cursor, new, CLIP, overlap=22_050)
    origin = placement.grid.origin_samples
    assert origin == round(8 * 248_062 / 3) and origin >= start > round(7 * 248_062 / 3)  # bar 8 of the old grid
    # the clip's window starts that far before the new loop's downbeat, wrapping
    assert placement.window_start_samples == (start - origin) % 106_386
    assert (placement.window_start_samples + origin - start) % 106_386 == 0
    same, _ = place_clip(after, new, CLIP, overlap=22_050)
    assert same.grid is placement.grid  # the same seed keeps its grid


def test_bar_lines_offsets_and_overlaps() -> None:
    grid = Grid("x", origin_samples=1_000, loop_samples=300, bars=3, beats_per_bar=4)
    assert (grid.bar_samples, grid.beat_samples) == (100.0, 25.0)
    assert [next_bar_line_samples(grid, p) for p in (1_000, 1_001, 1_100, 950, 0)] == [1_000, 1_100, 1_100, 1_000, 0]
    assert [loop_offset_samples(grid, p) for p in (1_000, 1_299, 1_300, 999)] == [0, 299, 0, 299]
    fractional = Grid("y", origin_samples=0, loop_samples=248_062, bars=3)
    lines = [next_bar_line_samples(fractional, p) for p in (1, 82_687, 82_688, 165_375)]
    assert lines == [82_687, 82_687, 165_375, 165_375]
    assert overlap_samples(0.5, 0.0, RATE_HZ, CLIP) == 22_050
    assert overlap_samples(0.5, 1.0, RATE_HZ, CLIP) == 44_100  # the continuation needs more
    assert overlap_samples(5.0, 0.0, RATE_HZ, CLIP) == CLIP // 2
    # whole image columns, so the vocoder can continue the phase: 0.333 s = 14 685 → 34 columns
    assert overlap_samples(0.333, 0.0, RATE_HZ, CLIP, frame_samples=441) == 34 * 441
    assert overlap_samples(0.5, 0.0, RATE_HZ, CLIP, frame_samples=441) == 22_050  # already whole
    assert overlap_samples(0.0, 0.0, RATE_HZ, CLIP, frame_samples=441) == 0  # a hard cut stays one
    placement = Placement(10_000, CLIP, 22_050, 0, grid)
    assert continuation_region_samples(placement, 0) == (10_000 + CLIP - 22_050, 0)
    assert continuation_region_samples(placement, 8_820) == (10_000 + CLIP - 22_050, 8_820)
    assert cursor_after(placement) == TimelineCursor(10_000 + CLIP - 22_050, grid)


@settings(max_examples=200, deadline=None)
@given(
    crossfade_seconds=st.floats(0.0, 3.0, allow_nan=False),
    continuation_seconds=st.floats(0.0, 3.0, allow_nan=False),
)
def test_a_continued_overlap_is_whole_latent_columns_holding_the_crossfade(
    crossfade_seconds: float, continuation_seconds: float
) -> None:
    """The timeline's overlap agrees with what the engine keeps: whole latent columns (8 image
    columns of 441 samples), never less than the crossfade, at most half a clip."""
    column = LATENT_COLUMN_PIXELS * 441
    overlap = overlap_samples(crossfade_seconds, continuation_seconds, RATE_HZ, CLIP, column)
    kept = continuation_samples(continuation_seconds)
    crossfade = overlap_samples(crossfade_seconds, 0.0, RATE_HZ, CLIP)
    if kept == 0:
        assert overlap == crossfade
        framed = overlap_samples(crossfade_seconds, continuation_seconds, RATE_HZ, CLIP, column, 441)
        assert framed % 441 == 0 and framed <= CLIP // 2  # whole image columns ...
        assert framed >= crossfade or framed == CLIP // 2 // 441 * 441  # ... holding the crossfade
        assert framed - 441 < crossfade  # no column more than needed
        return
    assert overlap % column == 0 and overlap <= CLIP // 2
    assert overlap >= kept and (overlap >= crossfade or overlap == CLIP // 2 // column * column)
    assert overlap - column < max(kept, crossfade)  # no column more than needed


def test_fallback_jumps_and_late_starts_are_whole_loops_bars_or_beats() -> None:
    grid = Grid("x", origin_samples=0, loop_samples=300, bars=3, beats_per_bar=4)
    assert repeat_back_samples(650, grid) == 600  # two loops fit
    assert repeat_back_samples(250, grid) == 200  # then bars
    assert repeat_back_samples(60, grid) == 50  # then beats
    assert repeat_back_samples(10, grid) == 0
    assert late_start_offset_samples(40, usable_samples=500, grid=grid) == 40  # still inside: exact
    assert late_start_offset_samples(1_234, usable_samples=500, grid=grid) == 34  # a bar further on
    assert late_start_offset_samples(1_234, usable_samples=90, grid=grid) == 9  # bars too long: beats


def _perfect_clip(index: int, placement: Placement, audio: np.ndarray) -> Clip:
    positions = (placement.window_start_samples + np.arange(placement.clip_samples)) % audio.size
    return Clip(index, REQUEST, audio[positions][None], RATE_HZ, placement=placement)


def _kick_loop(bpm: float, bars: int) -> tuple[str, np.ndarray]:
    reference = f"bpm={bpm},bars={bars},pattern=four_on_the_floor"
    loop = load_seed_loop(reference)
    assert loop.audio is not None
    return reference, loop.audio


def _beat_seconds(reference: str) -> float:
    return load_seed_loop(reference).beat_samples / RATE_HZ


def _placed_clips(references: list[str], crossfade_seconds: float) -> list[Clip]:
    overlap = overlap_samples(crossfade_seconds, 0.0, RATE_HZ, CLIP)
    cursor = TimelineCursor()
    clips = []
    for index, reference in enumerate(references):
        loop = load_seed_loop(reference)
        placement, cursor = place_clip(cursor, LoopShape(reference, loop.loop_samples, loop.bars), CLIP, overlap)
        assert loop.audio is not None
        clips.append(_perfect_clip(index, placement, loop.audio))
    return clips


def _read(buffer: CrossfadeBuffer, seconds: float, crossfade_seconds: float) -> np.ndarray:
    blocks = []
    for _ in range(int(seconds * RATE_HZ / 2048)):
        block, _ = buffer.read(2048, crossfade_seconds)
        blocks.append(block[0])
    return np.concatenate(blocks)


@pytest.mark.parametrize("bpm", [99.5, 128.0, 174.0])
@pytest.mark.parametrize("crossfade_seconds", [0.0, 0.5, 1.3])
def test_perfect_clips_keep_every_kick_on_one_grid_across_20_joins(bpm: float, crossfade_seconds: float) -> None:
    reference, _ = _kick_loop(bpm, bars=3 if bpm == 128.0 else 1)
    clips = _placed_clips([reference] * 22, crossfade_seconds)
    buffer = CrossfadeBuffer(channels=1, sample_rate_hz=RATE_HZ, crossfade_seconds=crossfade_seconds)
    for clip in clips:
        buffer.push(clip)
    hop_seconds = clips[0].placement.hop_samples / RATE_HZ  # type: ignore[union-attr]
    audio = _read(buffer, 21 * hop_seconds, crossfade_seconds)
    onsets = kick_onsets_seconds(audio, RATE_HZ)
    beat = _beat_seconds(reference)
    assert len(onsets) >= int(audio.size / RATE_HZ / beat) - 1  # every beat's kick, none lost
    assert np.abs(grid_deviations_seconds(onsets, beat)).max() <= ON_GRID_SECONDS
    assert buffer.underruns == 0


def test_the_plain_queue_drifts_off_the_grid_which_the_check_sees() -> None:
    """Clips without placements restart the window each clip (the old station): at 128 BPM, 0.5 s
    crossfade, each join lands 0.5 s early, a beat-grid error of 31 ms after the first join."""
    reference, _ = _kick_loop(128.0, bars=3)
    first = _placed_clips([reference], 0.0)[0]
    unplaced = [Clip(k, REQUEST, first.audio, RATE_HZ) for k in range(4)]  # every clip: the loop's start
    buffer = CrossfadeBuffer(channels=1, sample_rate_hz=RATE_HZ, crossfade_seconds=0.5)
    for clip in unplaced:
        buffer.push(clip)
    onsets = kick_onsets_seconds(_read(buffer, 12.0, 0.5), RATE_HZ)
    assert np.abs(grid_deviations_seconds(onsets, _beat_seconds(reference))).max() > 0.02


def test_an_underrun_repeats_on_the_grid_and_a_late_clip_cuts_in_on_it() -> None:
    reference, _ = _kick_loop(174.0, bars=1)  # 1.38 s loop: the fallback repeats whole loops
    clips = _placed_clips([reference] * 8, 0.5)
    buffer = CrossfadeBuffer(channels=1, sample_rate_hz=RATE_HZ, crossfade_seconds=0.5)
    buffer.push(clips[0])
    parts = [_read(buffer, 13.0, 0.5)]  # clip 1 is 8 s late: fallback
    assert buffer.underruns == 1 and buffer.in_fallback
    buffer.push(clips[1])  # its place began 8.4 s ago: it starts a whole number of bars later
    parts.append(_read(buffer, 2.0, 0.5))
    assert not buffer.in_fallback and buffer.playing is clips[1]
    for clip in clips[2:]:
        buffer.push(clip)
    parts.append(_read(buffer, 20.0, 0.5))
    audio = np.concatenate(parts)
    onsets = kick_onsets_seconds(audio, RATE_HZ)
    beat = _beat_seconds(reference)
    assert len(onsets) >= int(audio.size / RATE_HZ / beat) - 1
    assert np.abs(grid_deviations_seconds(onsets, beat)).max() <= ON_GRID_SECONDS


def test_a_tempo_change_starts_the_new_grid_on_a_bar_line() -> None:
    old, _ = _kick_loop(128.0, bars=3)
    new, _ = _kick_loop(99.5, bars=1)
    clips = _placed_clips([old] * 5 + [new] * 6, 0.5)
    buffer = CrossfadeBuffer(channels=1, sample_rate_hz=RATE_HZ, crossfade_seconds=0.5)
    for clip in clips:
        buffer.push(clip)
    audio = _read(buffer, 10 * clips[0].placement.hop_samples / RATE_HZ, 0.5)  # type: ignore[union-attr]
    onsets = kick_onsets_seconds(audio, RATE_HZ)
    change = clips[5].placement  # type: ignore[union-attr]
    assert change is not None
    origin = change.grid.origin_samples / RATE_HZ
    assert origin == pytest.approx(round(13 * 248_062 / 3) / RATE_HZ)  # bar 13 of the 128 BPM grid
    assert change.start_samples / RATE_HZ > origin - 248_062 / 3 / RATE_HZ  # the first after the clip start
    before = onsets[onsets < change.start_samples / RATE_HZ]
    after = onsets[onsets > origin - 0.01]
    assert np.abs(grid_deviations_seconds(before, _beat_seconds(old))).max() <= ON_GRID_SECONDS
    assert np.abs(grid_deviations_seconds(after, _beat_seconds(new), origin)).max() <= ON_GRID_SECONDS
    assert len(after) >= 10
