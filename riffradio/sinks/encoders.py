"""Audio encoders shared by every Icecast mount of the same format (one encode per format).

Each mount's sink runs on its own fan-out thread and asks :meth:`SharedEncoder.encode` for the
block it is about to send. The first mount to ask encodes it (under a lock); the others get the
cached result. Blocks are encoded in the order they are first asked for, which is the push
order: a mount that lags behind (slow, reconnecting) only ever asks for blocks the leader has
already encoded, and the cache holds more blocks than any fan-out queue.

- MP3 (libmp3lame): a result is the MP3 frames the block completed. MP3 frames resynchronise,
  so a mount may join at any block.
- Ogg/Opus (libopus at 48 kHz, resampled with PyAV's AudioResampler): a result is a list of
  whole Ogg pages. A new title starts a new chained Ogg stream (a new logical stream whose
  OpusTags carry ``TITLE``), which is how Ogg listeners learn the new title. Each page names
  its chain (the Ogg serial), and the encoder keeps each chain's header pages, so a mount that
  (re)connects mid-chain first sends that chain's headers, the way Icecast serves late listeners.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
import threading
from collections.abc import Iterator

import av
import numpy as np

from riffradio.core.types import AudioBlock

OPUS_SAMPLE_RATE_HZ = 48_000  # libopus accepts 48/24/16/12/8 kHz only
CACHE_BLOCKS = 512  # more than any fan-out queue (64 by default)
_OGG_PAGE_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, segments
_OGG_BOS = 0x02


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """What makes two mounts' encodes identical (and so shareable).

    Attributes:
        format: ``"mp3"`` or ``"opus"``.
        bitrate_kbps: target bit rate in kilobits per second.
        channels: 1 or 2.
    """

    format: str
    bitrate_kbps: int
    channels: int = 2

    @property
    def content_type(self) -> str:
        return "audio/mpeg" if self.format == "mp3" else "audio/ogg"


@dataclasses.dataclass(frozen=True)
class OggPage:
    """One whole Ogg page: its bytes, its chain (the logical stream's serial) and whether it is a header."""

    data: bytes
    serial: int
    is_header: bool


@dataclasses.dataclass(frozen=True)
class EncodedBlock:
    """The encoder's output for one block.

    Attributes:
        data: MP3 frames (MP3 only; ``b""`` for Ogg).
        pages: whole Ogg pages (Ogg only).
    """

    data: bytes = b""
    pages: tuple[OggPage, ...] = ()


def split_ogg_pages(buffer: bytearray) -> Iterator[tuple[bytes, int, bool]]:
    """Take every complete Ogg page off the front of ``buffer``; yields (page, serial, is_bos).

    Incomplete trailing bytes stay in ``buffer`` for the next call.
    """
    while len(buffer) >= _OGG_PAGE_HEADER.size:
        if buffer[:4] != b"OggS":
            start = buffer.find(b"OggS")
            del buffer[: start if start >= 0 else len(buffer) - 3]  # resynchronise
            continue
        _, _, flags, _, serial, _, _, segments = _OGG_PAGE_HEADER.unpack_from(buffer)
        header_size = _OGG_PAGE_HEADER.size + segments
        if len(buffer) < header_size:
            return
        page_size = header_size + sum(buffer[_OGG_PAGE_HEADER.size : header_size])
        if len(buffer) < page_size:
            return
        page = bytes(buffer[:page_size])
        del buffer[:page_size]
        yield page, serial, bool(flags & _OGG_BOS)


class _ByteCollector:
    """The file-like object PyAV muxes into; the encoder takes the bytes out after each block."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass


class SharedEncoder:
    """Encodes each block once for every mount with the same :class:`EncoderSettings`.

    Args:
        settings: format, bit rate and channel count.
        stream_name: written as the Ogg ``ARTIST``-free stream name tag (``ALBUM``) of each chain.
    """

    def __init__(self, settings: EncoderSettings, stream_name: str = "riffradio") -> None:
        if settings.format not in ("mp3", "opus"):
            raise ValueError(f"unsupported Icecast format {settings.format!r} (use mp3 or opus)")
        self.settings = settings
        self.stream_name = stream_name
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[int, EncodedBlock] = collections.OrderedDict()
        self._last_start_frame = -1
        self._sample_rate_hz = 0
        self._codec: av.CodecContext | None = None  # MP3
        self._container: av.container.OutputContainer | None = None  # Ogg chain in progress
        self._stream: av.audio.stream.AudioStream | None = None
        self._collector = _ByteCollector()
        self._resampler: av.AudioResampler | None = None
        self._chain_title: str | None = None
        self._pts = 0
        self._headers: collections.OrderedDict[int, tuple[OggPage, ...]] = collections.OrderedDict()

    # -- public -------------------------------------------------------------------------------
    def encode(self, block: AudioBlock) -> EncodedBlock:
        """The encoded form of ``block`` (encoding it now if no mount has asked for it yet)."""
        with self._lock:
            cached = self._cache.get(block.start_frame)
            if cached is not None:
                return cached
            if block.start_frame <= self._last_start_frame:
                # Older than anything cached: cannot re-encode without breaking the stream.
                return EncodedBlock()
            result = self._encode_mp3(block) if self.settings.format == "mp3" else self._encode_ogg(block)
            self._last_start_frame = block.start_frame
            self._cache[block.start_frame] = result
            while len(self._cache) > CACHE_BLOCKS:
                self._cache.popitem(last=False)
            return result

    def header_pages(self, serial: int) -> tuple[OggPage, ...]:
        """The header pages (OpusHead, OpusTags) of Ogg chain ``serial``, for a mount joining mid-chain."""
        with self._lock:
            return self._headers.get(serial, ())

    def close(self) -> None:
        with self._lock:
            self._finish_chain()
            self._codec = None

    # -- MP3 ------------------------------------------------------------------------------------
    def _encode_mp3(self, block: AudioBlock) -> EncodedBlock:
        if self._codec is None or self._sample_rate_hz != block.sample_rate_hz:
            codec = av.CodecContext.create("libmp3lame", "w")
            codec.sample_rate = block.sample_rate_hz
            codec.layout = "stereo" if self.settings.channels == 2 else "mono"
            codec.format = "fltp"
            codec.bit_rate = self.settings.bitrate_kbps * 1000
            codec.open()
            self._codec, self._sample_rate_hz, self._pts = codec, block.sample_rate_hz, 0
        frame = self._frame(block)
        return EncodedBlock(data=b"".join(bytes(p) for p in self._codec.encode(frame)))

    # -- Ogg/Opus -------------------------------------------------------------------------------
    def _encode_ogg(self, block: AudioBlock) -> EncodedBlock:
        title = block.now_playing.title
        if self._container is None or title != self._chain_title:
            self._finish_chain()
            self._start_chain(title)
        assert self._stream is not None and self._container is not None and self._resampler is not None
        for frame in self._resampler.resample(self._frame(block)):
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return EncodedBlock(pages=self._take_pages())

    def _start_chain(self, title: str) -> None:
        layout = "stereo" if self.settings.channels == 2 else "mono"
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout=layout, rate=OPUS_SAMPLE_RATE_HZ)
        # flush_packets: hand each page to the collector as soon as the muxer finishes it
        container = av.open(self._collector, "w", format="ogg", options={"flush_packets": "1", "page_duration": "200000"})
        container.metadata.update({"title": title, "album": self.stream_name})
        stream = container.add_stream("libopus", rate=OPUS_SAMPLE_RATE_HZ, layout=layout)
        stream.bit_rate = self.settings.bitrate_kbps * 1000
        container.start_encoding()
        self._container, self._stream, self._chain_title, self._pts = container, stream, title, 0

    def _finish_chain(self) -> None:
        if self._container is None:
            return
        assert self._stream is not None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()  # EOS page; the collector keeps it for the next block's pages
        self._container = self._stream = None

    def _take_pages(self) -> tuple[OggPage, ...]:
        pages = []
        for data, serial, is_bos in split_ogg_pages(self._collector.buffer):
            body_offset = _OGG_PAGE_HEADER.size + data[26]
            is_header = is_bos or data[body_offset : body_offset + 8] == b"OpusTags"
            page = OggPage(data, serial, is_header)
            if is_header:
                self._headers[serial] = (*self._headers.get(serial, ())[: 0 if is_bos else None], page)
                while len(self._headers) > 8:
                    self._headers.popitem(last=False)
            pages.append(page)
        return tuple(pages)

    # -- both -----------------------------------------------------------------------------------
    def _frame(self, block: AudioBlock) -> av.AudioFrame:
        samples = np.ascontiguousarray(self._channels(block.samples), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(
            samples, format="fltp", layout="stereo" if samples.shape[0] == 2 else "mono"
        )
        frame.sample_rate = block.sample_rate_hz
        frame.pts = None if self.settings.format == "opus" else self._pts
        if self.settings.format == "mp3":
            self._pts += frame.samples
        return frame

    def _channels(self, samples: np.ndarray) -> np.ndarray:
        """Mix or duplicate channels to the encoder's channel count."""
        if samples.shape[0] == self.settings.channels:
            return samples
        if self.settings.channels == 1:
            return samples.mean(axis=0, keepdims=True)
        return np.repeat(samples[:1], 2, axis=0)


class EncoderPool:
    """The encoders of one station, one per :class:`EncoderSettings` (no process-wide state)."""

    def __init__(self) -> None:
        self._encoders: dict[EncoderSettings, SharedEncoder] = {}
        self._lock = threading.Lock()

    def get(self, settings: EncoderSettings) -> SharedEncoder:
        with self._lock:
            encoder = self._encoders.get(settings)
            if encoder is None:
                encoder = self._encoders[settings] = SharedEncoder(settings)
            return encoder

    def __len__(self) -> int:
        return len(self._encoders)

    def close(self) -> None:
        with self._lock:
            for encoder in self._encoders.values():
                encoder.close()
            self._encoders.clear()


class OggChainFollower:
    """What one connection (an Icecast mount, an HTTP listener) sends of a shared Ogg stream.

    A connection that joins mid-chain needs that chain's header pages (OpusHead, OpusTags)
    before its first audio page, the way Icecast serves late listeners; this remembers which
    chains the connection has started.
    """

    def __init__(self) -> None:
        self._sent_serials: set[int] = set()

    def reset(self) -> None:
        """A new connection: every chain starts again with its headers."""
        self._sent_serials.clear()

    def bytes_for(self, pages: tuple[OggPage, ...], encoder: SharedEncoder) -> bytes:
        """The bytes to send for ``pages``; a chain this connection has not started gets its headers first."""
        out = []
        for page in pages:
            if page.serial not in self._sent_serials:
                self._sent_serials.add(page.serial)
                if not page.data[5] & _OGG_BOS:  # joined mid-chain: the chain's headers up to this page
                    for header in encoder.header_pages(page.serial):
                        if header.data == page.data:
                            break
                        out.append(header.data)
            out.append(page.data)
        if len(self._sent_serials) > 64 and pages:  # forget old chains; keep the current one
            self._sent_serials = {pages[-1].serial}
        return b"".join(out)


class EncodingOutput:
    """Mixin of outputs that encode through the station's shared encoders (Icecast mounts, http streams).

    The fan-out calls :meth:`bind_encoders` before ``open``; an output opened on its own gets a
    pool of its own. Subclasses set ``settings`` and ``_pool`` (the pool given, or None).
    """

    settings: EncoderSettings
    shares_encoders = True
    _pool: EncoderPool | None = None
    _encoder: SharedEncoder | None = None

    def bind_encoders(self, pool: EncoderPool) -> None:
        """Share encodes with the station's other outputs of the same settings."""
        if self._encoder is None:
            self._pool = pool

    def _open_encoder(self) -> SharedEncoder:
        if self._encoder is None:
            if self._pool is None:
                self._pool = EncoderPool()
            self._encoder = self._pool.get(self.settings)
        return self._encoder

