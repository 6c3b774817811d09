"""What the plan asks the engine for, and what the engine hands to the vocoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
        start_denoising: img2img strength at ``alpha = 0``, in (0, 1].
        end_denoising: img2img strength at ``alpha = 1``.
        start_guidance: classifier-free guidance scale at ``alpha = 0``.
        end_guidance: classifier-free guidance scale at ``alpha = 1``.
        negative_prompt: text to steer away from ("" for none).
        num_inference_steps: scheduler steps for strength 1; img2img runs ``int(steps * strength)``.
        seed_image: reference to the init spectrogram: a bundled name, a file path, or a synthesis
            spec string such as ``"bpm=93.75"`` (resolved by ``riffradio.spectrogram.seeds``).
        mask_image: optional reference to a mask image (white = repaint); ``None`` repaints all.
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
    seed_image: str = "og_beat"
    mask_image: str | None = None

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
        latents: the final latents (1, 4, 64, 64) before VAE decode, on the engine's device.
        timings_seconds: wall time per engine stage (``text``, ``vae_encode``, ``unet``, ``vae_decode``,
            ``other``), for benchmarks and metrics.
    """

    request: RiffRequest
    image: Image.Image
    latents: torch.Tensor | None = None
    timings_seconds: dict[str, float] = field(default_factory=dict)
