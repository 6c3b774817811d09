"""The vocoder on real music: quality bound, level, batching, determinism, PGHI vs zero phase."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from riffradio.spectrogram.image import audio_to_image
from riffradio.spectrogram.mel import stft
from riffradio.spectrogram.params import SpectrogramParams
from riffradio.spectrogram.phase import _phase_sources, pghi_phase, phase_on_coarser_grid, spectral_convergence_db
from riffradio.spectrogram.vocoder import REFERENCE_PEAK_DBFS, Vocoder, _image_mel, image_to_audio, inverse_mel, mel_to_audio
from tests.music import music_excerpt
from tests.pghi_reference import reference_phase_sources, reference_pghi_phase

PARAMS = SpectrogramParams()
BAND_BINS = 4001  # 0–10 000 Hz on the 17 640-point grid: what the image holds


def band_convergence_db(original: np.ndarray, decoded: np.ndarray) -> float:
    """Spectral convergence over the image's band, after the least-squares gain (the level is defined apart)."""
    reference = stft(torch.from_numpy(original), PARAMS).abs().numpy()[..., :BAND_BINS, :512]
    estimate = stft(torch.from_numpy(decoded), PARAMS).abs().numpy()[..., :BAND_BINS, :512]
    gain = float((reference * estimate).sum() / (estimate * estimate).sum())
    return spectral_convergence_db(reference, gain * estimate)


@pytest.fixture(scope="module")
def excerpts() -> list[np.ndarray]:
    return [music_excerpt("music001.ogg", 30.0), music_excerpt("music009.ogg", 200.0)]


@pytest.fixture(scope="module")
def decoded(excerpts: list[np.ndarray]) -> list[np.ndarray]:
    return Vocoder().images_to_audio([audio_to_image(audio, 44100, PARAMS) for audio in excerpts])


def test_round_trip_on_real_music_within_bound(excerpts, decoded) -> None:
    # Measured −20.5 and −26.1 dB; Riffusion's converter −16.6 and −19.2 dB (bench/vocoder.py).
    for original, audio in zip(excerpts, decoded):
        assert audio.shape == (1, PARAMS.clip_samples) and audio.dtype == np.float32
        assert band_convergence_db(original, audio) < -18.0


def test_output_level_is_the_reference_peak(decoded) -> None:
    for audio in decoded:
        assert float(np.abs(audio).max()) == pytest.approx(10 ** (REFERENCE_PEAK_DBFS / 20), rel=1e-4)


def test_batch_equals_single_and_is_deterministic(excerpts, decoded) -> None:
    image = audio_to_image(excerpts[1], 44100, PARAMS)
    single = image_to_audio(image, PARAMS, "cpu")
    np.testing.assert_allclose(single, decoded[1], atol=2e-4)
    np.testing.assert_array_equal(single, Vocoder().image_to_audio(image))


def test_white_image_is_silence() -> None:
    audio = Vocoder().image_to_audio(Image.new("RGB", (64, 512), (255, 255, 255)))
    assert audio.shape == (1, 64 * 441) and not audio.any()


def test_stereo_image_decodes_two_channels() -> None:
    left = music_excerpt("music005.ogg", 100.0, duration_seconds=1.0)
    stereo = np.concatenate([left, 0.1 * left])
    image = audio_to_image(stereo, 44100, SpectrogramParams(stereo=True))
    audio = Vocoder().image_to_audio(image)  # the EXIF tags say stereo
    assert audio.shape == (2, 101 * 441)
    ratio = np.linalg.norm(audio[1]) / np.linalg.norm(audio[0])
    assert ratio == pytest.approx(0.1, rel=0.1)


def test_pghi_beats_zero_phase_on_true_magnitude() -> None:
    audio = torch.from_numpy(music_excerpt("music007.ogg", 20.0, duration_seconds=2.0))
    spectrum = stft(audio, PARAMS, n_fft_samples=4410)
    magnitude = spectrum.abs()
    phase = pghi_phase(magnitude, 441, 4410, 4410)
    from riffradio.spectrogram.mel import istft

    rebuilt = istft(torch.polar(magnitude, phase), PARAMS, audio.shape[-1])
    zero = istft(torch.polar(magnitude, torch.zeros_like(phase)), PARAMS, audio.shape[-1])
    reference = magnitude.numpy()
    pghi_db = spectral_convergence_db(reference, stft(rebuilt, PARAMS, n_fft_samples=4410).abs().numpy())
    zero_db = spectral_convergence_db(reference, stft(zero, PARAMS, n_fft_samples=4410).abs().numpy())
    assert pghi_db < -14.0 and pghi_db < zero_db - 10.0


def test_should_cancel_abandons_the_decode_between_griffin_lim_iterations(excerpts) -> None:
    from riffradio.errors import Cancelled

    asked: list[int] = []

    def cancel_on_fifth_iteration() -> bool:
        asked.append(1)
        return len(asked) >= 5

    image = audio_to_image(excerpts[0], 44100, PARAMS)
    with pytest.raises(Cancelled):
        Vocoder().image_to_audio(image, cancel_on_fifth_iteration)
    assert len(asked) == 5  # asked before each iteration, stopped at the first True
    # never True: the same audio as without a check
    np.testing.assert_array_equal(Vocoder().image_to_audio(image, lambda: False), Vocoder().image_to_audio(image))


@pytest.mark.parametrize("fine_n_fft", [17640, 8820])
def test_phase_on_coarser_grid_matches_the_coarse_stft(fine_n_fft: int) -> None:
    audio = torch.from_numpy(music_excerpt("music001.ogg", 30.0, duration_seconds=0.5))
    fine = stft(audio, PARAMS, n_fft_samples=fine_n_fft)
    coarse = stft(audio, PARAMS, n_fft_samples=4410)
    predicted = phase_on_coarser_grid(fine.angle(), fine_n_fft, 4410, 200)
    strong = coarse.abs()[..., :200, :] > 1e-3 * coarse.abs().max()
    difference = torch.angle(torch.polar(torch.ones_like(predicted), predicted - coarse.angle()[..., :200, :]))
    assert strong.sum() > 1000
    assert float(difference[strong].abs().max()) < 1e-2
    with pytest.raises(ValueError, match="not an even multiple"):
        phase_on_coarser_grid(fine.angle(), 17640, 4400, 10)


def test_fine_low_band_phase_improves_the_bass() -> None:
    # music005 has most of its energy below 500 Hz: −20.4 dB without, −21.7 dB with (bench/vocoder.py).
    original = music_excerpt("music005.ogg", 100.0)
    mel, params = _image_mel(audio_to_image(original, 44100, PARAMS), PARAMS)
    with torch.inference_mode():
        with_fine = mel_to_audio(torch.from_numpy(mel), params)[0].numpy()
        without = mel_to_audio(torch.from_numpy(mel), params, fine_low_band_phase=False)[0].numpy()
    assert band_convergence_db(original, with_fine) < band_convergence_db(original, without) - 0.7


def test_heap_order_scan_equals_the_sequential_heap_order() -> None:
    generator = torch.Generator().manual_seed(7)
    magnitude = torch.rand(3, 97, 41, generator=generator, dtype=torch.float64) ** 4
    magnitude[1, 40:60] = 0.0  # ties and silence
    np.testing.assert_array_equal(_phase_sources(magnitude).numpy(), reference_phase_sources(magnitude.numpy()))


def test_pghi_scans_equal_the_sequential_pghi_on_real_music() -> None:
    audio = torch.from_numpy(music_excerpt("music003.ogg", 60.0, duration_seconds=2.0))
    magnitude = stft(audio, PARAMS, n_fft_samples=4410).abs()[..., :1001, :]
    parallel = pghi_phase(magnitude, 441, 4410, 4410).numpy()
    sequential = reference_pghi_phase(magnitude.numpy(), 441, 4410, 4410)
    strong = magnitude.numpy() > 1e-3 * float(magnitude.max())
    difference = np.angle(np.exp(1j * (parallel - sequential)))  # wrapped to (−π, π]
    assert strong.sum() > 10_000
    assert np.abs(difference[strong]).max() < 5e-3  # float32 against float64
    np.testing.assert_array_equal(parallel, pghi_phase(magnitude, 441, 4410, 4410).numpy())  # deterministic


def test_dense_inverse_mel_for_accelerators_equals_the_sparse_one(excerpts) -> None:
    mel, params = _image_mel(audio_to_image(excerpts[0], 44100, PARAMS), PARAMS)
    mel_tensor = torch.from_numpy(mel)
    sparse = inverse_mel(mel_tensor, params, 4410, dense=False)
    dense = inverse_mel(mel_tensor, params, 4410, dense=True)
    np.testing.assert_allclose(dense.numpy(), sparse.numpy(), rtol=1e-3, atol=1e-4 * float(sparse.max()))


def test_pghi_with_known_phase_equals_the_sequential_pghi() -> None:
    audio = torch.from_numpy(music_excerpt("music003.ogg", 60.0, duration_seconds=1.0))
    spectrum = stft(audio, PARAMS, n_fft_samples=4410)[..., :1001, :]
    magnitude, known = spectrum.abs(), torch.remainder(spectrum.angle()[..., :30], 2 * np.pi)
    parallel = pghi_phase(magnitude, 441, 4410, 4410, known_phase=known).numpy()
    sequential = reference_pghi_phase(magnitude.numpy(), 441, 4410, 4410, known_phase=known.numpy())
    strong = magnitude.numpy() > 1e-3 * float(magnitude.max())
    difference = np.angle(np.exp(1j * (parallel - sequential)))
    assert np.abs(difference[strong]).max() < 5e-3
    # the known frames come back as they went in
    np.testing.assert_allclose(np.angle(np.exp(1j * (parallel[..., :30] - known.numpy()))), 0.0, atol=1e-4)


def _weighted_phase_error(magnitude: torch.Tensor, estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Magnitude-weighted mean |wrapped phase difference| (radians)."""
    difference = torch.angle(torch.polar(torch.ones_like(estimate), estimate - truth)).abs()
    return float((difference * magnitude).sum() / magnitude.sum())


def test_pghi_integrates_onward_from_the_known_phase() -> None:
    # The true phase of the first 40 frames is given: the next frames continue it; PGHI from
    # nothing is off by an arbitrary rotation per partial (mean error near π/2).
    audio = torch.from_numpy(music_excerpt("music001.ogg", 30.0, duration_seconds=1.0))
    spectrum = stft(audio, PARAMS, n_fft_samples=4410)[..., :1001, :]
    magnitude, truth = spectrum.abs(), spectrum.angle()
    continued = pghi_phase(magnitude, 441, 4410, 4410, known_phase=truth[..., :40])
    fresh = pghi_phase(magnitude, 441, 4410, 4410)
    after = slice(40, 43)
    continued_error = _weighted_phase_error(magnitude[..., after], continued[..., after], truth[..., after])
    fresh_error = _weighted_phase_error(magnitude[..., after], fresh[..., after], truth[..., after])
    assert continued_error < 0.6 and fresh_error > 1.2, (continued_error, fresh_error)


@pytest.fixture(scope="module")
def overlapping_windows() -> tuple[np.ndarray, np.ndarray, int]:
    """Two 5.12 s windows of a recording, the second starting 3.84 s after the first (1.28 s shared)."""
    hop_samples = 384 * PARAMS.hop_length_samples
    recording = music_excerpt("music003.ogg", 60.0, duration_seconds=5.12 + 3.84)
    first = recording[:, : PARAMS.clip_samples]
    second = recording[:, hop_samples : hop_samples + PARAMS.clip_samples]
    return first, second, hop_samples


def _overlap_correlation(first: np.ndarray, second: np.ndarray, hop_samples: int) -> float:
    """Correlation of two clips' audio in the middle 0.5 s of the part both cover."""
    shared = first.shape[-1] - hop_samples
    middle = slice(shared // 2 - 11025, shared // 2 + 11025)
    return float(np.corrcoef(first[0, hop_samples:][middle], second[0, :shared][middle])[0, 1])


def test_decode_continues_the_phase_of_the_previous_clip(overlapping_windows) -> None:
    first, second, hop_samples = overlapping_windows
    vocoder = Vocoder()
    first_image, image = audio_to_image(first, 44100, PARAMS), audio_to_image(second, 44100, PARAMS)
    before = vocoder.decode(first_image)
    np.testing.assert_array_equal(before.audio, vocoder.image_to_audio(first_image))  # no previous: as before
    independent = vocoder.decode(image)
    locked = vocoder.decode(image, previous=before, overlap_frames=128)
    correlations = [_overlap_correlation(before.audio, clip.audio, hop_samples) for clip in (independent, locked)]
    # independent decodes of the same columns disagree in phase (comb filtering in a crossfade)
    assert correlations[0] < 0.8 and correlations[1] > 0.99, correlations
    assert locked.phase_radians.shape == (1, 2206, 512)
    assert band_convergence_db(second, locked.audio) < -15.0  # the rest of the clip still decodes well


def test_tail_phase_leaves_out_the_edge_frames_and_mismatched_parameters() -> None:
    from riffradio.spectrogram.vocoder import VocodedClip, join_edge_frames

    phase = torch.rand(1, 2206, 512, generator=torch.Generator().manual_seed(3))
    clip = VocodedClip(audio=np.zeros((1, PARAMS.clip_samples), np.float32), phase_radians=phase, params=PARAMS)
    edge = join_edge_frames(PARAMS)
    assert edge == 5
    tail = clip.tail_phase(128, PARAMS)
    assert tail is not None and tail.shape == (1, 2206, 128 - edge)
    torch.testing.assert_close(tail, phase[:, :, 512 - 128 : 512 - edge])
    assert clip.tail_phase(edge, PARAMS) is None
    assert clip.tail_phase(128, SpectrogramParams(stereo=True)) is None
