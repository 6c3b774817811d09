"""The one description of a request as JSON-able data (now-playing API, OSC state, cue sheet)."""

from __future__ import annotations

from typing import Any

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.core.types import RiffRequest


def describe_request(request: RiffRequest) -> dict[str, Any]:
    """What a listener or a DJ needs to know about a clip's request, as JSON-able data.

    Returns:
        ``title``, ``prompt``, ``to_prompt``, ``seed``, ``to_seed``, ``alpha`` (rounded to 6
        digits), ``denoising``, ``guidance`` (the start values), ``steps``, ``seed_image``,
        ``seed_window_seconds`` (where in the seed loop the clip's 5.12 s init window starts: the
        timeline's place in the loop, rounded to 0.1 ms) and ``continuation_seconds`` (how much of
        the clip before it the clip keeps).
    """
    return {
        "title": request.title,
        "prompt": request.start_prompt,
        "to_prompt": request.end_prompt,
        "seed": request.start_seed,
        "to_seed": request.end_seed,
        "alpha": round(request.alpha, 6),
        "denoising": request.start_denoising,
        "guidance": request.start_guidance,
        "steps": request.num_inference_steps,
        "seed_image": request.seed_image,
        "seed_window_seconds": round(request.seed_window_start_samples / SAMPLE_RATE_HZ, 4),
        "continuation_seconds": request.continuation_seconds,
    }
