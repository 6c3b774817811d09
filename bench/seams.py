"""Benchmark: the joins between clips, through the station's own join path, with real music as a perfect model.

A perfect model asked for the clip at a place on the timeline returns the recording there. So a
recording (planetblupi's tracks, tests/music.py) is written to a WAV file and becomes the seed
loop (the whole file is the loop, laid on the timeline from 0), and a stand-in engine
(:class:`PerfectModel`) answers each request with the seed window at its place — the image
``load_seed_window`` makes, the rehearsal engine's — and, continuing a clip, with the previous
clip's own last columns kept in front (a perfect model's kept latents), joined as mel amplitudes
and quantised once: the rehearsal engine's pixel continuation (``continued_pixels``) would put
the kept pixels, quantised to the previous window's maximum, beside pixels quantised to the new
window's, which on music differ by up to 6 dB (music003 from 60 s). Everything after the engine
is the station's: a real :class:`~riffradio.station.station.Station` renders offline
(``realtime=False``), so the producer places each clip (``Producer.place``), decides continuation
(``continued_request``) and the vocoder's phase start (``Producer.generate``), normalises
loudness with its gliding gain, the buffer plays each clip at its place with its crossfade
starting at the incoming clip's first sample (``CrossfadeBuffer``), and the consumer's true-peak
limiter runs. The blocks the outputs would get are what is measured (taken back by the limiter's
fixed delay, 80 samples), beside the clips as queued.

Figures at each join (averaged over the joins; the crossfade runs from the incoming clip's start
over ``crossfade_seconds``; with crossfade 0 the join is the cut and the frames whose window spans it):

- **spectral change at the join − inside clips** (dB): the log-mel spectral flux — RMS over 64
  mel bands (0–10 kHz) of the change in dB between consecutive 46 ms frames (2 048 points, every
  512 samples = 11.6 ms; bands floored 80 dB under the loudest) — averaged over the frames
  centred in the crossfade, minus the same average over frames 0.5 s or more from any crossfade.
  Two renderings whose phases disagree beat against each other, so the mix's spectrum flickers
  frame to frame in the crossfade (comb filtering that moves); a cut adds a jump. The
  recording's own figure at the same frames is printed beside it (the music changes too); target:
  within 1 dB of the inside;
- **spectral deviation at the join − inside** (dB): RMS over the bands of (mix − recording) in
  dB, each frame's mean over bands taken out (its level; the level is the next figure), averaged
  over the crossfade's frames minus the same inside clips: what the join adds to the vocoder's
  own error, in spectral shape;
- **overlap correlation**: Pearson's r of the two clips' audio inside the crossfade as played
  (the outgoing clip's samples from its successor's place, the incoming clip's first ones);
  target ≥ 0.9;
- **level at the crossfade's centre** (dB): the buffer's mix (before the limiter, which acts
  inside clips as much) over the middle fifth of the crossfade against the mean power of the two
  clips there (0 dB: level; the buffer's gains follow the clips' correlation,
  :func:`~riffradio.station.buffer.crossfade_gains`);
- **comb depth** (dB): in the middle fifth of the crossfade, the mean over STFT bins (2 048
  points, 0–10 kHz, within 60 dB of the strongest) of |mix power − mean power of the two clips|
  in dB, the buffer's mix again: phases that disagree cancel and add bin by bin (several dB);
  agreeing ones 0 dB;
- **level step** (dB): the incoming clip's power inside the crossfade against the outgoing
  clip's there, as queued (loudness-normalised): how far the crossfade has to carry the level;
- **clip quality** (dB): spectral convergence of each decoded clip (the vocoder's output, before
  loudness) against its own image's mel magnitudes, after the least-squares gain: in its first
  ``overlap`` columns (where its phase may start from, or be locked to, the clip before's) and in
  the rest; a phase start must not spoil the clip;
- **grid deviation** (ms): recorded music: where the incoming clip's audio after the crossfade
  (up to the next crossfade, or the end) sits against the recording there (onset-envelope cross-correlation, 2.9 ms hops,
  parabolic peak); ``--bpm``: every kick of a four-on-the-floor loop (tests/beats.py) from 0.25 s
  before each crossfade to 1.5 s after it against the grid line ``n × beat`` from the timeline's
  origin; target ≤ 10 ms.

Variants (``--variants``): 0 independent clips, independent phase (the station before issue 13);
1 independent clips, the previous clip's phase only as Griffin-Lim's start; 2 independent clips,
phase locked over the overlap (the station now: :meth:`Producer._phase_start`); 3 continuation
(``--continuation`` s, whole 80 ms latent columns), independent phase; 4 continuation with phase
locked (the station now with ``continuation_seconds``). 0, 1 and 3 differ from the station only in
what the vocoder is handed (:class:`BenchVocoder`). ``--rendering-db σ``: the perfect model's new
columns (not the kept ones) are scaled by a smooth random field of σ dB (a 16 × 32 grid over
bands × time, linearly interpolated, seeded by the clip's place), so the two clips render the
overlap differently, as a real model does; 0 (default): the recording itself.

Run: ``python3 bench/seams.py`` (recorded music: 2 recordings × 5 clips = 8 joins per row,
crossfade 0.5 s, variants 0, 2 and 4: about 5 minutes on a 2-core VM; ``--variants 0 1 2 3 4``
for every row); ``--bpm 60 128 200 --crossfades 0 0.5 1.3 --clips 9 --variants 2 4``:
the grid at each tempo × crossfade, 8 joins each; ``--plot docs/seams-join.png``: a spectrogram
of the mix around one join (the first recording's second, at the last crossfade) for variants 0,
2 and 4 (those run), the spectral deviation from the recording drawn under each.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riffradio.core.types import Clip, RiffRequest, RiffResult  # noqa: E402
from riffradio.engine.continuation import LATENT_COLUMN_PIXELS, kept_latent_columns  # noqa: E402
from riffradio.errors import Cancelled  # noqa: E402
from riffradio.playlist import check_playlist_text  # noqa: E402
from riffradio.spectrogram.audio_io import write_audio  # noqa: E402
from riffradio.spectrogram.image import image_to_mel, max_value_from_image, mel_to_image  # noqa: E402
from riffradio.spectrogram.mel import audio_to_mel, mel_filterbank  # noqa: E402
from riffradio.spectrogram.params import SpectrogramParams  # noqa: E402
from riffradio.spectrogram.phase import spectral_convergence_db  # noqa: E402
from riffradio.spectrogram.seeds import load_seed_loop, load_seed_window  # noqa: E402
from riffradio.spectrogram.vocoder import VocodedClip, Vocoder  # noqa: E402
from riffradio.station.station import Station  # noqa: E402
from tests.beats import grid_deviations_seconds, kick_onsets_seconds  # noqa: E402
from tests.music import music_excerpt  # noqa: E402

PARAMS = SpectrogramParams()
RATE_HZ = PARAMS.sample_rate_hz
HOP = PARAMS.hop_length_samples
RECORDINGS: tuple[tuple[str, float], ...] = (("music003.ogg", 60.0), ("music007.ogg", 20.0), ("music001.ogg", 30.0))
FRAME_HOP = 512  # the spectral measures' frames: 2 048 points every 512 samples
INSIDE_MARGIN_SECONDS = 0.5
SOLO_SECONDS = 1.5
ONSET_HOP = 128  # 2.9 ms
MAX_LAG_SECONDS = 0.05


@dataclass(frozen=True)
class Variant:
    """One way of making the joins."""

    name: str
    continuation_seconds: float
    phase: str  # "none", "start" or "locked"


class PerfectModel:
    """The engine protocol answered by the recording: each clip is the seed window at its place.

    ``riff`` returns ``load_seed_window(request.seed_image, request.seed_window_start_samples)``
    (what the rehearsal engine returns) as mel amplitudes; continuing a clip
    (``previous_latents``, ``request.continuation_seconds`` > 0) its first kept columns are the
    previous clip's last ones, as a model's kept latents. ``latents`` are those mel amplitudes
    ``(1, mels, frames)``. ``rendering_db`` > 0 scales the new columns by a smooth random field.
    """

    def __init__(self, rendering_db: float = 0.0, clips: int | None = None) -> None:
        self.device = torch.device("cpu")
        self.rendering_db = rendering_db
        self.clips, self.made = clips, 0
        self.done = threading.Event()  # set once the render is over: clips past ``clips`` give up

    def riff(self, request: RiffRequest, should_cancel: Any = None, previous_latents: np.ndarray | None = None) -> RiffResult:
        self.made += 1
        if self.clips is not None and self.made > self.clips:
            # The lookahead's clip after the last one measured: never heard, so never made.
            self.done.wait()
            raise Cancelled("the render is over")
        window = load_seed_window(request.seed_image, request.seed_window_start_samples)
        mel = image_to_mel(window, PARAMS, max_value_from_image(window) or 1.0)
        if self.rendering_db > 0:
            mel = mel * self._field(request.seed_window_start_samples, mel.shape)
        kept = 0
        if previous_latents is not None and request.continuation_seconds > 0:
            kept = kept_latent_columns(request.continuation_seconds) * LATENT_COLUMN_PIXELS
            mel = np.concatenate([previous_latents[:, :, mel.shape[-1] - kept :], mel[:, :, kept:]], axis=2)
        return RiffResult(request=request, image=mel_to_image(mel.astype(np.float32), PARAMS), latents=mel)

    def _field(self, place: int, shape: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng(place)
        coarse = rng.normal(0.0, self.rendering_db, size=(16, 32))
        rows = np.interp(np.linspace(0, 15, shape[1]), np.arange(16), np.arange(16))
        cols = np.linspace(0, 31, shape[2])
        along = np.stack([np.interp(cols, np.arange(32), row) for row in coarse])  # (16, frames)
        fine = np.stack([np.interp(rows, np.arange(16), along[:, j]) for j in range(shape[2])], axis=1)
        return (10 ** (fine / 20))[None].astype(np.float32)


class BenchVocoder(Vocoder):
    """The station's vocoder, handed the previous clip's phase as the variant says, recording each decode."""

    def __init__(self, phase: str) -> None:
        super().__init__(PARAMS)
        self.phase = phase
        self.decoded: list[tuple[Image.Image, VocodedClip, int]] = []  # image, result, overlap frames with phase

    def decode(self, image: Image.Image, should_cancel: Any = None, previous: VocodedClip | None = None,
               overlap_frames: int = 0, lock_known_phase: bool = True) -> VocodedClip:  # fmt: skip
        if self.phase == "none":
            previous, overlap_frames = None, 0
        vocoded = super().decode(image, should_cancel, previous, overlap_frames, lock_known_phase=self.phase != "start")
        self.decoded.append((image, vocoded, overlap_frames if previous is not None else 0))
        return vocoded


@dataclass
class Render:
    """What one station render gave: the output (mono), the clips as queued, the crossfade starts."""

    output: np.ndarray  # as played: after the limiter, taken back by its delay
    mix: np.ndarray  # the buffer's mix, before the limiter
    clips: list[Clip]
    fade_starts: list[int]
    fade_samples: int
    decoded: list[tuple[Image.Image, VocodedClip, int]]
    cpu_seconds_per_clip: float
    reference: np.ndarray  # the recording (or the tiled loop) on the same timeline
    beat_seconds: float | None = None


def render(seed_image: str, reference: np.ndarray, crossfade_seconds: float, variant: Variant, clips: int,
           rendering_db: float, beat_seconds: float | None = None) -> Render:  # fmt: skip
    """Render ``clips`` clips of ``seed_image`` through a real offline :class:`Station`."""
    text = (
        f"station: {{name: seams, crossfade_seconds: {crossfade_seconds}, lookahead_clips: 1,"
        f" continuation_seconds: {variant.continuation_seconds}}}\n"
        f"riffs:\n  - {{prompt: recording, clips: 1000, seed_image: '{seed_image}'}}\n"
    )
    playlist, errors = check_playlist_text(text, Path("seams.yaml"))
    assert playlist is not None, errors
    station = Station(playlist, realtime=False, worker_grace_seconds=0.0)
    blocks: list[np.ndarray] = []
    station.add_block_listener(lambda block: blocks.append(block.samples.mean(axis=0)))
    queued: list[Clip] = []
    push = station.buffer.push

    def recording_push(clip: Clip) -> list[Clip]:
        queued.append(clip)
        return push(clip)

    mixed: list[np.ndarray] = []
    read = station.buffer.read

    def recording_read(frames: int, crossfade_seconds: float | None = None) -> tuple[np.ndarray, Any]:
        samples, now = read(frames, crossfade_seconds)
        mixed.append(samples.mean(axis=0))
        return samples, now

    # Observe what is queued and what the buffer mixes (before the consumer's limiter).
    station.buffer.push = recording_push  # type: ignore[method-assign]
    station.buffer.read = recording_read  # type: ignore[method-assign]
    vocoder = BenchVocoder(variant.phase)
    started = time.process_time()
    # Until the last clip's crossfade and SOLO_SECONDS after it.
    hop_samples = PARAMS.clip_samples - _overlap(station, playlist, crossfade_seconds, variant.continuation_seconds)
    fade = int(round(crossfade_seconds * RATE_HZ))
    seconds = ((clips - 1) * hop_samples + fade + SOLO_SECONDS * RATE_HZ) / RATE_HZ
    engine = PerfectModel(rendering_db, clips)
    try:
        asyncio.run(station.run(engine, vocoder, seconds))
    finally:
        engine.done.set()
    cpu = (time.process_time() - started) / max(len(vocoder.decoded), 1)
    assert station.consumer is not None
    delay = station.consumer.limiter.lookahead + station.consumer.limiter.future
    output = np.concatenate(blocks)[delay:]
    heard = [clip for clip in queued if clip.placement is not None][:clips]
    starts = [clip.placement.start_samples for clip in heard[1:]]  # type: ignore[union-attr]
    assert station.buffer.underruns == 0 and len(heard) == clips
    return Render(output, np.concatenate(mixed)[: output.shape[-1]], heard, starts, fade, vocoder.decoded[:clips], cpu,
                  reference[: output.shape[-1]], beat_seconds)  # fmt: skip


def _overlap(station: Station, playlist: Any, crossfade_seconds: float, continuation_seconds: float) -> int:
    """The producer's overlap for these settings (its own rule: :meth:`Producer.overlap_samples`)."""
    from riffradio.metrics import StationMetrics
    from riffradio.station.producer import Producer

    producer = Producer(playlist, station.state, None, Vocoder(PARAMS), station.buffer, RATE_HZ, StationMetrics())
    return producer.overlap_samples(crossfade_seconds, continuation_seconds)


# -- the measures -----------------------------------------------------------------------------------
def log_mel_db(audio: np.ndarray) -> np.ndarray:
    """Log power in 64 mel bands up to 10 kHz (dB, floored 80 dB under the loudest), 2 048-point frames every 512 samples."""
    spectrum = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), 2048, FRAME_HOP,
                          window=torch.hann_window(2048), return_complex=True)  # fmt: skip
    bands = mel_filterbank(SpectrogramParams(num_frequencies=64), 2048)
    db = 10 * np.log10(np.einsum("fm,ft->mt", bands, spectrum.abs().numpy() ** 2) + 1e-12)
    return np.maximum(db, db.max() - 80.0)


def flux_db(spectrum: np.ndarray) -> np.ndarray:
    """Per frame, RMS over bands of the dB change from the frame before (frame 0: nan)."""
    return np.concatenate([[math.nan], np.sqrt(np.mean(np.diff(spectrum, axis=1) ** 2, axis=0))])


def shape_deviation_db(spectrum: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per frame, RMS over bands of (spectrum − reference) in dB with the frame's mean difference taken out."""
    difference = spectrum - reference
    return np.sqrt(np.mean((difference - difference.mean(axis=0, keepdims=True)) ** 2, axis=0))


def join_frames(fade_start: int, fade: int) -> np.ndarray:
    """Frames centred inside the crossfade (a cut: the frames whose 2 048-point window spans it)."""
    low, high = (fade_start, fade_start + fade) if fade >= FRAME_HOP else (fade_start - 1024, fade_start + fade + 1024)
    return np.arange(math.ceil(low / FRAME_HOP), math.floor(high / FRAME_HOP) + 1)


def inside_frames(length: int, fade_starts: list[int], fade: int) -> np.ndarray:
    """Frames 0.5 s or more (plus half a frame) from any crossfade and from the ends."""
    margin = INSIDE_MARGIN_SECONDS * RATE_HZ + 1024
    centres = np.arange(length // FRAME_HOP) * FRAME_HOP
    keep = (centres > margin) & (centres < length - margin)
    for start in fade_starts:
        keep &= (centres < start - margin) | (centres > start + fade + margin)
    return np.nonzero(keep)[0]


def comb_depth_db(mixed: np.ndarray, outgoing: np.ndarray, incoming: np.ndarray) -> float:
    """Mean |10·log10(|M|² / ((|A|² + |B|²) / 2))| over strong bins up to 10 kHz (equally long 1-D parts)."""
    def power(audio: np.ndarray) -> np.ndarray:
        spectrum = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), 2048, 512,
                              window=torch.hann_window(2048), center=False, return_complex=True)  # fmt: skip
        return spectrum.abs().numpy()[: round(10_000 / RATE_HZ * 2048)] ** 2

    mix_power, expected = power(mixed), (power(outgoing) + power(incoming)) / 2
    strong = expected > expected.max() * 1e-6
    return float(np.mean(np.abs(10 * np.log10((mix_power[strong] + 1e-20) / expected[strong]))))


def clip_convergence_db(image: Image.Image, audio: np.ndarray, columns: slice) -> float:
    """Spectral convergence (dB) of decoded ``audio``'s mel magnitudes against ``image``'s, in ``columns``, after the LS gain."""
    reference = image_to_mel(image, PARAMS, max_value_from_image(image) or 1.0)[..., columns]
    estimate = audio_to_mel(audio, PARAMS)[..., : PARAMS.image_width_frames][..., columns]
    gain = float((reference * estimate).sum() / max(float((estimate * estimate).sum()), 1e-30))
    return spectral_convergence_db(reference, gain * estimate)


def onset_envelope(audio: np.ndarray) -> np.ndarray:
    """Half-wave rectified spectral flux of the log magnitude, one value per ``ONSET_HOP`` samples."""
    spectrum = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), 1024, ONSET_HOP,
                          window=torch.hann_window(1024), return_complex=True)  # fmt: skip
    log_magnitude = np.log1p(1000 * spectrum.abs().numpy())
    return np.concatenate([[0.0], np.maximum(np.diff(log_magnitude, axis=1), 0).sum(axis=0)])


def lag_ms(output: np.ndarray, reference: np.ndarray) -> float:
    """Where ``output`` sits against ``reference`` (same span), from the onset envelopes' cross-correlation peak."""
    a, b = onset_envelope(output), onset_envelope(reference)
    a, b = a - a.mean(), b - b.mean()
    max_lag = round(MAX_LAG_SECONDS * RATE_HZ / ONSET_HOP)
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.array([np.dot(a[max(0, lag) : len(a) + min(0, lag)], b[max(0, -lag) : len(b) + min(0, -lag)]) for lag in lags])
    best = int(np.argmax(scores))
    shift = 0.0
    if 0 < best < len(lags) - 1:  # parabolic peak between hops
        left, centre, right = scores[best - 1 : best + 2]
        denominator = left - 2 * centre + right
        shift = 0.5 * (left - right) / denominator if denominator != 0 else 0.0
    return float((lags[best] + shift) * ONSET_HOP / RATE_HZ * 1000)


@dataclass
class Figures:
    """The figures of one row, accumulated over renders."""

    change: list[float] = field(default_factory=list)
    change_recording: list[float] = field(default_factory=list)
    change_inside: list[float] = field(default_factory=list)
    change_inside_recording: list[float] = field(default_factory=list)
    deviation: list[float] = field(default_factory=list)
    deviation_inside: list[float] = field(default_factory=list)
    correlation: list[float] = field(default_factory=list)
    level: list[float] = field(default_factory=list)
    comb: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    quality_overlap: list[float] = field(default_factory=list)
    quality_rest: list[float] = field(default_factory=list)
    grid_ms: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def measure(run: Render, figures: Figures) -> None:
    """Add the figures of every join of ``run``."""
    output, fade = run.output, run.fade_samples
    spectrum, reference = log_mel_db(output), log_mel_db(run.reference)
    frames = spectrum.shape[1]
    flux, flux_reference = flux_db(spectrum), flux_db(reference)
    deviation = shape_deviation_db(spectrum, reference)
    inside = inside_frames(output.shape[-1], run.fade_starts, fade)
    figures.change_inside.append(float(np.nanmean(flux[inside])))
    figures.change_inside_recording.append(float(np.nanmean(flux_reference[inside])))
    figures.deviation_inside.append(float(np.mean(deviation[inside])))
    figures.cpu.append(run.cpu_seconds_per_clip)
    for k, start in enumerate(run.fade_starts, start=1):
        at = join_frames(start, fade)
        at = at[(at >= 1) & (at < frames)]
        figures.change.append(float(np.mean(flux[at])))
        figures.change_recording.append(float(np.mean(flux_reference[at])))
        figures.deviation.append(float(np.mean(deviation[at])))
        before, after = run.clips[k - 1], run.clips[k]
        offset = start - before.placement.start_samples  # type: ignore[union-attr]
        outgoing, incoming = before.audio[0, offset : offset + fade], after.audio[0, :fade]
        if fade > HOP:
            figures.correlation.append(float(np.corrcoef(outgoing, incoming)[0, 1]))
            figures.step.append(float(10 * np.log10(np.mean(incoming**2) / np.mean(outgoing**2))))
        middle = slice(2 * fade // 5, 3 * fade // 5)
        expected = (np.mean(outgoing[middle] ** 2) + np.mean(incoming[middle] ** 2)) / 2 if fade else 0.0
        if fade // 5 >= 2048 and expected > 1e-8:  # an STFT frame of sound in the middle fifth (crossfades ≥ 0.24 s)
            mixed = run.mix[start : start + fade][middle]
            figures.level.append(float(10 * np.log10(np.mean(mixed**2) / expected)))
            figures.comb.append(comb_depth_db(mixed, outgoing[middle], incoming[middle]))
        solo = slice(start + fade, min(start + fade + int(SOLO_SECONDS * RATE_HZ), output.shape[-1]))
        if run.beat_seconds is None:
            # The incoming clip alone, up to the next crossfade: 1.5 s of sustained music can
            # hold too few onsets for one clear peak (one join read 45 ms there, 0.06 ms over 3 s).
            alone = slice(solo.start, run.fade_starts[k] if k < len(run.fade_starts) else output.shape[-1])
            figures.grid_ms.append(lag_ms(output[alone], run.reference[alone]))
        else:
            span = slice(max(0, start - int(0.25 * RATE_HZ)), solo.stop)
            onsets = kick_onsets_seconds(output[span], RATE_HZ) + span.start / RATE_HZ
            figures.grid_ms += list(grid_deviations_seconds(onsets, run.beat_seconds) * 1000)
    for image, vocoded, overlap_frames in run.decoded[1:]:
        columns = overlap_frames or run.clips[0].placement.overlap_samples // HOP  # type: ignore[union-attr]
        if columns > 0:
            figures.quality_overlap.append(clip_convergence_db(image, vocoded.audio, slice(0, columns)))
            figures.quality_rest.append(clip_convergence_db(image, vocoded.audio, slice(columns, None)))


def row(crossfade_seconds: float, variant: Variant, overlap_ms: float, figures: Figures, joins_note: str) -> dict[str, str]:
    def mean(values: list[float], digits: int = 2) -> str:
        return f"{np.mean(values):.{digits}f}" if values else "–"

    change = np.mean(figures.change) - np.mean(figures.change_inside)
    change_recording = np.mean(figures.change_recording) - np.mean(figures.change_inside_recording)
    return {
        "crossfade s": f"{crossfade_seconds:g}",
        "variant": variant.name,
        "overlap ms": f"{overlap_ms:g}",
        "spectral change join − inside dB (recording)": f"{change:+.2f} ({change_recording:+.2f})",
        "spectral deviation join − inside dB": f"{np.mean(figures.deviation) - np.mean(figures.deviation_inside):+.2f}",
        "overlap r mean / min": (f"{np.mean(figures.correlation):.3f} / {np.min(figures.correlation):.3f}" if figures.correlation else "–"),
        "centre level max abs dB": f"{np.max(np.abs(figures.level)):.2f}" if figures.level else "–",
        "comb depth mean dB": mean(figures.comb),
        "level step in − out max abs dB": f"{np.max(np.abs(figures.step)):.2f}" if figures.step else "–",
        "clip SC overlap / rest dB": f"{mean(figures.quality_overlap)} / {mean(figures.quality_rest)}",
        "grid deviation max ms": f"{np.max(np.abs(figures.grid_ms)):.2f}" if figures.grid_ms else "–",
        "joins": joins_note,
        "CPU s/clip": mean(figures.cpu),
    }


def plot_join(path: Path, mixes: dict[str, Render]) -> None:
    """A PNG: the log-mel spectrogram of each mix 1.5 s around its second join, one panel per mix, crossfade marked."""
    from PIL import ImageDraw

    panels = []
    for name, run in mixes.items():
        output, fade = run.output, run.fade_samples
        start = run.fade_starts[min(1, len(run.fade_starts) - 1)]
        centre = start + fade // 2
        left_edge = max(0, centre - int(1.5 * RATE_HZ))
        segment = np.ascontiguousarray(output[left_edge : centre + int(1.5 * RATE_HZ)], np.float32)
        spectrum = torch.stft(torch.from_numpy(segment), 2048, 256, window=torch.hann_window(2048), return_complex=True)
        bands = mel_filterbank(SpectrogramParams(num_frequencies=160, max_frequency_hz=12000), 2048)
        db = 10 * np.log10(np.einsum("fm,ft->mt", bands, spectrum.abs().numpy() ** 2) + 1e-10)
        db = np.clip((db - (db.max() - 80)) / 80, 0, 1)[::-1]
        # A dark-to-bright ramp through blue and orange (no plotting library needed).
        rgb = np.stack([np.clip(1.6 * db - 0.3, 0, 1), np.clip(1.4 * db - 0.5, 0, 1) ** 1.2,
                        np.clip(0.6 - np.abs(db - 0.35) * 1.5, 0, 1) + 0.1 * db], axis=2)  # fmt: skip
        image = Image.fromarray((rgb * 255).astype(np.uint8)).resize((3 * db.shape[1], 3 * db.shape[0]), Image.NEAREST)
        header, strip = 30, 70
        canvas = Image.new("RGB", (image.width, image.height + header + strip), "white")
        canvas.paste(image, (0, header))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 2), f"{name}: the station's mix 1.5 s either side of a join, mel bands 0-12 kHz; bar = the crossfade", fill="black")
        pixels_per_sample = image.width / segment.shape[-1]
        left, right = (round((edge - left_edge) * pixels_per_sample) for edge in (start, start + fade))
        draw.rectangle([(left, 18), (max(right, left + 2), 26)], fill="black")
        for x in (left, right):  # dotted guides through the picture
            for y in range(header, header + image.height, 12):
                draw.line([(x, y), (x, y + 4)], fill="white", width=1)
        # Under it, the bench's spectral deviation from the recording, frame by frame (0–8 dB).
        stop = left_edge + segment.shape[-1]
        deviation = shape_deviation_db(log_mel_db(output[left_edge:stop]), log_mel_db(run.reference[left_edge:stop]))
        top, height = header + image.height + 16, strip - 20
        draw.text((4, top - 14), "spectral deviation of the mix from the recording, 0-8 dB", fill="black")
        draw.rectangle([(left, top), (right, top + height)], fill=(235, 235, 235))
        points = [(round(i * FRAME_HOP * pixels_per_sample), top + height - round(min(value, 8.0) / 8.0 * height))
                  for i, value in enumerate(deviation)]  # fmt: skip
        draw.line(points, fill="black", width=2)
        panels.append(canvas)
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels) + 6 * len(panels)), "white")
    y = 0
    for panel in panels:
        sheet.paste(panel, (0, y))
        y += panel.height + 6
    sheet.save(path)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=5, help="clips per render (joins = clips − 1)")
    parser.add_argument("--recordings", type=int, default=2, help=f"recordings (up to {len(RECORDINGS)})")
    parser.add_argument("--crossfades", type=float, nargs="+", default=[0.5], help="crossfade seconds to try")
    parser.add_argument("--continuation", type=float, default=1.28, help="continuation seconds of variants 3 and 4")
    parser.add_argument("--rendering-db", type=float, default=0.0, help="σ of the model's different rendering of new columns (dB)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    parser.add_argument("--plot", type=Path, default=None, help="write a picture of a join to this PNG")
    parser.add_argument("--bpm", type=float, nargs="+", default=[], help="four-on-the-floor loops at these tempi instead of music")
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 2, 4], help="which rows to run (0–4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [
        Variant("independent clips, independent phase", 0.0, "none"),
        Variant("independent clips, phase start", 0.0, "start"),
        Variant("independent clips, phase locked", 0.0, "locked"),
        Variant(f"continuation {args.continuation:g} s, independent phase", args.continuation, "none"),
        Variant(f"continuation {args.continuation:g} s, phase locked", args.continuation, "locked"),
    ]
    chosen = [variants[index] for index in args.variants]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {os.getloadavg()}")
    rows, plotted = [], {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        sources: list[tuple[str, str, np.ndarray, float | None]] = []  # name, seed reference, reference audio, beat
        length = (args.clips + 3) * PARAMS.clip_samples
        if args.bpm:
            for bpm in args.bpm:
                spec = f"bpm={bpm:g},pattern=four_on_the_floor"
                loop = load_seed_loop(spec)
                assert loop.audio is not None
                tiled = np.tile(loop.audio, length // loop.loop_samples + 1)[:length]
                sources.append((f"{bpm:g} BPM", spec, tiled, loop.beat_samples / RATE_HZ))
        else:
            for track, start_seconds in RECORDINGS[: args.recordings]:
                audio = music_excerpt(track, start_seconds, duration_seconds=length / RATE_HZ + 0.01)[0, :length]
                path = Path(directory) / track.replace(".ogg", ".wav")
                write_audio(path, audio[None], RATE_HZ)
                sources.append((track, str(path), audio, None))
        for crossfade_seconds in args.crossfades:
            for variant in chosen:
                figures, overlap_ms = Figures(), 0.0
                for name, reference_name, reference, beat in sources:
                    run = render(reference_name, reference, crossfade_seconds, variant, args.clips, args.rendering_db, beat)
                    overlap_ms = run.clips[0].placement.overlap_samples / RATE_HZ * 1000  # type: ignore[union-attr]
                    kicks = len(figures.grid_ms)
                    measure(run, figures)
                    print(f"  {name}: grid deviation max {np.max(np.abs(figures.grid_ms[kicks:])):.2f} ms"
                          f" over {len(figures.grid_ms) - kicks} {'kicks' if beat else 'joins'}", flush=True)  # fmt: skip
                    if args.plot is not None and crossfade_seconds == args.crossfades[-1] and name == sources[0][0]:
                        plotted[variant.name] = run
                note = f"{len(sources) * (args.clips - 1)}" + (f" ({', '.join(f'{b:g}' for b in args.bpm)} BPM)" if args.bpm else "")
                rows.append(row(crossfade_seconds, variant, overlap_ms, figures, note))
                print(", ".join(f"{key} {value}" for key, value in rows[-1].items()), flush=True)
    print(f"load average after: {os.getloadavg()}, {time.monotonic() - started:.0f} s")
    print("\n| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for values in rows:
        print("| " + " | ".join(values.values()) + " |")
    if args.plot is not None:
        shown = [variants[i].name for i in (0, 2, 4) if variants[i].name in plotted]
        plot_join(args.plot, {name: plotted[name] for name in shown})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
