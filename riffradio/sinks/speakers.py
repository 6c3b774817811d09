"""Speakers output: the station on a sound card through sounddevice (PortAudio).

The device is chosen by name (any part of it, as sounddevice matches) or by index, as listed by
``riffradio devices``. ``write`` hands the block to PortAudio's blocking stream, so it returns
after at most about one block plus the stream latency; the fan-out's queue absorbs the rest.
With no usable device, ``open`` fails with one line that names the devices there are and the
outputs that need none (``type: file``, ``type: icecast``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink, SinkError
from riffradio.sinks.options import OutputOptions
from riffradio.core.types import AudioBlock

ALTERNATIVES = "record with `type: file` or stream with `type: icecast` instead"
#: PortAudio latency when the playlist names none: a second of buffer rides out a busy machine
#: (at load 6-10 on 2 cores, "high" broke up 22-49 times in 30-42 s; 1.0 s twice)
DEFAULT_LATENCY_SECONDS = 1.0
#: underflows are logged at most this often, with the count since the last line
UNDERFLOW_LOG_SECONDS = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputDevice:
    """One sound output as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    channels: int
    default_sample_rate_hz: float
    is_default: bool


def output_devices() -> list[OutputDevice]:
    """Every device with output channels; raises SinkError when PortAudio itself is missing."""
    try:
        import sounddevice
    except OSError as error:  # the PortAudio library is not installed
        raise SinkError(f"speakers: {error} (install libportaudio2); {ALTERNATIVES}") from None
    default_output = sounddevice.default.device[1]
    host_apis = sounddevice.query_hostapis()
    devices = []
    for info in sounddevice.query_devices():
        if info["max_output_channels"] > 0:
            devices.append(
                OutputDevice(
                    index=int(info["index"]),
                    name=str(info["name"]),
                    host_api=str(host_apis[info["hostapi"]]["name"]),
                    channels=int(info["max_output_channels"]),
                    default_sample_rate_hz=float(info["default_samplerate"]),
                    is_default=int(info["index"]) == default_output,
                )
            )
    return devices


def parse_device(device: str | int | None) -> str | int | None:
    """``"default"``/None → PortAudio's default output; ``"3"`` or 3 → index 3; else a name to match."""
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "default")):
        return None
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        return int(device)
    return device


class SpeakersSink(Sink):
    """Plays the station on a sound device.

    Args:
        device: device name (or part of it), index, or ``"default"``.
        block_frames: frames per PortAudio buffer (0 lets PortAudio choose; it adapts best).
        latency: PortAudio latency, ``"low"``, ``"high"`` or seconds (default
            :data:`DEFAULT_LATENCY_SECONDS`, which survives a busy CPU).

    Attributes:
        underflows: blocks PortAudio reported an output underflow for (a gap you hear), counted
            in ``riffradio_sink_underflows_total`` and logged at most once a minute with the count.
    """

    def __init__(
        self, device: str | int | None = "default", block_frames: int = 0, latency: str | float = DEFAULT_LATENCY_SECONDS
    ) -> None:
        self.device = parse_device(device)
        self.block_frames = block_frames
        self.latency = latency
        self.name = f"speakers:{'default' if self.device is None else self.device}"
        self.underflows = 0
        self._stream: Any = None
        self._sample_rate_hz = 0
        self._channels = 0
        self._underflows_logged = 0
        self._underflow_logged_at = -UNDERFLOW_LOG_SECONDS

    def open(self) -> None:
        """Check the device now (one clear line if it is missing); the stream starts at the first block."""
        self._describe_device()

    def write(self, block: AudioBlock) -> int:
        channels = int(block.samples.shape[0])
        if self._stream is None or (block.sample_rate_hz, channels) != (self._sample_rate_hz, self._channels):
            self._start(block.sample_rate_hz, channels)
        samples = np.ascontiguousarray(block.samples.T, dtype=np.float32)
        try:
            underflowed = self._stream.write(samples)
        except Exception as error:  # noqa: BLE001 - PortAudioError and friends
            raise SinkError(f"{self.name}: playback failed ({error})") from None
        if underflowed:
            self._count_underflow()
        return samples.nbytes

    def _count_underflow(self) -> None:
        """One gap heard: counted, and logged once per :data:`UNDERFLOW_LOG_SECONDS` with the count."""
        self.underflows += 1
        now = time.monotonic()
        if now - self._underflow_logged_at >= UNDERFLOW_LOG_SECONDS:
            log.warning(
                "%s: %d output underflow(s) (gaps heard) since the last report, %d in all; a busy machine? "
                "raise 'latency' (now %s)",
                self.name, self.underflows - self._underflows_logged, self.underflows, self.latency,
            )  # fmt: skip
            self._underflow_logged_at, self._underflows_logged = now, self.underflows

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.stop()  # plays out what is buffered
            with contextlib.suppress(Exception):
                stream.close()

    def _start(self, sample_rate_hz: int, channels: int) -> None:
        import sounddevice

        self.close()
        try:
            stream = sounddevice.OutputStream(
                samplerate=sample_rate_hz,
                channels=channels,
                dtype="float32",
                device=self.device,
                blocksize=self.block_frames,
                latency=self.latency,
            )
            stream.start()
        except Exception as error:  # noqa: BLE001
            raise SinkError(f"{self.name}: cannot play {sample_rate_hz} Hz × {channels} ({error}); {ALTERNATIVES}") from None
        self._stream, self._sample_rate_hz, self._channels = stream, sample_rate_hz, channels

    def _describe_device(self) -> dict:
        import sounddevice

        devices = output_devices()
        if not devices:
            raise SinkError(f"{self.name}: no sound output device found; {ALTERNATIVES}")
        try:
            return dict(sounddevice.query_devices(self.device, kind="output"))
        except (ValueError, sounddevice.PortAudioError) as error:
            names = ", ".join(f"{d.index}: {d.name}" for d in devices[:8])
            raise SinkError(f"{self.name}: {error} (devices: {names}); {ALTERNATIVES}") from None


SPEAKERS_OPTIONS = ("device", "block_frames", "latency")


def speakers_sink_from_spec(spec: OutputSpec) -> SpeakersSink:
    """The factory for ``{type: speakers, device: default, block_frames: 0, latency: 1.0}``."""
    o = OutputOptions("speakers", spec.options, SPEAKERS_OPTIONS)
    device = spec.options.get("device", "default")
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise ValueError(f"speakers option 'device' must be a name or an index, got {device!r}")
    latency = spec.options.get("latency", DEFAULT_LATENCY_SECONDS)
    if isinstance(latency, str):
        latency = o.choice("latency", "high", ("low", "high"))
    else:
        latency = o.number("latency", DEFAULT_LATENCY_SECONDS)
    block_frames = spec.options.get("block_frames", 0)
    if block_frames != 0:
        block_frames = o.number("block_frames", 0, minimum=16, integer=True)
    return SpeakersSink(device=device, block_frames=block_frames, latency=latency)
