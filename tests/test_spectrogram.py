"""The codec: Riffusion's encoding pixel for pixel, EXIF, stereo, audio files, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from riffradio.app.cli import main
from riffradio.errors import RiffradioError
from riffradio.spectrogram.audio_io import read_audio, write_audio
from riffradio.spectrogram.image import (
    audio_to_image,
    image_to_mel,
    load_spectrogram_image,
    max_value_from_image,
    mel_to_image,
    params_from_image,
    save_spectrogram_image,
)
from riffradio.spectrogram.mel import audio_to_mel, hz_to_mel_htk, mel_filterbank
from riffradio.spectrogram.params import SpectrogramParams
from tests.music import music_excerpt, music_path

PARAMS = SpectrogramParams()


def test_params_are_riffusions() -> None:
    assert (PARAMS.hop_length_samples, PARAMS.win_length_samples, PARAMS.n_fft_samples) == (441, 4410, 17640)
    assert PARAMS.clip_samples == 225_792 and PARAMS.clip_seconds == pytest.approx(5.12)


def _riffusion_mel_reference(audio: np.ndarray) -> np.ndarray:
    """Riffusion's encoder written out with numpy: reflect pad, periodic Hann centred in 17 640, |rfft|, HTK mel."""
    n_fft, hop, win = 17640, 441, 4410
    padded = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = 1 + audio.size // hop
    stack = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(frames)], axis=1)
    magnitude = np.abs(np.fft.rfft(stack, axis=0))
    # Triangles by their definition: rising from edge i to centre i+1, falling to edge i+2 (in Hz).
    edges = 700 * (10 ** (np.linspace(0, hz_to_mel_htk(10000), 514) / 2595) - 1)
    freqs = np.linspace(0, 22050, n_fft // 2 + 1)
    bank = np.clip(
        np.minimum((freqs[:, None] - edges[None, :-2]) / np.diff(edges)[None, :-1],
                   (edges[None, 2:] - freqs[:, None]) / np.diff(edges)[None, 1:]), 0, None)
    return bank.T @ magnitude


def test_encoding_matches_riffusions_formula_pixel_for_pixel() -> None:
    rng = np.random.default_rng(1)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) + 0.05 * rng.standard_normal(44100)).astype(np.float32)
    mel = audio_to_mel(audio[None], PARAMS)[0]
    reference = _riffusion_mel_reference(audio)
    np.testing.assert_allclose(mel, reference, rtol=2e-3, atol=1e-3 * reference.max())
    image = np.asarray(audio_to_image(audio[None], 44100, PARAMS))
    expected = (255 - np.power(mel / mel.max(), 0.25) * 255).astype(np.uint8)[::-1]
    assert image.shape == (512, 101, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], expected)
    # The 440 Hz band is the darkest row, counted from the bottom.
    band = int(np.argmax(mel_filterbank(PARAMS)[int(round(440 / 2.5))]))
    assert 511 - int(np.argmin(image[:, 50, 0])) == pytest.approx(band, abs=1)


def test_known_mel_quantises_like_riffusion() -> None:
    mel = np.array([[[0.0, 1.0], [16.0, 81.0]]], dtype=np.float32)
    pixels = np.asarray(mel_to_image(mel, SpectrogramParams(num_frequencies=2)))[:, :, 0]
    # (S/81)^0.25 = 0, 1/3, 2/3, 1 → 255, 170, 85, 0; the top row of the image is the highest band.
    np.testing.assert_array_equal(pixels, [[85, 0], [255, 170]])


def test_exif_round_trip(tmp_path) -> None:
    params = SpectrogramParams(stereo=True, max_frequency_hz=9000, power_for_image=0.3)
    audio = music_excerpt("music005.ogg", 100.0, mono=False)
    image = audio_to_image(audio, 44100, params)
    save_spectrogram_image(image, tmp_path / "s.png")
    loaded = load_spectrogram_image(tmp_path / "s.png")
    assert params_from_image(loaded) == params
    mel = audio_to_mel(audio, params)[:, :, :512]
    assert max_value_from_image(loaded) == pytest.approx(float(mel.max()), rel=1e-6)
    decoded = image_to_mel(loaded, params, max_value_from_image(loaded))
    # 8-bit quantisation of S^0.3: relative error of strong bins stays small.
    strong = mel > 0.1 * mel.max()
    assert np.max(np.abs(decoded[strong] - mel[strong]) / mel[strong]) < 0.05


def test_stereo_layout_is_r0_g_left_b_right() -> None:
    audio = music_excerpt("music001.ogg", 30.0, duration_seconds=1.0)
    stereo = np.concatenate([audio, np.zeros_like(audio)])
    pixels = np.asarray(audio_to_image(stereo, 44100, SpectrogramParams(stereo=True)))
    assert np.all(pixels[:, :, 0] == 0)
    assert np.all(pixels[:, :, 2] == 255) and pixels[:, :, 1].min() == 0
    mono = np.asarray(audio_to_image(audio, 44100, PARAMS))
    np.testing.assert_array_equal(pixels[:, :, 1], mono[:, :, 0])


def test_read_audio_decodes_ogg_mp3_and_resamples(tmp_path) -> None:
    import av

    excerpt = music_excerpt("music003.ogg", 60.0, duration_seconds=2.0)
    assert excerpt.shape == (1, 88200) and excerpt.dtype == np.float32 and np.abs(excerpt).max() > 0.05
    stereo = read_audio(music_path("music003.ogg"), mono=False, start_seconds=60.0, duration_seconds=2.0)
    assert stereo.shape == (2, 88200)
    # An MP3 at 22 050 Hz, made with PyAV, comes back at 44 100 Hz.
    mp3 = tmp_path / "x.mp3"
    with av.open(str(mp3), "w") as container:
        stream = container.add_stream("libmp3lame", rate=22050, layout="mono")
        low = excerpt[:, ::2].copy()
        frame = av.AudioFrame.from_ndarray(low, format="fltp", layout="mono")
        frame.sample_rate = 22050
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    decoded = read_audio(mp3)
    assert decoded.shape[0] == 1 and abs(decoded.shape[1] - 88200) < 4000
    write_audio(tmp_path / "x.flac", excerpt, 44100)
    np.testing.assert_allclose(read_audio(tmp_path / "x.flac"), excerpt, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing.png", "no such image file"),
        (lambda d: (d / "text.png").write_text("hello") and d / "text.png", "not an image"),
        (lambda d: Image.new("RGB", (512, 100)).save(d / "small.png") or d / "small.png", "wrong size"),
    ],
)
def test_image_to_audio_bad_input_is_one_line(tmp_path, capsys, make, needle) -> None:
    path = make(tmp_path)
    assert main(["image-to-audio", str(path), str(tmp_path / "out.wav")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and str(path) in err and "Traceback" not in err


def test_audio_to_image_bad_input_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "noise.ogg").write_bytes(b"\x00\x01not audio at all" * 100)
    short = tmp_path / "short.wav"
    write_audio(short, np.zeros((1, 44100), np.float32), 44100)
    for path, needle in [
        (tmp_path / "noise.ogg", "not readable as audio"),
        (short, "too short"),
        (tmp_path / "none.wav", "no such audio file"),
    ]:
        assert main(["audio-to-image", str(path), str(tmp_path / "o.png")]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and str(path) in err, err


def test_cli_round_trip_on_real_music(tmp_path) -> None:
    png, wav = tmp_path / "m.png", tmp_path / "m.wav"
    assert main(["audio-to-image", str(music_path("music007.ogg")), str(png), "--start-seconds", "20"]) == 0
    image = load_spectrogram_image(png)
    assert image.size == (512, 512) and params_from_image(image) == PARAMS
    assert main(["image-to-audio", str(png), str(wav)]) == 0
    audio = read_audio(wav)
    assert audio.shape == (1, PARAMS.clip_samples)
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=2e-3)


def test_bad_params_from_caller_raise() -> None:
    with pytest.raises(RiffradioError, match="height must be 512"):
        image_to_mel(Image.new("RGB", (512, 256)), PARAMS)
