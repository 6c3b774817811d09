"""Phase-continuous joins without continuation: the producer hands the vocoder the previous clip's
phase over a crossfade-only overlap, on a real recording (the recording is the seed loop, so the
rehearsal engine's clips are its consecutive windows: a perfect model's)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from riffradio.engine.rehearsal import RehearsalEngine
from riffradio.metrics import StationMetrics
from riffradio.playlist import check_playlist_text
from riffradio.spectrogram.audio_io import write_audio
from riffradio.spectrogram.vocoder import Vocoder
from riffradio.station.buffer import CrossfadeBuffer, match_channels
from riffradio.station.loudness import normalise_clip
from riffradio.station.plan import plan_next
from riffradio.station.producer import Producer
from riffradio.station.state import StationState
from tests.music import music_excerpt

RATE_HZ = 44_100


def _producer(tmp_path: Path, crossfade_seconds: float) -> Producer:
    recording = tmp_path / "recording.wav"
    write_audio(recording, music_excerpt("music003.ogg", 60.0, duration_seconds=12.0), RATE_HZ)
    playlist, errors = check_playlist_text(
        f"station: {{model: none, crossfade_seconds: {crossfade_seconds}}}\n"
        f"riffs:\n  - {{prompt: recording, clips: 10, seed_image: '{recording}'}}\n",
        tmp_path / "joins.yaml",
    )
    assert playlist is not None, errors
    buffer = CrossfadeBuffer(2, RATE_HZ, crossfade_seconds)
    return Producer(playlist, StationState(1), RehearsalEngine("cpu"), Vocoder(), buffer, RATE_HZ, StationMetrics())


def _next_clip(producer: Producer, crossfade_seconds: float):  # noqa: ANN202 - a Clip
    planned, producer.position = plan_next(producer.playlist, producer.state.snapshot(), producer.position)
    overlap = producer.overlap_samples(crossfade_seconds, planned.request.continuation_seconds)
    clip, _ = producer.generate(producer.place(planned, overlap))
    return clip


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    producer = _producer(tmp_path_factory.mktemp("joins"), 0.5)
    first = _next_clip(producer, 0.5)
    second = _next_clip(producer, 0.5)
    return producer, first, second


def test_a_crossfade_only_overlap_continues_the_previous_clips_phase(joined) -> None:
    producer, first, second = joined
    overlap = first.placement.overlap_samples
    assert overlap == 22_050 and second.request.continuation_seconds == 0.0  # the 0.5 s crossfade only
    assert second.placement.start_samples == first.placement.next_start_samples
    # The same columns decoded on their own (the station before): a different phase, comb filtering.
    alone = match_channels(producer.vocoder.image_to_audio(second.image), 2)
    outgoing = first.audio[0, -overlap:]
    with_phase = float(np.corrcoef(outgoing, second.audio[0, :overlap])[0, 1])
    without = float(np.corrcoef(outgoing, alone[0, :overlap])[0, 1])
    assert with_phase > 0.95 and without < 0.7, (with_phase, without)


def test_the_first_clip_is_decoded_as_before_bit_for_bit(joined) -> None:
    producer, first, _ = joined
    audio = match_channels(producer.vocoder.image_to_audio(first.image), 2)
    expected = normalise_clip(audio, RATE_HZ, producer.loudness_lufs, None, ceiling_dbtp=producer.true_peak_dbtp)
    np.testing.assert_array_equal(first.audio, expected.audio)


def test_no_phase_start_without_the_previous_clip_right_before_or_whole_frames(joined) -> None:
    producer, first, _ = joined
    made = producer._made_before(first.placement)
    assert made is None  # nothing sits before the first clip
    previous = producer._made[first.index]
    assert producer._phase_start(previous)["overlap_frames"] == 50
    odd = replace(previous, placement=replace(previous.placement, overlap_samples=22_050 + 100))
    assert producer._phase_start(odd) == {}  # frames would not line up: decoded alone
    assert producer._phase_start(replace(previous, placement=replace(previous.placement, overlap_samples=0))) == {}


def test_any_crossfade_is_whole_frames_and_continues_the_phase(tmp_path: Path) -> None:
    """A crossfade that is not whole 10 ms columns (0.333 s) is rounded up to them for the overlap
    (the fade itself stays 0.333 s, inside it), so its frames line up and the phase continues."""
    producer = _producer(tmp_path, 0.333)
    first = _next_clip(producer, 0.333)
    second = _next_clip(producer, 0.333)
    overlap = first.placement.overlap_samples
    assert overlap == 34 * 441 >= round(0.333 * RATE_HZ)
    assert producer._phase_start(producer._made[first.index])["overlap_frames"] == 34
    correlation = float(np.corrcoef(first.audio[0, -overlap:], second.audio[0, :overlap])[0, 1])
    assert correlation > 0.95, correlation


def test_consecutive_clips_meet_at_one_level(joined) -> None:
    """The vocoder peak-normalises each clip, so one overlap comes out of two clips at different
    levels; the new clip starts at the previous clip's gain plus that difference and holds it
    over the overlap, so both sides of the crossfade play at one level."""
    from riffradio.station.loudness import overlap_match_db

    producer, first, second = joined
    overlap = first.placement.overlap_samples
    made = list(producer._made.values())
    step_db = overlap_match_db(made[0].vocoded.audio[..., -overlap:], made[1].vocoded.audio[..., :overlap])

    def level_db(audio: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(np.square(audio.astype(np.float64)))))

    played_db = level_db(second.audio[:, :overlap]) - level_db(first.audio[:, -overlap:])
    assert abs(step_db) > 0.25, step_db  # the peak normalisation left a step here (−0.68 dB) ...
    assert abs(played_db) <= 0.25, (step_db, played_db)  # ... which the start gain mends
