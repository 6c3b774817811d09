"""Video frames of the live spectrogram, scrolling in time with the audio, with the prompt over it.

Frames are built incrementally and directly in YUV 4:2:0 (what H.264 takes), so a frame costs
one narrow column strip plus a copy, never a redraw or a colour conversion of the whole picture:

1. each frame covers exactly ``1 / fps`` seconds of audio and appends a strip of
   ``columns_per_frame`` (even) pixel columns, cut from the clip's spectrogram image at the
   audio's position in it (``NowPlaying.offset_seconds``) and coloured through a lookup table;
2. the strips go into a ring buffer twice the frame width, so the visible window is a slice;
3. the title band (darkened, prompt in white) is rendered with PIL once per title and blended
   into the band rows of each frame with precomputed integer weights.

The right edge of the picture is the audio being heard; older audio scrolls off to the left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from riffradio.core.types import NowPlaying

RIFFUSION_IMAGE_SECONDS = 5.12  # a 512-pixel-wide Riffusion spectrogram image holds 5.12 s
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",  # Debian fonts-dejavu-core: has "→"
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


def colormap_yuv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables gray level (0..255) → Y, U, V (BT.601, limited range) of an "inferno"-like map.

    Black → deep purple → red-orange → pale yellow, so quiet is dark and loud is bright.
    """
    anchors = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    rgb_anchors = np.array(
        [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
    )
    levels = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(levels, anchors, rgb_anchors[:, c]) for c in range(3)], axis=1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v))  # type: ignore[return-value]


def load_font(size_px: int):
    """DejaVu Sans Bold if installed (it has "→"), else PIL's bundled scalable font."""
    from PIL import ImageFont

    for path in _FONT_CANDIDATES:
        if os.path.exists(path):
            return ImageFont.truetype(path, size_px)
    return ImageFont.load_default(size=size_px)


@dataclass(frozen=True)
class VideoSettings:
    """Picture size and speed.

    Attributes:
        width: frame width in pixels (even).
        height: frame height in pixels (even).
        fps: frames per second (whole number).
        image_seconds: audio seconds one spectrogram image spans (5.12 for Riffusion).
    """

    width: int = 1280
    height: int = 720
    fps: int = 30
    image_seconds: float = RIFFUSION_IMAGE_SECONDS

    def __post_init__(self) -> None:
        # yuv420p as one array needs the chroma planes to fill whole rows: height a multiple of 4
        if self.width % 2 or self.height % 4 or self.width < 64 or self.height < 64:
            raise ValueError(
                f"video size must be at least 64×64, width even and height a multiple of 4, got {self.width}×{self.height}"
            )
        if not 1 <= self.fps <= 120:
            raise ValueError(f"video fps must be 1..120, got {self.fps}")


class ScrollingSpectrogram:
    """Renders one yuv420p frame per ``1 / fps`` seconds of audio.

    Args:
        settings: size, frame rate, seconds per spectrogram image.
        visible_seconds: audio seconds across the frame width (sets the scroll speed).
    """

    def __init__(self, settings: VideoSettings, visible_seconds: float = 10.24) -> None:
        self.settings = settings
        w, h = settings.width, settings.height
        # Whole, even pixel columns per frame, so each frame is exactly 1/fps of audio.
        self.columns_per_frame = max(2, 2 * round(w / visible_seconds / settings.fps / 2))
        self.lut_y, self.lut_u, self.lut_v = colormap_yuv()
        # Ring buffers twice the frame width (chroma at half resolution both ways).
        self._ring_y = np.full((h, 2 * w), self.lut_y[0], np.uint8)
        self._ring_u = np.full((h // 2, w), self.lut_u[0], np.uint8)
        self._ring_v = np.full((h // 2, w), self.lut_v[0], np.uint8)
        self._pos = w  # next column to write; the visible window is [pos - w, pos)
        self._image: object = None  # the clip image _gray was made from (held, so `is` stays valid)
        self._gray: np.ndarray | None = None  # the clip image, gray, rows mapped to the frame height
        self._title: str | None = None
        self.band_height = 2 * max(12, h // 18)
        self._band_keep = np.zeros((self.band_height, w), np.uint16)  # per-pixel weights ×256
        self._band_add = np.zeros((self.band_height, w), np.uint16)
        self._band_chroma_keep = 0

    # -- one frame ------------------------------------------------------------------------------
    def render(self, now_playing: NowPlaying, offset_seconds: float) -> np.ndarray:
        """The next frame, shape ``(height * 3 // 2, width)`` uint8 (yuv420p planes stacked).

        Args:
            now_playing: the clip heard at this frame's time (its ``image`` and ``title``).
            offset_seconds: where in that clip's audio this frame's time is.
        """
        self._append_strip(now_playing, offset_seconds)
        if now_playing.title != self._title:
            self._render_band(now_playing.title)
            self._title = now_playing.title
        return self._compose()

    def _append_strip(self, now_playing: NowPlaying, offset_seconds: float) -> None:
        s, step, w = self.settings, self.columns_per_frame, self.settings.width
        gray = self._clip_gray(now_playing)
        if gray is None:
            strip = np.zeros((s.height, step), np.uint8)  # no image (fallback audio): a dark strip
        else:
            px_per_second = gray.shape[1] / s.image_seconds
            times = offset_seconds + (np.arange(step) + 0.5) / (step * s.fps)
            columns = np.clip((times * px_per_second).astype(np.int64), 0, gray.shape[1] - 1)
            strip = gray[:, columns]
        p = self._pos
        if p + step > 2 * w:  # ring full: move the visible window to the front, once per w/step frames
            self._ring_y[:, :w] = self._ring_y[:, p - w : p]
            self._ring_u[:, : w // 2] = self._ring_u[:, (p - w) // 2 : p // 2]
            self._ring_v[:, : w // 2] = self._ring_v[:, (p - w) // 2 : p // 2]
            p = w
        self._ring_y[:, p : p + step] = self.lut_y[strip]
        chroma = strip[::2, ::2]
        self._ring_u[:, p // 2 : (p + step) // 2] = self.lut_u[chroma]
        self._ring_v[:, p // 2 : (p + step) // 2] = self.lut_v[chroma]
        self._pos = p + step

    def _compose(self) -> np.ndarray:
        w, h, p = self.settings.width, self.settings.height, self._pos
        frame = np.empty((h * 3 // 2, w), np.uint8)
        y = frame[:h]
        y[:] = self._ring_y[:, p - w : p]
        # yuv420p as one array: each row of the U and V parts holds two chroma rows
        u = frame[h : h + h // 4].reshape(h // 2, w // 2)
        v = frame[h + h // 4 :].reshape(h // 2, w // 2)
        u[:] = self._ring_u[:, (p - w) // 2 : p // 2]
        v[:] = self._ring_v[:, (p - w) // 2 : p // 2]
        # title band: darken, then blend the white text in (integer weights, ×256)
        b = self.band_height
        y[:b] = ((y[:b] * self._band_keep + self._band_add) >> 8).astype(np.uint8)
        for plane in (u, v):
            band = plane[: b // 2].astype(np.int16) - 128
            plane[: b // 2] = (128 + ((band * self._band_chroma_keep) >> 8)).astype(np.uint8)
        return frame

    def _clip_gray(self, now_playing: NowPlaying) -> np.ndarray | None:
        """The clip's image as gray levels, rows mapped to the frame height (cached per image)."""
        image = now_playing.image
        if image is None:
            return None
        if image is not self._image:
            # Riffusion images are inverted (white = silence, black = loud): loud becomes bright here
            gray = 255 - np.asarray(image.convert("L"), dtype=np.uint8)
            rows = (np.arange(self.settings.height) * gray.shape[0] // self.settings.height).astype(np.int64)
            self._gray, self._image = np.ascontiguousarray(gray[rows]), image
        return self._gray

    def _render_band(self, title: str, dim: float = 0.35) -> None:
        """Precompute the band's blend weights for ``title`` (PIL draws the text once)."""
        from PIL import Image, ImageDraw

        w, b = self.settings.width, self.band_height
        margin = b // 4
        size = int(b * 0.6)
        font = load_font(size)
        text = title
        draw = ImageDraw.Draw(Image.new("L", (1, 1)))
        while size > 10 and draw.textlength(text, font=font) > w - 2 * margin:
            size -= 2
            font = load_font(size)
        while len(text) > 1 and draw.textlength(text, font=font) > w - 2 * margin:
            text = text[:-2] + "…"
        mask = Image.new("L", (w, b), 0)
        ImageDraw.Draw(mask).text((margin, b // 2), text, fill=255, font=font, anchor="lm")
        alpha = np.asarray(mask, dtype=np.float64) / 255.0
        self._band_keep = np.round((1.0 - alpha) * dim * 256).astype(np.uint16)
        self._band_add = np.round(alpha * 235 * 256).astype(np.uint16)
        self._band_chroma_keep = int(round(dim * dim * 256))  # greyer than the luma: no tint behind the text
