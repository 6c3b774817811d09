"""Phase reconstruction from STFT magnitude: Phase Gradient Heap Integration, then Fast Griffin-Lim.

PGHI (Průša, Balazs & Søndergaard 2017) estimates the phase gradient from the gradient of the
log magnitude, as if the Hann window were a Gaussian of the same time-frequency spread
(``λ = 0.25645 · L²``), and integrates it. This is the frame-by-frame ("real-time") variant:
each bin continues the phase of the bin a heap of magnitudes would reach it from (integration
along time, then along frequency). Both the heap order and the integration over frames are
written as parallel scans in torch, so there is no Python heap over ~10⁶ bins and no loop over
frames, and PGHI runs on the GPU with the rest.

Fast Griffin-Lim (Perraudin, Balazs & Søndergaard 2013) then refines it: Griffin-Lim's
projections with a momentum term (0.99). Everything is torch, batched over clips, so the same
code runs on CUDA, MPS or CPU; it is deterministic for a given input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from riffradio.errors import CancelCheck, Cancelled
from riffradio.spectrogram.params import SpectrogramParams

# Time-frequency spread of a Gaussian that matches a Hann window of length L: λ = 0.25645 L².
HANN_GAUSSIAN_LAMBDA_PER_L2 = 0.25645


def _compose_clamps(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix compositions along dim 1 of the maps ``f_m(w) = clamp(w, low[m], high[m])``.

    Returns ``(L, H)`` with ``f_m ∘ … ∘ f_0 = clamp(·, L[m], H[m])``: a clamp of a clamp is a
    clamp, so a Hillis-Steele scan settles all bins in ⌈log2(bins)⌉ vectorised steps.
    """
    bins = low.shape[1]
    step = 1
    while step < bins:
        later_low, later_high = low[:, step:], high[:, step:]
        composed_low = torch.minimum(torch.maximum(low[:, :-step], later_low), later_high)
        composed_high = torch.minimum(torch.maximum(high[:, :-step], later_low), later_high)
        low = torch.cat([low[:, :step], composed_low], dim=1)
        high = torch.cat([high[:, :step], composed_high], dim=1)
        step *= 2
    return low, high


def _phase_sources(magnitude: torch.Tensor) -> torch.Tensor:
    """For every bin of every frame ``(batch, bins, frames)``, the bin whose previous-frame phase it continues.

    This is the order a heap of magnitudes (RTPGHI) visits the bins in: a bin is reached along
    the widest path — the one whose weakest visited bin is strongest — that starts at some bin
    ``k`` of the previous frame, steps in time to bin ``k``, then walks along frequency. Walking
    up, the width at bin ``m`` is ``max(p[m], min(width[m−1], |X|[m−1]))`` with ``p`` the
    previous frame's magnitude (frame 0 starts from its strongest bin): a clamp of the width
    before it, scanned in parallel by :func:`_compose_clamps`; the source is the last bin at
    or below ``m`` where the time step won (a running maximum). Walking down is the same on
    the flipped bins; the wider of the two paths wins.
    """
    batch, bins, _ = magnitude.shape
    previous = torch.zeros_like(magnitude)
    previous[:, :, 1:] = magnitude[:, :, :-1]
    previous[torch.arange(batch, device=magnitude.device), magnitude[:, :, 0].argmax(dim=1), 0] = math.inf
    index = torch.arange(bins, device=magnitude.device)[None, :, None].expand_as(magnitude)
    paths = []
    for flipped in (False, True):
        p = previous.flip(1) if flipped else previous
        m = magnitude.flip(1) if flipped else magnitude
        high = torch.cat([p[:, :1], torch.maximum(p[:, 1:], m[:, :-1])], dim=1)
        width, _ = _compose_clamps(p, high)
        through = torch.minimum(width[:, :-1], m[:, :-1])
        from_time = torch.cat([torch.ones_like(p[:, :1], dtype=torch.bool), p[:, 1:] >= through], dim=1)
        source = torch.cummax(torch.where(from_time, index, torch.zeros_like(index)), dim=1).values
        if flipped:
            width, source = width.flip(1), (bins - 1) - source.flip(1)
        paths.append((width, source))
    (width_up, source_up), (width_down, source_down) = paths
    return torch.where(width_up >= width_down, source_up, source_down)


def _integrate_frames(sources: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Run ``phase_t[m] = phase_{t−1}[sources_t[m]] + offsets_t[m]`` over all frames (``phase_{−1} = 0``).

    ``sources`` may point at ``bins`` (one past the last bin): a bin whose phase is reset to 0.
    Each frame's step is a gather plus an offset, and two such steps compose into one, so
    pointer jumping over ⌈log2(frames)⌉ vectorised rounds replaces the sequential loop.
    Offsets stay wrapped to [0, 2π) so float32 keeps its precision.
    """
    frames = sources.shape[2]
    # The reset bin: always 0, maps to itself.
    sources = torch.cat([sources, torch.full_like(sources[:, :1], sources.shape[1])], dim=1)
    offsets = torch.cat([offsets, torch.zeros_like(offsets[:, :1])], dim=1)
    step = 1
    while step < frames:
        later = sources[:, :, step:]
        composed_offsets = torch.remainder(offsets[:, :, step:] + torch.gather(offsets[:, :, :-step], 1, later), 2 * math.pi)
        composed_sources = torch.gather(sources[:, :, :-step], 1, later)
        sources = torch.cat([sources[:, :, :step], composed_sources], dim=2)
        offsets = torch.cat([offsets[:, :, :step], composed_offsets], dim=2)
        step *= 2
    return offsets[:, :-1]


def pghi_phase(
    magnitude: torch.Tensor,
    hop_length_samples: int,
    n_fft_samples: int,
    win_length_samples: int,
    tolerance_db: float = 60.0,
    known_phase: torch.Tensor | None = None,
) -> torch.Tensor:
    """Phase (radians, torch's STFT convention) for ``magnitude`` of shape ``(..., bins, frames)``.

    Torch float32 on ``magnitude``'s device, batched, no Python loop over bins or frames: the
    heap order and the frame-to-frame integration are parallel scans (:func:`_phase_sources`,
    :func:`_integrate_frames`) equal to RTPGHI's sequential definition (tests/test_vocoder.py).

    Args:
        magnitude: non-negative STFT magnitudes, ``bins = n_fft // 2 + 1`` (trailing all-zero
            bins, e.g. above the mel range, may be cut off by the caller).
        hop_length_samples: hop between frames.
        n_fft_samples: FFT length the bins belong to.
        win_length_samples: Hann window length (centred in the FFT frame).
        tolerance_db: bins more than this far below the clip's maximum get phase 0.
        known_phase: the phase ``(..., bins, known_frames)`` of the first frames, already known
            (a continued clip's overlap with the clip before it): those frames keep it and the
            integration runs onward from the last of them, so the phase stays continuous
            with what was played.
    """
    shape = magnitude.shape
    mag = magnitude.detach().reshape(-1, *shape[-2:]).to(torch.float32)
    bins = mag.shape[1]
    lam = HANN_GAUSSIAN_LAMBDA_PER_L2 * win_length_samples**2
    peak = mag.amax(dim=(1, 2), keepdim=True)
    log_mag = torch.log(mag + peak * 1e-10 + 1e-30)
    bin_index = torch.arange(bins, device=mag.device)
    # Window-centre convention: phase advance per frame is 2π·hop·(m + δ)/N with the
    # frequency offset δ = N²/(2πλ)·∂log|X|/∂m; phase step per bin is −2π/N × the local
    # time offset λ/(2π·hop)·∂log|X|/∂n. 2π·hop·m/N reaches hundreds of radians: wrap it
    # exactly, in integers, before float32 sees it.
    advance = torch.remainder(hop_length_samples * bin_index, n_fft_samples).to(torch.float32) * (2 * math.pi / n_fft_samples)
    time_step = advance[None, :, None] + hop_length_samples * n_fft_samples / lam * torch.gradient(log_mag, dim=1)[0]
    freq_step = -(lam / (n_fft_samples * hop_length_samples)) * torch.gradient(log_mag, dim=2)[0]
    # Trapezoid steps along frequency, cumulated: the walk from bin k to bin m is a difference.
    walk = torch.cat([torch.zeros_like(freq_step[:, :1]), torch.cumsum((freq_step[:, 1:] + freq_step[:, :-1]) / 2, dim=1)], dim=1)
    # Frame t continues source bin s: phase_{t−1}[s] + (time step of frames t−1 and t at s) + walk s → m.
    time_steps = torch.zeros_like(time_step)
    time_steps[:, :, 1:] = (time_step[:, :, :-1] + time_step[:, :, 1:]) / 2
    sources = _phase_sources(mag)
    offsets = torch.gather(time_steps, 1, sources) + walk - torch.gather(walk, 1, sources)
    significant = mag > peak * 10 ** (-tolerance_db / 20)
    sources = torch.where(significant, sources, torch.full_like(sources, bins))
    offsets = torch.where(significant, torch.remainder(offsets, 2 * math.pi), torch.zeros_like(offsets))
    odd_bins_pi = math.pi * (bin_index % 2).to(torch.float32)[None, :, None]
    if known_phase is not None:
        # A known frame continues the reset bin (phase 0) with its known phase as the offset.
        known = known_phase.detach().reshape(mag.shape[0], bins, -1).to(device=mag.device, dtype=torch.float32)
        count = min(known.shape[-1], mag.shape[-1])
        sources[:, :, :count] = bins
        offsets[:, :, :count] = torch.remainder(known[..., :count] - odd_bins_pi, 2 * math.pi)
    phase = _integrate_frames(sources, offsets)
    # Back to torch's convention (phase referenced to the frame start): add π·m.
    phase = torch.remainder(phase + odd_bins_pi, 2 * math.pi)
    return phase.to(magnitude.dtype).reshape(shape)


def grids_nest(fine_n_fft: int, coarse_n_fft: int) -> bool:
    """True when every coarse-grid bin is a fine-grid bin and the frames start a whole sample apart."""
    return fine_n_fft % coarse_n_fft == 0 and (fine_n_fft - coarse_n_fft) % 2 == 0


def phase_on_coarser_grid(fine_phase: torch.Tensor, fine_n_fft: int, coarse_n_fft: int, coarse_bins: int) -> torch.Tensor:
    """The phase ``(..., coarse_bins, frames)`` that ``fine_phase`` implies on a coarser FFT grid.

    Both grids centre the same window in their frames (torch's ``center=True`` convention), so
    coarse bin ``k`` is fine bin ``r·k`` (``r = fine_n_fft / coarse_n_fft``, an integer) whose
    frame starts ``(fine_n_fft − coarse_n_fft) / 2`` samples earlier: its phase is larger by
    ``π·k·(r − 1)``.
    """
    if not grids_nest(fine_n_fft, coarse_n_fft):
        raise ValueError(f"{fine_n_fft}-point grid is not an even multiple of the {coarse_n_fft}-point grid")
    ratio = fine_n_fft // coarse_n_fft
    sampled = fine_phase[..., ::ratio, :][..., :coarse_bins, :]
    bin_index = torch.arange(sampled.shape[-2], device=fine_phase.device, dtype=fine_phase.dtype)[:, None]
    return torch.remainder(sampled + math.pi * (ratio - 1) * bin_index, 2 * math.pi)


class _FramePair:
    """A consistent STFT / inverse STFT pair on one grid, cheaper than torch.stft/istft in a loop.

    Frames are centred (reflect padding, like :func:`~riffradio.spectrogram.mel.stft`); the
    inverse is the least-squares overlap-add with the window-power envelope computed once.
    """

    def __init__(self, params: SpectrogramParams, n_fft: int, frames: int, length_samples: int, device: torch.device) -> None:
        self.n_fft, self.frames, self.length = n_fft, frames, length_samples
        self.hop = params.hop_length_samples
        window = torch.hann_window(params.win_length_samples, periodic=True, dtype=torch.float32, device=device)
        left = (n_fft - window.numel()) // 2
        self.window = torch.nn.functional.pad(window, (left, n_fft - window.numel() - left))
        self.span = (frames - 1) * self.hop + n_fft  # samples the frames cover, padding included
        envelope = torch.nn.functional.fold(
            (self.window**2)[None, :, None].expand(1, n_fft, frames),
            output_size=(1, self.span), kernel_size=(1, n_fft), stride=(1, self.hop),
        ).reshape(-1)
        self.inverse_envelope = 1.0 / envelope.clamp(min=1e-6)

    def analyse(self, audio: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` → complex ``(batch, bins, frames)``."""
        pad = self.n_fft // 2
        padded = torch.nn.functional.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
        needed = self.span - padded.shape[-1]
        if needed > 0:
            padded = torch.nn.functional.pad(padded, (0, needed))
        frames = padded.unfold(-1, self.n_fft, self.hop)[:, : self.frames] * self.window
        return torch.fft.rfft(frames, dim=-1).transpose(1, 2)

    def synthesise(self, spectrum: torch.Tensor) -> torch.Tensor:
        """complex ``(batch, bins, frames)`` → ``(batch, length_samples)``."""
        # irfft zero-pads missing top bins, so a spectrum cut above its last non-zero bin is fine.
        frames = torch.fft.irfft(spectrum.transpose(1, 2), n=self.n_fft, dim=-1) * self.window
        summed = torch.nn.functional.fold(
            frames.transpose(1, 2), output_size=(1, self.span), kernel_size=(1, self.n_fft), stride=(1, self.hop)
        ).reshape(spectrum.shape[0], -1)
        audio = summed * self.inverse_envelope
        start = self.n_fft // 2
        return audio[:, start : start + self.length]


def fast_griffin_lim(
    magnitude: torch.Tensor,
    phase: torch.Tensor,
    params: SpectrogramParams,
    length_samples: int,
    iterations: int,
    momentum: float = 0.99,
    should_cancel: CancelCheck | None = None,
    locked_frames: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine ``phase`` for ``magnitude`` ``(..., bins, frames)``: audio ``(..., length_samples)`` and the final phase.

    ``bins`` may be any ``n_fft // 2 + 1`` (e.g. the unpadded 4 410-point grid); hop and window
    come from ``params``. ``should_cancel`` is asked before every iteration; True raises
    :class:`~riffradio.errors.Cancelled`. ``locked_frames``: the first frames keep their
    starting phase through every iteration (Griffin-Lim with partly known phase): a continued
    clip's overlap then decodes to the waveform already played, and the frames after it settle
    around it. The returned phase (radians, ``[0, 2π)``) is the last projected spectrum's, the
    one the audio is synthesised from.
    """
    shape = magnitude.shape
    n_fft = (shape[-2] - 1) * 2
    target = magnitude.reshape(-1, *shape[-2:]).to(torch.float32)
    # Bins whose target is zero everywhere (above the mel range) stay zero: skip them.
    nonzero = torch.nonzero(target.amax(dim=(0, 2)) > 0)
    active = int(nonzero.max()) + 1 if nonzero.numel() else 1
    target = target[:, :active]
    pair = _FramePair(params, n_fft, shape[-1], length_samples, target.device)
    start_phase = phase.reshape(-1, *shape[-2:])[:, :active].to(torch.float32)
    start = torch.polar(target, start_phase)
    # Real views (…, 2) of the complex spectra: torch's complex element-wise ops are slow on CPU.
    current = torch.view_as_real(start)
    locked = current[:, :, :locked_frames].clone() if locked_frames > 0 else None
    previous = current
    scale_target = target[..., None]
    for iteration in range(iterations):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"Griffin-Lim cancelled at iteration {iteration}")
        rebuilt = torch.view_as_real(pair.analyse(pair.synthesise(torch.view_as_complex(current)))[:, :active])
        norm = torch.sqrt(rebuilt.square().sum(dim=-1, keepdim=True)).clamp_(min=1e-12)
        projected = rebuilt * (scale_target / norm)
        if locked is not None:
            projected[:, :, :locked_frames] = locked
        current = projected + momentum * (projected - previous)
        previous = projected
    final = torch.view_as_complex(previous.contiguous())
    audio = pair.synthesise(final).reshape(*shape[:-2], length_samples)
    if iterations == 0:
        final_phase = start_phase
    else:
        final_phase = torch.remainder(torch.angle(final), 2 * math.pi)
    final_phase = torch.nn.functional.pad(final_phase, (0, 0, 0, shape[-2] - active)).reshape(shape)
    return audio, final_phase


def spectral_convergence_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """20·log10(‖|S|−|Ŝ|‖ / ‖|S|‖) for two magnitude arrays of the same shape."""
    error = np.linalg.norm(np.asarray(reference, np.float64) - np.asarray(estimate, np.float64))
    return float(20 * np.log10(error / max(np.linalg.norm(np.asarray(reference, np.float64)), 1e-30)))
