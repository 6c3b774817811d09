"""Mel amplitudes ↔ Riffusion spectrogram images (PNG pixels and EXIF tags).

Encoding is Riffusion's formula, pixel for pixel::

    pixel = uint8(255 − 255 · (S / max S) ^ power_for_image)      # truncation, not rounding

flipped so that low frequencies are at the bottom. Mono images have three equal channels;
stereo images are R = 0, G = left, B = right. The parameters and ``max S`` are stored in
EXIF tags 11000–11080 (Riffusion's numbers) and read back when present.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from enum import IntEnum

import numpy as np
from PIL import Image

from riffradio.errors import RiffradioError
from riffradio.spectrogram.mel import audio_to_mel
from riffradio.spectrogram.params import SpectrogramParams


class ExifTag(IntEnum):
    """Riffusion's EXIF tag numbers."""

    SAMPLE_RATE = 11000
    STEREO = 11005
    STEP_SIZE_MS = 11010
    WINDOW_DURATION_MS = 11020
    PADDED_DURATION_MS = 11030
    NUM_FREQUENCIES = 11040
    MIN_FREQUENCY = 11050
    MAX_FREQUENCY = 11060
    POWER_FOR_IMAGE = 11070
    MAX_VALUE = 11080


_PARAM_TAGS: dict[ExifTag, str] = {
    ExifTag.SAMPLE_RATE: "sample_rate_hz",
    ExifTag.STEREO: "stereo",
    ExifTag.STEP_SIZE_MS: "step_size_ms",
    ExifTag.WINDOW_DURATION_MS: "window_duration_ms",
    ExifTag.PADDED_DURATION_MS: "padded_duration_ms",
    ExifTag.NUM_FREQUENCIES: "num_frequencies",
    ExifTag.MIN_FREQUENCY: "min_frequency_hz",
    ExifTag.MAX_FREQUENCY: "max_frequency_hz",
    ExifTag.POWER_FOR_IMAGE: "power_for_image",
}


def mel_to_image(mel: np.ndarray, params: SpectrogramParams, max_value: float | None = None) -> Image.Image:
    """Quantise mel amplitudes ``(channels, mels, frames)`` to an RGB image, EXIF included.

    ``max_value``: the amplitude that becomes full scale (default: the image's own maximum, as
    Riffusion does); a larger one (a whole loop's maximum) puts several images on one scale.
    """
    if mel.ndim != 3 or mel.shape[0] not in (1, 2):
        raise ValueError(f"mel must be (1 or 2, mels, frames), got shape {mel.shape}")
    max_value = float(np.max(mel)) if max_value is None else float(max_value)
    scaled = np.minimum(mel / max_value, 1.0) if max_value > 0 else np.zeros_like(mel)
    data = (255 - np.power(scaled, params.power_for_image) * 255).astype(np.uint8)
    if data.shape[0] == 1:
        pixels = np.repeat(data[0][:, :, None], 3, axis=2)
    else:
        pixels = np.stack([np.zeros_like(data[0]), data[0], data[1]], axis=2)
    image = Image.fromarray(np.ascontiguousarray(pixels[::-1]), mode="RGB")
    exif = image.getexif()
    for tag, name in _PARAM_TAGS.items():
        value = getattr(params, name)
        exif[int(tag)] = float(value) if isinstance(value, float) else int(value)
    exif[int(ExifTag.MAX_VALUE)] = max_value
    image.info["exif"] = exif.tobytes()
    return image


def params_from_image(image: Image.Image, default: SpectrogramParams = SpectrogramParams()) -> SpectrogramParams:
    """The parameters stored in ``image``'s EXIF tags, ``default`` for any that are missing."""
    exif = image.getexif()
    changes: dict[str, object] = {}
    for tag, name in _PARAM_TAGS.items():
        if int(tag) in exif:
            field_type = type(getattr(default, name))
            changes[name] = field_type(exif[int(tag)])
    return dataclasses.replace(default, **changes)


def max_value_from_image(image: Image.Image) -> float | None:
    """``max S`` stored in EXIF tag 11080, or None (images from the model carry none)."""
    value = image.getexif().get(int(ExifTag.MAX_VALUE))
    return None if value is None else float(value)


def image_to_mel(image: Image.Image, params: SpectrogramParams, max_value: float = 1.0) -> np.ndarray:
    """Undo :func:`mel_to_image`: ``(channels, mels, frames)`` float32 amplitudes, ``max_value`` at pixel 0."""
    if image.height != params.num_frequencies:
        raise RiffradioError(
            f"spectrogram image is {image.width}x{image.height}; its height must be {params.num_frequencies}"
        )
    pixels = np.asarray(image.convert("RGB"))[::-1].transpose(2, 0, 1)
    data = pixels[1:3] if params.stereo else pixels[0:1]
    amplitude = (255.0 - data.astype(np.float32)) / 255.0
    return (np.power(amplitude, 1.0 / params.power_for_image) * max_value).astype(np.float32)


def audio_to_image(audio: np.ndarray, sample_rate_hz: int, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """Encode ``(channels, samples)`` (or 1-D) audio as a Riffusion spectrogram image.

    The image has ``1 + samples // hop`` columns, cut to ``params.image_width_frames`` (512)
    when longer. Stereo params need two channels (mono input is duplicated); mono params
    average the channels.
    """
    if sample_rate_hz != params.sample_rate_hz:
        raise ValueError(f"audio is at {sample_rate_hz} Hz; params want {params.sample_rate_hz} Hz")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if params.stereo:
        audio = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    else:
        audio = audio.mean(axis=0, keepdims=True)
    mel = audio_to_mel(audio, params)[:, :, : params.image_width_frames]
    return mel_to_image(mel, params)


def load_spectrogram_image(path: str | Path) -> Image.Image:
    """Open a spectrogram PNG (EXIF kept); one-line RiffradioError if it is missing or not an image."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
            image.info.update(opened.info)
    except FileNotFoundError:
        raise RiffradioError(f"{path}: no such image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise RiffradioError(f"{path}: not an image ({error.__class__.__name__})") from None
    return image


def save_spectrogram_image(image: Image.Image, path: str | Path) -> None:
    """Save as PNG with the EXIF tags (Pillow drops them unless passed explicitly)."""
    path = Path(path)
    try:
        image.save(path, format="PNG", exif=image.getexif())
    except OSError as error:
        raise RiffradioError(f"{path}: cannot write image ({error})") from None
