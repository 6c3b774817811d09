"""Benchmark: the joins between clips, with real recorded music standing in for a perfect model.

A perfect model asked for the clip after clip k would return the recording's next window. So:
consecutive overlapping 5.12 s windows of a recording (planetblupi's tracks, tests/music.py) are
encoded as spectrogram images and taken through the station's join path — the vocoder, the
producer's loudness normalisation with its gliding gain, the buffer's equal-power crossfade —
and every join of the mix is measured:

- **spectral change** (dB): the RMS over 64 mel bands of the difference between the mean log
  spectrum of the 0.2 s after a point and of the 0.2 s before it. At each join (the crossfade's
  centre) against the mean over every point inside the clips (0.5 s or more from any
  crossfade); target: the join within 1 dB of the inside. The music changes by itself too, and
  a handful of joins may fall on a change, so the recording's own change at the same points is
  printed beside each figure, and the last column compares what the join path adds: (mix −
  recording) at the joins minus (mix − recording) inside the clips;
- **overlap correlation**: Pearson's r of the two clips' audio inside the crossfade (what the
  listener hears mixed; comb filtering when it is low); target ≥ 0.9;
- **level at the crossfade's centre** (dB): the mix's power over the middle fifth of the
  crossfade against the mean power of the two clips there: 0 dB is a level join; two equal
  renderings mixed with equal-power gains would swell by 3 dB, unrelated ones by 0 (the buffer's
  gains follow the clips' correlation, :func:`~riffradio.station.buffer.crossfade_gains`);
- **comb depth** (dB): inside the middle fifth of the crossfade, the mean over STFT bins
  (2 048 points, 0–10 kHz, bins within 60 dB of the strongest) of |mix power − mean power of the
  two clips| in dB: two renderings whose phases disagree cancel and add bin by bin (comb
  filtering, several dB); two that agree mix to the same spectrum (0 dB);
- **grid deviation** (ms): how far each clip's audio after the crossfade sits from where the
  recording has it, from the peak of the cross-correlation of onset envelopes (2.9 ms hops,
  parabolic peak); target ≤ 10 ms.

Variants: with and without continuation (``--continuation`` seconds, rounded to whole latent
columns of 80 ms: the new clip's first columns are the previous clip's last ones — a perfect
model's kept latents — the rest the recording's window) and with and without phase continuity
(the vocoder continuing the previous clip's phase over the overlap, :meth:`Vocoder.decode`).
Consecutive clips overlap by the crossfade, or with continuation by ``max(continuation,
crossfade)`` in whole latent columns, all of it kept (:func:`overlap_frames`); the crossfade
lies in the middle of the overlap.

Run: ``python3 bench/seams.py`` (two recordings, 5 clips each; ``--quick``: one, 4 clips;
``--recordings N``; ``--bpm 60 99.5 128 174 200``: instead of recorded music, a synthesised drum
loop at each tempo laid end to end (``riffradio.spectrogram.seeds``), so the grid deviation is
measured against a known beat grid; ``--variants N …``: only those rows (0–3, default all); ``--crossfades 0 0.5 1.3``;
``--continuation 1.28``; ``--clips N``; ``--plot docs/seams-join.png``: a spectrogram of the mix
around one join, without and with continuation + phase continuity).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riffradio.spectrogram.image import mel_to_image  # noqa: E402
from riffradio.spectrogram.mel import audio_to_mel, mel_filterbank  # noqa: E402
from riffradio.spectrogram.params import SpectrogramParams  # noqa: E402
from riffradio.spectrogram.vocoder import VocodedClip, Vocoder  # noqa: E402
from riffradio.station.buffer import CrossfadeBuffer  # noqa: E402
from riffradio.station.loudness import normalise_clip  # noqa: E402
from riffradio.core.types import Clip  # noqa: E402
from tests.music import music_excerpt  # noqa: E402

PARAMS = SpectrogramParams()
RATE_HZ = PARAMS.sample_rate_hz
HOP = PARAMS.hop_length_samples
FRAMES = PARAMS.image_width_frames
LATENT_COLUMN_FRAMES = 8  # one latent column = 8 image columns = 80 ms
RECORDINGS: tuple[tuple[str, float], ...] = (("music003.ogg", 60.0), ("music007.ogg", 20.0), ("music001.ogg", 30.0))
CHANGE_WINDOW_SECONDS = 0.2
INSIDE_MARGIN_SECONDS = 0.5
ONSET_HOP = 128  # 2.9 ms
MAX_LAG_SECONDS = 0.05


@dataclass(frozen=True)
class Variant:
    """One way of making the joins."""

    name: str
    continuation_seconds: float
    phase_continuity: bool


@dataclass
class Join:
    """Figures of one join."""

    change_db: float
    recording_change_db: float
    correlation: float
    centre_level_db: float
    comb_db: float
    grid_deviation_ms: float


def overlap_frames(continuation_seconds: float, crossfade_seconds: float) -> tuple[int, int, int]:
    """(kept frames, overlap frames, crossfade frames), as the station sizes them.

    Without continuation the clips overlap by the crossfade (whole 10 ms frames). With it the
    overlap is whole latent columns (8 frames), the continuation or the crossfade rounded up,
    whichever is longer, and all of it is kept, so the crossfade always mixes two renderings of
    the same columns.
    """
    crossfade = round(crossfade_seconds * 100)
    kept = LATENT_COLUMN_FRAMES * round(continuation_seconds * 100 / LATENT_COLUMN_FRAMES)
    if kept == 0:
        return 0, crossfade, crossfade
    overlap = max(kept, LATENT_COLUMN_FRAMES * math.ceil(crossfade / LATENT_COLUMN_FRAMES))
    return overlap, overlap, crossfade


def trims(overlap: int, crossfade: int) -> tuple[int, int]:
    """Samples cut at a join from the incoming clip's head and the outgoing clip's tail (crossfade centred)."""
    head = (overlap - crossfade) // 2
    return head * HOP, (overlap - crossfade - head) * HOP


def clip_images(recording: np.ndarray, clips: int, kept: int, overlap: int) -> list:
    """The images a perfect model makes: windows every ``FRAMES − overlap`` frames; the first ``kept`` columns kept."""
    step = (FRAMES - overlap) * HOP
    images, previous = [], None
    for k in range(clips):
        mel = audio_to_mel(recording[:, k * step : k * step + PARAMS.clip_samples], PARAMS)[:, :, :FRAMES]
        if previous is not None and kept > 0:
            # The previous clip's own last columns (its kept latents), then the new window's.
            mel = np.concatenate([previous[:, :, FRAMES - overlap : FRAMES - overlap + kept], mel[:, :, kept:]], axis=2)
        previous = mel
        images.append(mel_to_image(mel, PARAMS))
    return images


def decode(vocoder: Vocoder, images: list, overlap: int, phase_continuity: bool) -> tuple[list[np.ndarray], float]:
    """The vocoder's audio for each image (continuing the phase or not) and the CPU seconds per clip."""
    decoded: list[VocodedClip] = []
    started = time.process_time()
    for image in images:
        previous = decoded[-1] if decoded and phase_continuity else None
        decoded.append(vocoder.decode(image, previous=previous, overlap_frames=overlap))
    return [clip.audio for clip in decoded], (time.process_time() - started) / len(images)


def mix(audios: list[np.ndarray], overlap: int, crossfade: int, lufs: float = -14.0) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """The station's join path: loudness with gliding gain, then the buffer's crossfades.

    Consecutive clips share ``overlap`` frames; the crossfade is centred in them, so each clip
    is cut by about ``(overlap − crossfade) / 2`` frames at a join (head of the incoming, tail of
    the outgoing; :func:`trims`). Returns the mix, the normalised clips and the sample where each crossfade starts.
    """
    head_trim, tail_trim = trims(overlap, crossfade)
    gain_db = None
    normalised = []
    for audio in audios:
        result = normalise_clip(audio, RATE_HZ, lufs, gain_db)
        normalised.append(result.audio)
        gain_db = result.gain_db
    buffer = CrossfadeBuffer(channels=1, sample_rate_hz=RATE_HZ, crossfade_seconds=crossfade * HOP / RATE_HZ)
    fade_starts, position = [], 0
    for k, audio in enumerate(normalised):
        head = head_trim if k > 0 else 0
        tail = tail_trim if k < len(normalised) - 1 else 0
        played = audio[:, head : audio.shape[-1] - tail]
        if k > 0:
            fade_starts.append(position - crossfade * HOP)
        position += played.shape[-1] - (crossfade * HOP if k > 0 else 0)
        buffer.push(Clip(index=k, request=None, audio=played, sample_rate_hz=RATE_HZ))  # type: ignore[arg-type]
    out, _ = buffer.read(position)
    return out[0], normalised, fade_starts


def log_mel_db(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Log power in 64 mel bands up to 10 kHz (dB), 2 048-point frames every 512 samples; and the frame rate."""
    spectrum = torch.stft(torch.from_numpy(audio.astype(np.float32)), 2048, 512, window=torch.hann_window(2048), return_complex=True)
    bands = mel_filterbank(SpectrogramParams(num_frequencies=64), 2048)  # 0–10 kHz: the band an image holds
    power = np.einsum("fm,ft->mt", bands, spectrum.abs().numpy() ** 2)
    return 10 * np.log10(power + 1e-10), RATE_HZ / 512


def spectral_change_db(spectrum: np.ndarray, frames_per_second: float, seconds: np.ndarray) -> np.ndarray:
    """RMS over bands of mean(dB, 0.2 s after) − mean(dB, 0.2 s before), at each of ``seconds``."""
    width = round(CHANGE_WINDOW_SECONDS * frames_per_second)
    changes = []
    for t in seconds:
        centre = round(t * frames_per_second)
        before = spectrum[:, max(centre - width, 0) : centre].mean(axis=1)
        after = spectrum[:, centre : centre + width].mean(axis=1)
        changes.append(float(np.sqrt(np.mean((after - before) ** 2))))
    return np.asarray(changes)


def comb_depth_db(mixed: np.ndarray, outgoing: np.ndarray, incoming: np.ndarray) -> float:
    """Mean |10·log10(|M|² / ((|A|² + |B|²) / 2))| over strong bins up to 10 kHz (equally long 1-D parts)."""
    def power(audio: np.ndarray) -> np.ndarray:
        spectrum = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), 2048, 512, window=torch.hann_window(2048), center=False, return_complex=True)
        return spectrum.abs().numpy()[: round(10_000 / RATE_HZ * 2048)] ** 2

    mix_power, expected = power(mixed), (power(outgoing) + power(incoming)) / 2
    strong = expected > expected.max() * 1e-6
    return float(np.mean(np.abs(10 * np.log10((mix_power[strong] + 1e-20) / expected[strong]))))


def onset_envelope(audio: np.ndarray) -> np.ndarray:
    """Half-wave rectified spectral flux of the log magnitude, one value per ``ONSET_HOP`` samples."""
    spectrum = torch.stft(torch.from_numpy(audio.astype(np.float32)), 1024, ONSET_HOP, window=torch.hann_window(1024), return_complex=True)
    log_magnitude = np.log1p(1000 * spectrum.abs().numpy())
    flux = np.maximum(np.diff(log_magnitude, axis=1), 0).sum(axis=0)
    return np.concatenate([[0.0], flux])


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


def measure(output: np.ndarray, clips: list[np.ndarray], fade_starts: list[int], recording: np.ndarray,
            overlap: int, crossfade: int) -> list[Join]:
    """The figures of every join of ``output`` (the mix of ``clips``, which started ``fade_starts``)."""
    fade = crossfade * HOP
    head_trim, tail_trim = trims(overlap, crossfade)
    spectrum, rate = log_mel_db(output)
    reference_spectrum, _ = log_mel_db(recording[0, : output.shape[-1]])
    centres = np.array([(start + fade / 2) / RATE_HZ for start in fade_starts])
    joins = []
    for k, start in enumerate(fade_starts, start=1):
        end = clips[k - 1].shape[-1] - tail_trim
        outgoing = clips[k - 1][0, end - fade : end]
        incoming = clips[k][0, head_trim : head_trim + fade]
        correlation = float(np.corrcoef(outgoing, incoming)[0, 1]) if fade > HOP else math.nan
        middle = slice(2 * fade // 5, 3 * fade // 5)
        mixed = output[start : start + fade][middle]
        measurable = fade // 5 >= 2048  # the middle fifth holds an STFT frame (crossfades ≥ 0.24 s)
        centre_level_db = (
            float(10 * np.log10(np.mean(mixed**2) / ((np.mean(outgoing[middle] ** 2) + np.mean(incoming[middle] ** 2)) / 2)))
            if measurable
            else math.nan
        )
        comb_db = comb_depth_db(mixed, outgoing[middle], incoming[middle]) if measurable else math.nan
        # The incoming clip alone, after the crossfade (until the next one or 1.5 s).
        solo = slice(start + fade, min(start + fade + int(1.5 * RATE_HZ), output.shape[-1]))
        deviation = lag_ms(output[solo], recording[0, solo])
        joins.append(Join(
            change_db=float(spectral_change_db(spectrum, rate, centres[k - 1 : k])[0]),
            recording_change_db=float(spectral_change_db(reference_spectrum, rate, centres[k - 1 : k])[0]),
            correlation=correlation,
            centre_level_db=centre_level_db,
            comb_db=comb_db,
            grid_deviation_ms=deviation,
        ))
    return joins


def inside_change_db(output: np.ndarray, recording: np.ndarray, fade_starts: list[int], crossfade: int) -> tuple[float, float]:
    """Mean spectral change of the mix and of the recording at every point 0.5 s or more from any crossfade (and the ends)."""
    seconds = np.arange(INSIDE_MARGIN_SECONDS, output.shape[-1] / RATE_HZ - INSIDE_MARGIN_SECONDS, 0.05)
    fades = [(start / RATE_HZ, (start + crossfade * HOP) / RATE_HZ) for start in fade_starts]
    inside = np.asarray([t for t in seconds if all(t < a - INSIDE_MARGIN_SECONDS or t > b + INSIDE_MARGIN_SECONDS for a, b in fades)])
    spectrum, rate = log_mel_db(output)
    reference, _ = log_mel_db(recording[0, : output.shape[-1]])
    return float(spectral_change_db(spectrum, rate, inside).mean()), float(spectral_change_db(reference, rate, inside).mean())


def plot_join(path: Path, mixes: dict[str, tuple[np.ndarray, list[int]]], crossfade: int) -> None:
    """A PNG: the log-mel spectrogram of each mix around its second join, one panel per mix, crossfade marked."""
    from PIL import Image, ImageDraw

    panels = []
    for name, (output, fade_starts) in mixes.items():
        start = fade_starts[min(1, len(fade_starts) - 1)]
        centre = start + crossfade * HOP // 2
        segment = output[max(0, centre - int(1.5 * RATE_HZ)) : centre + int(1.5 * RATE_HZ)]
        spectrum = torch.stft(torch.from_numpy(segment), 2048, 256, window=torch.hann_window(2048), return_complex=True)
        bands = mel_filterbank(SpectrogramParams(num_frequencies=160, max_frequency_hz=12000), 2048)
        db = 10 * np.log10(np.einsum("fm,ft->mt", bands, spectrum.abs().numpy() ** 2) + 1e-10)
        db = np.clip((db - (db.max() - 80)) / 80, 0, 1)[::-1]
        # A dark-to-bright ramp through blue and orange (no plotting library needed).
        rgb = np.stack([np.clip(1.6 * db - 0.3, 0, 1), np.clip(1.4 * db - 0.5, 0, 1) ** 1.2, np.clip(0.6 - np.abs(db - 0.35) * 1.5, 0, 1) + 0.1 * db], axis=2)
        image = Image.fromarray((rgb * 255).astype(np.uint8)).resize((3 * db.shape[1], 3 * db.shape[0]), Image.NEAREST)
        header = 30
        canvas = Image.new("RGB", (image.width, image.height + header), "white")
        canvas.paste(image, (0, header))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 2), f"{name}: the mix 1.5 s either side of a join, mel bands 0-12 kHz; bar = the crossfade", fill="black")
        pixels_per_sample = image.width / segment.shape[-1]
        left, right = (round((edge - (centre - int(1.5 * RATE_HZ))) * pixels_per_sample) for edge in (start, start + crossfade * HOP))
        draw.rectangle([(left, 18), (max(right, left + 2), 26)], fill="black")
        for x in (left, right):  # dotted guides through the picture
            for y in range(header, canvas.height, 12):
                draw.line([(x, y), (x, y + 4)], fill="white", width=1)
        panels.append(canvas)
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels) + 6 * len(panels)), "white")
    y = 0
    for panel in panels:
        sheet.paste(panel, (0, y))
        y += panel.height + 6
    sheet.save(path)
    print(f"wrote {path}")


def drum_recording(bpm: float, samples: int) -> np.ndarray:
    """A synthesised rock drum loop at ``bpm`` (bars nearest 5.12 s) repeated to ``samples``: a recording with a known grid."""
    from riffradio.spectrogram.seeds import DrumLoopSpec, render_drum_loop

    loop = render_drum_loop(DrumLoopSpec(bpm=bpm, bass_hz=55.0), PARAMS)
    return np.tile(loop, (1, samples // loop.shape[-1] + 1))[:, :samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one recording, 4 clips")
    parser.add_argument("--clips", type=int, default=5, help="clips per recording (joins = clips − 1)")
    parser.add_argument("--recordings", type=int, default=2, help=f"recordings (up to {len(RECORDINGS)})")
    parser.add_argument("--crossfades", type=float, nargs="+", default=[0.5], help="crossfade seconds to try")
    parser.add_argument("--continuation", type=float, default=1.28, help="continuation seconds of the 'with' variants")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    parser.add_argument("--plot", type=Path, default=None, help="write a picture of a join to this PNG")
    parser.add_argument("--bpm", type=float, nargs="+", default=[], help="drum loops at these tempi instead of recorded music")
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2, 3], help="which rows to run (0–3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recordings: list[tuple[str, float]] = (
        [(f"drums {bpm:g} BPM", bpm) for bpm in args.bpm] if args.bpm else list(RECORDINGS[: 1 if args.quick else args.recordings])
    )
    clips = 4 if args.quick else args.clips
    variants = [
        Variant("independent clips, independent phase", 0.0, False),
        Variant("independent clips, phase continuity", 0.0, True),
        Variant(f"continuation {args.continuation:g} s, independent phase", args.continuation, False),
        Variant(f"continuation {args.continuation:g} s, phase continuity", args.continuation, True),
    ]
    variants = [variants[index] for index in args.variants]
    vocoder = Vocoder(PARAMS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: {os.getloadavg()}")
    rows = []
    plotted: dict[str, tuple[np.ndarray, list[int]]] = {}
    for crossfade_seconds in args.crossfades:
        for variant in variants:
            kept, overlap, crossfade = overlap_frames(variant.continuation_seconds, crossfade_seconds)
            joins, inside, cpu = [], [], []
            for track, start_seconds in recordings:
                length = (clips - 1) * (FRAMES - overlap) * HOP + PARAMS.clip_samples
                if args.bpm:
                    recording = drum_recording(start_seconds, length)
                else:
                    recording = music_excerpt(track, start_seconds, duration_seconds=length / RATE_HZ + 0.01)[:, :length]
                images = clip_images(recording, clips, kept, overlap)
                audios, cpu_seconds = decode(vocoder, images, overlap, variant.phase_continuity)
                output, normalised, fade_starts = mix(audios, overlap, crossfade)
                these = measure(output, normalised, fade_starts, recording, overlap, crossfade)
                print(f"  {track}: grid deviation per join (ms) {', '.join(f'{j.grid_deviation_ms:+.2f}' for j in these)}", flush=True)
                joins += these
                inside.append(inside_change_db(output, recording, fade_starts, crossfade))
                cpu.append(cpu_seconds)
                if args.plot is not None and crossfade_seconds == args.crossfades[0] and track == recordings[0][0]:
                    plotted[variant.name] = (output, fade_starts)
            change = float(np.mean([j.change_db for j in joins]))
            recording_change = float(np.mean([j.recording_change_db for j in joins]))
            inside_mix, inside_recording = (float(np.mean([pair[i] for pair in inside])) for i in (0, 1))
            correlations = [j.correlation for j in joins if not math.isnan(j.correlation)]
            levels = [abs(j.centre_level_db) for j in joins if not math.isnan(j.centre_level_db)]
            combs = [j.comb_db for j in joins if not math.isnan(j.comb_db)]
            row = {
                "crossfade s": f"{crossfade_seconds:g}",
                "variant": variant.name,
                "kept ms": f"{kept * 10}",
                "overlap ms": f"{overlap * 10}",
                "change at joins dB (recording)": f"{change:.2f} ({recording_change:.2f})",
                "change inside clips dB (recording)": f"{inside_mix:.2f} ({inside_recording:.2f})",
                "join excess − inside excess dB": f"{(change - recording_change) - (inside_mix - inside_recording):+.2f}",
                "overlap r mean / min": (f"{np.mean(correlations):.3f} / {np.min(correlations):.3f}" if correlations else "–"),
                "centre level max abs dB": f"{max(levels):.2f}" if levels else "–",
                "comb depth mean dB": f"{np.mean(combs):.2f}" if combs else "–",
                "grid deviation max ms": f"{max(abs(j.grid_deviation_ms) for j in joins):.2f}",
                "joins": f"{len(joins)}" + (f" ({', '.join(f'{bpm:g}' for bpm in args.bpm)} BPM)" if args.bpm else ""),
                "CPU s/clip": f"{np.mean(cpu):.2f}",
            }
            rows.append(row)
            print(", ".join(f"{key} {value}" for key, value in row.items()), flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("\n| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")
    if args.plot is not None:
        chosen = {name: plotted[name] for name in (variants[0].name, variants[-1].name) if name in plotted}
        plot_join(args.plot, chosen, overlap_frames(0.0, args.crossfades[0])[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
