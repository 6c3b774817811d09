"""RTMP output (YouTube, Twitch, nginx-rtmp): FLV with AAC audio and H.264 video of the spectrogram.

The video is driven by the audio clock: after each audio block, every frame whose time the audio
has reached is rendered (:class:`~riffradio.sinks.video.ScrollingSpectrogram`) and encoded, so
audio and video timestamps cannot drift apart. Keyframes come every ``keyframe_seconds`` (YouTube
wants at most 4 s; 2 s by default), no B-frames (``tune=zerolatency``).

PyAV opens ``rtmp://`` itself and gives no write timeout: a hung server would block ``mux()`` for
good. The sink owns that timeout with a watchdog: when an open or a write makes no progress for
``timeout_seconds``, it shuts down the TCP socket under FFmpeg (found by its peer address), so the
blocked call fails and the fan-out reconnects. The stream key (the URL's last path part) is never
logged: the sink's name leaves it out, and it is listed in ``secrets`` for the fan-out's log lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink, SinkError
from riffradio.sinks.options import OutputOptions
from riffradio.sinks.video import ScrollingSpectrogram, VideoSettings
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)


def _sockets() -> dict[int, str]:
    """This process's open sockets: fd → kernel socket id (``socket:[inode]``; unique, unlike fd numbers)."""
    base = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = {}
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found[int(name)] = target
    return found


def _peer(fd: int) -> tuple[str, int] | None:
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            peer = sock.getpeername()
    except OSError:
        return None
    return (peer[0], peer[1]) if isinstance(peer, tuple) else None


class WriteWatchdog:
    """Shuts down the TCP connection to ``(host, port)`` when a guarded call hangs.

    Sockets that existed before :meth:`arm` are never touched (compared by kernel socket id, as
    fd numbers are reused), so other connections to the same server are safe.
    """

    def __init__(self, host: str, port: int, timeout_seconds: float, name: str) -> None:
        self.host, self.port, self.timeout_seconds, self.name = host, port, timeout_seconds, name
        self.addresses: set[str] = set()  # resolved at arm(): building a sink must not touch the network
        self._before: set[str] = set()
        self._busy_since: float | None = None
        self._fired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Call before opening the connection: remembers which sockets are not ours."""
        try:
            self.addresses = {info[4][0] for info in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)}
        except OSError:
            self.addresses = set()  # cannot resolve: av.open fails right after, with its own error
        self._before = set(_sockets().values())
        self._fired = False
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name=f"watchdog {self.name}", daemon=True)
            self._thread.start()

    def disarm(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run a blocking FFmpeg call; if it hangs, it fails with a one-line SinkError."""
        with self._lock:
            self._busy_since = time.monotonic()
        try:
            yield
        except Exception as error:
            if self._fired:
                raise SinkError(f"{self.name}: {what} made no progress for {self.timeout_seconds:g} s (server hung?)") from error
            raise
        finally:
            with self._lock:
                self._busy_since = None

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                busy = self._busy_since
            if busy is not None and not self._fired and time.monotonic() - busy > self.timeout_seconds:
                self._fired = True
                self._shutdown_ours()

    def _shutdown_ours(self) -> None:
        for fd, socket_id in _sockets().items():
            if socket_id in self._before:
                continue
            peer = _peer(fd)
            if peer is not None and peer[1] == self.port and peer[0] in self.addresses:
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes FFmpeg's blocked write with an error


@dataclass(frozen=True)
class FlvSettings:
    """What goes into the FLV stream.

    Attributes:
        video: picture size and frame rate; None for audio only.
        video_bitrate_kbps: H.264 target (and VBV cap) bit rate.
        audio_bitrate_kbps: AAC bit rate.
        keyframe_seconds: seconds between keyframes (fixed GOP).
        preset: x264 speed preset.
        sample_rate_hz: AAC sample rate; blocks at another rate are resampled.
        visible_seconds: audio seconds across the picture (scroll speed).
    """

    video: VideoSettings | None = VideoSettings()
    video_bitrate_kbps: int = 2500
    audio_bitrate_kbps: int = 128
    keyframe_seconds: float = 2.0
    preset: str = "veryfast"
    sample_rate_hz: int = SAMPLE_RATE_HZ
    visible_seconds: float = 10.24

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.keyframe_seconds * self.video.fps)) if self.video else 1


class FlvEncoder:
    """AAC (+ H.264 of the scrolling spectrogram) muxed as FLV into a URL, a path or a file-like object.

    The video follows the audio clock: after each block, every frame whose time the audio has
    reached is rendered and encoded, so the two timelines cannot drift apart.

    Args:
        output: ``rtmp://…`` URL, file path, or object with ``write``.
        settings: streams and encoder settings.
        renderer: the frame renderer (kept by the caller across reconnects); needed with video.
    """

    def __init__(self, output: Any, settings: FlvSettings, renderer: ScrollingSpectrogram | None = None) -> None:
        self.settings = settings
        self.renderer = renderer
        self.container = av.open(output, "w", format="flv", container_options={"flvflags": "no_duration_filesize"})
        self.video: av.video.stream.VideoStream | None = None
        if settings.video is not None:
            if renderer is None:
                raise ValueError("FlvEncoder with video needs a renderer")
            v = self.container.add_stream("libx264", rate=settings.video.fps)
            v.width, v.height, v.pix_fmt = settings.video.width, settings.video.height, "yuv420p"
            v.bit_rate = settings.video_bitrate_kbps * 1000
            v.codec_context.gop_size = settings.gop_frames
            kbps, gop = settings.video_bitrate_kbps, settings.gop_frames
            v.codec_context.options = {
                "preset": settings.preset,
                "tune": "zerolatency",  # no B-frames, no lookahead: frames leave at once
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:vbv-maxrate={kbps}:vbv-bufsize={kbps}",
            }
            self.video = v
        self.audio = self.container.add_stream("aac", rate=settings.sample_rate_hz, layout="stereo")
        self.audio.bit_rate = settings.audio_bitrate_kbps * 1000
        self._resampler: av.AudioResampler | None = None
        self.samples_sent = 0  # audio timeline, in samples
        self.frames_sent = 0  # video frames
        self.bytes_sent = 0

    def start(self) -> None:
        """Write the header (for RTMP: connect and publish now)."""
        self.container.start_encoding()

    def write(self, block: AudioBlock) -> int:
        """Encode and mux one block (and the video frames it completes); returns encoded bytes."""
        before, rate = self.bytes_sent, self.settings.sample_rate_hz
        for frame in self._audio_frames(block):
            frame.pts, frame.time_base = self.samples_sent, Fraction(1, rate)
            self.samples_sent += frame.samples
            self._mux(self.audio.encode(frame))
        if self.video is not None:
            assert self.renderer is not None and self.settings.video is not None
            fps = self.settings.video.fps
            block_start_seconds = self.samples_sent / rate - block.duration_seconds
            while self.frames_sent < self.samples_sent * fps // rate:
                # each frame shows its own moment of the clip
                offset = block.now_playing.offset_seconds + max(0.0, self.frames_sent / fps - block_start_seconds)
                frame = av.VideoFrame.from_ndarray(self.renderer.render(block.now_playing, offset), format="yuv420p")
                frame.pts, frame.time_base = self.frames_sent, Fraction(1, fps)
                self.frames_sent += 1
                self._mux(self.video.encode(frame))
        return self.bytes_sent - before

    def flush(self) -> None:
        """Drain the encoders (end of stream)."""
        for stream in (self.video, self.audio):
            if stream is not None:
                self._mux(stream.encode(None))

    def close(self) -> None:
        self.container.close()

    def _audio_frames(self, block: AudioBlock) -> list[av.AudioFrame]:
        samples = block.samples if block.samples.shape[0] == 2 else np.repeat(block.samples[:1], 2, axis=0)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = block.sample_rate_hz
        if block.sample_rate_hz == self.settings.sample_rate_hz:
            return [frame]
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=self.settings.sample_rate_hz)
        return list(self._resampler.resample(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self.bytes_sent += packet.size
            self.container.mux(packet)


class RtmpSink(Sink):
    """Publishes the station to an RTMP server: AAC + H.264 (scrolling spectrogram, prompt on top).

    Args:
        url: ``rtmp://host[:port]/app/STREAM_KEY`` (also ``rtmps://``).
        width: video width in pixels (even).
        height: video height in pixels (even).
        fps: video frames per second.
        video_bitrate_kbps: H.264 target bit rate (capped with a VBV of the same rate).
        audio_bitrate_kbps: AAC bit rate.
        keyframe_seconds: seconds between keyframes (fixed GOP; services want ≤ 2–4 s).
        preset: x264 speed preset (``ultrafast`` … ``medium``); faster uses less CPU.
        sample_rate_hz: AAC sample rate; blocks at another rate are resampled.
        visible_seconds: audio seconds across the picture (scroll speed).
        timeout_seconds: limit for the connection and each write before the watchdog cuts it.
    """

    def __init__(
        self,
        url: str,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        video_bitrate_kbps: int = 2500,
        audio_bitrate_kbps: int = 128,
        keyframe_seconds: float = 2.0,
        preset: str = "veryfast",
        sample_rate_hz: int = SAMPLE_RATE_HZ,
        visible_seconds: float = 10.24,
        timeout_seconds: float = 10.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
            raise SinkError("rtmp url must look like rtmp://host/app/STREAM_KEY")
        path = parts.path.strip("/").split("/")
        if len(path) < 2 or not path[-1]:
            raise SinkError(f"rtmp url for {parts.hostname} needs an application and a stream key (…/live/KEY)")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "rtmps" else 1935)
        self.stream_key = path[-1]
        self.name = f"rtmp:{self.host}:{self.port}/{'/'.join(path[:-1])}"
        self.secrets = tuple(x for x in (self.stream_key, parts.password, parts.query) if x)
        self.settings = FlvSettings(
            video=VideoSettings(width, height, fps),
            video_bitrate_kbps=video_bitrate_kbps,
            audio_bitrate_kbps=audio_bitrate_kbps,
            keyframe_seconds=keyframe_seconds,
            preset=preset,
            sample_rate_hz=sample_rate_hz,
            visible_seconds=visible_seconds,
        )
        self.timeout_seconds = timeout_seconds
        self._renderer: ScrollingSpectrogram | None = None
        self._watchdog = WriteWatchdog(self.host, self.port, timeout_seconds, self.name)
        self._encoder: FlvEncoder | None = None

    @property
    def gop_frames(self) -> int:
        return self.settings.gop_frames

    # -- Sink ---------------------------------------------------------------------------------
    def open(self) -> None:
        assert self.settings.video is not None
        if self._renderer is None:  # kept across reconnects: the picture keeps its history
            self._renderer = ScrollingSpectrogram(self.settings.video, self.settings.visible_seconds)
        self._watchdog.arm()
        if not self._watchdog.addresses:
            raise SinkError(f"{self.name}: cannot resolve host {self.host}")
        with self._watchdog.guard("connect"):
            try:
                encoder = FlvEncoder(self.url, self.settings, self._renderer)
            except (OSError, av.error.FFmpegError) as error:
                raise SinkError(f"{self.name}: cannot connect ({_errno(error)})") from None
            try:
                encoder.start()  # RTMP connect + publish happen here
            except (OSError, av.error.FFmpegError) as error:
                with contextlib.suppress(Exception):
                    encoder.close()
                raise SinkError(f"{self.name}: cannot connect or publish ({_errno(error)})") from None
        self._encoder = encoder

    def write(self, block: AudioBlock) -> int:
        if self._encoder is None:
            raise SinkError(f"{self.name}: not connected")
        with self._watchdog.guard("write"):
            try:
                return self._encoder.write(block)
            except av.error.FFmpegError as error:
                raise SinkError(f"{self.name}: send failed ({_errno(error)})") from None

    def close(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            with contextlib.suppress(Exception), self._watchdog.guard("close"):
                encoder.flush()
            with contextlib.suppress(Exception), self._watchdog.guard("close"):
                encoder.close()
        self._watchdog.disarm()


def _errno(error: BaseException) -> str:
    """Type and errno only: PyAV's messages quote the URL, stream key included."""
    return f"{type(error).__name__}, errno {getattr(error, 'errno', '?')}"


RTMP_OPTIONS = (
    "url", "width", "height", "fps", "video_bitrate_kbps", "audio_bitrate_kbps", "keyframe_seconds",
    "preset", "visible_seconds", "timeout_seconds",
)  # fmt: skip
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


def rtmp_sink_from_spec(spec: OutputSpec) -> RtmpSink:
    """The factory for ``{type: rtmp, url: "rtmp://host/live/${STREAM_KEY}", width: 1280, height: 720, fps: 30}``."""
    o = OutputOptions("rtmp", spec.options, RTMP_OPTIONS)
    url = o.text("url", example='"rtmp://a.rtmp.youtube.com/live2/${STREAM_KEY}"')
    assert url is not None
    try:
        return RtmpSink(
            url,
            width=o.number("width", 1280, minimum=64, integer=True),
            height=o.number("height", 720, minimum=64, integer=True),
            fps=o.number("fps", 30, minimum=1, integer=True),
            video_bitrate_kbps=o.number("video_bitrate_kbps", 2500, minimum=100, integer=True),
            audio_bitrate_kbps=o.number("audio_bitrate_kbps", 128, minimum=32, integer=True),
            keyframe_seconds=o.number("keyframe_seconds", 2.0),
            preset=o.choice("preset", "veryfast", X264_PRESETS) or "veryfast",
            visible_seconds=o.number("visible_seconds", 10.24),
            timeout_seconds=o.number("timeout_seconds", 10.0),
        )
    except SinkError as error:
        raise ValueError(str(error)) from None
