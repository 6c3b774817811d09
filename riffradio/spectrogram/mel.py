"""STFT and HTK mel filterbank, exactly as Riffusion's converter computes them (torch)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from riffradio.spectrogram.params import SpectrogramParams


def hz_to_mel_htk(frequency_hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(frequency_hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def _mel_filterbank_cached(
    n_fft_samples: int, sample_rate_hz: int, num_mels: int, min_hz: float, max_hz: float
) -> np.ndarray:
    # Same triangles as torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk").
    n_freqs = n_fft_samples // 2 + 1
    all_freqs_hz = np.linspace(0.0, sample_rate_hz // 2, n_freqs)
    mel_points = np.linspace(hz_to_mel_htk(min_hz), hz_to_mel_htk(max_hz), num_mels + 2)
    edges_hz = mel_to_hz_htk(mel_points)
    edge_diffs_hz = np.diff(edges_hz)
    slopes = edges_hz[None, :] - all_freqs_hz[:, None]
    down = -slopes[:, :-2] / edge_diffs_hz[:-1]
    up = slopes[:, 2:] / edge_diffs_hz[1:]
    filterbank = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    return filterbank


def mel_filterbank(params: SpectrogramParams, n_fft_samples: int | None = None) -> np.ndarray:
    """Mel filterbank of shape ``(n_fft // 2 + 1, num_frequencies)``, float32 (cached: do not modify)."""
    return _mel_filterbank_cached(
        params.n_fft_samples if n_fft_samples is None else n_fft_samples,
        params.sample_rate_hz,
        params.num_frequencies,
        float(params.min_frequency_hz),
        float(params.max_frequency_hz),
    )


def hann_window(params: SpectrogramParams, device: torch.device | str = "cpu") -> torch.Tensor:
    """Periodic Hann window of ``win_length_samples`` (torch's default, as Riffusion uses)."""
    return torch.hann_window(params.win_length_samples, periodic=True, dtype=torch.float32, device=device)


def stft(
    audio: torch.Tensor, params: SpectrogramParams, n_fft_samples: int | None = None
) -> torch.Tensor:
    """Complex centred STFT with reflect padding, shape ``(..., n_fft // 2 + 1, frames)``."""
    n_fft = params.n_fft_samples if n_fft_samples is None else n_fft_samples
    shape = audio.shape
    spectrum = torch.stft(
        audio.reshape(-1, shape[-1]),
        n_fft=n_fft,
        hop_length=params.hop_length_samples,
        win_length=params.win_length_samples,
        window=hann_window(params, audio.device),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spectrum.reshape(*shape[:-1], *spectrum.shape[-2:])


def istft(
    spectrum: torch.Tensor, params: SpectrogramParams, length_samples: int
) -> torch.Tensor:
    """Inverse of :func:`stft` (least-squares overlap-add), shape ``(..., length_samples)``."""
    n_fft = (spectrum.shape[-2] - 1) * 2
    shape = spectrum.shape
    audio = torch.istft(
        spectrum.reshape(-1, *shape[-2:]),
        n_fft=n_fft,
        hop_length=params.hop_length_samples,
        win_length=params.win_length_samples,
        window=hann_window(params, spectrum.device),
        center=True,
        normalized=False,
        onesided=True,
        length=length_samples,
    )
    return audio.reshape(*shape[:-2], length_samples)


def audio_to_mel(audio: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """Mel amplitudes ``(channels, num_frequencies, frames)`` of ``(channels, samples)`` audio.

    Riffusion's encoder: |STFT| (n_fft 17 640, hop 441, window 4 410) → HTK mel filterbank.
    The number of frames is ``1 + samples // hop`` (centred frames).
    """
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return mel_amplitudes(waveform, params).numpy()


def mel_amplitudes(audio: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """:func:`audio_to_mel` for a ``(..., samples)`` tensor on any device, differentiable."""
    filterbank = torch.from_numpy(mel_filterbank(params)).to(audio.device)
    return torch.einsum("fm,...ft->...mt", filterbank, stft(audio, params).abs())
