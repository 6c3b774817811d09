"""HTTP stream output: the station as MP3 or Ogg/Opus at a path of its own HTTP server.

``{type: http, path: /stream.mp3, format: mp3}`` lets a browser, mpv, VLC or ffplay listen
without an Icecast server. The sink is an ordinary fan-out sink (its own thread, bounded
queue); it encodes each block through the station's shared encoders (one encode per format
and bit rate, shared with Icecast mounts) and hands the bytes to every connected listener.
``riffradio.control.http`` serves :attr:`HttpStreamSink.path` and adds listeners.

- A listener that reads too slowly falls behind by more than ``MAX_LISTENER_BUFFER_BYTES``
  and is disconnected; it never slows the station or the other listeners.
- MP3 listeners that send ``Icy-MetaData: 1`` get ICY ``StreamTitle`` blocks every
  ``ICY_METAINT_BYTES`` bytes (what Icecast and SHOUTcast send); Ogg listeners get the title
  in the OpusTags of each chained stream, as from the Icecast output.
- With no listener, nothing is encoded for this output.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from collections.abc import Callable

from riffradio.core.types import AudioBlock
from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink, SinkError
from riffradio.sinks.encoders import EncoderPool, EncoderSettings, EncodingOutput, OggChainFollower, SharedEncoder
from riffradio.sinks.icecast import DEFAULT_BITRATE_KBPS
from riffradio.sinks.options import OutputOptions

ICY_METAINT_BYTES = 16_000  # audio bytes between ICY metadata blocks (Icecast's default)
MAX_LISTENER_BUFFER_BYTES = 1 << 20  # about a minute of 128 kb/s MP3
MAX_LISTENERS = 256
_ICY_MAX_TITLE_BYTES = 255 * 16 - len("StreamTitle='';")
RESERVED_PATHS = ("/", "/api", "/static", "/metrics")


def icy_metadata_block(title: str) -> bytes:
    """One ICY metadata block: a length byte (×16) and ``StreamTitle='…';`` padded with zeros."""
    text = " ".join(title.split()).replace("';", "' ;").encode("utf-8")[:_ICY_MAX_TITLE_BYTES]
    body = b"StreamTitle='" + text.decode("utf-8", "ignore").encode("utf-8") + b"';"
    length = -(-len(body) // 16)
    return bytes([length]) + body.ljust(length * 16, b"\x00")


class IcyInterleaver:
    """Puts a metadata block after every ``metaint`` audio bytes (empty block: title unchanged).

    Args:
        metaint: audio bytes between two metadata blocks (the ``icy-metaint`` header).
    """

    def __init__(self, metaint: int = ICY_METAINT_BYTES) -> None:
        self.metaint = metaint
        self._until_meta = metaint
        self._sent_title: str | None = None

    def feed(self, audio: bytes, title: str) -> bytes:
        """``audio`` with metadata blocks inserted where they fall; ``title`` is what ``audio`` carries."""
        out = []
        while audio:
            take = min(self._until_meta, len(audio))
            out.append(audio[:take])
            audio = audio[take:]
            self._until_meta -= take
            if self._until_meta == 0:
                if title != self._sent_title:
                    out.append(icy_metadata_block(title))
                    self._sent_title = title
                else:
                    out.append(b"\x00")
                self._until_meta = self.metaint
        return b"".join(out)


class StreamListener:
    """One connected listener: the bytes waiting for it, filled by the sink's thread.

    Args:
        loop: the event loop of the HTTP server that sends the bytes.
        icy: interleave ICY metadata (MP3 listeners that asked for it).
        max_buffer_bytes: falling further behind than this disconnects the listener.
    """

    _ids = itertools.count(1)

    def __init__(
        self, loop: asyncio.AbstractEventLoop, icy: bool = False, max_buffer_bytes: int = MAX_LISTENER_BUFFER_BYTES
    ) -> None:
        self.id = next(self._ids)
        self.loop = loop
        self.icy = IcyInterleaver() if icy else None
        self.ogg = OggChainFollower()
        self.max_buffer_bytes = max_buffer_bytes
        self.start_seconds: float | None = None  # station clock at the first byte sent
        self.overflowed = False  # fell too far behind: disconnected
        self.ended = False  # the output closed
        self._chunks: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._ready = asyncio.Event()

    # -- the sink's thread -----------------------------------------------------------------
    def feed(self, data: bytes, block: AudioBlock) -> None:
        if not data:
            return
        if self.icy is not None:
            data = self.icy.feed(data, block.now_playing.title)
        with self._lock:
            if self.overflowed:
                return
            if self._bytes + len(data) > self.max_buffer_bytes:
                self.overflowed = True
                self._chunks.clear()
            else:
                if self.start_seconds is None:
                    self.start_seconds = block.start_seconds
                self._chunks.append(data)
                self._bytes += len(data)
        try:
            self.loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the server's loop is gone
            pass

    def end(self) -> None:
        """The output closed: the sender finishes the response (any thread)."""
        with self._lock:
            self.ended = True
        try:
            self.loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:
            pass

    # -- the server's loop ------------------------------------------------------------------
    async def next_bytes(self) -> bytes | None:
        """Everything waiting (waits for something); None once the listener fell too far behind or the output closed."""
        while True:
            with self._lock:
                if self.overflowed or self.ended:
                    return None
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    self._bytes = 0
                    return data
                self._ready.clear()
            await self._ready.wait()


class HttpStreamSink(EncodingOutput, Sink):
    """The station at ``path`` of the station's HTTP server, MP3 or Ogg/Opus.

    Args:
        path: URL path, e.g. ``/stream.mp3`` (not ``/``, ``/api…``, ``/static…``, ``/metrics``).
        format: ``"mp3"`` or ``"opus"``; if None, from the path's extension (``.mp3`` → MP3, else Opus).
        bitrate_kbps: encoder bit rate (default 128 for MP3, 96 for Opus).
        stream_name: ``icy-name`` and the Ogg stream's album tag.
        encoders: the station's encoder pool (the fan-out binds its pool before ``open``).
    """

    def __init__(
        self,
        path: str,
        format: str | None = None,
        bitrate_kbps: int | None = None,
        stream_name: str = "riffradio",
        encoders: EncoderPool | None = None,
    ) -> None:
        if not path.startswith("/") or any(c in path for c in "?#% \t\r\n"):
            raise SinkError(f"http output path must look like /stream.mp3, got {path!r}")
        if path == "/" or any(path == reserved or path.startswith(reserved + "/") for reserved in RESERVED_PATHS[1:]):
            raise SinkError(f"http output path {path} is taken by the studio (/, /api/…, /static/…, /metrics)")
        if format is None:
            format = "mp3" if path.endswith(".mp3") else "opus"
        format = {"ogg": "opus"}.get(format, format)
        if format not in DEFAULT_BITRATE_KBPS:
            raise SinkError(f"http {path}: format must be mp3 or opus, not {format!r}")
        self.path = path
        self.settings = EncoderSettings(format, int(bitrate_kbps or DEFAULT_BITRATE_KBPS[format]))
        self.stream_name = stream_name
        self.name = f"http:{path}"
        self._pool = encoders
        self._encoder: SharedEncoder | None = None
        self._listeners: dict[int, StreamListener] = {}
        self._lock = threading.Lock()
        self.listeners_total = 0  # connections since start

    @property
    def content_type(self) -> str:
        return self.settings.content_type

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    def add_listener(self, listener: StreamListener) -> Callable[[], None]:
        """Start feeding ``listener``; returns the function that stops it. Raises SinkError when full."""
        with self._lock:
            if len(self._listeners) >= MAX_LISTENERS:
                raise SinkError(f"{self.name}: {MAX_LISTENERS} listeners already")
            self._listeners[listener.id] = listener
            self.listeners_total += 1

        def remove() -> None:
            with self._lock:
                self._listeners.pop(listener.id, None)

        return remove

    # -- Sink -------------------------------------------------------------------------------
    def open(self) -> None:
        self._open_encoder()

    def write(self, block: AudioBlock) -> int:
        if self._encoder is None:
            raise SinkError(f"{self.name}: not open")
        with self._lock:
            listeners = list(self._listeners.values())
        if not listeners:
            return 0
        encoded = self._encoder.encode(block)
        sent = 0
        for listener in listeners:
            data = encoded.data if self.settings.format == "mp3" else listener.ogg.bytes_for(encoded.pages, self._encoder)
            listener.feed(data, block)
            sent += len(data)
        return sent

    def close(self) -> None:
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:  # wake their senders: the stream ends
            listener.end()


HTTP_OPTIONS = ("path", "format", "bitrate_kbps", "name")


def http_sink_from_spec(spec: OutputSpec) -> HttpStreamSink:
    """The factory for ``{type: http, path: /stream.mp3, format: mp3, bitrate_kbps: 128}``."""
    o = OutputOptions("http", spec.options, HTTP_OPTIONS)
    path = o.text("path", example="/stream.mp3")
    assert path is not None
    try:
        return HttpStreamSink(
            path,
            format=o.choice("format", None, ("mp3", "opus", "ogg")),
            bitrate_kbps=o.number("bitrate_kbps", None, minimum=8, integer=True),
            stream_name=o.text("name", "riffradio") or "riffradio",
        )
    except SinkError as error:
        raise ValueError(str(error)) from None
