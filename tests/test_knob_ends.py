"""One rule for what is valid: every value the knob table accepts makes a clip.

Hypothesis picks each riff knob at an end of its range (``riffradio.core.knobs.KNOBS``) — so
``denoising: 0`` (the seed image as it is), ``steps: 1`` (no UNet call), ``steps: 500``,
``guidance: 30``, the largest seed — and the tiny model plus the vocoder must make finite audio
of a clip's length from it. The all-low and all-high corners are always tried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from riffradio.core.knobs import KNOBS
from riffradio.core.types import RiffRequest

# knob -> the request fields it sets
REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "denoising": ("start_denoising", "end_denoising"),
    "guidance": ("start_guidance", "end_guidance"),
    "steps": ("num_inference_steps",),
    "alpha": ("alpha",),
    "seed": ("start_seed", "end_seed"),
    "continuation_seconds": ("continuation_seconds",),
}
ENDS = {name: (KNOBS[name].low, KNOBS[name].high) for name in REQUEST_FIELDS}
LOW = {name: low for name, (low, _) in ENDS.items()}
HIGH = {name: high for name, (_, high) in ENDS.items()}


@pytest.fixture(scope="module")
def makers(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from riffradio.engine.pipeline import RiffEngine
    from riffradio.spectrogram.vocoder import Vocoder

    engine = RiffEngine.load(str(tiny_model_dir), device="cpu")
    return engine, Vocoder(device=engine.device)


@pytest.mark.slow
@settings(max_examples=2, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({name: st.sampled_from(ends) for name, ends in ENDS.items()}))
@example(LOW)
@example(HIGH)
def test_the_ends_of_every_knob_make_a_clip(makers, knobs: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    engine, vocoder = makers
    fields = {field: knobs[name] for name, names in REQUEST_FIELDS.items() for field in names}
    request = RiffRequest("jazzy lofi hip hop", "church bells", **fields)
    result = engine.riff(request)
    audio = vocoder.image_to_audio(result.image)
    assert result.image.size == (512, 512)
    assert audio.shape[-1] >= vocoder.params.min_clip_samples and np.isfinite(audio).all()
