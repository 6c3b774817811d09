"""The ``file`` output: a FLAC, WAV or Ogg Vorbis recording plus a JSON-lines cue sheet.

The recording is flushed every ``flush_seconds`` of audio, so a crash or a power cut leaves a
file that decoders read up to the last flush: WAV headers are rewritten by libsndfile on each
flush, and the FLAC STREAMINFO sample count is patched to the frames already encoded. The cue
sheet gets one line per clip heard (``time_seconds``, prompt, seed, alpha, ...), flushed at once.

A new recording never overwrites an old one unless asked (``overwrite: true``, which
``riffradio render --force`` sets): an existing ``late.flac`` makes the station write ``late.1.flac``.
``rotate: hourly`` (or ``daily``, or seconds) starts a new file with its own cue sheet at each UTC
period, named after it (``late.2026-12-01T20.flac``, ``late.2026-12-01T20.cue.jsonl``).

Every file descriptor a recording needs is opened with it; an error that is not the disk's own
(out of descriptors elsewhere in the process) never splits the file or writes a block twice.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from riffradio.core.describe import describe_request
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink
from riffradio.core.types import AudioBlock, NowPlaying

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}
SUBTYPES: dict[str, str] = {"FLAC": "PCM_24", "WAV": "PCM_24", "OGG": "VORBIS"}
FILE_OPTIONS = ("path", "cue", "overwrite", "flush_seconds", "rotate")
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
    entry: dict[str, Any] = {
        "time_seconds": round(time_seconds, 4),
        "clip_index": now_playing.clip_index,
        "title": now_playing.title,
        "fallback": now_playing.fallback,
    }
    if now_playing.request is not None:
        entry.update(describe_request(now_playing.request), title=now_playing.title)
    return entry


def _patch_flac_sample_count(handle: BinaryIO, frames_written: int) -> None:
    """Write into STREAMINFO how many frames are already encoded, so a crash leaves a readable file.

    libFLAC only fills in the total when the file is closed; until then it is 0 ("unknown"),
    which libsndfile cannot read. Frames are encoded in whole blocks of the STREAMINFO block size.
    ``handle`` is an unbuffered read-write handle on the FLAC file, kept open with the recording.
    """
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


# errno values that mean the recording's own disk failed; anything else (EMFILE, ENFILE, EINTR)
# is the process's trouble, and must not cost the recording its file or a block.
_OWN_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
#: ``rotate:`` names → period seconds
ROTATE_PERIODS: dict[str, int] = {"hourly": 3600, "daily": 86400}


def is_own_disk_error(error: BaseException) -> bool:
    """True when ``error`` says the disk itself failed (full, read-only, I/O error)."""
    return isinstance(error, OSError) and error.errno in _OWN_DISK_ERRNOS


def period_label(start_seconds: float, period_seconds: int) -> str:
    """UTC name of the rotation period starting at ``start_seconds`` (Unix time): ``2026-12-01``
    (daily), ``2026-12-01T20`` (hourly), ``2026-12-01T20-05-00`` (shorter periods)."""
    stamp = time.gmtime(start_seconds)
    if period_seconds % 86400 == 0:
        return time.strftime("%Y-%m-%d", stamp)
    if period_seconds % 3600 == 0:
        return time.strftime("%Y-%m-%dT%H", stamp)
    return time.strftime("%Y-%m-%dT%H-%M-%S", stamp)


def _tagged_path(path: Path, tag: str) -> Path:
    """``late.flac`` → ``late.TAG.flac``; ``late.cue.jsonl`` → ``late.TAG.cue.jsonl``."""
    suffix = ".cue.jsonl" if path.name.endswith(".cue.jsonl") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.{tag}{suffix}")


class _Recording:
    """One open audio file, its cue sheet and a second handle for patching the FLAC header.

    Every file descriptor a recording needs is opened here, once: writing and flushing never
    open another, so running out of descriptors elsewhere in the process cannot break it.
    """

    def __init__(self, path: Path, cue_path: Path | None, audio_format: str) -> None:
        self.path, self.cue_path, self.format = path, cue_path, audio_format
        self.sound: Any = None
        self.cue: TextIO | None = None
        self.patch: Any = None  # unbuffered r+b handle on the FLAC, for its sample count
        self.frames = 0
        self.frames_at_flush = 0  # frames at the last flush: the next one is due flush_seconds later
        self.last_key: tuple[int, bool] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        full = _disk_full_error(path.parent, f"to start {path.name}")
        if full is not None:
            raise full
        try:
            # Create the file now so a read-only directory fails here, not at the first block.
            if audio_format == "FLAC":
                self.patch = open(path, "w+b", buffering=0)
            else:
                with open(path, "wb"):
                    pass
            if cue_path is not None:
                cue_path.parent.mkdir(parents=True, exist_ok=True)
                self.cue = open(cue_path, "w", encoding="utf-8")
        except BaseException:
            self.discard()  # a half-made recording would push the next try to NAME.1.flac
            raise

    def start(self, block: AudioBlock) -> None:
        import soundfile

        self.sound = soundfile.SoundFile(
            self.path,
            "w",
            samplerate=block.sample_rate_hz,
            channels=block.samples.shape[0],
            format=self.format,
            subtype=SUBTYPES[self.format],
        )

    def flush(self) -> None:
        if self.sound is not None:
            self.sound.flush()
            if self.patch is not None:
                _patch_flac_sample_count(self.patch, self.frames)
        if self.cue is not None:
            self.cue.flush()
            os.fsync(self.cue.fileno())
        self.frames_at_flush = self.frames

    def close(self) -> None:
        """Close every handle (never raises: a broken disk must still close); drop it if empty."""
        for handle in (self.sound, self.cue, self.patch):
            if handle is None:
                continue
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - a broken output (full disk) must still close
                pass
        self.sound = self.cue = self.patch = None
        if self.frames == 0:
            # Opened but nothing recorded (the disk filled at once, or stopped before the first
            # block): leave no empty file behind.
            for leftover in (self.path, self.cue_path):
                if leftover is not None and leftover.exists() and leftover.stat().st_size <= 4096:
                    leftover.unlink(missing_ok=True)

    def discard(self) -> None:
        self.frames = 0
        self.close()


class FileSink(Sink):
    """Records the station to ``path`` (format from the suffix) with a cue sheet beside it.

    Args:
        path: ``.flac``, ``.wav`` or ``.ogg`` (Vorbis).
        cue_path: where the JSON-lines cue sheet goes; ``None`` writes none.
        overwrite: replace an existing file instead of writing ``name.1.flac``.
        flush_seconds: audio seconds between flushes to disk.
        rotate_seconds: start a new file (and cue sheet) at every multiple of this many seconds
            of Unix time (3600: on the hour, 86400: at midnight UTC), named after the period:
            ``station.2026-12-01T20.flac``; ``None`` records one file.
        clock: wall-clock seconds (Unix time) for rotation.
    """

    def __init__(
        self,
        path: str | Path,
        cue_path: str | Path | None = None,
        overwrite: bool = False,
        flush_seconds: float = 1.0,
        rotate_seconds: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() not in FORMATS:
            raise ValueError(f"file output {str(self.path)!r}: use a .flac, .wav or .ogg name")
        if not flush_seconds > 0:
            raise ValueError(f"file output: flush_seconds must be positive, got {flush_seconds}")
        if rotate_seconds is not None and not rotate_seconds >= 1:
            raise ValueError(f"file output: rotate must be hourly, daily or seconds >= 1, got {rotate_seconds}")
        self.format = FORMATS[self.path.suffix.lower()]
        self.cue_path = Path(cue_path).expanduser() if cue_path is not None else None
        self.overwrite = overwrite
        self.flush_seconds = float(flush_seconds)
        self.rotate_seconds = int(rotate_seconds) if rotate_seconds is not None else None
        self.clock = clock
        self.name = f"file:{self.path}"
        self.paths_written: list[Path] = []  # every recording this sink started, in order
        self._opened_once = False
        self._recording: _Recording | None = None
        self._period: int | None = None  # rotation period (Unix seconds // rotate_seconds) being written
        self._deferred: dict[str, float] = {}  # what failed for the process's reasons → when logged

    @property
    def current_path(self) -> Path | None:
        """The file being written now."""
        return self._recording.path if self._recording is not None else None

    @property
    def current_cue_path(self) -> Path | None:
        return self._recording.cue_path if self._recording is not None else None

    def _paths(self, period: int | None) -> tuple[Path, Path | None]:
        """The first free ``name.N.ext`` (and its cue sheet), unless overwriting on the first open."""
        base, cue_base = self.path, self.cue_path
        if period is not None and self.rotate_seconds is not None:
            label = period_label(period * self.rotate_seconds, self.rotate_seconds)
            base = _tagged_path(base, label)
            cue_base = _tagged_path(cue_base, label) if cue_base is not None else None
        if self.overwrite and not self._opened_once:
            return base, cue_base
        candidate, cue = base, cue_base
        number = 0
        while candidate.exists() or (cue is not None and cue.exists()):
            number += 1
            candidate = _tagged_path(base, str(number))
            cue = _tagged_path(cue_base, str(number)) if cue_base is not None else None
        return candidate, cue

    def _current_period(self) -> int | None:
        return int(self.clock() // self.rotate_seconds) if self.rotate_seconds is not None else None

    def _new_recording(self, period: int | None) -> _Recording:
        path, cue = self._paths(period)
        recording = _Recording(path, cue, self.format)
        self._opened_once = True
        self._period = period
        self.paths_written.append(path)
        return recording

    def open(self) -> None:
        self._recording = self._new_recording(self._current_period())

    def _rotate_if_due(self) -> None:
        """Start the next period's file; while it cannot be opened, the current one goes on."""
        period = self._current_period()
        if period is None or period == self._period or self._recording is None:
            return
        try:
            following = self._new_recording(period)
        except OSError as error:
            self._defer("rotate", error)
            return
        previous, self._recording = self._recording, following
        try:
            previous.flush()
        except Exception:  # noqa: BLE001 - the old file is finished either way
            pass
        previous.close()
        log.info("%s: rotated to %s", self.name, following.path.name)

    def _defer(self, what: str, error: BaseException) -> None:
        """Not the disk's fault (out of file descriptors, ...): keep recording, retry later, log once a minute."""
        now = time.monotonic()
        if now - self._deferred.get(what, -math.inf) >= 60.0:
            self._deferred[what] = now
            log.warning("%s: %s failed (%s); the recording goes on, retrying at the next block", self.name, what, error)

    def write(self, block: AudioBlock) -> int:
        if self._recording is None:
            raise RuntimeError(f"{self.name}: write before open")
        self._rotate_if_due()
        recording = self._recording
        if recording.sound is None:
            recording.start(block)
        now = block.now_playing
        key = (now.clip_index, now.fallback)
        if recording.cue is not None and key != recording.last_key:
            recording.cue.write(json.dumps(cue_entry(now, recording.frames / block.sample_rate_hz)) + "\n")
            recording.cue.flush()
            recording.last_key = key
        try:
            recording.sound.write(block.samples.T)
        except Exception as error:
            # libsndfile says only "System error." when the disk is full: say what happened.
            full = _disk_full_error(
                recording.path.parent,
                f"writing {recording.path.name} ({recording.frames / block.sample_rate_hz:.1f} s kept, "
                "readable up to the last flush)",
            )
            if full is not None:
                raise full from error
            raise
        recording.frames += block.frames
        if recording.frames - recording.frames_at_flush >= self.flush_seconds * block.sample_rate_hz:
            # The block is in the file now: a flush failing for the process's reasons is retried
            # at the next block; raising would make the fan-out open a new file and write it twice.
            try:
                recording.flush()
            except Exception as error:
                if is_own_disk_error(error) or _disk_full_error(recording.path.parent, "") is not None:
                    raise
                self._defer("flush", error)
        return int(block.samples.shape[0] * block.frames * 3)  # approximate: 24-bit before compression

    def flush(self) -> None:
        """Push what is written to disk, readable after a crash."""
        if self._recording is not None:
            self._recording.flush()

    @property
    def seconds_written(self) -> float:
        recording = self._recording
        if recording is None or recording.sound is None:
            return 0.0
        return recording.frames / recording.sound.samplerate

    def close(self) -> None:
        recording, self._recording = self._recording, None
        if recording is not None:
            recording.close()


def file_sink_from_spec(spec: OutputSpec) -> FileSink:
    """The factory for ``{type: file, path: ..., cue: true|false|PATH, overwrite: false, flush_seconds: 1,
    rotate: hourly|daily|SECONDS}``."""
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
    rotate = spec.options.get("rotate")
    if rotate is None or rotate is False:
        rotate_seconds = None
    elif isinstance(rotate, str) and rotate in ROTATE_PERIODS:
        rotate_seconds = ROTATE_PERIODS[rotate]
    elif isinstance(rotate, int) and not isinstance(rotate, bool) and rotate >= 1:
        rotate_seconds = rotate
    else:
        raise ValueError(f"file option 'rotate' must be hourly, daily or whole seconds >= 1, got {rotate!r}")
    return FileSink(
        path, cue_path=cue_path, overwrite=overwrite, flush_seconds=float(flush_seconds), rotate_seconds=rotate_seconds
    )
