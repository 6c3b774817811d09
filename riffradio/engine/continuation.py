"""Continuation: a new clip's first seconds are the previous clip's last, kept by Riffusion's mask maths.

The kept region is measured in **latent columns**: the VAE maps 8 image columns (8 STFT frames
of 10 ms) to one latent column, so one latent column is 80 ms of audio (3 528 samples at
44.1 kHz) and a 512-column (5.12 s) image has 64 of them. ``continuation_seconds`` is rounded
to whole latent columns (:func:`kept_latent_columns`): 0.5 s keeps 6 columns = 0.48 s.

A continued clip starts where the previous one is ``5.12 − S`` seconds in, so the previous
clip's last ``K`` latent columns, shifted left by ``64 − K``, are the new clip's first ``K``
(:func:`continued_init_latents`) — its own final latents, no VAE round trip. The rest of the
init latents are the seed window's, as always. A latent mask with ones on the kept columns
(:func:`continuation_mask`) then keeps them through the denoising loop exactly the way
Riffusion's ``riffuse`` keeps what its mask image leaves black: after every step the original
latents, re-noised to that step's timestep, are put back where the mask is 1. After the last
step the kept columns are put back un-noised (:func:`restore_kept_columns`): the loop's last
blend leaves them at the last timestep's noise level (about 4 % for PNDM's t = 1), and the
clip's start should decode to what the previous clip's end decoded to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from riffradio.spectrogram.params import SpectrogramParams

if TYPE_CHECKING:
    import torch

LATENT_COLUMN_PIXELS = 8  # the VAE's downsampling factor: image columns per latent column
MAX_CONTINUATION_SECONDS = 2.56  # half a clip: a kept column is never kept twice


def latent_column_seconds(params: SpectrogramParams = SpectrogramParams()) -> float:
    """Audio seconds one latent column holds: 8 columns of ``step_size_ms`` (0.08 s)."""
    return LATENT_COLUMN_PIXELS * params.step_size_ms / 1000.0


def kept_latent_columns(continuation_seconds: float, params: SpectrogramParams = SpectrogramParams()) -> int:
    """Latent columns a continuation of ``continuation_seconds`` keeps: rounded to whole columns, ≥ 0.

    At most half the image's columns (``MAX_CONTINUATION_SECONDS``).
    """
    columns = round(max(0.0, float(continuation_seconds)) / latent_column_seconds(params))
    return min(columns, params.image_width_frames // LATENT_COLUMN_PIXELS // 2)


def continuation_samples(continuation_seconds: float, params: SpectrogramParams = SpectrogramParams()) -> int:
    """The kept region in audio samples (whole latent columns): 3 528 per column at 44.1 kHz."""
    return kept_latent_columns(continuation_seconds, params) * LATENT_COLUMN_PIXELS * params.hop_length_samples


def continued_init_latents(
    init_latents: torch.Tensor, previous_latents: torch.Tensor, kept_columns: int
) -> torch.Tensor:
    """``init_latents`` ``(1, 4, H, W)`` whose first ``kept_columns`` are the previous clip's last ones.

    ``previous_latents`` is that clip's final latents ``(1, 4, H, W)`` (``RiffResult.latents``);
    its columns ``W − kept … W`` become columns ``0 … kept``.
    """
    import torch

    if kept_columns <= 0:
        return init_latents
    if previous_latents.shape != init_latents.shape:
        raise ValueError(
            f"previous latents {tuple(previous_latents.shape)} do not match the init latents {tuple(init_latents.shape)}"
        )
    width = init_latents.shape[-1]
    kept = previous_latents[..., width - kept_columns :].to(device=init_latents.device, dtype=init_latents.dtype)
    return torch.cat([kept, init_latents[..., kept_columns:]], dim=-1)


def continuation_mask(like: torch.Tensor, kept_columns: int) -> torch.Tensor:
    """A latent mask shaped and typed like ``like`` ``(B, 4, H, W)``: 1 on the first ``kept_columns`` (keep), 0 after."""
    mask = like.new_zeros(like.shape)
    mask[..., :kept_columns] = 1
    return mask


def restore_kept_columns(latents: torch.Tensor, init_latents: torch.Tensor, kept_columns: int) -> torch.Tensor:
    """``latents`` with the first ``kept_columns`` put back to ``init_latents``' (un-noised)."""
    import torch

    if kept_columns <= 0:
        return latents
    return torch.cat([init_latents[..., :kept_columns], latents[..., kept_columns:]], dim=-1)
