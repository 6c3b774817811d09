"""The crossfading ring buffer: sample-exact equal-power joins, cut-in, never-silent fallback."""

from __future__ import annotations

import numpy as np
import pytest

from riffradio.core.types import Clip, RiffRequest
from riffradio.station.buffer import CrossfadeBuffer, crossfade, crossfade_gains, fade_correlation

RATE = 44100


def _clip(index: int, audio: np.ndarray, version: int = 0) -> Clip:
    request = RiffRequest(f"prompt {index}", f"prompt {index}", index, index + 1)
    return Clip(index, request, audio.astype(np.float32), RATE, state_version=version)


def _sine(hz: float, seconds: float, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = amplitude * np.sin(2 * np.pi * hz * t + phase)
    return np.stack([wave, wave])


def _read_all(buffer: CrossfadeBuffer, frames: int, block: int = 1000) -> np.ndarray:
    parts = []
    while frames > 0:
        part, _ = buffer.read(min(block, frames))
        parts.append(part)
        frames -= part.shape[-1]
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("correlation", [0.0, 0.4, 1.0])
def test_crossfade_gains_keep_the_power_for_the_correlation(correlation: float) -> None:
    fade_out, fade_in = crossfade_gains(1000, correlation=correlation)
    # power of the mix of two equally loud signals with that correlation
    np.testing.assert_allclose(fade_out**2 + fade_in**2 + 2 * correlation * fade_out * fade_in, 1.0, atol=1e-6)
    np.testing.assert_allclose(fade_out, fade_in[::-1], atol=1e-6)
    # pieces of a fade are the same as the whole fade
    a_out, _ = crossfade_gains(1000, 0, 300, correlation)
    b_out, _ = crossfade_gains(1000, 300, 700, correlation)
    np.testing.assert_array_equal(np.concatenate([a_out, b_out]), fade_out)
    if correlation == 1.0:
        np.testing.assert_allclose(fade_out + fade_in, 1.0, atol=1e-6)  # equal gain


def test_a_join_of_two_renderings_of_the_same_audio_neither_swells_nor_dips() -> None:
    # A continued clip whose overlap decodes to the audio already played (phase continuity):
    # an equal-power fade would swell by 3 dB in its middle; the correlated fade stays level.
    rng = np.random.default_rng(4)
    audio = rng.normal(0, 0.1, (2, 4 * RATE)).astype(np.float32)
    first, second = audio[:, : 2 * RATE], audio[:, RATE:]  # one second shared
    assert fade_correlation(first[:, RATE:], second[:, :RATE]) == pytest.approx(1.0)
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=1.0)
    buffer.push(_clip(0, first))
    buffer.push(_clip(1, second))
    out = _read_all(buffer, int(2.5 * RATE))
    np.testing.assert_allclose(out, audio[:, : int(2.5 * RATE)], atol=1e-5)  # the same audio, seamless


def test_joins_are_sample_exact_crossfades() -> None:
    rng = np.random.default_rng(1)
    clips = [rng.uniform(-0.5, 0.5, (2, 10_000)).astype(np.float32) for _ in range(3)]
    fade = 1000
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=fade / RATE)
    for index, audio in enumerate(clips):
        buffer.push(_clip(index, audio))
    total = 3 * 10_000 - 3 * fade  # up to the last clip's own join (then the fallback begins)
    out = _read_all(buffer, total, block=777)
    expected = np.concatenate(
        [
            clips[0][:, : 10_000 - fade],
            crossfade(clips[0][:, -fade:], clips[1][:, :fade]),
            clips[1][:, fade : 10_000 - fade],
            crossfade(clips[1][:, -fade:], clips[2][:, :fade]),
            clips[2][:, fade:-fade],
        ],
        axis=1,
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("fade_seconds", [0.5, 0.05])
def test_crossfades_leave_no_discontinuity(fade_seconds: float) -> None:
    # phases chosen so a hard cut would jump by about the full amplitude
    clips = [_sine(110, 2.0, phase=0.0), _sine(110, 2.0, phase=np.pi), _sine(165, 2.0, phase=np.pi / 2)]
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=fade_seconds)
    for index, audio in enumerate(clips):
        buffer.push(_clip(index, audio))
    out = _read_all(buffer, int(5.0 * RATE))
    within_clip = max(np.abs(np.diff(c[0])).max() for c in clips)
    assert np.abs(np.diff(out[0])).max() <= 1.5 * within_clip

    hard = CrossfadeBuffer(2, RATE, crossfade_seconds=0.0)  # the test can fail: a hard cut jumps
    for index, audio in enumerate(clips):
        hard.push(_clip(index, audio))
    assert np.abs(np.diff(_read_all(hard, int(5.0 * RATE))[0])).max() > 10 * within_clip


def test_equal_power_keeps_loudness_through_a_join_of_uncorrelated_clips() -> None:
    rng = np.random.default_rng(2)
    clips = [rng.normal(0, 0.1, (2, RATE)).astype(np.float32) for _ in range(2)]
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.5)
    for index, audio in enumerate(clips):
        buffer.push(_clip(index, audio))
    out = _read_all(buffer, int(1.5 * RATE))
    fade_region = out[:, int(0.5 * RATE) : RATE]
    assert np.sqrt(np.mean(fade_region**2)) == pytest.approx(0.1, rel=0.08)


def test_an_underrun_repeats_the_clip_never_silent_and_counts_once() -> None:
    underruns: list[int] = []
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.25, on_underrun=underruns.append)
    buffer.push(_clip(0, _sine(220, 2.0)))
    out = _read_all(buffer, int(7.0 * RATE), block=2048)
    windows = out[0, : (out.shape[1] // 2205) * 2205].reshape(-1, 2205)  # 50 ms windows
    assert np.sqrt((windows**2).mean(axis=1)).min() > 0.1
    assert underruns == [0] and buffer.underruns == 1  # one episode, however long
    assert buffer.in_fallback and buffer.fallback_frames > 4 * RATE
    assert buffer.now_playing() is not None and buffer.now_playing().fallback  # type: ignore[union-attr]
    # the next clip cuts in at once instead of waiting for the fallback loop to end
    buffer.push(_clip(1, _sine(330, 2.0)))
    _read_all(buffer, int(0.3 * RATE))
    now = buffer.now_playing()
    assert now is not None and now.clip_index == 1 and not now.fallback
    # and a later underrun is a new episode
    _read_all(buffer, int(2.5 * RATE))
    assert buffer.underruns == 2 and underruns == [0, 1]


def test_a_clip_of_a_newer_state_cuts_in_and_replaces_older_queued_clips() -> None:
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.2)
    buffer.push(_clip(0, _sine(220, 5.0), version=0))
    assert buffer.push(_clip(1, _sine(220, 5.0), version=0)) == []
    _read_all(buffer, RATE)  # one second into clip 0
    dropped = buffer.push(_clip(2, _sine(440, 5.0), version=1))
    assert [clip.index for clip in dropped] == [1]
    # a clip older than what is queued is itself dropped
    stale = _clip(3, _sine(220, 5.0), version=0)
    assert buffer.push(stale) == [stale]
    _read_all(buffer, int(0.15 * RATE))
    now = buffer.now_playing()
    assert now is not None and now.clip_index == 2  # heard 0.1 s after the crossfade began, not 4 s later
    assert now.offset_seconds == pytest.approx(0.15, abs=0.01)


def test_seconds_ahead_and_frames_until_join() -> None:
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.5)
    assert buffer.seconds_ahead() == 0.0 and buffer.frames_until_join() == 0
    buffer.push(_clip(0, _sine(220, 5.0)))
    buffer.push(_clip(1, _sine(220, 5.0)))
    assert buffer.seconds_ahead() == pytest.approx(9.0, abs=0.01)
    _read_all(buffer, RATE)
    assert buffer.pending_clips == 1
    assert buffer.frames_until_join() == int(3.5 * RATE)
    assert buffer.seconds_ahead() == pytest.approx(8.5, abs=0.01)


def test_mono_clips_are_spread_to_the_station_channels() -> None:
    buffer = CrossfadeBuffer(2, RATE, crossfade_seconds=0.1)
    buffer.push(_clip(0, _sine(220, 1.0)[:1]))
    out, now = buffer.read(1000)
    assert out.shape == (2, 1000) and now is not None
    np.testing.assert_array_equal(out[0], out[1])
