"""Seed images: bundled drum loops, any audio or PNG file, or a drum loop synthesised on demand.

Riffusion's own seed images cannot ship with this project, so its seeds are synthesised here:
a drum loop (kick, snare, hats, optional bass note) at a BPM where whole bars fill exactly one
clip (5.12 s), rendered circularly so that it loops seamlessly, then encoded as a spectrogram.

A seed reference (``RiffRequest.seed_image``, the playlist's ``seed_image``) is one of:

- a bundled name: see :func:`bundled_seed_image_names` (``og_beat`` is 93.75 BPM, 8 beats);
- a file path: a PNG spectrogram (512×512) is used as is, an audio file (wav, flac, ogg, mp3, …)
  is encoded from its first 5.12 s;
- a synthesis spec, comma-separated ``key=value`` pairs, ``bpm`` required::

      bpm=93.75,pattern=rock,swing=0.1,bass_hz=55

  Keys:

  ``bpm``
      tempo; whole bars must fill 5.12 s: ``bpm = bars × beats_per_bar × 11.71875``
      (4/4: 46.875, 93.75, 140.625, 187.5).
  ``beats_per_bar``
      beats in a bar (default 4).
  ``pattern``
      one of :data:`PATTERNS` (default ``rock``).
  ``swing``
      0 … 0.5, delay of every second 16th note as a fraction of a 16th (default 0).
  ``bass_hz``
      pitch of a sine bass note on every kick, 0 for none (default 0).
  ``seed``
      integer seed of the noise in snares and hats (default 0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from riffradio.errors import RiffradioError
from riffradio.spectrogram.params import SpectrogramParams

SEED_IMAGE_SIZE = (512, 512)
BPM_QUANTUM = 60.0 / 5.12  # 11.71875: the BPM of one beat per clip

# 16 steps per bar of four beats: K kick, S snare, h hat, o open hat, . rest (scaled for other bars).
PATTERNS: dict[str, dict[str, str]] = {
    "rock": {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
    "four_on_the_floor": {"kick": "x...x...x...x...", "snare": "....x.......x...", "hat": "..x...x...x...x."},
    "breakbeat": {"kick": "x.........x.....", "snare": "....x..x.x..x...", "hat": "x.xxx.x.x.xxx.x."},
    "half_time": {"kick": "x.....x.........", "snare": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
    "boom_bap": {"kick": "x......x..x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.xx"},
}

# Bundled seed images: name → synthesis spec (the PNGs in seed_images/ are made from these).
BUNDLED_SPECS: dict[str, str] = {
    "og_beat": "bpm=93.75,pattern=rock",
    "swing_beat": "bpm=93.75,pattern=boom_bap,swing=0.25",
    "four_on_the_floor": "bpm=140.625,pattern=four_on_the_floor,bass_hz=55",
    "breakbeat": "bpm=140.625,pattern=breakbeat",
    "half_time": "bpm=93.75,pattern=half_time,bass_hz=41.2",
}


@dataclass(frozen=True)
class DrumLoopSpec:
    """What :func:`render_drum_loop` plays; see the module docstring for each key."""

    bpm: float = 93.75
    beats_per_bar: int = 4
    pattern: str = "rock"
    swing: float = 0.0
    bass_hz: float = 0.0
    seed: int = 0

    @property
    def beats(self) -> int:
        return int(round(self.bpm / BPM_QUANTUM))


def parse_drum_loop_spec(text: str) -> DrumLoopSpec:
    """Parse ``"bpm=93.75,pattern=rock,swing=0.1"``; raises a one-line RiffradioError naming the problem."""
    fields: dict[str, object] = {}
    converters = {"bpm": float, "beats_per_bar": int, "pattern": str, "swing": float, "bass_hz": float, "seed": int}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in converters:
            raise RiffradioError(
                f"seed image spec {text!r}: unknown key {key!r} (keys: {', '.join(converters)})"
            )
        try:
            fields[key] = converters[key](value.strip())
        except ValueError:
            raise RiffradioError(f"seed image spec {text!r}: {key}={value.strip()!r} is not a number") from None
    if "bpm" not in fields:
        raise RiffradioError(f"seed image spec {text!r}: needs bpm=...")
    spec = DrumLoopSpec(**fields)  # type: ignore[arg-type]
    validate_drum_loop_spec(spec, f"seed image spec {text!r}")
    return spec


def validate_drum_loop_spec(spec: DrumLoopSpec, where: str = "seed image") -> None:
    if spec.pattern not in PATTERNS:
        raise RiffradioError(f"{where}: unknown pattern {spec.pattern!r} (patterns: {', '.join(PATTERNS)})")
    if not 0.0 <= spec.swing <= 0.5:
        raise RiffradioError(f"{where}: swing must be within 0 … 0.5, got {spec.swing}")
    if spec.beats_per_bar < 1 or spec.bass_hz < 0:
        raise RiffradioError(f"{where}: beats_per_bar must be ≥ 1 and bass_hz ≥ 0")
    bar_bpm = BPM_QUANTUM * spec.beats_per_bar
    bars = spec.bpm / bar_bpm
    if bars < 0.5 or abs(bars - round(bars)) > 1e-6:
        lower = max(1, int(bars)) * bar_bpm
        raise RiffradioError(
            f"{where}: bpm={spec.bpm:g} does not fill 5.12 s with whole bars of {spec.beats_per_bar} beats;"
            f" use a multiple of {bar_bpm:g} such as {lower:g} or {lower + bar_bpm:g}"
        )


def _kick(rate_hz: int) -> np.ndarray:
    t = np.arange(int(0.45 * rate_hz)) / rate_hz
    frequency_hz = 45 + 105 * np.exp(-t / 0.035)
    phase = 2 * np.pi * np.cumsum(frequency_hz) / rate_hz
    click = np.exp(-t / 0.002) * 0.3
    return (np.sin(phase) * np.exp(-t / 0.16) + click).astype(np.float32)


def _snare(rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    t = np.arange(int(0.3 * rate_hz)) / rate_hz
    noise = sosfilt(butter(2, [1200, 9000], btype="bandpass", fs=rate_hz, output="sos"), rng.standard_normal(t.size))
    tone = np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05)
    return (0.55 * noise * np.exp(-t / 0.07) + 0.5 * tone).astype(np.float32)


def _hat(rate_hz: int, rng: np.random.Generator, open_hat: bool) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    t = np.arange(int((0.25 if open_hat else 0.08) * rate_hz)) / rate_hz
    noise = sosfilt(butter(4, 7000, btype="highpass", fs=rate_hz, output="sos"), rng.standard_normal(t.size))
    return (0.35 * noise * np.exp(-t / (0.09 if open_hat else 0.018))).astype(np.float32)


def _bass(rate_hz: int, frequency_hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    envelope = np.minimum(1.0, t / 0.005) * np.exp(-t / (seconds * 0.6))
    return (0.6 * np.sin(2 * np.pi * frequency_hz * t) * envelope).astype(np.float32)


def render_drum_loop(spec: DrumLoopSpec, params: SpectrogramParams = SpectrogramParams()) -> np.ndarray:
    """One clip (``params.clip_samples``) of the loop, mono float32 ``(1, samples)``, peak 0.9.

    Hits are added circularly (a tail that runs past the end wraps to the start), so the clip
    repeated end to end is the same loop without a seam.
    """
    validate_drum_loop_spec(spec)
    rate_hz = params.sample_rate_hz
    length = params.clip_samples
    rng = np.random.default_rng(spec.seed)
    steps_per_beat = 4
    total_steps = spec.beats * steps_per_beat
    step_samples = length / total_steps
    pattern = PATTERNS[spec.pattern]
    sounds = {"kick": _kick(rate_hz), "snare": _snare(rate_hz, rng)}
    hats = {False: _hat(rate_hz, rng, False), True: _hat(rate_hz, rng, True)}
    loop = np.zeros(length, dtype=np.float64)

    def add(sound: np.ndarray, start: int, gain: float) -> None:
        positions = (start + np.arange(sound.size)) % length
        np.add.at(loop, positions, gain * sound)

    for step in range(total_steps):
        # Patterns are written for a bar of four beats; other bar lengths reuse them cyclically.
        cell = step % 16
        offset = step_samples * (spec.swing if step % 2 == 1 else 0.0)
        start = int(round(step * step_samples + offset))
        accent = 1.0 if step % steps_per_beat == 0 else 0.8
        if pattern["kick"][cell] == "x":
            add(sounds["kick"], start, 1.0)
            if spec.bass_hz > 0:
                add(_bass(rate_hz, spec.bass_hz, 4 * step_samples / rate_hz * 2), start, 1.0)
        if pattern["snare"][cell] == "x":
            add(sounds["snare"], start, 0.9)
        if pattern["hat"][cell] == "x":
            add(hats[cell == 14 and spec.pattern == "four_on_the_floor"], start, accent)
    loop *= 0.9 / max(float(np.max(np.abs(loop))), 1e-9)
    return loop.astype(np.float32)[None]


def loop_to_image(loop: np.ndarray, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """Encode a seamless one-clip loop: the STFT sees the loop's own wrap-around at both edges."""
    from riffradio.spectrogram.image import mel_to_image
    from riffradio.spectrogram.mel import audio_to_mel

    length = loop.shape[-1]
    tiled = np.concatenate([loop, loop, loop], axis=-1)
    frames = params.image_width_frames
    start_frame = length // params.hop_length_samples
    mel = audio_to_mel(tiled, params)[:, :, start_frame : start_frame + frames]
    return mel_to_image(mel, params)


def synthesise_seed_image(spec: DrumLoopSpec, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """The seed image of a drum loop."""
    return loop_to_image(render_drum_loop(spec, params), params)


def bundled_seed_image_names() -> list[str]:
    """Names of the seed images that ship with riffradio."""
    return sorted(BUNDLED_SPECS)


def _bundled_path(name: str) -> Path:
    return Path(str(resources.files("riffradio.spectrogram") / "seed_images" / f"{name}.png"))


def _check_seed_image(image: Image.Image, where: str) -> Image.Image:
    if image.size != SEED_IMAGE_SIZE:
        raise RiffradioError(f"{where}: seed image is {image.width}x{image.height}, needs 512x512")
    return image.convert("RGB")


@functools.lru_cache(maxsize=64)
def load_seed_image(reference: str) -> Image.Image:
    """The 512×512 RGB seed image for ``reference`` (bundled name, file path or spec), cached.

    Raises :class:`RiffradioError` (one line naming the reference) when it cannot be resolved.
    Callers must not modify the returned image (it is shared through the cache).
    """
    from riffradio.spectrogram.image import load_spectrogram_image

    reference = str(reference).strip()
    if reference in BUNDLED_SPECS:
        path = _bundled_path(reference)
        if path.is_file():
            return _check_seed_image(load_spectrogram_image(path), f"bundled seed image {reference!r}")
        return synthesise_seed_image(parse_drum_loop_spec(BUNDLED_SPECS[reference]))
    if "=" in reference and not Path(reference).exists():
        return synthesise_seed_image(parse_drum_loop_spec(reference))
    path = Path(reference).expanduser()
    if not path.is_file():
        raise RiffradioError(
            f"seed image {reference!r}: not a bundled name ({', '.join(bundled_seed_image_names())}),"
            " an existing file or a spec like 'bpm=93.75'"
        )
    if path.suffix.lower() == ".png":
        return _check_seed_image(load_spectrogram_image(path), f"seed image {reference!r}")
    from riffradio.spectrogram.audio_io import read_audio
    from riffradio.spectrogram.image import audio_to_image

    params = SpectrogramParams()
    audio = read_audio(path, params.sample_rate_hz, mono=True, duration_seconds=params.clip_seconds)
    if audio.shape[-1] < params.min_clip_samples:
        raise RiffradioError(
            f"seed image {reference!r}: audio is {audio.shape[-1]} samples ({audio.shape[-1] / params.sample_rate_hz:.2f} s),"
            f" needs {params.min_clip_samples} ({params.min_clip_samples / params.sample_rate_hz:.2f} s)"
        )
    return _check_seed_image(audio_to_image(audio, params.sample_rate_hz, params), f"seed image {reference!r}")
