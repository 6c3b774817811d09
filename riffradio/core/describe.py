"""The one description of a request as JSON-able data (now-playing API, OSC state, cue sheet)."""

from __future__ import annotations

from typing import Any

from riffradio.core.types import RiffRequest


def describe_request(request: RiffRequest) -> dict[str, Any]:
    """What a listener or a DJ needs to know about a clip's request, as JSON-able data.

    Returns:
        ``title``, ``prompt``, ``to_prompt``, ``seed``, ``to_seed``, ``alpha`` (rounded to 6
        digits), ``denoising``, ``guidance`` (the start values), ``steps`` and ``seed_image``.
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
    }
