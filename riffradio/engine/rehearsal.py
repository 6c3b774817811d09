"""The rehearsal engine (``--model none``): the engine protocol without diffusion.

Each clip is its init image: the 5.12 s window of the seed loop at the clip's place on the
timeline (``RiffRequest.seed_window_start_samples``). Everything after the engine is the
station's own — timeline, vocoder, buffer, loudness, outputs, control — so an operator can set up
Icecast, RTMP and OSC on a machine without a GPU or weights, give a demo, or test the music's
timing, which random-weight models cannot show.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from riffradio.core.types import RiffRequest, RiffResult
from riffradio.errors import CancelCheck, Cancelled, RiffradioError

REHEARSAL_MODEL = "none"  # the model name (CLI --model, playlist station.model) that selects it


class RehearsalEngine:
    """``riff(request) → RiffResult`` whose image is the request's seed window, unchanged.

    Args:
        device: where the vocoder runs (``auto`` picks CUDA, then MPS, then CPU); the engine
            itself needs none.
    """

    def __init__(self, device: str = "auto") -> None:
        from riffradio.engine.loading import resolve_device

        self.device = resolve_device(device)

    def riff(self, request: RiffRequest, should_cancel: CancelCheck | None = None) -> RiffResult:
        """The seed window of ``request`` as its spectrogram (latents: None)."""
        return self.riff_batch([request], should_cancel)[0]

    def riff_batch(
        self, requests: Sequence[RiffRequest], should_cancel: CancelCheck | None = None
    ) -> list[RiffResult]:
        """:meth:`riff` for several requests; ``should_cancel`` is asked before each."""
        from riffradio.spectrogram.seeds import load_seed_window

        results = []
        for request in requests:
            if should_cancel is not None and should_cancel():
                raise Cancelled("rehearsal clip abandoned")
            if not isinstance(request.seed_image, str) or not request.seed_image.strip():
                raise RiffradioError("rehearsal engine: the request has no seed_image")
            started = time.perf_counter()
            image = load_seed_window(request.seed_image, request.seed_window_start_samples).convert("RGB")
            results.append(RiffResult(request=request, image=image, timings_seconds={"other": time.perf_counter() - started}))
        return results
