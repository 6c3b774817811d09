"""The crossfading buffer between the producer (clips) and the consumer (fixed blocks).

Clips queue up in order. Each join is a constant-power crossfade, sample-exact. Its gains
follow the two clips' correlation there (:func:`crossfade_gains`): equal power (``cos``/``sin``)
for unrelated clips, gains summing to one for two renderings of the same audio (a continued
clip's phase-continuous overlap), so neither dips nor swells. A clip with a
:class:`~riffradio.core.timeline.Placement` plays where it belongs on the station's one
timeline: the buffer counts timeline samples as it reads, and the next clip starts at its
``start_samples`` (plus the station's ``shift``, the lag left by underruns, a whole number of
loops, bars or beats), the crossfade running from there over the overlap — so no crossfade ever
moves the beat grid. A clip without one is played as a plain queue: the last N frames of one
clip overlap the first N frames of the next. Two rules keep it live and never silent:

* **cut in** — a placed clip whose place has already begun (it came late: a DJ's change, or the
  end of an underrun) starts at once, from where the timeline is in it
  (:func:`~riffradio.core.timeline.late_start_offset_samples`); an unplaced clip of a newer
  station-state version than the one playing starts its crossfade at once;
* **fallback** — when a join comes and no clip is ready, the playing clip crossfades back into
  itself by whole loops, bars or beats (:func:`~riffradio.core.timeline.repeat_back_samples`;
  an unplaced clip: into its own beginning), the underrun is counted (once per episode) and the
  next clip that arrives cuts in.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.core.timeline import late_start_offset_samples, repeat_back_samples
from riffradio.core.types import Clip, NowPlaying


def crossfade_gains(
    fade_frames: int, start_frame: int = 0, frames: int | None = None, correlation: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gains (outgoing, incoming) of frames ``start_frame ...`` of a constant-power fade of ``fade_frames``.

    ``cos``/``sin`` of a quarter turn, sampled at frame centres, divided by
    ``sqrt(1 + r·sin 2θ)``: the power of the mix of two equally loud signals with correlation
    ``r`` (clipped to [0, 1]) stays constant. ``r = 0`` is the equal-power fade
    (``out² + in² == 1``) for unrelated clips; ``r = 1`` sums the gains to 1, so two renderings
    of the same audio (a continued clip's overlap) fade without the 3 dB swell an equal-power
    fade gives them. The two halves mirror, and pieces of a fade equal the whole.
    """
    frames = fade_frames - start_frame if frames is None else frames
    position = (start_frame + np.arange(frames, dtype=np.float64) + 0.5) / max(fade_frames, 1)
    angle = position * (math.pi / 2)
    norm = 1.0 / np.sqrt(1.0 + min(max(correlation, 0.0), 1.0) * np.sin(2 * angle))
    return (np.cos(angle) * norm).astype(np.float32), (np.sin(angle) * norm).astype(np.float32)


def fade_correlation(outgoing: np.ndarray, incoming: np.ndarray) -> float:
    """Correlation of two equally long ``(channels, frames)`` fade parts, over all channels, in [0, 1].

    Normalised inner product (audio is zero-mean), negative values as 0: what
    :func:`crossfade_gains` needs to keep the mix's power.
    """
    energy = float(np.sum(outgoing.astype(np.float64) ** 2) * np.sum(incoming.astype(np.float64) ** 2))
    if energy <= 0.0:
        return 0.0
    return min(max(float(np.sum(outgoing.astype(np.float64) * incoming)) / math.sqrt(energy), 0.0), 1.0)


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``audio`` (channels', frames) or (frames,) as float32 (channels, frames): the layout that is played.

    Same count: unchanged. Otherwise the channels are averaged and the average copied to each
    output channel (a mono clip plays at full level in both speakers). Loudness is measured after
    this, on what is heard: two copies of a channel are 3 dB louder (BS.1770 sums channel powers).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.shape[0] == channels:
        return audio
    return np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)


def crossfade(outgoing: np.ndarray, incoming: np.ndarray) -> np.ndarray:
    """Constant-power crossfade of two equally long (channels, frames) arrays, for their correlation."""
    gains_out, gains_in = crossfade_gains(outgoing.shape[-1], correlation=fade_correlation(outgoing, incoming))
    return outgoing * gains_out[None, :] + incoming * gains_in[None, :]


@dataclass
class _Voice:
    """A clip being played from ``offset`` (frames).

    ``start`` is the timeline position of the clip's sample 0 as played, ``shift`` the station's
    lag it was started with (``start − placement.start`` for a generated clip; a fallback voice
    keeps the shift of the clip it repeats, so the next clip's place is still known).
    """

    clip: Clip
    offset: int = 0
    fallback: bool = False
    start: int = 0
    shift: int = 0

    @property
    def length(self) -> int:
        return int(self.clip.audio.shape[-1])

    @property
    def remaining(self) -> int:
        return self.length - self.offset

    @property
    def end(self) -> int:
        """Timeline position just after the voice's last sample."""
        return self.start + self.length

    def take(self, frames: int) -> np.ndarray:
        part = self.clip.audio[:, self.offset : self.offset + frames]
        self.offset += frames
        if part.shape[-1] < frames:  # only if a clip is shorter than a crossfade: pad, never fail
            part = np.pad(part, ((0, 0), (0, frames - part.shape[-1])))
        return part


class CrossfadeBuffer:
    """Thread-safe queue of clips read as a continuous, crossfaded stream.

    Args:
        channels: channels of every clip (clips with another count are up/down-mixed).
        sample_rate_hz: sample rate of every clip.
        crossfade_seconds: default crossfade at joins; ``read`` may override it live.
        on_underrun: called (outside the lock) with the index of the clip that had to repeat,
            once per underrun episode.
    """

    def __init__(
        self,
        channels: int = 2,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
        crossfade_seconds: float = 0.5,
        on_underrun: Callable[[int], None] | None = None,
    ) -> None:
        self.channels = channels
        self.sample_rate_hz = sample_rate_hz
        self.crossfade_seconds = crossfade_seconds
        self.on_underrun = on_underrun
        self._change_listeners: list[Callable[[], None]] = []
        self._lock = threading.Condition()
        self._queue: collections.deque[Clip] = collections.deque()
        self._current: _Voice | None = None
        self._outgoing: _Voice | None = None
        self._fade_frames = 0
        self._fade_position = 0
        self._fade_correlation = 0.0
        self.frames_read = 0
        self.timeline_samples = 0  # timeline position of the next frame read
        self.underruns = 0
        self.fallback_frames = 0
        self.clips_started = 0

    # -- producer side ---------------------------------------------------------------------------
    def push(self, clip: Clip) -> list[Clip]:
        """Queue a clip; returns the clips this made obsolete (dropped, never heard).

        A clip of a newer state version replaces every queued clip of an older one (and then cuts
        in at once); a clip older than one already queued is itself dropped.
        """
        audio = match_channels(clip.audio, self.channels)
        if audio is not clip.audio:
            clip = replace(clip, audio=audio)
        with self._lock:
            newest = max((queued.state_version for queued in self._queue), default=None)
            if newest is not None and clip.state_version < newest:
                return [clip]
            dropped: list[Clip] = []
            if newest is not None and clip.state_version > newest:
                dropped = list(self._queue)
                self._queue.clear()
            self._queue.append(clip)
            self._lock.notify_all()
            return dropped

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (outside the lock, on the reading thread) whenever a queued clip starts."""
        self._change_listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._change_listeners:
            self._change_listeners.remove(listener)

    def wait_for_change(self, timeout_seconds: float) -> None:
        """Block until a clip is pushed or read starts one (or the timeout passes)."""
        with self._lock:
            self._lock.wait(timeout_seconds)

    # -- inspection ------------------------------------------------------------------------------
    @property
    def pending_clips(self) -> int:
        """Clips queued and not started yet."""
        with self._lock:
            return len(self._queue)

    def pending_clips_since(self, version: int) -> int:
        """Queued clips made under state ``version`` or newer."""
        with self._lock:
            return sum(1 for clip in self._queue if clip.state_version >= version)

    def pending(self) -> list[Clip]:
        with self._lock:
            return list(self._queue)

    @property
    def playing(self) -> Clip | None:
        """The clip heard now (the incoming one of a crossfade)."""
        with self._lock:
            return self._current.clip if self._current else None

    @property
    def plan_position_samples(self) -> int:
        """Where the playing clip is on the plan's timeline now, samples: the timeline minus the lag
        (``shift``) underruns and late starts left it (0 before the first clip)."""
        with self._lock:
            return self.timeline_samples - (self._current.shift if self._current else 0)

    @property
    def in_fallback(self) -> bool:
        with self._lock:
            return bool(self._current and self._current.fallback)

    def seconds_ahead(self, crossfade_seconds: float | None = None) -> float:
        """Seconds of generated audio not played yet (overlaps of crossfades counted once)."""
        fade = self._fade_frames_for(crossfade_seconds)
        with self._lock:
            frames = self._current.remaining if self._current else 0
            frames += sum(max(0, clip.audio.shape[-1] - fade) for clip in self._queue)
        return frames / self.sample_rate_hz

    def frames_until_join(self, crossfade_seconds: float | None = None) -> int:
        """Frames that can be read before the next clip is needed (0 when one is needed now).

        For a placed clip that is its successor's place on the timeline (an offline render waits
        there, so every join is where it was planned), else its end minus the crossfade.
        """
        with self._lock:
            current = self._current
            if current is None:
                return 0
            fade = min(self._fade_frames_for(crossfade_seconds), current.length // 2)
            frames = current.remaining - fade
            placement = current.clip.placement
            if placement is not None and not current.fallback:
                frames = min(frames, placement.next_start_samples + current.shift - self.timeline_samples)
            return max(0, frames)

    def _fade_frames_for(self, crossfade_seconds: float | None) -> int:
        seconds = self.crossfade_seconds if crossfade_seconds is None else crossfade_seconds
        return max(0, int(round(seconds * self.sample_rate_hz)))

    # -- consumer side ---------------------------------------------------------------------------
    def now_playing(self) -> NowPlaying | None:
        with self._lock:
            return self._now_playing_locked()

    def _now_playing_locked(self) -> NowPlaying | None:
        voice = self._current
        if self._outgoing is not None and self._fade_position * 2 < self._fade_frames:
            voice = self._outgoing  # the incoming clip counts once the crossfade is half done
        if voice is None:
            return None
        request = voice.clip.request
        return NowPlaying(
            clip_index=voice.clip.index,
            title=request.title if request is not None else "",
            request=request,
            offset_seconds=voice.offset / self.sample_rate_hz,
            image=voice.clip.image,
            fallback=voice.fallback,
            duration_seconds=voice.length / self.sample_rate_hz,
        )

    def read(self, frames: int, crossfade_seconds: float | None = None) -> tuple[np.ndarray, NowPlaying | None]:
        """The next ``frames`` of the stream (channels, frames) and what is audible at its start.

        Never blocks and never returns silence once a clip has been pushed.
        """
        out = np.zeros((self.channels, frames), dtype=np.float32)
        underrun_clip: int | None = None
        started = self.clips_started
        with self._lock:
            now = None
            written = 0
            while written < frames:
                if self._current is None:
                    if not self._queue:
                        break  # nothing ever pushed: the consumer waits for the first clip
                    first = self._queue.popleft()
                    if first.placement is not None:
                        self.timeline_samples = first.placement.start_samples
                    self._current = _Voice(first, fallback=first.fallback, start=self.timeline_samples)
                    self.clips_started += 1
                    self._lock.notify_all()
                if now is None:
                    now = self._now_playing_locked()
                wanted = frames - written
                if self._outgoing is not None:
                    written += self._mix_fade(out, written, wanted)
                    continue
                current = self._current
                fade = min(self._fade_frames_for(crossfade_seconds), current.length // 2)
                head = self._queue[0] if self._queue else None
                if head is not None and head.placement is not None and current.clip.placement is not None:
                    due = head.placement.start_samples + current.shift
                    if self.timeline_samples >= due:  # its place has come (or passed: it starts late)
                        self._start_placed(self._queue.popleft(), self.timeline_samples - due, fade)
                        continue
                    if due <= current.end:  # it fits: play on up to its place
                        part = min(wanted, due - self.timeline_samples)
                        written += self._play(out, written, part)
                        continue
                elif head is not None and (current.fallback or head.state_version > current.clip.state_version):
                    # cut in: the DJ's change (or the end of an underrun) is heard at once
                    self._start_fade(self._queue.popleft(), min(fade, current.remaining), fallback=False)
                    continue
                to_join = current.remaining - fade
                if to_join > 0:
                    written += self._play(out, written, min(wanted, to_join))
                    continue
                if head is not None and (head.placement is None or current.clip.placement is None):
                    self._start_fade(self._queue.popleft(), fade, fallback=False)
                else:
                    # underrun: the playing clip crossfades back into itself, once per episode counted
                    if not current.fallback:
                        self.underruns += 1
                        underrun_clip = current.clip.index
                    self._start_fade(current.clip, fade, fallback=True)
            self.frames_read += frames
        if underrun_clip is not None and self.on_underrun is not None:
            self.on_underrun(underrun_clip)
        if self.clips_started != started or underrun_clip is not None:
            for listener in list(self._change_listeners):
                listener()
        return out, now

    def _play(self, out: np.ndarray, at: int, frames: int) -> int:
        """Copy ``frames`` of the current voice alone into ``out[:, at:]``."""
        assert self._current is not None
        out[:, at : at + frames] = self._current.take(frames)
        self._count_fallback(frames)
        self.timeline_samples += frames
        return frames

    def _start_placed(self, clip: Clip, late_samples: int, fade_frames: int) -> None:
        """Start a placed clip whose place began ``late_samples`` ago (0: exactly now)."""
        assert self._current is not None and clip.placement is not None
        usable = max(0, clip.audio.shape[-1] - 2 * fade_frames)  # it must still play a crossfade's worth
        offset = int(round(late_start_offset_samples(late_samples, usable, clip.placement.grid)))
        shift = self._current.shift + late_samples - offset
        self._begin(
            _Voice(clip, offset=offset, fallback=clip.fallback, start=self.timeline_samples - offset, shift=shift),
            min(fade_frames, self._current.remaining),
        )

    def _start_fade(self, clip: Clip, fade_frames: int, fallback: bool) -> None:
        assert self._current is not None
        current = self._current
        offset = 0
        if fallback and clip.placement is not None:
            # back by whole loops, bars or beats: the repeat stays on the grid
            played = current.offset
            offset = max(0, played - int(round(repeat_back_samples(played, clip.placement.grid))))
        incoming = _Voice(
            clip, offset=offset, fallback=fallback or clip.fallback, start=self.timeline_samples - offset,
            shift=current.shift if fallback or clip.placement is None else self.timeline_samples - clip.placement.start_samples,
        )  # fmt: skip
        self._begin(incoming, fade_frames)

    def _begin(self, incoming: _Voice, fade_frames: int) -> None:
        """Make ``incoming`` the current voice, crossfading from the old one over ``fade_frames``."""
        assert self._current is not None
        fade_frames = max(0, min(fade_frames, self._current.remaining, incoming.remaining))
        if not (incoming.fallback and incoming.clip is self._current.clip):
            self.clips_started += 1
        outgoing = self._current
        self._fade_correlation = fade_correlation(
            outgoing.clip.audio[:, outgoing.offset : outgoing.offset + fade_frames],
            incoming.clip.audio[:, incoming.offset : incoming.offset + fade_frames],
        )
        self._outgoing, self._current = outgoing, incoming
        self._fade_frames, self._fade_position = fade_frames, 0
        if fade_frames == 0:
            self._outgoing = None
        self._lock.notify_all()

    def _mix_fade(self, out: np.ndarray, at: int, wanted: int) -> int:
        assert self._outgoing is not None and self._current is not None
        part = min(wanted, self._fade_frames - self._fade_position)
        gains_out, gains_in = crossfade_gains(self._fade_frames, self._fade_position, part, self._fade_correlation)
        out[:, at : at + part] = (
            self._outgoing.take(part) * gains_out[None, :] + self._current.take(part) * gains_in[None, :]
        )
        self._fade_position += part
        self._count_fallback(part)
        self.timeline_samples += part
        if self._fade_position >= self._fade_frames:
            self._outgoing = None
        return part

    def _count_fallback(self, frames: int) -> None:
        if self._current is not None and self._current.fallback:
            self.fallback_frames += frames
