"""What flows between stages: riff requests and results, clips, audio blocks, now-playing.

These are plain frozen dataclasses with shapes and units in their docstrings; the engine,
vocoder, station, sinks and controllers all speak them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from riffradio.core.defaults import DEFAULT_SEED_IMAGE
from riffradio.core.timeline import Placement

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class RiffRequest:
    """One Riffusion-style riff: a point ``alpha`` on the way from a start to an end prompt/seed.

    Attributes:
        start_prompt: text prompt at ``alpha = 0``.
        end_prompt: text prompt at ``alpha = 1`` (equal to ``start_prompt`` for a held prompt).
        start_seed: seed of the start noise (and of the VAE encode sampling).
        end_seed: seed of the end noise.
        alpha: interpolation position in [0, 1]: embeddings are lerped, noise is slerped.
        start_denoising: img2img strength at ``alpha = 0``, in [0, 1] (0 plays the seed image).
        end_denoising: img2img strength at ``alpha = 1``.
        start_guidance: classifier-free guidance scale at ``alpha = 0``.
        end_guidance: classifier-free guidance scale at ``alpha = 1``.
        negative_prompt: text to steer away from ("" for none).
        num_inference_steps: scheduler steps for strength 1; img2img runs ``int(steps * strength)``.
        seed_image: reference to the init spectrogram: a bundled name, a file path, or a synthesis
            spec string such as ``"bpm=93.75"`` (resolved by ``riffradio.spectrogram.seeds``).
        mask_image: optional reference to a mask image (white = repaint); ``None`` repaints all.
        continuation_seconds: how much of the previous clip's end this clip starts with, kept by
            Riffusion's mask maths from that clip's latents (the engine is handed them), rounded
            to whole latent columns of 0.08 s, 0 … 2.56; 0 (or no previous clip) makes the clip
            on its own (``riffradio.engine.continuation``).
        seed_window_start_samples: where in the seed loop the 5.12 s init window starts, samples
            at 44.1 kHz (taken modulo the loop): the clip's place on the station's timeline
            (:mod:`riffradio.core.timeline`); 0 = the loop's start.
    """

    start_prompt: str
    end_prompt: str
    start_seed: int
    end_seed: int
    alpha: float = 0.0
    start_denoising: float = 0.75
    end_denoising: float = 0.75
    start_guidance: float = 7.0
    end_guidance: float = 7.0
    negative_prompt: str = ""
    num_inference_steps: int = 50
    seed_image: str = DEFAULT_SEED_IMAGE
    mask_image: str | None = None
    continuation_seconds: float = 0.0
    seed_window_start_samples: int = 0

    @property
    def title(self) -> str:
        """What listeners see: the prompt, or ``"A → B"`` during a transition."""
        if self.start_prompt == self.end_prompt or self.alpha <= 0.0:
            return self.start_prompt
        if self.alpha >= 1.0:
            return self.end_prompt
        return f"{self.start_prompt} → {self.end_prompt}"


@dataclass
class RiffResult:
    """The engine's output for one request: a spectrogram image and its latents.

    Attributes:
        request: the request this answers.
        image: the 512×512 RGB spectrogram image.
        latents: what the next clip continues from (handed back to the engine as
            ``previous_latents``): the diffusion engine's final latents ``(1, 4, 64, 64)`` before
            VAE decode, on its device; the rehearsal engine's image pixels, uint8 ``(512, 512, 3)``.
        timings_seconds: wall time per engine stage (``text``, ``vae_encode``, ``unet``, ``vae_decode``,
            ``other``), for benchmarks and metrics.
    """

    request: RiffRequest
    image: Image.Image
    latents: torch.Tensor | np.ndarray | None = None
    timings_seconds: dict[str, float] = field(default_factory=dict)


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
        placement: where the clip sits on the station's timeline (None: right after the
            previous clip's end minus the crossfade, as a plain queue).
        fallback: seed material played until generated clips are ready (``fallback`` in
            now-playing and cue sheets; the first generated clip cuts in).
    """

    index: int
    request: RiffRequest
    audio: np.ndarray
    sample_rate_hz: int
    image: Image.Image | None = None
    generation_seconds: float = 0.0
    state_version: int = 0
    placement: Placement | None = None
    fallback: bool = False

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
