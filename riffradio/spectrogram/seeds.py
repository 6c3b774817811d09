"""Seed loops: bundled drum loops, any audio or PNG file, or a drum loop synthesised on demand.

A seed is a **loop of whole bars** of any length, laid end to end on the station's timeline
(:mod:`riffradio.station.timeline`). Each clip's init image is the 5.12 s window of the loop that
starts where the timeline is at that clip's start, wrapping around the loop
(:func:`load_seed_window`); :func:`load_seed_image` is the window at the loop's start.

Riffusion's own seed images cannot ship with this project, so its seeds are synthesised here:
a drum loop (kick, snare, hats, optional bass note) at any tempo, rendered circularly so that
it loops seamlessly.

A seed reference (``RiffRequest.seed_image``, the playlist's ``seed_image``) is one of:

- a bundled name: see :func:`bundled_seed_image_names` (``og_beat`` is 93.75 BPM, 2 bars of 4);
- a file path: an audio file (wav, flac, ogg, mp3, …) is a loop as a whole, 0.25 s to
  :data:`MAX_LOOP_SECONDS`; a PNG spectrogram (512×512) is a 5.12 s loop. Without a tempo, a
  file's loop counts as one bar of four beats;
- a spec, comma-separated ``key=value`` pairs, either a synthesised drum loop (``bpm`` required)::

      bpm=128,bars=2,pattern=rock,swing=0.1,bass_hz=55

  or a file with its tempo (``file`` and ``bpm`` or ``bars``; the file must be whole bars)::

      file=loops/break.wav,bpm=126,beats_per_bar=4

  Keys:

  ``bpm``
      tempo, :data:`MIN_BPM` … :data:`MAX_BPM`, fractional allowed.
  ``beats_per_bar``
      beats in a bar (default 4).
  ``bars``
      bars in the loop; for synthesis the default is the whole number of bars nearest one clip
      (5.12 s), at least 1 (so 93.75 BPM makes 2 bars = 5.12 s, 128 BPM 3 bars = 5.625 s).
  ``file``
      an audio or PNG file whose whole length is the loop (no synthesis keys with it).
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
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from riffradio.core.knobs import KNOBS
from riffradio.core.timeline import WholeBars
from riffradio.errors import RiffradioError
from riffradio.spectrogram.params import SpectrogramParams

SEED_IMAGE_SIZE = (512, 512)
MIN_BPM, MAX_BPM = KNOBS["bpm"].low, KNOBS["bpm"].high
MAX_BARS = 64
MIN_LOOP_SECONDS = 0.25  # one beat at 240 BPM
MAX_LOOP_SECONDS = 300.0  # a seed loop is held in memory whole (300 s mono = 53 MB)
_CLIP_SECONDS = SpectrogramParams().clip_seconds

# One row of 16 steps per drum for a bar of four beats (scaled for other bars): x plays, . rests.
PATTERNS: dict[str, dict[str, str]] = {
    "rock": {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
    "four_on_the_floor": {"kick": "x...x...x...x...", "snare": "....x.......x...", "hat": "..x...x...x...x."},
    "breakbeat": {"kick": "x.........x.....", "snare": "....x..x.x..x...", "hat": "x.xxx.x.x.xxx.x."},
    "half_time": {"kick": "x.....x.........", "snare": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
    "boom_bap": {"kick": "x......x..x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.xx"},
}

# Bundled seed images: name → synthesis spec (the PNGs in seed_images/ are their first windows).
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
    bars: int = 0  # 0: the whole number of bars nearest one clip
    pattern: str = "rock"
    swing: float = 0.0
    bass_hz: float = 0.0
    seed: int = 0

    @property
    def bar_seconds(self) -> float:
        return self.beats_per_bar * 60.0 / self.bpm

    @property
    def bar_count(self) -> int:
        """Bars in the loop (``bars``, or the whole number nearest 5.12 s)."""
        return self.bars or max(1, round(_CLIP_SECONDS / self.bar_seconds))

    @property
    def beats(self) -> int:
        """Beats in the loop."""
        return self.bar_count * self.beats_per_bar

    @property
    def loop_seconds(self) -> float:
        return self.bar_count * self.bar_seconds


@dataclass(frozen=True)
class FileLoopSpec:
    """A file whose whole length is the loop, with its tempo if known (``file=…,bpm=…``)."""

    path: str
    bpm: float | None = None
    beats_per_bar: int = 4
    bars: int | None = None


_DRUM_KEYS = {
    "bpm": float, "beats_per_bar": int, "bars": int, "pattern": str, "swing": float, "bass_hz": float, "seed": int,
}  # fmt: skip
_FILE_KEYS = ("file", "bpm", "beats_per_bar", "bars")


def parse_seed_spec(text: str) -> DrumLoopSpec | FileLoopSpec:
    """Parse ``"bpm=128,bars=2"`` or ``"file=x.wav,bpm=126"``; a one-line RiffradioError names the problem."""
    fields: dict[str, object] = {}
    converters: dict[str, type] = {**_DRUM_KEYS, "file": str}
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
    where = f"seed image spec {text!r}"
    if "file" in fields:
        extra = sorted(set(fields) - set(_FILE_KEYS))
        if extra:
            raise RiffradioError(f"{where}: {extra[0]!r} synthesises a drum loop; with file= only bpm, beats_per_bar, bars")
        spec = FileLoopSpec(
            path=str(fields["file"]), bpm=fields.get("bpm"), beats_per_bar=int(fields.get("beats_per_bar", 4)),  # type: ignore[arg-type]
            bars=fields.get("bars"),  # type: ignore[arg-type]
        )  # fmt: skip
        _validate_tempo(spec.bpm, spec.beats_per_bar, spec.bars, where)
        return spec
    if "bpm" not in fields:
        raise RiffradioError(f"{where}: needs bpm=... (or file=...)")
    drum = DrumLoopSpec(**fields)  # type: ignore[arg-type]
    validate_drum_loop_spec(drum, where)
    return drum


def parse_drum_loop_spec(text: str) -> DrumLoopSpec:
    """Parse a synthesis spec ``"bpm=93.75,pattern=rock,swing=0.1"`` (one-line RiffradioError if not one)."""
    spec = parse_seed_spec(text)
    if not isinstance(spec, DrumLoopSpec):
        raise RiffradioError(f"seed image spec {text!r}: a file, not a drum-loop synthesis spec")
    return spec


def _validate_tempo(bpm: float | None, beats_per_bar: int, bars: int | None, where: str) -> None:
    if bpm is not None and not (MIN_BPM <= bpm <= MAX_BPM):  # also refuses nan
        raise RiffradioError(f"{where}: bpm must be within {MIN_BPM:g} … {MAX_BPM:g}, got {bpm:g}")
    if not 1 <= beats_per_bar <= 32:
        raise RiffradioError(f"{where}: beats_per_bar must be within 1 … 32, got {beats_per_bar}")
    if bars is not None and not 0 <= bars <= MAX_BARS:
        raise RiffradioError(f"{where}: bars must be within 1 … {MAX_BARS}, got {bars}")


def validate_drum_loop_spec(spec: DrumLoopSpec, where: str = "seed image") -> None:
    """Raise a one-line RiffradioError when ``spec`` cannot be played."""
    if spec.pattern not in PATTERNS:
        raise RiffradioError(f"{where}: unknown pattern {spec.pattern!r} (patterns: {', '.join(PATTERNS)})")
    if not 0.0 <= spec.swing <= 0.5:
        raise RiffradioError(f"{where}: swing must be within 0 … 0.5, got {spec.swing}")
    if not spec.bass_hz >= 0:
        raise RiffradioError(f"{where}: bass_hz must be ≥ 0, got {spec.bass_hz}")
    _validate_tempo(spec.bpm, spec.beats_per_bar, spec.bars, where)
    if spec.loop_seconds > MAX_LOOP_SECONDS:
        raise RiffradioError(f"{where}: the loop would be {spec.loop_seconds:.1f} s, at most {MAX_LOOP_SECONDS:g} s")


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
    """The whole loop (``spec.bar_count`` bars), mono float32 ``(1, samples)``, peak 0.9.

    ``samples = round(loop_seconds × rate)``; hit ``n`` starts at ``round(n × samples / steps)``,
    so every beat is within half a sample of the loop's own grid (``samples / beats``). Hits are
    added circularly (a tail that runs past the end wraps to the start), so the loop repeated
    end to end has no seam.
    """
    validate_drum_loop_spec(spec)
    rate_hz = params.sample_rate_hz
    length = int(round(spec.loop_seconds * rate_hz))
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
        # Patterns are written for a bar of four beats; other bars restart them on each downbeat.
        cell = (step % (spec.beats_per_bar * steps_per_beat)) % 16
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


def _circular_window(audio: np.ndarray, start_samples: int, length_samples: int) -> np.ndarray:
    """``length_samples`` of a loop ``(samples,)`` from ``start_samples``, wrapping around (float32)."""
    indices = (start_samples + np.arange(length_samples)) % audio.shape[-1]
    return audio[indices]


def loop_mel(
    loop: np.ndarray, start_samples: int = 0, frames: int | None = None, params: SpectrogramParams = SpectrogramParams()
) -> np.ndarray:
    """Mel amplitudes ``(1, mels, frames)`` of a seamless loop from ``start_samples`` (wrapping).

    ``loop`` is mono ``(samples,)`` or ``(1, samples)``, any length; ``frames`` columns (default:
    enough to cover the whole loop once). The STFT sees the loop's own wrap-around at both
    edges, so column ``j`` is centred at loop sample ``start_samples + j × hop`` (mod the loop),
    exactly.
    """
    from riffradio.spectrogram.mel import audio_to_mel

    audio = np.asarray(loop, dtype=np.float32).reshape(-1)
    hop = params.hop_length_samples
    frames = math.ceil(audio.size / hop) if frames is None else int(frames)
    pad_frames = math.ceil(params.n_fft_samples / 2 / hop)  # context a centred frame sees
    pad = pad_frames * hop
    window = _circular_window(audio, int(start_samples) - pad, frames * hop + 2 * pad)
    return audio_to_mel(window[None], params)[:, :, pad_frames : pad_frames + frames]


def loop_window_image(
    loop: np.ndarray,
    start_samples: int = 0,
    params: SpectrogramParams = SpectrogramParams(),
    max_value: float | None = None,
) -> Image.Image:
    """The spectrogram image of the 5.12 s window of a seamless loop from ``start_samples`` (wrapping).

    Its columns are :func:`loop_mel`'s from ``start_samples``. ``max_value``: full scale
    (default the window's own maximum; :func:`~riffradio.spectrogram.image.mel_to_image`).
    """
    from riffradio.spectrogram.image import mel_to_image

    return mel_to_image(loop_mel(loop, start_samples, params.image_width_frames, params), params, max_value)


def loop_to_image(loop: np.ndarray, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """The first 5.12 s window of a seamless loop (see :func:`loop_window_image`)."""
    return loop_window_image(loop, 0, params)


def synthesise_seed_image(spec: DrumLoopSpec, params: SpectrogramParams = SpectrogramParams()) -> Image.Image:
    """The seed image (first window) of a drum loop."""
    return loop_to_image(render_drum_loop(spec, params), params)


def bundled_seed_image_names() -> list[str]:
    """Names of the seed images that ship with riffradio."""
    return sorted(BUNDLED_SPECS)


def bundled_seed_image_path(name: str) -> Path:
    """The shipped PNG of a bundled seed (its first window, as made by this module)."""
    return Path(str(resources.files("riffradio.spectrogram") / "seed_images" / f"{name}.png"))


def _check_seed_image(image: Image.Image, where: str) -> Image.Image:
    if image.size != SEED_IMAGE_SIZE:
        raise RiffradioError(f"{where}: seed image is {image.width}x{image.height}, needs 512x512")
    converted = image.convert("RGB")
    converted.info.update(image.info)
    return converted


@dataclass(frozen=True, eq=False)
class SeedLoop(WholeBars):
    """A seed: one loop of whole bars, at the codec's sample rate.

    Attributes:
        reference: what it was loaded from (a bundled name, a path or a spec).
        loop_samples: the loop's length in samples (44.1 kHz).
        bars: whole bars in the loop.
        beats_per_bar: beats in one bar.
        audio: the loop, mono float32 ``(loop_samples,)``; None for a PNG seed.
        image: a PNG seed's 512-column image (a 5.12 s loop); None for audio loops.
    """

    reference: str
    loop_samples: int
    bars: int
    beats_per_bar: int
    audio: np.ndarray | None = None
    image: Image.Image | None = None

    @property
    def bpm(self) -> float:
        return 60.0 * SpectrogramParams().sample_rate_hz / self.beat_samples

    @functools.cached_property
    def mel_max(self) -> float:
        """The largest mel amplitude anywhere in an audio loop (0 for a PNG seed, which has one image)."""
        return 0.0 if self.audio is None else float(np.max(loop_mel(self.audio)))

    def window_image(
        self, start_samples: int, params: SpectrogramParams = SpectrogramParams(), loop_scale: bool = False
    ) -> Image.Image:
        """The 5.12 s window from ``start_samples`` (any integer; taken modulo the loop).

        ``loop_scale``: quantise to the whole loop's maximum (:attr:`mel_max`) rather than the
        window's own, so that windows of one loop side by side (a rehearsal clip continuing the
        one before) are on one scale. A PNG seed's windows always are. (A window off the loop's
        10 ms frame grid can peak a fraction of a dB above it; those few pixels saturate.)

        PNG seeds have no audio: their window is the image's columns rolled by the nearest whole
        column (10 ms), so within 5 ms of ``start_samples``.
        """
        start = int(start_samples) % self.loop_samples
        if self.audio is not None:
            return loop_window_image(self.audio, start, params, self.mel_max if loop_scale else None)
        assert self.image is not None
        columns = round(start / params.hop_length_samples) % self.image.width
        if columns == 0:
            return self.image
        rolled = Image.fromarray(np.ascontiguousarray(np.roll(np.asarray(self.image), -columns, axis=1)), mode="RGB")
        rolled.info.update(self.image.info)  # EXIF: parameters and max value stay the same
        return rolled


def _file_bars(samples: int, spec: FileLoopSpec, where: str) -> int:
    """Whole bars in a file loop of ``samples``: from ``bars``, or from ``bpm`` (within ⅛ beat)."""
    rate_hz = SpectrogramParams().sample_rate_hz
    if spec.bpm is None:
        return spec.bars or 1
    bar_samples = spec.beats_per_bar * 60.0 / spec.bpm * rate_hz
    bars = spec.bars or max(1, round(samples / bar_samples))
    if abs(samples - bars * bar_samples) > bar_samples / spec.beats_per_bar / 8:
        raise RiffradioError(
            f"{where}: {samples / rate_hz:.3f} s is not a whole number of {spec.beats_per_bar}-beat bars at"
            f" {spec.bpm:g} BPM ({bars} bar(s) = {bars * bar_samples / rate_hz:.3f} s)"
        )
    return bars


def _load_file_loop(reference: str, spec: FileLoopSpec) -> SeedLoop:
    from riffradio.spectrogram.image import load_spectrogram_image

    path = Path(spec.path).expanduser()
    where = f"seed image {reference!r}"
    if not path.is_file():
        raise RiffradioError(
            f"{where}: not a bundled name ({', '.join(bundled_seed_image_names())}),"
            " an existing file or a spec like 'bpm=93.75'"
        )
    params = SpectrogramParams()
    if path.suffix.lower() == ".png":
        image = _check_seed_image(load_spectrogram_image(path), where)
        samples = params.clip_samples
        return SeedLoop(reference, samples, _file_bars(samples, spec, where), spec.beats_per_bar, image=image)
    from riffradio.spectrogram.audio_io import read_audio

    audio = read_audio(path, params.sample_rate_hz, mono=True, duration_seconds=MAX_LOOP_SECONDS + 1.0)[0]
    seconds = audio.size / params.sample_rate_hz
    if not MIN_LOOP_SECONDS <= seconds <= MAX_LOOP_SECONDS:
        raise RiffradioError(
            f"{where}: the loop is the whole file, {MIN_LOOP_SECONDS:g} … {MAX_LOOP_SECONDS:g} s;"
            f" this one is {'longer' if seconds > MAX_LOOP_SECONDS else f'{seconds:.2f} s'}"
        )
    if not np.all(np.isfinite(audio)):
        raise RiffradioError(f"{where}: the audio contains nan or inf samples")
    return SeedLoop(reference, audio.size, _file_bars(audio.size, spec, where), spec.beats_per_bar, audio=audio)


@functools.lru_cache(maxsize=8)
def load_seed_loop(reference: str) -> SeedLoop:
    """The :class:`SeedLoop` for ``reference`` (bundled name, file path or spec), cached.

    Raises :class:`RiffradioError` (one line naming the reference) when it cannot be resolved.
    """
    reference = str(reference).strip()
    if reference in BUNDLED_SPECS:
        spec: DrumLoopSpec | FileLoopSpec = parse_seed_spec(BUNDLED_SPECS[reference])
    elif "=" in reference and not Path(reference).exists():
        spec = parse_seed_spec(reference)
    else:
        spec = FileLoopSpec(path=reference)
    if isinstance(spec, FileLoopSpec):
        return _load_file_loop(reference, spec)
    audio = render_drum_loop(spec)[0]
    return SeedLoop(reference, audio.size, spec.bar_count, spec.beats_per_bar, audio=audio)


def load_seed_window(reference: str, start_samples: int = 0, loop_scale: bool = False) -> Image.Image:
    """The 512×512 RGB init image of the loop ``reference`` from ``start_samples`` (wrapping), cached.

    ``loop_scale``: on the whole loop's scale, not the window's own (:meth:`SeedLoop.window_image`).
    Callers must not modify the returned image (it is shared through the cache).
    """
    return _cached_window(reference, int(start_samples) % load_seed_loop(reference).loop_samples, bool(loop_scale))


@functools.lru_cache(maxsize=128)
def _cached_window(reference: str, start_samples: int, loop_scale: bool) -> Image.Image:
    return load_seed_loop(reference).window_image(start_samples, loop_scale=loop_scale)


def load_seed_image(reference: str) -> Image.Image:
    """The 512×512 RGB seed image for ``reference``: the loop's first window (cached)."""
    return load_seed_window(str(reference).strip(), 0)
