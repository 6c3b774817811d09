"""Loudness: clips meet −14 LUFS whatever their level, gain glides, true peak stays under −1 dBTP."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from riffradio.station.loudness import (
    LiveGain,
    MAX_GAIN_DB,
    MAX_LIMITER_MAKEUP_DB,
    TruePeakLimiter,
    db_to_gain,
    integrated_loudness_lufs,
    normalise_clip,
)

RATE = 44100


def _music_like(seconds: float, level: float, seed: int) -> np.ndarray:
    """Band-limited noise bursts: loudness varies inside the clip, like a beat."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    noise = rng.normal(0, 1, (2, frames))
    envelope = 0.3 + 0.7 * (np.sin(2 * np.pi * 2 * np.arange(frames) / RATE) > 0)
    return (level * noise * envelope).astype(np.float32)


def _independent_true_peak_db(audio: np.ndarray) -> float:
    """True peak by 16× oversampling (finer than the limiter's own 8× estimate)."""
    upsampled = resample_poly(audio.astype(np.float64), 16, 1, axis=-1)
    return float(20 * np.log10(np.abs(upsampled).max()))


def test_clips_at_any_level_reach_the_target() -> None:
    meter = pyloudnorm.Meter(RATE)
    previous = None
    for seed, level in enumerate([0.02, 0.3, 0.05, 0.1]):
        audio = _music_like(5.12, level, seed)
        result = normalise_clip(audio, RATE, -14.0, previous, ramp_seconds=0.0)
        assert meter.integrated_loudness(result.audio.T.astype(np.float64)) == pytest.approx(-14.0, abs=0.3)
        previous = result.gain_db
    assert integrated_loudness_lufs(np.zeros((2, RATE), np.float32), RATE) == -np.inf
    # near-silence is not lifted into loud noise
    assert normalise_clip(_music_like(5.12, 0.0005, 9), RATE, -14.0).gain_db == MAX_GAIN_DB


def test_gain_glides_from_the_previous_clip() -> None:
    audio = np.full((1, RATE * 2), 0.1, dtype=np.float32)
    full_gain_db = normalise_clip(audio, RATE, -14.0).gain_db
    result = normalise_clip(audio, RATE, -14.0, previous_gain_db=full_gain_db - 12.0, ramp_seconds=1.0)
    gains = result.audio[0] / 0.1
    steps_db = np.abs(np.diff(20 * np.log10(gains)))
    assert steps_db.max() < 0.001  # 12 dB spread over 44100 frames
    assert gains[0] == pytest.approx(db_to_gain(result.gain_db - 12.0), rel=1e-3)
    assert gains[-1] == pytest.approx(db_to_gain(result.gain_db), rel=1e-4)


def test_silence_keeps_the_previous_gain() -> None:
    result = normalise_clip(np.zeros((2, RATE), np.float32), RATE, -14.0, previous_gain_db=3.0)
    assert result.gain_db == 3.0 and not result.audio.any()


def test_limiter_keeps_true_peak_under_the_ceiling() -> None:
    # a sine at a quarter of the rate, 45° off the samples: its true peak is 3 dB above its samples
    t = np.arange(RATE * 2)
    tone = np.sin(2 * np.pi * t / 4 + np.pi / 4) * 1.5
    loud = np.stack([tone, _music_like(2.0, 0.8, 3)[0]]).astype(np.float32)
    limiter = TruePeakLimiter(2, RATE, ceiling_dbtp=-1.0)
    out = np.concatenate([limiter.process(loud[:, i : i + 2048], RATE) for i in range(0, loud.shape[1], 2048)], axis=1)
    assert _independent_true_peak_db(loud) > 3.0
    assert _independent_true_peak_db(out[:, 1000:]) <= -1.0 + 0.1


def test_limiter_passes_quiet_audio_unchanged_and_block_size_does_not_matter() -> None:
    quiet = _music_like(1.0, 0.05, 4)
    limiter = TruePeakLimiter(2, RATE, lookahead_frames=64, future_frames=16)
    out = np.concatenate([limiter.process(quiet[:, i : i + 1000], RATE) for i in range(0, quiet.shape[1], 1000)], axis=1)
    np.testing.assert_allclose(out[:, 80:], quiet[:, :-80], atol=1e-7)  # only delayed by the look-ahead

    loud = _music_like(1.0, 1.0, 5)
    a = TruePeakLimiter(2, RATE)
    b = TruePeakLimiter(2, RATE)
    out_a = np.concatenate([a.process(loud[:, i : i + 4096], RATE) for i in range(0, loud.shape[1], 4096)], axis=1)
    out_b = np.concatenate([b.process(loud[:, i : i + 333], RATE) for i in range(0, loud.shape[1], 333)], axis=1)
    # block edges change the 4x estimate a little at the edges only; the gain is continuous
    assert np.abs(out_a - out_b).max() < 0.05


def _peaky(seconds: float, seed: int, level: float = 0.05, clicks: int = 40) -> np.ndarray:
    """Noise with sparse loud clicks: peaks ~20 dB over the loudness, like vocoded clips."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, level, (1, int(seconds * RATE)))
    clicks = rng.choice(audio.shape[1], clicks, replace=False)
    audio[0, clicks] = rng.choice([-0.9, 0.9], clicks.size)
    return np.repeat(audio, 2, axis=0).astype(np.float32)  # a mono clip as played in stereo


def _limited(audio: np.ndarray, ceiling_dbtp: float = -1.0) -> np.ndarray:
    """``audio`` through the station's limiter in 2048-frame blocks, the delay taken off."""
    limiter = TruePeakLimiter(audio.shape[0], RATE, ceiling_dbtp)
    delay = limiter.lookahead + limiter.future
    padded = np.concatenate([audio, np.zeros((audio.shape[0], delay), np.float32)], axis=1)
    out = np.concatenate([limiter.process(padded[:, i : i + 2048], RATE) for i in range(0, padded.shape[1], 2048)], axis=1)
    return out[:, delay:]


def test_the_gain_is_chosen_for_the_clip_as_the_limiter_plays_it() -> None:
    meter = pyloudnorm.Meter(RATE)
    audio = _peaky(5.12, 6)
    plain = normalise_clip(audio, RATE, -14.0)
    aware = normalise_clip(audio, RATE, -14.0, ceiling_dbtp=-1.0)
    plain_played = meter.integrated_loudness(_limited(plain.audio).T.astype(np.float64))
    aware_played = meter.integrated_loudness(_limited(aware.audio).T.astype(np.float64))
    assert plain_played < -15.0  # the limiter takes the clicks' loudness off: the target is missed
    assert aware_played == pytest.approx(-14.0, abs=0.3)
    assert aware.gain_db > plain.gain_db and aware.loudness_lufs == plain.loudness_lufs
    assert _independent_true_peak_db(_limited(aware.audio)) <= -1.0 + 0.1
    # where the clicks are the loudness, limiting is bounded: at most MAX_LIMITER_MAKEUP_DB more gain
    clicky = _peaky(5.12, 6, level=0.02, clicks=200)
    capped = normalise_clip(clicky, RATE, -14.0, ceiling_dbtp=-1.0).gain_db
    assert capped == pytest.approx(normalise_clip(clicky, RATE, -14.0).gain_db + MAX_LIMITER_MAKEUP_DB)
    # a clip the limiter leaves alone gets the plain gain, and silence still keeps the old one
    quiet = _music_like(5.12, 0.05, 7)
    assert normalise_clip(quiet, RATE, -20.0, ceiling_dbtp=-1.0).gain_db == normalise_clip(quiet, RATE, -20.0).gain_db
    silent = normalise_clip(np.zeros((2, RATE), np.float32), RATE, -14.0, previous_gain_db=3.0, ceiling_dbtp=-1.0)
    assert silent.gain_db == 3.0


def test_the_limiter_release_is_the_attack_release_recursion() -> None:
    """The vectorised release against the per-sample recursion it replaces, across blocks."""
    rng = np.random.default_rng(8)
    targets = np.ones(100_000)
    hits = rng.choice(targets.size, 300, replace=False)
    targets[hits] = rng.uniform(0.2, 1.0, hits.size)
    limiter = TruePeakLimiter(2, RATE, release_seconds=0.05)
    vectorised = np.concatenate([limiter._apply_release(targets[i : i + 3000]) for i in range(0, targets.size, 3000)])
    expected, gain = np.empty_like(targets), 1.0
    release = 1.0 - np.exp(-1.0 / (0.05 * RATE))
    for index, target in enumerate(targets):
        gain = min(target, gain + (1.0 - gain) * release)
        expected[index] = gain
    np.testing.assert_allclose(vectorised, expected, atol=1e-12)
    assert limiter.gain == pytest.approx(gain, abs=1e-12)


def test_the_output_stages_share_pedalboards_shape_and_the_volume_glides() -> None:
    """The live volume and the limiter are ``process(audio, sample_rate_hz)`` stages; a volume
    change glides across the next block (no step), then holds; the limiter refuses another rate."""
    ones = np.ones((2, 1000), np.float32)
    volume = LiveGain(1.0)
    assert np.array_equal(volume.process(ones, RATE), ones)
    volume.gain = 0.5
    glide = volume.process(ones, RATE)
    assert glide[0, 0] == 1.0 and np.all(np.diff(glide[0]) < 0) and glide[0, -1] > 0.5
    assert np.max(np.abs(np.diff(glide[0]))) <= 0.5 / 1000 + 1e-6  # no step: 1/1000 of the change per frame
    assert np.array_equal(volume.process(ones, RATE), ones * 0.5)
    limiter = TruePeakLimiter(2, RATE)
    with pytest.raises(ValueError, match="48000 Hz"):
        limiter.process(ones, 48_000)
