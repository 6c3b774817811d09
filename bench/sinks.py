"""CPU cost of each output, in CPU seconds per second of audio (0.10 = 10 % of one core).

Runs the sinks' own encoding paths as fast as they go, without a network: the Icecast mounts'
shared encoders (MP3 128 kb/s, Opus 96 kb/s at 48 kHz with resampling), the RTMP sink's FLV
encoder audio only (AAC 128 kb/s) and with video (H.264 of the scrolling spectrogram, prompt
written over it), and everything together. Sending the bytes over a socket is not included (a
few kilobytes per block). CPU time is the whole process's (``time.process_time``, x264's threads
included), so run it on an otherwise idle machine.

    python3 bench/sinks.py [--seconds 30] [--music /usr/share/planetblupi/music/music001.ogg]
                           [--presets veryfast,superfast,ultrafast]

Targets (issue 5): audio sinks together ≤ 0.10; RTMP video 1280×720 at 30 fps ≤ 0.30 more.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy

from riffradio.sinks.encoders import EncoderSettings, SharedEncoder  # noqa: E402
from riffradio.sinks.rtmp import FlvEncoder, FlvSettings  # noqa: E402
from riffradio.sinks.video import ScrollingSpectrogram, VideoSettings  # noqa: E402
from riffradio.core.types import AudioBlock, NowPlaying  # noqa: E402

BLOCK_FRAMES = 4096
RATE_HZ = 44100
CLIP_SECONDS = 5.12
TITLES = ("lofi hip hop beat", "jazzy piano → techno", "church bells on sunday")


class _Discard:
    """A file-like sink for the muxer: counts bytes, keeps nothing."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def station_blocks(music_path: Path, seconds: float) -> list[AudioBlock]:
    """Real music cut into blocks, with a real Riffusion spectrogram image and a title per 5.12 s clip."""
    from riffradio.spectrogram.audio_io import read_audio
    from riffradio.spectrogram.image import audio_to_image

    rate = RATE_HZ
    audio = read_audio(music_path, rate, mono=False, start_seconds=20.0, duration_seconds=seconds)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    audio *= 0.9 / max(1e-6, float(np.abs(audio).max()))
    clip_frames = int(CLIP_SECONDS * rate)
    images = [audio_to_image(audio[:, i : i + clip_frames], rate) for i in range(0, audio.shape[1], clip_frames)]
    blocks = []
    for start_frame in range(0, audio.shape[1] - BLOCK_FRAMES + 1, BLOCK_FRAMES):
        clip = start_frame // clip_frames
        now = NowPlaying(clip, TITLES[clip % len(TITLES)], None, (start_frame % clip_frames) / rate, images[clip])
        blocks.append(AudioBlock(audio[:, start_frame : start_frame + BLOCK_FRAMES], rate, start_frame, now))
    return blocks


def cpu_per_audio_second(blocks: list[AudioBlock], writers: list[Callable[[AudioBlock], object]]) -> float:
    """CPU seconds the writers spend per second of audio."""
    audio_seconds = sum(b.duration_seconds for b in blocks)
    t0 = time.process_time()
    for block in blocks:
        for write in writers:
            write(block)
    return (time.process_time() - t0) / audio_seconds


def flv_writer(video: VideoSettings | None, preset: str) -> Callable[[AudioBlock], object]:
    renderer = ScrollingSpectrogram(video) if video else None
    encoder = FlvEncoder(_Discard(), FlvSettings(video=video, preset=preset), renderer)
    encoder.start()
    return encoder.write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio seconds to encode per measurement")
    parser.add_argument("--music", type=Path, default=Path("/usr/share/planetblupi/music/music001.ogg"))
    parser.add_argument("--presets", default="veryfast,superfast,ultrafast", help="x264 presets to compare")
    args = parser.parse_args()
    blocks = station_blocks(args.music, args.seconds)
    hd = VideoSettings(1280, 720, 30)
    print(f"{len(blocks)} blocks, {sum(b.duration_seconds for b in blocks):.1f} s of {args.music.name}")
    print(f"{'output':<46} {'CPU s / audio s':>16}")

    def row(label: str, value: float) -> None:
        print(f"{label:<46} {value:>16.4f}")

    mp3 = cpu_per_audio_second(blocks, [SharedEncoder(EncoderSettings("mp3", 128)).encode])
    row("icecast MP3 128 kb/s", mp3)
    opus = cpu_per_audio_second(blocks, [SharedEncoder(EncoderSettings("opus", 96)).encode])
    row("icecast Opus 96 kb/s (48 kHz resampled)", opus)
    aac = cpu_per_audio_second(blocks, [flv_writer(None, "veryfast")])
    row("rtmp audio: AAC 128 kb/s in FLV", aac)
    renderer = ScrollingSpectrogram(hd)
    render = cpu_per_audio_second(
        blocks[: len(blocks) // 3],
        [lambda b: [renderer.render(b.now_playing, b.now_playing.offset_seconds) for _ in range(round(b.duration_seconds * hd.fps))]],
    )
    row("  frame rendering alone, 1280×720 30 fps", render)
    video = {}
    for preset in args.presets.split(","):
        with_video = cpu_per_audio_second(blocks, [flv_writer(hd, preset)])
        video[preset] = with_video - aac
        row(f"rtmp video 1280×720 30 fps ({preset}), more", video[preset])
    audio_all = cpu_per_audio_second(
        blocks,
        [
            SharedEncoder(EncoderSettings("mp3", 128)).encode,
            SharedEncoder(EncoderSettings("opus", 96)).encode,
            flv_writer(None, "veryfast"),
        ],
    )
    row("all audio sinks together (MP3 + Opus + AAC)", audio_all)
    default = args.presets.split(",")[0]
    everything = cpu_per_audio_second(
        blocks,
        [
            SharedEncoder(EncoderSettings("mp3", 128)).encode,
            SharedEncoder(EncoderSettings("opus", 96)).encode,
            flv_writer(hd, default),
        ],
    )
    row(f"everything together (RTMP video {default})", everything)
    print(f"targets: audio together <= 0.10 -> {'met' if audio_all <= 0.10 else 'MISSED'}; "
          f"video ({default}) <= 0.30 more -> {'met' if video[default] <= 0.30 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
