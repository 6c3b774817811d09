"""The ``file`` output: a FLAC, WAV or Ogg Vorbis recording plus a JSON-lines cue sheet.

The recording is flushed every ``flush_seconds`` of audio, so a crash or a power cut leaves a
file that decoders read up to the last flush: WAV headers are rewritten by libsndfile on each
flush, and the FLAC STREAMINFO sample count is patched to the frames already encoded. The cue
sheet gets one line per clip heard (``time_seconds``, prompt, seed, alpha, ...), flushed at once.

A new recording never overwrites an old one unless asked (``overwrite: true``, which
``riffradio render -o`` sets): an existing ``late.flac`` makes the station write ``late.1.flac``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, TextIO

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink
from riffradio.station.types import AudioBlock, NowPlaying

FORMATS: dict[str, str] = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}
SUBTYPES: dict[str, str] = {"FLAC": "PCM_24", "WAV": "PCM_24", "OGG": "VORBIS"}
FILE_OPTIONS = ("path", "cue", "overwrite", "flush_seconds")
_FLAC_STREAMINFO_OFFSET = 8  # after "fLaC" and the metadata block header
# Below this much free space a new recording is not started: it would fail within a second and
# leave an empty file behind at every retry.
MIN_FREE_BYTES = 256 * 1024


def _disk_full_error(directory: Path, action: str) -> OSError | None:
    """An ENOSPC error naming ``directory`` when it has less than MIN_FREE_BYTES free, else None."""
    try:
        free_bytes = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free_bytes >= MIN_FREE_BYTES:
        return None
    return OSError(
        errno.ENOSPC, f"no space left on the recording disk {directory} ({free_bytes} bytes free) {action}"
    )


def cue_path_for(path: Path) -> Path:
    """``recordings/late.flac`` → ``recordings/late.cue.jsonl``."""
    return path.with_suffix(".cue.jsonl")


def cue_entry(now_playing: NowPlaying, time_seconds: float) -> dict[str, Any]:
    """One cue-sheet line: what became audible at ``time_seconds`` into the recording."""
    request = now_playing.request
    entry: dict[str, Any] = {
        "time_seconds": round(time_seconds, 4),
        "clip_index": now_playing.clip_index,
        "title": now_playing.title,
        "fallback": now_playing.fallback,
    }
    if request is not None:
        entry.update(
            prompt=request.start_prompt,
            to_prompt=request.end_prompt,
            seed=request.start_seed,
            to_seed=request.end_seed,
            alpha=round(request.alpha, 6),
            denoising=request.start_denoising,
            guidance=request.start_guidance,
            steps=request.num_inference_steps,
            seed_image=request.seed_image,
        )
    return entry


def _patch_flac_sample_count(path: Path, frames_written: int) -> None:
    """Write into STREAMINFO how many frames are already encoded, so a crash leaves a readable file.

    libFLAC only fills in the total when the file is closed; until then it is 0 ("unknown"),
    which libsndfile cannot read. Frames are encoded in whole blocks of the STREAMINFO block size.
    """
    with open(path, "r+b") as handle:
        handle.seek(_FLAC_STREAMINFO_OFFSET)
        header = handle.read(18)
        if len(header) < 18:
            return
        block_size = int.from_bytes(header[2:4], "big")  # max block size
        if block_size <= 0:
            return
        encoded = (frames_written // block_size) * block_size
        # total samples: the low 4 bits of byte 13 and bytes 14..17 of STREAMINFO (36 bits).
        first = (header[13] & 0xF0) | ((encoded >> 32) & 0x0F)
        handle.seek(_FLAC_STREAMINFO_OFFSET + 13)
        handle.write(bytes([first]) + (encoded & 0xFFFFFFFF).to_bytes(4, "big"))


class FileSink(Sink):
    """Records the station to ``path`` (format from the suffix) with a cue sheet beside it.

    Args:
        path: ``.flac``, ``.wav`` or ``.ogg`` (Vorbis).
        cue_path: where the JSON-lines cue sheet goes; ``None`` writes none.
        overwrite: replace an existing file instead of writing ``name.1.flac``.
        flush_seconds: audio seconds between flushes to disk.
    """

    def __init__(
        self, path: str | Path, cue_path: str | Path | None = None, overwrite: bool = False, flush_seconds: float = 1.0
    ) -> None:
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() not in FORMATS:
            raise ValueError(f"file output {str(self.path)!r}: use a .flac, .wav or .ogg name")
        if not flush_seconds > 0:
            raise ValueError(f"file output: flush_seconds must be positive, got {flush_seconds}")
        self.format = FORMATS[self.path.suffix.lower()]
        self.cue_path = Path(cue_path).expanduser() if cue_path is not None else None
        self.overwrite = overwrite
        self.flush_seconds = float(flush_seconds)
        self.name = f"file:{self.path}"
        self.current_path: Path | None = None  # the file being written now
        self.current_cue_path: Path | None = None
        self._opened_once = False
        self._sound: Any = None
        self._cue: TextIO | None = None
        self._frames = 0
        self._frames_at_flush = 0
        self._last_key: tuple[int, bool] | None = None

    def _paths(self) -> tuple[Path, Path | None]:
        """The first free ``name.N.ext`` (and its cue sheet), unless overwriting on the first open."""
        if self.overwrite and not self._opened_once:
            return self.path, self.cue_path
        candidate, cue = self.path, self.cue_path
        number = 0
        while candidate.exists() or (cue is not None and cue.exists()):
            number += 1
            candidate = self.path.with_name(f"{self.path.stem}.{number}{self.path.suffix}")
            cue = self.cue_path.with_name(f"{self.cue_path.name.split('.')[0]}.{number}.cue.jsonl") if self.cue_path else None
        return candidate, cue

    def open(self) -> None:
        path, cue = self._paths()
        path.parent.mkdir(parents=True, exist_ok=True)
        full = _disk_full_error(path.parent, f"to start {path.name}")
        if full is not None:
            raise full
        # Create the file now so a read-only directory fails at open, not at the first block.
        with open(path, "wb"):
            pass
        self.current_path, self.current_cue_path = path, cue
        self._opened_once = True
        self._sound = None
        self._frames = self._frames_at_flush = 0
        self._last_key = None
        if cue is not None:
            cue.parent.mkdir(parents=True, exist_ok=True)
            self._cue = open(cue, "w", encoding="utf-8")

    def _start(self, block: AudioBlock) -> None:
        import soundfile

        assert self.current_path is not None
        self._sound = soundfile.SoundFile(
            self.current_path,
            "w",
            samplerate=block.sample_rate_hz,
            channels=block.samples.shape[0],
            format=self.format,
            subtype=SUBTYPES[self.format],
        )

    def write(self, block: AudioBlock) -> int:
        if self.current_path is None:
            raise RuntimeError(f"{self.name}: write before open")
        if self._sound is None:
            self._start(block)
        now = block.now_playing
        key = (now.clip_index, now.fallback)
        if self._cue is not None and key != self._last_key:
            self._cue.write(json.dumps(cue_entry(now, self._frames / block.sample_rate_hz)) + "\n")
            self._cue.flush()
            self._last_key = key
        try:
            self._sound.write(block.samples.T)
            self._frames += block.frames
            if self._frames - self._frames_at_flush >= self.flush_seconds * block.sample_rate_hz:
                self.flush()
        except Exception as error:
            # libsndfile says only "System error." when the disk is full: say what happened.
            full = _disk_full_error(
                self.current_path.parent,
                f"writing {self.current_path.name} ({self._frames / block.sample_rate_hz:.1f} s kept, "
                "readable up to the last flush)",
            )
            if full is not None:
                raise full from error
            raise
        return int(block.samples.shape[0] * block.frames * 3)  # approximate: 24-bit before compression

    def flush(self) -> None:
        """Push what is written to disk, readable after a crash."""
        if self._sound is not None:
            self._sound.flush()
            if self.format == "FLAC" and self.current_path is not None:
                _patch_flac_sample_count(self.current_path, self._frames)
        if self._cue is not None:
            self._cue.flush()
            os.fsync(self._cue.fileno())
        self._frames_at_flush = self._frames

    @property
    def seconds_written(self) -> float:
        return self._frames / self._sound.samplerate if self._sound is not None else 0.0

    def close(self) -> None:
        sound, cue = self._sound, self._cue
        self._sound = self._cue = None
        for handle in (sound, cue):
            if handle is None:
                continue
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - a broken output (full disk) must still close
                pass
        if self._frames == 0:
            # Opened but nothing recorded (the disk filled at once, or stopped before the first
            # block): leave no empty file behind.
            for leftover in (self.current_path, self.current_cue_path):
                if leftover is not None and leftover.exists() and leftover.stat().st_size <= 4096:
                    leftover.unlink(missing_ok=True)


def file_sink_from_spec(spec: OutputSpec) -> FileSink:
    """The factory for ``{type: file, path: ..., cue: true|false|PATH, overwrite: false, flush_seconds: 1}``."""
    unknown = sorted(set(spec.options) - set(FILE_OPTIONS))
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], FILE_OPTIONS, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (options: {', '.join(FILE_OPTIONS)})"
        raise ValueError(f"unknown file option '{unknown[0]}'{hint}")
    path = spec.options.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ValueError("a file output needs 'path: recordings/NAME.flac' (.flac, .wav or .ogg)")
    cue = spec.options.get("cue", True)
    if cue is True:
        cue_path: Path | None = cue_path_for(Path(path))
    elif cue is False or cue is None:
        cue_path = None
    elif isinstance(cue, str):
        cue_path = Path(cue)
    else:
        raise ValueError(f"file option 'cue' must be true, false or a path, got {cue!r}")
    overwrite = spec.options.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ValueError(f"file option 'overwrite' must be true or false, got {overwrite!r}")
    flush_seconds = spec.options.get("flush_seconds", 1.0)
    if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, (int, float)):
        raise ValueError(f"file option 'flush_seconds' must be a number, got {flush_seconds!r}")
    return FileSink(path, cue_path=cue_path, overwrite=overwrite, flush_seconds=float(flush_seconds))
