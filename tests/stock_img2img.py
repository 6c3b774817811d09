"""Riffusion's riff at alpha 0 by diffusers' stock img2img, for tests that compare the engine with it.

At ``alpha = 0`` Riffusion's riff is plain img2img whose VAE sample and noise both come from a
fresh generator seeded with the start seed (see tests/test_engine.py).
"""

from __future__ import annotations

from typing import Any

import torch

from riffradio.engine.loading import LoadedModel, stock_img2img_pipeline


def stock_img2img_latents(
    model: LoadedModel, seed: int, steps: int, strength: float = 0.75, guidance_scale: float = 7.5, **prompt: Any
) -> torch.Tensor:
    """Final latents of stock img2img on the ``og_beat`` seed image; ``prompt``: ``prompt=`` or ``prompt_embeds=``…"""
    from riffradio.spectrogram.seeds import load_seed_image

    stock = stock_img2img_pipeline(model)
    with torch.inference_mode():
        pixels = stock.image_processor.preprocess(load_seed_image("og_beat"))
        distribution = model.vae.encode(pixels).latent_dist
        init_latents = model.vae.config.scaling_factor * distribution.sample(torch.Generator().manual_seed(seed))
        return stock(
            image=init_latents, strength=strength, num_inference_steps=steps, guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed), output_type="latent", **prompt,
        ).images  # fmt: skip
