"""Loudness across clips: BS.1770 normalisation with smoothed gain, and a true-peak limiter.

Riffusion peak-normalises every clip on its own, so its loudness jumps from clip to clip. Here each
clip is measured (pyloudnorm, ITU-R BS.1770 integrated loudness) and brought to a target (−14 LUFS
by default, what streaming services play at); the gain glides from the previous clip's gain to the
new one over ``ramp_seconds`` so it never steps. The station's output then goes through a
look-ahead limiter that keeps the true peak under −1 dBTP. It measures with 8× oversampling rather
than the 4× of BS.1770 annex 2, which under-reads broadband material by up to ~0.5 dB.

What is measured is what is played: the clip in the output's channel layout (a mono clip copied
to two channels is 3 dB louder, BS.1770 sums channel powers) and after the limiter. Vocoded clips
have peaks 16–23 dB above their loudness, more than the 13 dB that −14 LUFS under −1 dBTP leaves,
so the limiter takes up to 2.5 LU off a clip normalised without it. Given the ceiling,
:func:`normalise_clip` searches the gain at which the clip *after the limiter* meets the target
(at most ``MAX_LIMITER_MAKEUP_DB`` more than the plain normalising gain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DEFAULT_TARGET_LUFS = -14.0
DEFAULT_CEILING_DBTP = -1.0
SILENCE_LUFS = -70.0  # BS.1770's absolute gate: below this a clip is "silent" and keeps the old gain
MAX_GAIN_DB = 24.0  # never lift near-silence into loud noise
MAX_LIMITER_MAKEUP_DB = 6.0  # gain beyond the plain normalising gain to win back what the limiter takes
LIMITED_TOLERANCE_LU = 0.1  # the limiter-aware gain search stops this close to the target


class AudioProcessor(Protocol):
    """One stage of the output chain, in pedalboard's shape: ``process(audio, sample_rate_hz)``.

    ``audio`` is float32 ``(channels, frames)``; the result has the same shape. A processor keeps
    its state from one call to the next, so a stream may be fed to it block by block.
    """

    def process(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray: ...


class LiveGain:
    """The live volume: a linear gain, ramped across each block from the last one applied.

    Set :attr:`gain` (× linear, e.g. the DJ's volume fader) at any time; the next
    :meth:`process` glides from the gain it applied last to the new one over that block, so a
    fader never clicks.
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)
        self._applied = float(gain)

    def process(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """``audio`` (channels, frames) times the ramped gain; ``sample_rate_hz`` is not needed."""
        frames = audio.shape[-1]
        if self._applied == self.gain:
            ramp = np.full(frames, self.gain, dtype=np.float32)
        else:
            ramp = np.linspace(self._applied, self.gain, frames, endpoint=False, dtype=np.float32)
        self._applied = self.gain
        return (np.asarray(audio, dtype=np.float32) * ramp[None, :]).astype(np.float32)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return float(20.0 * math.log10(max(gain, 1e-12)))


def integrated_loudness_lufs(audio: np.ndarray, sample_rate_hz: int) -> float:
    """BS.1770 integrated loudness of ``audio`` (channels, samples); ``-inf`` for silence."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate_hz)
    data = np.asarray(audio, dtype=np.float64).T  # pyloudnorm wants (samples, channels)
    if data.shape[0] < int(0.4 * sample_rate_hz):  # shorter than one gating block
        data = np.concatenate([data, np.zeros((int(0.4 * sample_rate_hz) - data.shape[0], data.shape[1]))])
    return float(meter.integrated_loudness(data))


def normalising_gain_db(
    loudness_lufs: float, target_lufs: float = DEFAULT_TARGET_LUFS, previous_gain_db: float | None = None
) -> float:
    """Gain that brings a clip measured at ``loudness_lufs`` to ``target_lufs`` (capped, gated)."""
    if not math.isfinite(loudness_lufs) or loudness_lufs < SILENCE_LUFS:
        return previous_gain_db if previous_gain_db is not None else 0.0
    return float(min(MAX_GAIN_DB, target_lufs - loudness_lufs))


def gain_ramp(
    frames: int, start_gain_db: float, end_gain_db: float, ramp_frames: int, hold_frames: int = 0
) -> np.ndarray:
    """Linear gains (frames,): ``start`` for ``hold_frames``, gliding in dB to ``end`` over ``ramp_frames``, then flat."""
    hold_frames = max(0, min(hold_frames, frames))
    ramp_frames = max(0, min(ramp_frames, frames - hold_frames))
    gains_db = np.full(frames, end_gain_db, dtype=np.float64)
    gains_db[:hold_frames] = start_gain_db
    if ramp_frames:
        gains_db[hold_frames : hold_frames + ramp_frames] = np.linspace(start_gain_db, end_gain_db, ramp_frames, endpoint=False)
    return (10.0 ** (gains_db / 20.0)).astype(np.float32)


MAX_OVERLAP_MATCH_DB = 10.0  # a level match beyond this is a different sound, not a level step


def overlap_match_db(previous_tail: np.ndarray, head: np.ndarray, limit_db: float = MAX_OVERLAP_MATCH_DB) -> float:
    """dB that bring ``head`` to the level of ``previous_tail`` (pure).

    Both are the overlap of two consecutive clips before their loudness gains, ``(channels,
    samples)`` or ``(samples,)``: the previous clip's last samples and the new clip's first. The
    vocoder peak-normalises every clip, so two renderings of one overlap (a continuation's kept
    columns, the same seed window) come out at levels that differ by the ratio of the clips'
    peaks: a step at every join unless the new clip starts at the previous clip's gain plus
    this. ``20·log10(rms(previous_tail) / rms(head))``, within ±``limit_db``; 0 when either is
    silent (below −70 dBFS RMS).
    """
    previous_rms = float(np.sqrt(np.mean(np.square(np.asarray(previous_tail, dtype=np.float64))))) if np.size(previous_tail) else 0.0
    head_rms = float(np.sqrt(np.mean(np.square(np.asarray(head, dtype=np.float64))))) if np.size(head) else 0.0
    silent = db_to_gain(SILENCE_LUFS)
    if previous_rms < silent or head_rms < silent:
        return 0.0
    return float(np.clip(gain_to_db(previous_rms / head_rms), -limit_db, limit_db))


@dataclass(frozen=True)
class NormalisedClip:
    """Result of :func:`normalise_clip`."""

    audio: np.ndarray
    loudness_lufs: float
    gain_db: float


def normalise_clip(
    audio: np.ndarray,
    sample_rate_hz: int,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    previous_gain_db: float | None = None,
    ramp_seconds: float = 1.0,
    ceiling_dbtp: float | None = None,
    start_gain_db: float | None = None,
    hold_frames: int = 0,
) -> NormalisedClip:
    """Bring one clip to ``target_lufs``; the gain glides from where it starts over ``ramp_seconds``.

    Args:
        audio: float32 (channels, samples), in the channel layout that is played.
        sample_rate_hz: its sample rate.
        target_lufs: integrated loudness to reach.
        previous_gain_db: the gain the clip before got (None for the first clip: no glide).
        ramp_seconds: how long the glide from the old gain to the new one lasts.
        ceiling_dbtp: the true-peak ceiling of the :class:`TruePeakLimiter` the clip is played
            through; given, the gain is the one at which the *limited* clip meets the target.
            None: the clip's own loudness is brought to the target (the limiter may take some off).
        start_gain_db: the gain the clip starts at (default ``previous_gain_db``): the previous
            clip's gain plus :func:`overlap_match_db` makes a join level.
        hold_frames: frames the start gain holds before the glide (the overlap, so that both
            clips of a crossfade play at one level).
    """
    loudness = integrated_loudness_lufs(audio, sample_rate_hz)
    gain_db = normalising_gain_db(loudness, target_lufs, previous_gain_db)
    if ceiling_dbtp is not None and math.isfinite(loudness) and loudness >= SILENCE_LUFS:
        gain_db = limiter_aware_gain_db(audio, sample_rate_hz, target_lufs, gain_db, ceiling_dbtp)
    start_db = start_gain_db if start_gain_db is not None else gain_db if previous_gain_db is None else previous_gain_db
    gains = gain_ramp(audio.shape[-1], start_db, gain_db, int(ramp_seconds * sample_rate_hz), hold_frames)
    return NormalisedClip((audio * gains[None, :]).astype(np.float32), loudness, gain_db)


def limited_loudness_lufs(
    audio: np.ndarray, sample_rate_hz: int, gain_db: float, ceiling_dbtp: float, peaks: np.ndarray | None = None
) -> float:
    """Integrated loudness of ``audio`` (channels, samples) at ``gain_db`` after a fresh :class:`TruePeakLimiter`.

    ``peaks``: :func:`true_peak_per_frame` of ``audio`` at the limiter's oversampling (computed if
    None); they scale with the gain, so a gain search measures them once.
    """
    limiter = TruePeakLimiter(audio.shape[0], sample_rate_hz, ceiling_dbtp)
    if peaks is None:
        peaks = true_peak_per_frame(audio, limiter.oversample)
    gain = db_to_gain(gain_db)
    required = np.minimum(1.0, limiter.ceiling / np.maximum(gain * peaks, 1e-12))
    # the limiter's gains come `lookahead` frames late: flush it with frames that need nothing
    gains = limiter.gains_for(np.concatenate([required, np.ones(limiter.lookahead)]))[limiter.lookahead :]
    return integrated_loudness_lufs(audio * (gain * gains)[None, :].astype(np.float32), sample_rate_hz)


def limiter_aware_gain_db(
    audio: np.ndarray, sample_rate_hz: int, target_lufs: float, gain_db: float, ceiling_dbtp: float
) -> float:
    """The gain (dB) at which ``audio`` played through the limiter measures ``target_lufs``.

    Starts from ``gain_db`` (the plain normalising gain) and, if the limiter takes loudness off
    there, searches upwards by the secant method (loudness after the limiter rises with the gain,
    ever more slowly), capped at ``gain_db + MAX_LIMITER_MAKEUP_DB`` and ``MAX_GAIN_DB``.
    """
    limiter_oversample = TruePeakLimiter(1, sample_rate_hz).oversample
    peaks = true_peak_per_frame(audio, limiter_oversample)
    if db_to_gain(gain_db) * float(peaks.max()) <= db_to_gain(ceiling_dbtp - 0.05):
        return gain_db  # the limiter will not touch it
    cap_db = min(MAX_GAIN_DB, gain_db + MAX_LIMITER_MAKEUP_DB)
    tried_db, tried_lufs = gain_db, limited_loudness_lufs(audio, sample_rate_hz, gain_db, ceiling_dbtp, peaks)
    candidate_db, slope = gain_db, 1.0
    for _ in range(5):
        shortfall = target_lufs - tried_lufs
        if abs(shortfall) <= LIMITED_TOLERANCE_LU or (shortfall > 0 and tried_db >= cap_db):
            break
        candidate_db = min(cap_db, tried_db + shortfall / slope)
        lufs = limited_loudness_lufs(audio, sample_rate_hz, candidate_db, ceiling_dbtp, peaks)
        if candidate_db != tried_db:
            # the slope is between 0 (all limited) and 1 (nothing limited); keep the step finite
            slope = min(1.0, max(0.05, (lufs - tried_lufs) / (candidate_db - tried_db)))
        tried_db, tried_lufs = candidate_db, lufs
    return float(tried_db)


def true_peak_per_frame(audio: np.ndarray, oversample: int = 4) -> np.ndarray:
    """Absolute true-peak estimate of each frame (max over channels and ``oversample`` phases)."""
    from scipy.signal import resample_poly

    if audio.shape[-1] == 0:
        return np.zeros(0, dtype=np.float32)
    upsampled = resample_poly(audio, oversample, 1, axis=-1)
    frames = audio.shape[-1]
    peaks = np.abs(upsampled[:, : frames * oversample]).reshape(audio.shape[0], frames, oversample)
    return np.maximum(peaks.max(axis=(0, 2)), np.abs(audio).max(axis=0)).astype(np.float32)


def true_peak_dbtp(audio: np.ndarray, oversample: int = 4) -> float:
    """True peak of ``audio`` in dBTP."""
    peaks = true_peak_per_frame(audio, oversample)
    return gain_to_db(float(peaks.max())) if peaks.size else -math.inf


class TruePeakLimiter:
    """Look-ahead limiter keeping the true peak under ``ceiling_dbtp``; delays audio by ``lookahead + future`` frames.

    The gain needed by each frame is spread backwards over the look-ahead (a running minimum then a
    moving average), so it is already down when a peak arrives and never steps; it recovers with an
    exponential release. State carries across blocks, so block boundaries are seamless.
    """

    def __init__(
        self,
        channels: int,
        sample_rate_hz: int,
        ceiling_dbtp: float = DEFAULT_CEILING_DBTP,
        lookahead_frames: int = 64,
        release_seconds: float = 0.15,
        context_frames: int = 16,
        future_frames: int = 16,
        oversample: int = 8,
    ) -> None:
        # A little under the ceiling: the 8× estimate can miss a few hundredths of a dB.
        self.ceiling = db_to_gain(ceiling_dbtp - 0.05)
        self.sample_rate_hz = sample_rate_hz
        self.lookahead = lookahead_frames
        self.release = 1.0 - math.exp(-1.0 / (release_seconds * sample_rate_hz))
        self.context = context_frames
        self.future = future_frames
        self.oversample = oversample
        self._pending = np.zeros((channels, lookahead_frames), dtype=np.float32)
        self._pending_required = np.ones(lookahead_frames, dtype=np.float32)
        self._history = np.ones(lookahead_frames - 1, dtype=np.float32)
        # input not yet measured: context before it and `future_frames` after each measured frame
        self._raw = np.zeros((channels, context_frames + future_frames), dtype=np.float32)
        self._gain = 1.0

    @property
    def gain(self) -> float:
        """The gain applied to the last frame (1.0 = not limiting)."""
        return self._gain

    def process(self, audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        """Limit one block (channels, frames); returns as many frames, ``lookahead + future`` frames late.

        Raises:
            ValueError: ``sample_rate_hz`` is not the rate the limiter was made for (its release
                and look-ahead are in frames of that rate).
        """
        if sample_rate_hz != self.sample_rate_hz:
            raise ValueError(f"TruePeakLimiter made for {self.sample_rate_hz} Hz got {sample_rate_hz} Hz audio")
        block = np.asarray(audio, dtype=np.float32)
        frames = block.shape[-1]
        if frames == 0:
            return block.copy()
        # Measure only frames with `future` frames after them: the oversampling filter needs both sides.
        raw = np.concatenate([self._raw, block], axis=1)
        peaks = true_peak_per_frame(raw, self.oversample)[self.context : self.context + frames]
        block = raw[:, self.context : self.context + frames]
        self._raw = raw[:, -(self.context + self.future) :]
        required = np.minimum(1.0, self.ceiling / np.maximum(peaks, 1e-12)).astype(np.float32)
        signal = np.concatenate([self._pending, block], axis=1)
        gains = self.gains_for(required)
        self._pending = signal[:, frames:]
        return (signal[:, :frames] * gains[None, :].astype(np.float32)).astype(np.float32)

    def gains_for(self, required: np.ndarray) -> np.ndarray:
        """Gains (frames,) of the frames leaving the look-ahead, given what each arriving frame needs.

        ``required`` (frames,): the largest gain each new frame may be played at (``ceiling /
        true peak``, at most 1). The gains returned are for the frames ``lookahead`` frames
        earlier (the delay). Advances the limiter's state, as :meth:`process` does.
        """
        from scipy.ndimage import minimum_filter1d

        frames = required.shape[-1]
        lookahead = self.lookahead
        needed = np.concatenate([self._pending_required, np.asarray(required, dtype=np.float32)])
        # Frame k may be played at most at the smallest gain any of the next `lookahead` frames
        # needs (a centred filter of that width, read `lookahead // 2` frames on)...
        window_min = minimum_filter1d(needed, lookahead)[lookahead // 2 : lookahead // 2 + frames]
        # ...and the average over the look-ahead makes that a ramp instead of a step.
        smoothed_input = np.concatenate([self._history, window_min])
        sums = np.concatenate([[0.0], np.cumsum(smoothed_input, dtype=np.float64)])
        gains = (sums[lookahead : lookahead + frames] - sums[:frames]) / lookahead
        # float sums of ones are not always exactly one: below 1e-6 there is nothing to limit
        gains = np.where(gains > 1.0 - 1e-6, 1.0, gains)
        gains = self._apply_release(gains.astype(np.float64))
        self._pending_required = needed[frames:]
        self._history = smoothed_input[-(self.lookahead - 1) :] if self.lookahead > 1 else self._history
        return gains

    def _apply_release(self, targets: np.ndarray) -> np.ndarray:
        """Instant attack to ``targets``, exponential recovery towards 1.

        The recursion ``g[n] = min(t[n], g[n-1] + (1 - g[n-1]) r)`` is, for the reduction
        ``d = 1 - g``, ``d[n] = max(1 - t[n], q d[n-1])`` with ``q = 1 - r``: a running maximum of
        ``(1 - t[k]) q^(n-k)``, computed in logs without a loop over samples.
        """
        if self._gain >= 1.0 and targets.min() >= 1.0:
            return targets
        # in chunks: q^-n must stay far from float64's range (q^-65536 is about e^10 at 0.15 s)
        return np.concatenate([self._release_chunk(targets[at : at + 65536]) for at in range(0, targets.shape[-1], 65536)])

    def _release_chunk(self, targets: np.ndarray) -> np.ndarray:
        log_q = math.log1p(-self.release)
        steps = np.arange(targets.shape[-1], dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_reduction = np.log(np.maximum(1.0 - targets, 0.0)) - steps * log_q
            start = math.log(1.0 - self._gain) + log_q if self._gain < 1.0 else -math.inf
        log_reduction = np.maximum(np.maximum.accumulate(log_reduction), start)
        gains = 1.0 - np.exp(log_reduction + steps * log_q)
        gains = np.minimum(gains, targets)  # exp/log rounding must never lift a gain above its target
        self._gain = float(gains[-1])
        return gains
