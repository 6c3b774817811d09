"""Small typed objects that travel from the vocoder through the buffer to the sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from riffradio.engine.request import RiffRequest

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Clip:
    """One generated clip, ready for the buffer.

    Attributes:
        index: position in the plan (0, 1, 2, ...), unique for the station's lifetime.
        request: what was asked of the engine.
        audio: float32 samples, shape ``(channels, samples)``, at ``sample_rate_hz``.
        sample_rate_hz: 44 100 for Riffusion's spectrograms.
        image: the spectrogram image the audio came from (for the RTMP video), if kept.
        generation_seconds: wall time engine + vocoder took for this clip.
        state_version: the station state version the plan read when it made this request;
            clips of an older version may be dropped when the DJ changes something.
    """

    index: int
    request: RiffRequest
    audio: np.ndarray
    sample_rate_hz: int
    image: Image.Image | None = None
    generation_seconds: float = 0.0
    state_version: int = 0

    @property
    def duration_seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate_hz


@dataclass(frozen=True)
class NowPlaying:
    """What is audible at the start of an :class:`AudioBlock`.

    Attributes:
        clip_index: index of the clip heard (the incoming one once a crossfade is half done).
        title: ``request.title`` of that clip: the prompt, or ``"A → B"``.
        request: that clip's request (prompt, seeds, alpha, knobs).
        offset_seconds: how far into that clip's audio the block starts.
        image: that clip's spectrogram image, for the video (None if not kept).
        fallback: True while the buffer plays fallback audio because no new clip was ready.
        duration_seconds: length of that clip's audio.
    """

    clip_index: int
    title: str
    request: RiffRequest | None
    offset_seconds: float
    image: Image.Image | None = None
    fallback: bool = False
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class AudioBlock:
    """A fixed-size block of station audio on its way to every sink.

    Attributes:
        samples: float32, shape ``(channels, frames)``, already loudness-normalised and limited.
        sample_rate_hz: sample rate of ``samples``.
        start_frame: position of the first frame on the station clock (frames since start).
        now_playing: what is audible at the start of the block.
    """

    samples: np.ndarray
    sample_rate_hz: int
    start_frame: int
    now_playing: NowPlaying

    @property
    def frames(self) -> int:
        return int(self.samples.shape[-1])

    @property
    def start_seconds(self) -> float:
        return self.start_frame / self.sample_rate_hz

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate_hz
