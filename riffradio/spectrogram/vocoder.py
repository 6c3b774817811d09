"""Riffusion spectrogram images → audio: inverse mel (NNLS), PGHI phase, Fast Griffin-Lim.

Output level: Riffusion's decoder throws the image's maximum away, so the absolute level of a
generated image is unknown. The vocoder therefore scales every clip so that its sample peak is
``REFERENCE_PEAK_DBFS`` (−1 dBFS, joint over channels); an all-white (silent) image decodes to
zeros. Loudness across clips is the station's job.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from riffradio.errors import CancelCheck, RiffradioError
from riffradio.spectrogram.image import audio_to_image, image_to_mel, max_value_from_image, params_from_image
from riffradio.spectrogram.mel import mel_filterbank
from riffradio.spectrogram.params import SpectrogramParams
from riffradio.spectrogram.phase import fast_griffin_lim, grids_nest, pghi_phase, phase_on_coarser_grid

__all__ = [
    "REFERENCE_PEAK_DBFS",
    "VocodedClip",
    "Vocoder",
    "audio_to_image",
    "image_to_audio",
    "join_edge_frames",
    "mel_to_audio",
]

REFERENCE_PEAK_DBFS = -1.0
DEFAULT_FGLA_ITERATIONS = 32
LANCZOS_TAPS = 4  # coarse-to-padded magnitude interpolation in the inverse mel (Lanczos-2)
# Below this the phase is integrated on the padded 17 640-point grid (docs/benchmarks.md, run 5).
FINE_PHASE_MAX_HZ = 500.0
# The fine-grid inverse mel solves a little above FINE_PHASE_MAX_HZ so that the bands at the cut
# see all of their bins.
FINE_PHASE_MARGIN_HZ = 100.0
_FINE_SOLVE_MAX_HZ = FINE_PHASE_MAX_HZ + FINE_PHASE_MARGIN_HZ


@dataclass(frozen=True)
class _InverseMelOperators:
    """A (mels × active grid bins) as COO triplets, its clipped-pseudo-inverse start, step size."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    pseudo_inverse: np.ndarray
    lipschitz: float
    num_mels: int
    active_bins: int

    def dense(self) -> torch.Tensor:
        """A as a dense float32 ``(num_mels, active_bins)`` tensor on the CPU."""
        matrix = torch.zeros(self.num_mels, self.active_bins, dtype=torch.float32)
        matrix[torch.from_numpy(self.rows), torch.from_numpy(self.cols)] = torch.from_numpy(self.values)
        return matrix


@functools.lru_cache(maxsize=8)
def _inverse_mel_operators(
    params: SpectrogramParams, grid_n_fft: int, max_hz: float | None = None
) -> _InverseMelOperators:
    """A maps the grid's lowest bins to mel amplitudes.

    With ``max_hz``, A covers only the bins up to ``max_hz`` and the mel bands that lie wholly
    below it: a small problem for the low band alone.

    The mel bands were computed on the zero-padded ``n_fft`` grid; a coarser grid (the unpadded
    window length) samples the same spectrum at every ``n_fft / grid`` th bin, so A is the mel
    filterbank times interpolation from the coarse grid to the padded one. Zero padding
    interpolates the complex spectrum with a sinc; within a window's main lobe the phases agree,
    so the magnitudes follow the same sinc: a Lanczos-2 kernel (4 taps, mirrored at 0 Hz) models
    the padded magnitudes better than linear interpolation (magnitude error 2 dB lower,
    spectral convergence 0.5 dB lower on real music; docs/benchmarks.md). Each grid bin touches
    only a few neighbouring bands, so A is kept sparse.
    """
    filterbank = mel_filterbank(params).astype(np.float64)  # (padded bins, mels)
    covered = np.nonzero(filterbank.any(axis=1))[0]  # padded bins some band touches
    grid_bins = grid_n_fft // 2 + 1
    # Each covered padded bin's position on the grid, in (fractional) grid bins.
    position = covered * (grid_n_fft / params.n_fft_samples)
    # A = filterbank.T @ interpolation, accumulated tap by tap without the (padded × grid) matrix.
    forward_t = np.zeros((grid_bins, filterbank.shape[1]))
    for offset in range(-LANCZOS_TAPS // 2 + 1, LANCZOS_TAPS // 2 + 1):
        source = np.floor(position).astype(int) + offset
        distance = position - source
        weight = np.sinc(distance) * np.sinc(distance / (LANCZOS_TAPS // 2))
        weight[np.abs(weight) < 1e-9] = 0.0  # the kernel's zeros at whole bins, exactly
        # |X| is even about 0 Hz and about Nyquist: mirror the taps that fall outside.
        source = np.abs(source)
        source = np.where(source > grid_bins - 1, 2 * (grid_bins - 1) - source, source)
        np.add.at(forward_t, source, filterbank[covered] * weight[:, None])
    forward = forward_t.T  # (mels, grid bins)
    if max_hz is not None:
        kept_bins = int(max_hz / (params.sample_rate_hz / grid_n_fft)) + 1
        whole_bands = ~forward[:, kept_bins:].any(axis=1)
        forward = forward[whole_bands, :kept_bins]
    # Bins above the top mel band stay zero: solve only for those below it.
    active_bins = int(np.nonzero(forward.any(axis=0))[0].max()) + 1
    forward = forward[:, :active_bins]
    rows, cols = np.nonzero(forward)
    return _InverseMelOperators(
        rows=rows,
        cols=cols,
        values=forward[rows, cols].astype(np.float32),
        pseudo_inverse=np.linalg.pinv(forward, rcond=1e-6).astype(np.float32),
        lipschitz=float(np.linalg.norm(forward, 2) ** 2),
        num_mels=forward.shape[0],
        active_bins=active_bins,
    )


@dataclass(frozen=True)
class _DeviceOperators:
    """The operators' tensors on one device: A dense (accelerators) or as COO triplets (CPU)."""

    pseudo_inverse: torch.Tensor
    matrix: torch.Tensor | None
    rows: torch.Tensor | None
    cols: torch.Tensor | None
    values: torch.Tensor | None


@functools.lru_cache(maxsize=16)
def _device_operators(
    params: SpectrogramParams, grid_n_fft: int, max_hz: float | None, device: torch.device, dense: bool
) -> _DeviceOperators:
    """Built and copied to ``device`` once, not for every clip."""
    operators = _inverse_mel_operators(params, grid_n_fft, max_hz)
    pseudo_inverse = torch.from_numpy(operators.pseudo_inverse).to(device)
    if dense:
        return _DeviceOperators(pseudo_inverse, operators.dense().to(device), None, None, None)
    return _DeviceOperators(
        pseudo_inverse,
        None,
        torch.from_numpy(operators.rows).to(device),
        torch.from_numpy(operators.cols).to(device),
        torch.from_numpy(operators.values).to(device)[:, None],
    )


def inverse_mel(
    mel: torch.Tensor,
    params: SpectrogramParams,
    grid_n_fft: int,
    iterations: int = 10,
    max_hz: float | None = None,
    dense: bool | None = None,
) -> torch.Tensor:
    """Non-negative least-squares linear magnitudes ``(..., active bins, frames)`` for ``mel``.

    Only the bins up to the top mel band are returned (the rest are zero); with ``max_hz``,
    only the bins up to ``max_hz``, solved from the mel bands below it. Starts from the
    clipped pseudo-inverse and runs accelerated projected gradient (FISTA) on all frames at once
    with the sparse A: no per-column solver, no SGD. 10 iterations reach the converged error
    within 0.05 dB on real music. ``dense`` (default: on any device but the CPU) applies A as
    a dense matrix instead of scattering its non-zeros.
    """
    operators = _inverse_mel_operators(params, grid_n_fft, max_hz)
    if max_hz is not None:
        # The kept bands are the lowest ones (mel bands rise with their index).
        mel = mel[..., : operators.num_mels, :]
    device = mel.device
    if dense is None:
        dense = device.type != "cpu"
    tensors = _device_operators(params, grid_n_fft, max_hz, device, dense)
    if tensors.matrix is not None:
        # Accelerators: a dense matmul is fast and, unlike index_add_'s atomics on CUDA,
        # sums in a fixed order, so the decode stays deterministic.
        matrix = tensors.matrix

        def forward(magnitude: torch.Tensor) -> torch.Tensor:
            return matrix @ magnitude

        def adjoint(residual: torch.Tensor) -> torch.Tensor:
            return matrix.T @ residual

    else:
        # CPU: A has a few non-zeros per bin; gather-multiply-scatter beats the dense matmul.
        rows, cols, values = tensors.rows, tensors.cols, tensors.values

        def forward(magnitude: torch.Tensor) -> torch.Tensor:  # (..., bins, frames) → (..., mels, frames)
            out = magnitude.new_zeros(*magnitude.shape[:-2], operators.num_mels, magnitude.shape[-1])
            return out.index_add_(-2, rows, magnitude.index_select(-2, cols) * values)

        def adjoint(residual: torch.Tensor) -> torch.Tensor:  # (..., mels, frames) → (..., bins, frames)
            out = residual.new_zeros(*residual.shape[:-2], operators.active_bins, residual.shape[-1])
            return out.index_add_(-2, cols, residual.index_select(-2, rows) * values)

    mel = mel.to(torch.float32)
    target = adjoint(mel)
    step = 1.0 / operators.lipschitz
    estimate = torch.clamp(tensors.pseudo_inverse @ mel, min=0.0)
    momentum_point = estimate
    t = 1.0
    for _ in range(iterations):
        gradient = adjoint(forward(momentum_point)) - target
        updated = torch.clamp(momentum_point - step * gradient, min=0.0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum_point = updated + ((t - 1) / t_next) * (updated - estimate)
        estimate, t = updated, t_next
    return estimate


def mel_to_audio(
    mel: torch.Tensor,
    params: SpectrogramParams,
    fgla_iterations: int = DEFAULT_FGLA_ITERATIONS,
    grid_n_fft: int | None = None,
    should_cancel: CancelCheck | None = None,
    fine_low_band_phase: bool = True,
    known_phase: torch.Tensor | None = None,
    lock_known_phase: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio and phase for mel amplitudes ``(..., channels, mels, frames)``, not normalised.

    Args:
        mel: mel amplitudes as :func:`~riffradio.spectrogram.image.image_to_mel` returns them.
        params: spectrogram parameters (hop, window, mel bands).
        fgla_iterations: Fast Griffin-Lim iterations after PGHI.
        grid_n_fft: FFT size of the grid the phase is rebuilt on; the unpadded window length
            (4 410) by default: the zero padding to 17 640 adds no information and costs 4×.
        should_cancel: asked before every Griffin-Lim iteration; True raises
            :class:`~riffradio.errors.Cancelled`.
        fine_low_band_phase: start the phase below ``FINE_PHASE_MAX_HZ`` from PGHI on the padded
            grid (when ``grid_n_fft`` divides ``n_fft``); False only to measure what it brings.
        known_phase: phase ``(..., channels, grid bins, known_frames)`` (radians, torch's STFT
            convention) of the first frames, e.g. the clip before's phase on the frames both
            clips share: PGHI integrates onward from it (:func:`pghi_phase`), so the phase runs on
            without a jump.
        lock_known_phase: keep the known frames' phase through Griffin-Lim, so they decode to
            the waveform already played; False only starts from it (to measure what locking brings).

    Returns:
        Audio ``(..., channels, samples)`` and its phase ``(..., channels, grid bins, frames)``,
        the last Griffin-Lim iterate's.
    """
    grid = params.win_length_samples if grid_n_fft is None else grid_n_fft
    bins = grid // 2 + 1
    known_frames = 0 if known_phase is None else min(int(known_phase.shape[-1]), mel.shape[-1])
    # 1. Magnitudes on the grid (NNLS inverse mel).
    active = inverse_mel(mel, params, grid)
    magnitude = torch.nn.functional.pad(active, (0, 0, 0, bins - active.shape[-2]))
    # 2. Phase by PGHI; the low band's from the padded grid, where its partials are resolved.
    known_active = None if known_phase is None else known_phase[..., : active.shape[-2], :known_frames].to(active.device)
    phase = pghi_phase(active, params.hop_length_samples, grid, params.win_length_samples, known_phase=known_active)
    if fine_low_band_phase:
        phase = _with_fine_low_band_phase(phase, mel, params, grid, known_frames)
    phase = torch.nn.functional.pad(phase, (0, 0, 0, bins - active.shape[-2]))
    # 3. Fast Griffin-Lim on the grid.
    length = mel.shape[-1] * params.hop_length_samples
    locked = known_frames if lock_known_phase else 0
    return fast_griffin_lim(
        magnitude, phase, params, length, fgla_iterations, should_cancel=should_cancel, locked_frames=locked
    )


def _with_fine_low_band_phase(
    phase: torch.Tensor, mel: torch.Tensor, params: SpectrogramParams, grid_n_fft: int, known_frames: int = 0
) -> torch.Tensor:
    """``phase`` on the coarse grid with its bins below ``FINE_PHASE_MAX_HZ`` rebuilt on the padded grid.

    The mel bands below 500 Hz are narrower than the coarse grid's 10 Hz bins, and the bass's
    partials span only a few of those bins: PGHI's finite-difference gradients of the log
    magnitude are then coarse. The padded grid (``n_fft``, 2.5 Hz bins, where the mel bands
    were computed, so its inverse mel is exact) resolves them; its every ``r``-th bin is the
    coarse grid's bin, phase-shifted by the windows' offset. Mean spectral convergence −20.8 →
    −21.3 dB on real music for 25–50 ms of CPU per clip (docs/benchmarks.md, run 5).

    The first ``known_frames`` keep their (known) phase; after them each low bin's padded-grid
    phase is turned by one constant so that it continues the last known frame.
    """
    if grid_n_fft >= params.n_fft_samples or not grids_nest(params.n_fft_samples, grid_n_fft):
        return phase
    if known_frames >= phase.shape[-1]:
        return phase
    fine = inverse_mel(mel, params, params.n_fft_samples, max_hz=_FINE_SOLVE_MAX_HZ)
    fine_phase = pghi_phase(fine, params.hop_length_samples, params.n_fft_samples, params.win_length_samples)
    coarse_bins = min(int(FINE_PHASE_MAX_HZ / (params.sample_rate_hz / grid_n_fft)) + 1, phase.shape[-2])
    low = phase_on_coarser_grid(fine_phase, params.n_fft_samples, grid_n_fft, coarse_bins)
    phase = phase.clone()
    if known_frames > 0:
        turn = phase[..., : low.shape[-2], known_frames - 1 : known_frames] - low[..., known_frames - 1 : known_frames]
        phase[..., : low.shape[-2], known_frames:] = torch.remainder(low[..., known_frames:] + turn, 2 * math.pi)
    else:
        phase[..., : low.shape[-2], :] = low
    return phase


def _normalise_peak(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-9:
        return np.zeros_like(audio, dtype=np.float32)
    return (audio * (10 ** (REFERENCE_PEAK_DBFS / 20) / peak)).astype(np.float32)


def _image_mel(image: Image.Image, params: SpectrogramParams) -> tuple[np.ndarray, SpectrogramParams]:
    if not isinstance(image, Image.Image):
        raise RiffradioError(f"expected a PIL image, got {type(image).__name__}")
    image_params = params_from_image(image, params)
    max_value = max_value_from_image(image) or 1.0
    return image_to_mel(image, image_params, max_value), image_params


def join_edge_frames(params: SpectrogramParams) -> int:
    """Frames at a clip's end whose phase its end bends (half a window, in hops): 5 at the defaults."""
    return math.ceil(params.win_length_samples / 2 / params.hop_length_samples)


@dataclass(frozen=True)
class VocodedClip:
    """A decoded clip and the phase it was synthesised from, so that the next clip can continue it.

    Attributes:
        audio: float32 ``(channels, samples)`` at ``params.sample_rate_hz``, peak at
            ``REFERENCE_PEAK_DBFS``.
        phase_radians: float32 tensor ``(channels, win_length // 2 + 1, frames)`` (2 206 bins of
            the 4 410-point grid, one frame per image column; torch's STFT convention) on the
            vocoder's device: the last Griffin-Lim iterate, whose synthesis is ``audio``.
        params: the spectrogram parameters the image was decoded with.
    """

    audio: np.ndarray
    phase_radians: torch.Tensor
    params: SpectrogramParams

    def tail_phase(self, overlap_frames: int, params: SpectrogramParams) -> torch.Tensor | None:
        """The phase a clip sharing this one's last ``overlap_frames`` frames starts from, or None.

        Shape ``(channels, bins, overlap_frames − join_edge_frames)``: this clip's phase from
        ``overlap_frames`` before its end up to its last :func:`join_edge_frames`. None when
        that leaves nothing, or the next clip's parameters differ (sample rate, channels, …:
        nothing to continue).
        """
        frames = self.phase_radians.shape[-1]
        overlap_frames = min(overlap_frames, frames)
        known = overlap_frames - join_edge_frames(params)
        if known <= 0 or params != self.params:
            return None
        start = frames - overlap_frames
        return self.phase_radians[:, :, start : start + known]


def image_to_audio(
    image: Image.Image, params: SpectrogramParams = SpectrogramParams(), device: str | torch.device = "cpu"
) -> np.ndarray:
    """Decode one spectrogram image to float32 ``(channels, samples)`` at −1 dBFS peak."""
    return Vocoder(params, device).image_to_audio(image)


class Vocoder:
    """Turns Riffusion spectrogram images into audio on one torch device, batched.

    Args:
        params: spectrogram parameters; EXIF tags in an image override them for that image.
        device: torch device for the maths ("cpu", "cuda", "mps", ...).

    :meth:`decode` continues the phase of the clip before over the frames both share (the
    station's continuation overlap), so the two renderings of a join's crossfade agree in phase.

    Cost on CPU: about 1.1 s of one core per 5.12 s clip (docs/benchmarks.md). torch uses every
    core by default and riffradio does not change that; on a small machine shared with the
    diffusion engine and the encoders, one torch thread (``OMP_NUM_THREADS=1`` in the
    environment) decoded faster than two threads waiting for each other (the vocoder's runs 1
    and 2 there).
    """

    def __init__(
        self, params: SpectrogramParams = SpectrogramParams(), device: str | torch.device = "cpu"
    ) -> None:
        self.params = params
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise RiffradioError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None
        # Build the cached operators now, not during the first clip.
        _inverse_mel_operators(params, params.win_length_samples)
        _inverse_mel_operators(params, params.n_fft_samples, _FINE_SOLVE_MAX_HZ)

    def image_to_audio(self, image: Image.Image, should_cancel: CancelCheck | None = None) -> np.ndarray:
        """Float32 ``(channels, samples)`` at ``sample_rate_hz``, peak at ``REFERENCE_PEAK_DBFS``."""
        return self.images_to_audio([image], should_cancel)[0]

    @torch.inference_mode()
    def decode(
        self,
        image: Image.Image,
        should_cancel: CancelCheck | None = None,
        previous: VocodedClip | None = None,
        overlap_frames: int = 0,
        lock_known_phase: bool = True,
    ) -> VocodedClip:
        """Decode one image, continuing the phase of ``previous`` over the frames they share.

        Args:
            image: the spectrogram image (EXIF tags override the vocoder's parameters).
            should_cancel: asked before every Griffin-Lim iteration; True raises
                :class:`~riffradio.errors.Cancelled`.
            previous: the clip before, decoded by this method; ``None`` (or ``overlap_frames``
                at most :func:`join_edge_frames`) decodes the image on its own, exactly as
                :meth:`image_to_audio` does.
            overlap_frames: image columns (10 ms STFT frames) this clip's start shares with the
                end of ``previous``: the first ``overlap_frames`` columns here are the last ones
                there. The first ``overlap_frames − join_edge_frames`` of them take the phase
                ``previous`` had there (its last few frames are left out: the end of a clip
                bends their phase), PGHI integrates onward from it, and Griffin-Lim keeps it
                (``lock_known_phase``) or only starts from it.
            lock_known_phase: see ``overlap_frames``.

        Returns:
            The audio (float32 ``(channels, samples)``, peak at ``REFERENCE_PEAK_DBFS``) and the
            phase it was made from, for the next clip.
        """
        mel, image_params = _image_mel(image, self.params)
        known = None
        if previous is not None:
            known = previous.tail_phase(overlap_frames, image_params)
        audio, phase = mel_to_audio(
            torch.from_numpy(mel).to(self.device),
            image_params,
            should_cancel=should_cancel,
            known_phase=known,
            lock_known_phase=lock_known_phase,
        )
        return VocodedClip(audio=_normalise_peak(audio.cpu().numpy()), phase_radians=phase, params=image_params)

    @torch.inference_mode()
    def images_to_audio(
        self, images: Sequence[Image.Image], should_cancel: CancelCheck | None = None
    ) -> list[np.ndarray]:
        """Decode several images in one batch (images with equal parameters and size share it).

        ``should_cancel`` is asked before every Griffin-Lim iteration; True raises
        :class:`~riffradio.errors.Cancelled`.
        """
        decoded = [_image_mel(image, self.params) for image in images]
        results: list[np.ndarray | None] = [None] * len(decoded)
        groups: dict[tuple[SpectrogramParams, tuple[int, ...]], list[int]] = {}
        for index, (mel, image_params) in enumerate(decoded):
            groups.setdefault((image_params, mel.shape), []).append(index)
        for (image_params, _), indices in groups.items():
            batch = torch.from_numpy(np.stack([decoded[i][0] for i in indices])).to(self.device)
            audio = mel_to_audio(batch, image_params, should_cancel=should_cancel)[0].cpu().numpy()
            for row, index in enumerate(indices):
                results[index] = _normalise_peak(audio[row])
        return [result for result in results if result is not None]
