"""Weighted prompts on the tiny model: riffradio's riff against Riffusion's maths, before and after.

    python3 bench/prompt_weights.py [--model DIR]

For each weighted prompt: the latents diffusers' stock img2img makes with Riffusion's weighted
embedding (the independent reference in tests/test_prompt_weights.py) are decoded and compared,
pixel by pixel, with (a) what riffradio made before weights were parsed — the raw string through
the tokenizer — and (b) riffradio's riff now. Prints the largest pixel difference of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from riffradio.engine.pipeline import RiffEngine  # noqa: E402
from riffradio.engine.testmodel import build_test_model  # noqa: E402
from tests.test_prompt_weights import _request, _stock_latents, reference_embedding  # noqa: E402

PROMPTS = ("(saxophone:1.4) jazz", "[[quiet]] piano, (drums)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="tiny model directory (built in a temporary directory if left out)")
    args = parser.parse_args()
    model_dir = args.model or str(build_test_model(Path(tempfile.mkdtemp()) / "tiny", size="tiny"))
    engine = RiffEngine.load(model_dir, device="cpu")
    model = engine.model

    def pixels(latents: torch.Tensor) -> np.ndarray:
        vae = model.vae
        with torch.inference_mode():
            decoded = (vae.decode(1.0 / vae.config.scaling_factor * latents).sample / 2 + 0.5).clamp(0, 1)
        return (decoded * 255).round().to(torch.int16).numpy()

    for prompt in PROMPTS:
        with torch.inference_mode():
            negative = reference_embedding(model, "")
            riffusion = _stock_latents(engine, reference_embedding(model, prompt), negative)
            ids = model.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            before = _stock_latents(engine, model.text_encoder(ids)[0], negative)
        now = engine.riff(_request(prompt)).latents
        print(
            f"{prompt!r}: before (weights not parsed) max pixel difference {int(np.abs(pixels(before) - pixels(riffusion)).max())}; "
            f"now {int(np.abs(pixels(now) - pixels(riffusion)).max())} (latents equal: {torch.equal(now, riffusion)})"
        )


if __name__ == "__main__":
    main()
