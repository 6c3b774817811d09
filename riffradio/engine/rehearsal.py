"""The rehearsal engine (``--model none``): the engine protocol without diffusion.

Each clip is its init image: the 5.12 s window of the seed loop at the clip's place on the
timeline (``RiffRequest.seed_window_start_samples``). With continuation, the init image is what
the diffusion engine's init latents are, in pixels: the previous clip's last ``K`` latent columns
(``8 K`` image columns, ``0.08 K`` s; :mod:`riffradio.engine.continuation`) followed by the seed
window from there on. Windows are quantised on the whole loop's scale (an audio loop's largest
mel amplitude, not each window's own), so the kept columns and the new ones sit side by side
without a level step; the vocoder and the loudness stage take the scale off again. So the
rehearsal engine's "latents" — what a clip hands the next one to
continue — are the clip's own pixels, a uint8 array ``(512, 512, 3)``.

Everything after the engine is the station's own — timeline, continuation, vocoder, buffer,
loudness, outputs, control — so an operator can set up Icecast, RTMP and OSC on a machine without
a GPU or weights, give a demo, or test the music's timing, which random-weight models cannot show.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from riffradio.core.types import RiffRequest, RiffResult
from riffradio.engine.continuation import LATENT_COLUMN_PIXELS, MAX_CONTINUATION_SECONDS, kept_latent_columns
from riffradio.errors import CancelCheck, Cancelled, RiffradioError

REHEARSAL_MODEL = "none"  # the model name (CLI --model, playlist station.model) that selects it


def continued_pixels(window: np.ndarray, previous: np.ndarray, kept_columns: int) -> np.ndarray:
    """``window`` ``(H, W, 3)`` whose first ``kept_columns`` latent columns are ``previous``' last (pure).

    The pixel form of :func:`~riffradio.engine.continuation.continued_init_latents`: a latent
    column is :data:`~riffradio.engine.continuation.LATENT_COLUMN_PIXELS` (8) image columns, so
    ``previous[:, W − 8K:]`` becomes ``[:, :8K]`` and the rest stays ``window``'s.
    """
    if kept_columns <= 0:
        return window
    if previous.shape != window.shape:
        raise ValueError(f"previous image {previous.shape} does not match the seed window {window.shape}")
    kept = kept_columns * LATENT_COLUMN_PIXELS
    return np.concatenate([previous[:, window.shape[1] - kept :], window[:, kept:]], axis=1)


class RehearsalEngine:
    """``riff(request) → RiffResult`` whose image is the request's seed window, unchanged
    (continued: the previous clip's tail, then the seed window).

    Args:
        device: where the vocoder runs (``auto`` picks CUDA, then MPS, then CPU); the engine
            itself needs none.
    """

    def __init__(self, device: str = "auto") -> None:
        from riffradio.engine.loading import resolve_device

        self.device = resolve_device(device)

    def riff(
        self,
        request: RiffRequest,
        should_cancel: CancelCheck | None = None,
        previous_latents: np.ndarray | None = None,
    ) -> RiffResult:
        """One clip; see :meth:`riff_batch`."""
        return self.riff_batch([request], should_cancel, None if previous_latents is None else [previous_latents])[0]

    def riff_batch(
        self,
        requests: Sequence[RiffRequest],
        should_cancel: CancelCheck | None = None,
        previous_latents: Sequence[np.ndarray | None] | None = None,
    ) -> list[RiffResult]:
        """The init image of each request, as :class:`~riffradio.engine.pipeline.RiffEngine` would start from it.

        Args:
            requests: the clips to make.
            should_cancel: asked before each; True raises :class:`~riffradio.errors.Cancelled`.
            previous_latents: per request, the clip it continues' ``RiffResult.latents`` (its
                pixels, uint8 ``(512, 512, 3)``) or None. A request with ``continuation_seconds
                > 0`` and previous pixels starts with their last ``kept_latent_columns(
                continuation_seconds)`` latent columns; without either its image is the seed
                window, as it always was.

        Returns:
            One result per request: ``image`` the RGB spectrogram, ``latents`` its pixels (to continue).

        Raises:
            RiffradioError: a request without a seed image, or a continuation out of range.
        """
        from PIL import Image

        from riffradio.spectrogram.seeds import load_seed_window

        previous = list(previous_latents) if previous_latents is not None else [None] * len(requests)
        if len(previous) != len(requests):
            raise ValueError(f"{len(previous)} previous latents for {len(requests)} requests")
        results = []
        for request, before in zip(requests, previous):
            if should_cancel is not None and should_cancel():
                raise Cancelled("rehearsal clip abandoned")
            if not isinstance(request.seed_image, str) or not request.seed_image.strip():
                raise RiffradioError("rehearsal engine: the request has no seed_image")
            if not 0.0 <= request.continuation_seconds <= MAX_CONTINUATION_SECONDS:
                raise RiffradioError(
                    f"continuation_seconds must be between 0 and {MAX_CONTINUATION_SECONDS:g}, "
                    f"got {request.continuation_seconds:g}"
                )
            started = time.perf_counter()
            # On the loop's own scale: a continued clip puts two windows side by side, and each
            # window on its own maximum would step by up to 6 dB there on recorded music.
            window = load_seed_window(request.seed_image, request.seed_window_start_samples, loop_scale=True).convert("RGB")
            pixels = np.asarray(window)
            kept = 0 if before is None else kept_latent_columns(request.continuation_seconds)
            if kept > 0:
                pixels = continued_pixels(pixels, np.asarray(before), kept)
                window = Image.fromarray(pixels, "RGB")
            results.append(RiffResult(request=request, image=window, latents=pixels,
                                      timings_seconds={"other": time.perf_counter() - started}))  # fmt: skip
        return results
