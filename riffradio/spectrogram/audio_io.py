"""Read any audio file (wav, flac, ogg, mp3, … through soundfile or PyAV) and write wav/flac."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.errors import RiffradioError


def _read_with_soundfile(
    path: Path, start_seconds: float, duration_seconds: float | None
) -> tuple[np.ndarray, int] | None:
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as file:
            rate_hz = int(file.samplerate)
            file.seek(min(int(round(start_seconds * rate_hz)), file.frames))
            frames = -1 if duration_seconds is None else int(round(duration_seconds * rate_hz))
            data = file.read(frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return data.T, rate_hz


def _read_with_pyav(
    path: Path, sample_rate_hz: int, start_seconds: float, duration_seconds: float | None
) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise RiffradioError(f"{path}: not audio (no audio stream)")
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels or 1
            layout = "stereo" if channels >= 2 else "mono"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate_hz)
            first = int(round(start_seconds * sample_rate_hz))
            wanted = None if duration_seconds is None else first + int(round(duration_seconds * sample_rate_hz))
            chunks: list[np.ndarray] = []
            decoded = 0
            for frame in itertools.chain(container.decode(stream), [None]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    decoded += chunks[-1].shape[1]
                if wanted is not None and decoded >= wanted:
                    break
    except av.error.FFmpegError as error:
        raise RiffradioError(f"{path}: not readable as audio ({error.strerror or error})") from None
    if not chunks:
        raise RiffradioError(f"{path}: contains no audio samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    return audio[:, first:wanted]


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy), float32."""
    if from_hz == to_hz:
        return audio.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    divisor = gcd(from_hz, to_hz)
    return resample_poly(audio, to_hz // divisor, from_hz // divisor, axis=-1).astype(np.float32)


def read_audio(
    path: str | Path,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    mono: bool = True,
    start_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> np.ndarray:
    """Decode an audio file to float32 ``(channels, samples)`` at ``sample_rate_hz``.

    WAV/FLAC/OGG go through soundfile, anything else (mp3, m4a, opus, …) through PyAV. ``mono``
    averages the channels to one; otherwise the file's first two channels are kept.
    ``start_seconds``/``duration_seconds`` read only an excerpt (seeking where the format can).
    Raises :class:`RiffradioError` (one line, naming the file) when it is missing or not audio.
    """
    path = Path(path)
    if not path.is_file():
        raise RiffradioError(f"{path}: no such audio file")
    decoded = _read_with_soundfile(path, start_seconds, duration_seconds)
    if decoded is None:
        audio = _read_with_pyav(path, sample_rate_hz, start_seconds, duration_seconds)
    else:
        audio = resample(decoded[0], decoded[1], sample_rate_hz)
    if audio.shape[1] == 0:
        raise RiffradioError(f"{path}: contains no audio samples")
    audio = audio.mean(axis=0, keepdims=True) if mono else audio[:2]
    return np.ascontiguousarray(audio, dtype=np.float32)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate_hz: int) -> None:
    """Write float32 ``(channels, samples)`` (or 1-D) audio as 16-bit WAV or 24-bit FLAC by suffix."""
    import soundfile

    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    data = data[None] if data.ndim == 1 else data
    suffix = path.suffix.lower()
    subtype = {".wav": "PCM_16", ".flac": "PCM_24"}.get(suffix)
    if subtype is None:
        raise RiffradioError(f"{path}: can only write .wav or .flac")
    try:
        soundfile.write(str(path), np.clip(data.T, -1.0, 1.0), sample_rate_hz, subtype=subtype)
    except (OSError, RuntimeError) as error:
        raise RiffradioError(f"{path}: cannot write audio ({error})") from None
