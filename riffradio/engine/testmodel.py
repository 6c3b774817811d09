"""Random-weight Stable Diffusion pipelines built offline, for tests and benchmarks.

Two sizes:

* ``tiny`` — a few hundred thousand parameters, cross-attention only in the lower-resolution
  UNet block and no VAE mid-block attention, so one 512 px step takes about 0.3 s on a CPU.
  It makes noise, not music, but it exercises every line of the real loading and riff code.
* ``sd15`` — the real Stable Diffusion 1.5 architecture (the one Riffusion fine-tuned) with
  random weights, for speed benchmarks: speed does not depend on the weights.

Both are written with ``save_pretrained`` so that they load back through the same
``from_pretrained`` path that users take for ``riffusion/riffusion-model-v1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

ModelSize = Literal["tiny", "sd15"]

# Riffusion's checkpoint ships this scheduler configuration (PNDM, skip_prk_steps, steps_offset 1).
RIFFUSION_SCHEDULER_CONFIG: dict[str, object] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: every byte as a token, alone and word-final."""
    # GPT-2/CLIP map bytes to printable unicode characters; rebuild that table here.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in chars]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer(directory: Path) -> int:
    """Write vocab.json and merges.txt of a byte-level CLIP tokenizer; returns the vocabulary size."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _byte_level_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    # Load through from_pretrained so the files are read the way a model directory is read.
    tokenizer = CLIPTokenizer.from_pretrained(directory, model_max_length=77)
    tokenizer.save_pretrained(directory)
    return len(vocab)


def build_test_model(directory: str | Path, size: ModelSize = "tiny", seed: int = 0) -> Path:
    """Build a random-weight img2img Stable Diffusion pipeline and save it to ``directory``.

    Args:
        directory: where the diffusers model directory is written (created if missing).
        size: ``"tiny"`` for tests, ``"sd15"`` for the real SD1.5 architecture (about 1 B parameters).
        seed: seed of the random weights, so the same call writes the same model.

    Returns:
        The directory, ready for ``riffradio ... --model DIRECTORY``.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer(directory / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer")
    torch.manual_seed(seed)

    if size == "tiny":
        hidden_size = 32
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            # Cross-attention only at the lower resolution: attention over the full 64x64
            # latent grid costs about 2 s a step on a CPU, this layout about 0.3 s.
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=hidden_size,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=512,
            mid_block_add_attention=False,
        )
        text_config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    elif size == "sd15":
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        raise ValueError(f"unknown test model size {size!r}: use 'tiny' or 'sd15'")

    text_encoder = CLIPTextModel(text_config)
    scheduler = PNDMScheduler(**RIFFUSION_SCHEDULER_CONFIG)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory)
    return directory
