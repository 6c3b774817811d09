"""Speakers output: the station on a sound card through sounddevice (PortAudio).

The device is chosen by name (any part of it, as sounddevice matches) or by index, as listed by
``riffradio devices``. ``write`` hands the block to PortAudio's blocking stream, so it returns
after at most about one block plus the stream latency; the fan-out's queue absorbs the rest.
With no usable device, ``open`` fails with one line that names the devices there are and the
outputs that need none (``type: file``, ``type: icecast``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink, SinkError
from riffradio.sinks.options import OutputOptions
from riffradio.station.types import AudioBlock

ALTERNATIVES = "record with `type: file` or stream with `type: icecast` instead"


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
        latency: PortAudio latency, ``"low"``, ``"high"`` or seconds; high survives a busy CPU.
    """

    def __init__(self, device: str | int | None = "default", block_frames: int = 0, latency: str | float = "high") -> None:
        self.device = parse_device(device)
        self.block_frames = block_frames
        self.latency = latency
        self.name = f"speakers:{'default' if self.device is None else self.device}"
        self._stream: Any = None
        self._sample_rate_hz = 0
        self._channels = 0

    def open(self) -> None:
        """Check the device now (one clear line if it is missing); the stream starts at the first block."""
        self._describe_device()

    def write(self, block: AudioBlock) -> int:
        channels = int(block.samples.shape[0])
        if self._stream is None or (block.sample_rate_hz, channels) != (self._sample_rate_hz, self._channels):
            self._start(block.sample_rate_hz, channels)
        samples = np.ascontiguousarray(block.samples.T, dtype=np.float32)
        try:
            self._stream.write(samples)  # underflows only cost a click; the flag is ignored
        except Exception as error:  # noqa: BLE001 - PortAudioError and friends
            raise SinkError(f"{self.name}: playback failed ({error})") from None
        return samples.nbytes

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
    """The factory for ``{type: speakers, device: default, block_frames: 0, latency: high}``."""
    o = OutputOptions("speakers", spec.options, SPEAKERS_OPTIONS)
    device = spec.options.get("device", "default")
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise ValueError(f"speakers option 'device' must be a name or an index, got {device!r}")
    latency = spec.options.get("latency", "high")
    if isinstance(latency, str):
        latency = o.choice("latency", "high", ("low", "high"))
    else:
        latency = o.number("latency", 0.1)
    block_frames = spec.options.get("block_frames", 0)
    if block_frames != 0:
        block_frames = o.number("block_frames", 0, minimum=16, integer=True)
    return SpeakersSink(device=device, block_frames=block_frames, latency=latency)
