"""The riff pipeline: Riffusion's img2img interpolation on diffusers components.

A riff is a point ``alpha`` on the way from a start to an end (prompt, seed, knobs). For each
request the engine runs the numbered steps of :meth:`RiffEngine._run_batch`:

1. interpolate the knobs: guidance scale and denoising strength (:func:`mix`);
2. text embeddings of both prompts through Riffusion's weighted-prompt maths
   (:mod:`riffradio.engine.prompt_weights`: ``(sax:1.3)``, ``[quiet]``, up to 3 chunks of 77
   tokens; cached per prompt string and chunk count), lerped (:func:`lerp`);
3. init latents: the seed image VAE-encoded (cached per image), its latent distribution
   sampled with a generator seeded with the start seed, times the VAE scaling factor; with
   continuation, the first columns are the previous clip's last latent columns
   (:mod:`riffradio.engine.continuation`);
4. noise: generators seeded with the start and the end seed, combined by :func:`slerp`;
5. timesteps: the scheduler's schedule cut by the strength, as Riffusion's img2img does;
6. the init latents noised to the first timestep;
7. the denoising loop, with classifier-free guidance and the optional mask blend (a mask image's
   black part and a continuation's kept columns), then the kept columns put back un-noised;
8. VAE decode to a 512×512 RGB spectrogram image.

It follows Riffusion's ``RiffusionPipeline.riffuse`` operation for operation, so the same
request on the same device and dtype gives the same pixels. Several requests with the same
schedule share one UNet batch (throughput for the station's lookahead); on running out of
GPU memory a batch is split in halves and the engine remembers the size that fit.

The engine is not thread-safe: one producer calls it (the scheduler keeps per-run state).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from riffradio.engine.interpolation import lerp, mix, slerp
from riffradio.core.defaults import DEFAULT_MODEL
from riffradio.core.knobs import check_knob
from riffradio.engine.loading import LoadedModel, is_out_of_memory, load_model, out_of_memory_message
from riffradio.engine.prompt_weights import (
    WeightedTokens,
    chunk_token_ids,
    parse_prompt_weights,
    position_weights,
    weighted_tokens,
)
from riffradio.core.types import RiffRequest, RiffResult
from riffradio.engine.continuation import (
    continuation_mask,
    continued_init_latents,
    kept_latent_columns,
    restore_kept_columns,
)
from riffradio.errors import CancelCheck, Cancelled, RiffradioError

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

KeyT = TypeVar("KeyT", bound=Hashable)
ValueT = TypeVar("ValueT")

TIMING_KEYS: tuple[str, ...] = ("text", "vae_encode", "unet", "vae_decode", "other")


class LruCache(Generic[KeyT, ValueT]):
    """A bounded least-recently-used cache that counts its hits and misses."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("cache capacity must be at least 1")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[KeyT, ValueT] = OrderedDict()

    def get_or_create(self, key: KeyT, create: Callable[[], ValueT]) -> ValueT:
        """The cached value for ``key``, or ``create()``'s, stored (evicting the oldest)."""
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = create()
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class _Stopwatch:
    """Adds wall time to named stages; waits for the device first so GPU work is counted."""

    def __init__(self, device: torch.device) -> None:
        self.seconds = dict.fromkeys(TIMING_KEYS, 0.0)
        self._device = device
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        _synchronize(self._device)
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class _Prepared:
    """One request with its images resolved and its knobs interpolated (step 1)."""

    request: RiffRequest
    guidance_scale: float
    strength: float
    init_image: Image.Image
    mask_image: Image.Image | None
    previous_latents: torch.Tensor | None = None
    kept_columns: int = 0  # latent columns kept from ``previous_latents`` (continuation)
    text_chunks: int = 1  # 77-token chunks of every embedding of this riff (its longest prompt's)

    @property
    def masked(self) -> bool:
        """Whether the denoising loop blends the init latents back in (mask image or continuation)."""
        return self.mask_image is not None or self.kept_columns > 0


def preprocess_image(image: Image.Image) -> torch.Tensor:
    """An RGB image as a (1, 3, H, W) float32 tensor in [-1, 1], H and W cut to multiples of 32."""
    import torch
    from PIL import Image as PILImage

    width, height = (size - size % 32 for size in image.size)
    image = image.convert("RGB").resize((width, height), resample=PILImage.LANCZOS)
    array = np.asarray(image).astype(np.float32) / 255.0
    return 2.0 * torch.from_numpy(array[None].transpose(0, 3, 1, 2)) - 1.0


def preprocess_mask(mask: Image.Image, scale_factor: int = 8) -> torch.Tensor:
    """A mask image as a (1, 4, H/8, W/8) float32 latent mask: 1 keeps the seed, 0 repaints.

    White pixels of the image are repainted, black ones keep the seed image (luminance, nearest
    neighbour down to the latent grid, as Riffusion does).
    """
    import torch
    from PIL import Image as PILImage

    width, height = (size - size % 32 for size in mask.size)
    mask = mask.convert("L").resize((width // scale_factor, height // scale_factor), resample=PILImage.NEAREST)
    array = np.asarray(mask).astype(np.float32) / 255.0
    return torch.from_numpy(1 - np.tile(array, (4, 1, 1))[None])


class RiffEngine:
    """Makes spectrogram images from :class:`RiffRequest` s with a loaded SD 1.5 model.

    Build one with :meth:`load`. Attributes a caller may change:

    Attributes:
        max_batch_size: most requests in one UNet batch (CUDA: 4, else 1, where batching gains
            nothing); lowered automatically when a batch runs out of memory.
        detailed_timings: charge only the UNet's forward calls to ``"unet"`` and the scheduler
            and guidance arithmetic to ``"other"``. This waits for the device at every step,
            so it is on by default only on the CPU, where waiting costs nothing; off, ``"unet"``
            is the whole denoising loop.
        text_cache, init_cache, mask_cache: the LRU caches (text embeddings per prompt string and
            chunk count, VAE latent distributions per seed image, latent masks per mask image).
    """

    def __init__(self, model: LoadedModel, cache_size: int = 64, max_batch_size: int | None = None) -> None:
        """Wrap loaded components; ``cache_size`` bounds each cache (a latent is 64 KB, an embedding 236 KB)."""
        self._model = model
        self.max_batch_size = max_batch_size or (4 if model.device.type == "cuda" else 1)
        self.detailed_timings = model.device.type == "cpu"
        self.text_cache: LruCache[tuple[str, int], torch.Tensor] = LruCache(cache_size)
        self.init_cache: LruCache[Hashable, Any] = LruCache(cache_size)
        self.mask_cache: LruCache[Hashable, torch.Tensor] = LruCache(cache_size)

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str | None = None,
        scheduler: str | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> RiffEngine:
        """Load a model (hub id or local diffusers directory) and wrap it in an engine.

        Args:
            model: hub id (default ``riffusion/riffusion-model-v1``) or local diffusers directory.
            device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            dtype: ``float32``, ``float16`` or ``bfloat16``; ``None``: float16 on CUDA, float32
                elsewhere.
            scheduler: ``None`` keeps the checkpoint's (PNDM for Riffusion); ``"dpm++"``,
                ``"ddim"``, ``"euler"`` or ``"pndm"`` replace it, keeping its betas.
            compile: ``torch.compile`` the UNet.
            channels_last: NHWC memory format for the UNet and VAE.

        Raises:
            RiffradioError: one line: missing weights, not a model directory, no such device.
        """
        return cls(load_model(model, device, dtype, scheduler, compile, channels_last))

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._model.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's weight dtype."""
        return self._model.dtype

    @property
    def model(self) -> LoadedModel:
        """The loaded components (tokenizer, text encoder, UNet, VAE, scheduler)."""
        return self._model

    def check_request(self, request: RiffRequest) -> None:
        """Raise the one-line error :meth:`riff` would fail ``request`` with for its knobs, without running it.

        Every value the knob table accepts makes a clip (a schedule with no step left is an
        img2img without a UNet call), so this checks the request's values only; seed images
        are the caller's to resolve. Cheap enough for every DJ change.
        """
        _validate(request)

    def riff(
        self,
        request: RiffRequest,
        should_cancel: CancelCheck | None = None,
        previous_latents: torch.Tensor | None = None,
    ) -> RiffResult:
        """Run one riff; see :meth:`riff_batch`."""
        return self.riff_batch([request], should_cancel, None if previous_latents is None else [previous_latents])[0]

    def riff_batch(
        self,
        requests: Sequence[RiffRequest],
        should_cancel: CancelCheck | None = None,
        previous_latents: Sequence[torch.Tensor | None] | None = None,
    ) -> list[RiffResult]:
        """Run several riffs, sharing UNet batches between requests with the same schedule.

        Args:
            requests: the riffs to make.
            should_cancel: asked before every UNet step; when it returns True the riff is
                abandoned with :class:`~riffradio.errors.Cancelled` (the station uses it to drop
                a clip the DJ has just made obsolete, instead of finishing it).
            previous_latents: per request, the final latents ``(1, 4, H/8, W/8)`` of the clip it
                continues (``RiffResult.latents``), or None. A request with
                ``continuation_seconds > 0`` and previous latents keeps their last
                ``kept_latent_columns(continuation_seconds)`` columns as its first ones; without
                either it is today's riff, bit for bit. The requests of a batch are independent:
                a chain of clips each continuing the one before is made one riff at a time.

        Returns:
            One result per request, in order. Each result's ``timings_seconds`` holds its share
            of its batch's stage times (the batch's time divided by its size).

        Raises:
            RiffradioError: an invalid request, an image that cannot be loaded, or out of memory
                even for a single riff.
            Cancelled: ``should_cancel`` returned True.
        """
        import torch

        results: list[RiffResult | None] = [None] * len(requests)
        started = time.perf_counter()
        previous = list(previous_latents) if previous_latents is not None else [None] * len(requests)
        if len(previous) != len(requests):
            raise ValueError(f"{len(previous)} previous latents for {len(requests)} requests")
        prepared = [self._prepare(request, latents) for request, latents in zip(requests, previous)]
        prepare_seconds = (time.perf_counter() - started) / max(len(requests), 1)
        groups: dict[Hashable, list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(self._batch_key(item), []).append(index)
        with torch.inference_mode():
            for indices in groups.values():
                for chunk_start in range(0, len(indices), self.max_batch_size):
                    chunk = indices[chunk_start : chunk_start + self.max_batch_size]
                    for index, result in zip(chunk, self._run_splitting([prepared[i] for i in chunk], should_cancel)):
                        result.timings_seconds["other"] += prepare_seconds
                        results[index] = result
        return [result for result in results if result is not None]

    # -- steps ------------------------------------------------------------------------------

    def _prepare(self, request: RiffRequest, previous_latents: torch.Tensor | None = None) -> _Prepared:
        """Step 1: validate, load the images, interpolate guidance and strength, size the continuation, count text chunks."""
        _validate(request)
        mask_image = None if request.mask_image is None else _load_image(request.mask_image)
        kept = 0 if previous_latents is None else kept_latent_columns(request.continuation_seconds)
        guidance_scale = mix(request.start_guidance, request.end_guidance, request.alpha)
        prompts = [request.start_prompt, request.end_prompt]
        if guidance_scale > 1.0:
            prompts.append(request.negative_prompt)
        return _Prepared(
            request=request,
            guidance_scale=guidance_scale,
            strength=mix(request.start_denoising, request.end_denoising, request.alpha),
            init_image=_load_image(request.seed_image, request.seed_window_start_samples),
            mask_image=mask_image,
            previous_latents=previous_latents if kept > 0 else None,
            kept_columns=kept,
            # embeddings that are lerped or guided together need one length: the longest prompt's
            text_chunks=max(self._weighted_tokens(prompt).chunks for prompt in prompts),
        )

    def _batch_key(self, item: _Prepared) -> Hashable:
        """Requests share a UNet batch when their schedule, guidance mode and shapes agree."""
        steps = item.request.num_inference_steps
        return (
            steps,
            int(steps * item.strength),
            item.strength > 0,
            item.guidance_scale > 1.0,
            item.masked,
            item.init_image.size,
            item.text_chunks,
        )

    def _run_splitting(self, batch: list[_Prepared], should_cancel: CancelCheck | None) -> list[RiffResult]:
        """Run a batch; on out-of-memory halve it (and remember the size) until one riff fails."""
        import torch

        try:
            return self._run_batch(batch, should_cancel)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not is_out_of_memory(error):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise RiffradioError(
                    out_of_memory_message(self.device, "making a riff", 1, self.dtype)
                ) from None
            half = len(batch) // 2
            self.max_batch_size = max(1, half)
            return self._run_splitting(batch[:half], should_cancel) + self._run_splitting(batch[half:], should_cancel)

    def _weighted_tokens(self, text: str) -> WeightedTokens:
        """``text`` parsed for weights and tokenised fragment by fragment (Riffusion's way)."""
        tokenizer = self._model.tokenizer
        return weighted_tokens(text, lambda fragment: tokenizer(fragment).input_ids)

    def _embed_text(self, text: str, chunks: int | None = None) -> torch.Tensor:
        """Riffusion's weighted CLIP embedding ``(1, 77 * chunks, D)`` of one prompt.

        ``chunks``: at least the prompt's own (None: its own); more pads it with EOS chunks.

        Each chunk (BOS, 75 text or EOS-padding tokens, EOS) is encoded on its own and the
        hidden states are concatenated. If the prompt has weights, each position's hidden
        state is multiplied by its weight and the whole rescaled so that its mean stays what it
        was, in the text encoder's dtype, as Riffusion does. An unweighted one-chunk prompt is
        encoded exactly as before weights existed (the tokenizer's own padding).
        """
        import torch

        tokenizer, text_encoder = self._model.tokenizer, self._model.text_encoder
        tokens = self._weighted_tokens(text)
        chunks = tokens.chunks if chunks is None else chunks
        if tokens.truncated:
            log.warning("prompt %r is longer than %d tokens: the rest is not read", text[:60], len(tokens.token_ids))
        if chunks == 1 and not tokens.is_weighted:
            # all weights 1: one fragment, the prompt itself unless it has escapes or "(…:1)"
            (plain_text, _), = parse_prompt_weights(text)
            ids = tokenizer(
                plain_text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            ).input_ids  # fmt: skip
            return text_encoder(ids.to(self.device))[0]
        inputs = chunk_token_ids(tokens, chunks, tokenizer.bos_token_id, tokenizer.eos_token_id)
        ids = torch.tensor(inputs, dtype=torch.long, device=self.device)
        embedding = torch.cat([text_encoder(ids[index : index + 1])[0] for index in range(chunks)], dim=1)
        if not tokens.is_weighted:
            return embedding
        weights = torch.tensor(position_weights(tokens, chunks), dtype=embedding.dtype, device=embedding.device)
        mean_before = embedding.float().mean(dim=(-2, -1)).to(embedding.dtype)
        weighted = embedding * weights[None, :, None]
        mean_after = weighted.float().mean(dim=(-2, -1)).to(embedding.dtype)
        rescaled = weighted * (mean_before / mean_after)[:, None, None]
        if not bool(torch.isfinite(rescaled).all()):
            # Weights so large (or cancelling so exactly) that the maths overflows: the prompt's
            # words still make music, unweighted.
            log.warning("prompt %r: its weights overflow the embedding; playing it unweighted", text[:60])
            return embedding
        return rescaled

    def _generator(self, seed: int) -> torch.Generator:
        """A generator seeded like Riffusion's: on the device, on the CPU for MPS."""
        import torch

        device = "cpu" if self.device.type == "mps" else self.device
        return torch.Generator(device=device).manual_seed(seed)

    def _encode_image(self, image: Image.Image) -> Any:
        """The VAE's latent distribution of an image (sampled per request, so it can be cached)."""
        pixels = preprocess_image(image).to(device=self.device, dtype=self.dtype)
        return self._model.vae.encode(pixels).latent_dist

    def _run_batch(self, batch: list[_Prepared], should_cancel: CancelCheck | None = None) -> list[RiffResult]:
        """Steps 2–8 for requests that share a schedule (see the module docstring)."""
        watch = _Stopwatch(self.device)
        guided = batch[0].guidance_scale > 1.0

        # 2. Text embeddings: the prompts' lerped, the negative prompts' first when guided.
        text_embeddings = self._encode_prompts(batch, guided)
        watch.lap("text")

        # 3. Init latents: the seed image's latent distribution, sampled with the start seed.
        init_latents = self._prepare_init_latents(batch)
        watch.lap("vae_encode")

        # 4. Noise (start and end seeds slerped) and the optional latent mask.
        noise = self._prepare_noise(batch, tuple(init_latents.shape[1:]))
        mask = self._prepare_mask(batch, init_latents)

        # 5. Timesteps: the schedule cut by the strength (empty: no UNet call, still a valid img2img).
        timesteps, noise_timestep = self._get_timesteps(batch)

        # 6. The init latents noised to the first timestep of the loop; at strength 0 the seed
        #    image's latents as they are, so the clip is the seed image.
        if batch[0].strength > 0:
            latents = self._model.scheduler.add_noise(init_latents, noise, noise_timestep.repeat(len(batch)))
        else:
            latents = init_latents
        watch.lap("other")

        # 7. The denoising loop, with classifier-free guidance and the mask blend; then the
        #    continuation's kept columns exactly as the previous clip left them.
        latents = self._denoise(
            latents, timesteps, text_embeddings, [item.guidance_scale for item in batch],
            init_latents, noise, mask, watch, should_cancel,
        )  # fmt: skip
        latents = self._restore_kept(latents, init_latents, batch)
        watch.lap("unet")

        # 8. VAE decode to 8-bit RGB spectrogram images.
        images = self._decode_latents(latents, watch)
        share = {stage: seconds / len(batch) for stage, seconds in watch.seconds.items()}
        return [
            RiffResult(request=item.request, image=image, latents=latents[i : i + 1], timings_seconds=dict(share))
            for i, (item, image) in enumerate(zip(batch, images))
        ]

    def _encode_prompts(self, batch: list[_Prepared], guided: bool) -> torch.Tensor:
        """Step 2: text embeddings ``(B, 77 k, D)``, or ``(2B, 77 k, D)`` as [unconditional…, conditional…].

        Each prompt's embedding is cached per string; start and end embeddings are lerped by
        ``alpha``; with guidance the negative prompts' embeddings come first, so one UNet call
        serves both halves.
        """
        import torch

        chunks = batch[0].text_chunks  # one per batch (the batch key)

        def embed(text: str) -> torch.Tensor:
            return self.text_cache.get_or_create((text, chunks), lambda: self._embed_text(text, chunks))

        requests = [item.request for item in batch]
        texts = [lerp(embed(r.start_prompt), embed(r.end_prompt), r.alpha) for r in requests]
        if guided:
            texts = [embed(r.negative_prompt) for r in requests] + texts
        return torch.cat(texts)

    def _prepare_init_latents(self, batch: list[_Prepared]) -> torch.Tensor:
        """Step 3: ``(B, 4, H/8, W/8)`` init latents, scaled by the VAE's scaling factor.

        The latent distribution of each seed image is cached per reference and sampled with a
        generator seeded with the request's start seed, as Riffusion does. A continued request's
        first ``kept_columns`` are then the previous clip's last ones (no VAE round trip).
        """
        import torch

        vae = self._model.vae
        init_latents = []
        for item in batch:
            window = (item.request.seed_image, item.request.seed_window_start_samples)
            distribution = self.init_cache.get_or_create(window, lambda: self._encode_image(item.init_image))
            sample = vae.config.scaling_factor * distribution.sample(generator=self._generator(item.request.start_seed))
            if item.previous_latents is not None:
                sample = continued_init_latents(sample, item.previous_latents, item.kept_columns)
            init_latents.append(sample)
        return torch.cat(init_latents)

    def _prepare_noise(self, batch: list[_Prepared], latent_shape: tuple[int, ...]) -> torch.Tensor:
        """Step 4: ``(B, *latent_shape)`` noise, one tensor per seed slerped by ``alpha``.

        Generators are seeded afresh for each request, as Riffusion does.
        """
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        device, dtype = self.device, self.dtype
        shape = (1, *latent_shape)

        def draw(seed: int) -> torch.Tensor:
            return randn_tensor(shape, generator=self._generator(seed), device=device, dtype=dtype)

        return torch.cat([slerp(draw(item.request.start_seed), draw(item.request.end_seed), item.request.alpha) for item in batch])

    def _prepare_mask(self, batch: list[_Prepared], like: torch.Tensor) -> torch.Tensor | None:
        """Step 4: the ``(B, 4, H/8, W/8)`` latent masks (1 keeps the init latents), shaped like ``like``; None without.

        A mask image's (cached) and a continuation's kept columns, whichever keeps more.
        """
        import torch

        if not batch[0].masked:
            return None
        masks = []
        for index, item in enumerate(batch):
            mask = continuation_mask(like[index : index + 1], item.kept_columns)
            if item.mask_image is not None:
                image_mask = self.mask_cache.get_or_create(item.request.mask_image, lambda: preprocess_mask(item.mask_image))
                image_mask = image_mask.to(device=self.device, dtype=self.dtype)
                mask = image_mask if item.kept_columns == 0 else torch.maximum(mask, image_mask)
            masks.append(mask)
        return torch.cat(masks)

    def _restore_kept(self, latents: torch.Tensor, init_latents: torch.Tensor, batch: list[_Prepared]) -> torch.Tensor:
        """Step 7, end: each continued request's kept columns put back un-noised (the loop leaves them at its last timestep)."""
        import torch

        if not any(item.kept_columns for item in batch):
            return latents
        return torch.cat(
            [
                restore_kept_columns(latents[i : i + 1], init_latents[i : i + 1], item.kept_columns)
                for i, item in enumerate(batch)
            ]
        )

    def _get_timesteps(self, batch: list[_Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 5: the timesteps img2img denoises at the batch's strength, and the one the init
        latents are noised to (see :func:`img2img_timesteps`)."""
        steps = batch[0].request.num_inference_steps
        if batch[0].strength <= 0:  # the seed image as it is: no noise, no denoising
            scheduler = self._model.scheduler
            scheduler.set_timesteps(steps)
            return scheduler.timesteps[:0].to(self.device), scheduler.timesteps[-1:].to(self.device)
        timesteps, noise_timestep = img2img_timesteps(self._model.scheduler, steps, batch[0].strength)
        return timesteps.to(self.device), noise_timestep.to(self.device)

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_embeddings: torch.Tensor,
        scales: list[float],
        init_latents: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor | None,
        watch: _Stopwatch,
        should_cancel: CancelCheck | None,
    ) -> torch.Tensor:
        """Step 7: the denoising loop; returns the final ``(B, 4, H/8, W/8)`` latents.

        Args:
            latents: the noised init latents (step 6).
            timesteps: from step 5.
            text_embeddings: from step 2 (twice the batch when guided).
            scales: each request's guidance scale (guided when the embeddings are doubled).
            init_latents, noise: for the mask blend: Riffusion blends with the seed noised to
                the current timestep.
            mask: the latent mask, or None.
            watch: charged per UNet call when ``detailed_timings`` is on.
            should_cancel: asked before every step.

        Raises:
            Cancelled: ``should_cancel`` returned True.
        """
        import torch

        unet, scheduler = self._model.unet, self._model.scheduler
        guided = text_embeddings.shape[0] == 2 * latents.shape[0]
        extra_step_kwargs = {"eta": 0.0} if "eta" in _step_parameters(scheduler) else {}
        for t in timesteps:
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"riff cancelled at timestep {int(t)}")
            latent_model_input = torch.cat([latents] * 2) if guided else latents
            latent_model_input = scheduler.scale_model_input(latent_model_input, t)
            noise_pred = unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample
            if self.detailed_timings:
                watch.lap("unet")
            if guided:
                noise_pred = _guide(noise_pred, scales)
            latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
            if mask is not None:
                init_latents_proper = scheduler.add_noise(init_latents, noise, t.reshape(1))
                latents = (init_latents_proper * mask) + (latents * (1 - mask))
            if self.detailed_timings:
                watch.lap("other")
        return latents

    def _decode_latents(self, latents: torch.Tensor, watch: _Stopwatch) -> list[Image.Image]:
        """Step 8: VAE decode (Riffusion multiplies by 1/scale) to one 8-bit RGB image per latent."""
        import torch
        from PIL import Image as PILImage

        vae = self._model.vae
        decoded = vae.decode(1.0 / vae.config.scaling_factor * latents).sample
        decoded = (decoded / 2 + 0.5).clamp(0, 1)
        pixels = (decoded * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        watch.lap("vae_decode")
        images = [PILImage.fromarray(array, mode="RGB") for array in pixels]
        watch.lap("other")
        return images


def img2img_timesteps(scheduler: Any, num_inference_steps: int, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps an img2img run at ``strength`` denoises, Riffusion's way; sets up ``scheduler``.

    With Riffusion's checkpoint (PNDM, skip_prk_steps, steps_offset 1), 50 steps at strength
    0.75 give 38 timesteps starting at ``timesteps[13]``; the init latents are noised to the
    first of them. Other schedulers run ``int(steps * strength)`` timesteps.

    So few steps that none is left (``steps: 1``, or a low strength) is a valid img2img with no
    UNet call: Riffusion then noises the init latents to ``timesteps[-init_timestep]`` and
    decodes them as they are.

    Returns:
        ``(timesteps, noise_timestep)``: the loop's timesteps (maybe none), and a one-element
        tensor with the timestep the init latents are noised to.
    """
    scheduler.set_timesteps(num_inference_steps)
    offset = scheduler.config.get("steps_offset", 0)
    init_timestep = min(int(num_inference_steps * strength) + offset, num_inference_steps)
    t_start = max(num_inference_steps - init_timestep + offset, 0)
    timesteps = scheduler.timesteps[t_start:]
    if len(timesteps) > 0:
        noise_timestep = timesteps[:1]
    else:  # Riffusion's index; init_timestep 0 would wrap to the noisiest, so the least noisy then
        noise_timestep = scheduler.timesteps[-init_timestep:][:1] if init_timestep > 0 else scheduler.timesteps[-1:]
    if hasattr(scheduler, "set_begin_index"):  # sigma-indexed schedulers start mid-schedule
        noised_at = t_start if len(timesteps) > 0 else len(scheduler.timesteps) - max(init_timestep, 1)
        scheduler.set_begin_index(noised_at)
    return timesteps, noise_timestep


def _guide(noise_pred: torch.Tensor, scales: list[float]) -> torch.Tensor:
    """Classifier-free guidance ``uncond + g * (text - uncond)`` with each request's own ``g``."""
    import torch

    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    if len(set(scales)) == 1:
        return noise_pred_uncond + scales[0] * (noise_pred_text - noise_pred_uncond)
    # A Python float per request keeps each result identical to an unbatched run.
    return torch.cat(
        [
            noise_pred_uncond[i : i + 1] + scale * (noise_pred_text[i : i + 1] - noise_pred_uncond[i : i + 1])
            for i, scale in enumerate(scales)
        ]
    )


def _step_parameters(scheduler: Any) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def _load_image(reference: str, window_start_samples: int = 0) -> Image.Image:
    """A seed or mask image from its reference (bundled name, file path or synthesis spec): the
    5.12 s window of that loop from ``window_start_samples``.

    ``load_seed_window`` caches per (reference, window start), so the engine's caches key on them too.
    """
    from riffradio.spectrogram.seeds import load_seed_window

    return load_seed_window(reference, window_start_samples).convert("RGB")


def _validate(request: RiffRequest) -> None:
    """Raise a one-line error for knobs outside the knob table (every value inside makes a riff)."""
    problems = []
    checks = (
        ("alpha", "alpha"), ("start_denoising", "denoising"), ("end_denoising", "denoising"),
        ("start_guidance", "guidance"), ("end_guidance", "guidance"), ("num_inference_steps", "steps"),
        ("start_seed", "seed"), ("end_seed", "seed"), ("continuation_seconds", "continuation_seconds"),
    )  # fmt: skip
    for field_name, knob in checks:
        try:
            check_knob(knob, getattr(request, field_name), field_name)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise RiffradioError(f"invalid riff request for {request.title[:80]!r}: " + "; ".join(problems))
