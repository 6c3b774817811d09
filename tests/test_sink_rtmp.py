"""RTMP sink against a real nginx-rtmp: AAC + H.264 that readers can open, in step, healing after faults."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import av
import numpy as np
import pytest
from PIL import Image

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.fanout import Fanout
from riffradio.sinks.rtmp import RtmpSink, rtmp_sink_from_spec
from riffradio.sinks.video import ScrollingSpectrogram, VideoSettings
from servers import (  # fixtures are imported by name; pytest finds them in this module
    Music,
    RtmpServer,
    ffprobe_streams,
    music,
    music_blocks,
    play_realtime,
    rtmp_server,
    wait_until,
    with_outage,
)

pytestmark = pytest.mark.slow
KEY = "sEcReT-stream-key"


class PacketReader(threading.Thread):
    """A PyAV reader of the published stream: per stream, (wall time, pts seconds, keyframe) of each packet."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.packets: dict[str, list[tuple[float, float, bool]]] = {"audio": [], "video": []}
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with av.open(self.url, options={"fpsprobesize": "0"}, timeout=(15.0, 10.0)) as container:
                for packet in container.demux():
                    if self.stop.is_set():
                        return
                    if packet.pts is None or packet.stream.type not in self.packets:
                        continue
                    seconds = float(packet.pts * packet.time_base)
                    self.packets[packet.stream.type].append((time.monotonic(), seconds, packet.is_keyframe))
        except av.error.EOFError:
            pass
        except BaseException as error:  # noqa: BLE001 - reported by the test
            if not self.stop.is_set():
                self.error = error


def test_rtmp_streams_aac_and_h264_in_step_for_a_minute(rtmp_server: RtmpServer, music: Music) -> None:
    blocks = music_blocks(music, loops=2)  # 60 s of music, titles changing every clip
    sink = RtmpSink(rtmp_server.url(KEY), width=1280, height=720, fps=30)
    fanout = Fanout([sink])
    fanout.start()
    wait_until(lambda: rtmp_server.publishing(KEY), 15, "the RTMP publisher")
    reader = PacketReader(rtmp_server.url(KEY))
    probed: list[list[dict]] = []
    prober = threading.Thread(
        target=lambda: probed.append(ffprobe_streams(rtmp_server.url(KEY), "-fpsprobesize", "0", "-rw_timeout", "10000000")),
        daemon=True,
    )
    prober.start()
    play_realtime(fanout.push, blocks)
    time.sleep(1.0)
    reader.stop.set()
    prober.join(30)
    status = fanout.statuses()[0]
    fanout.close()
    reader.join(15)
    assert reader.error is None, reader.error
    assert status.state == "connected" and status.blocks_dropped == 0, status
    codecs = {s["codec_type"]: s for s in probed[0]}
    assert codecs["audio"]["codec_name"] == "aac" and codecs["video"]["codec_name"] == "h264"
    assert (codecs["video"]["width"], codecs["video"]["height"], codecs["video"]["r_frame_rate"]) == (1280, 720, "30/1")
    audio, video = reader.packets["audio"], reader.packets["video"]
    assert audio and video
    # the reader saw (almost) the whole minute of both streams
    assert audio[-1][1] - audio[0][1] > 50 and video[-1][1] - video[0][1] > 50, (audio[-1], video[-1])
    # in step: at every moment the reader had both, their timestamps differ by well under a second
    audio_wall = np.array([a[0] for a in audio])
    audio_pts = np.array([a[1] for a in audio])
    gaps = []
    for wall, pts, _ in video[:: 15]:
        i = np.searchsorted(audio_wall, wall)
        if 0 < i < len(audio_pts):
            gaps.append(abs(pts - audio_pts[i - 1]))
    assert len(gaps) > 100 and max(gaps) < 0.5, max(gaps)
    # keyframes at most every 2 s (YouTube wants ≤ 4 s)
    keyframes = [pts for _, pts, key in video if key]
    assert len(keyframes) >= 25 and max(np.diff(keyframes)) <= 2.01, np.diff(keyframes)
    # 30 frames per second of audio
    assert abs(len(video) / (video[-1][1] - video[0][1] + 1 / 30) - 30) < 0.5


def test_rtmp_server_killed_comes_back_and_key_never_logged(
    rtmp_server: RtmpServer, music: Music, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blocks = music_blocks(music)[: int(12 * 44100 / 4096)]
    fanout = Fanout([RtmpSink(rtmp_server.url(KEY), width=320, height=180, fps=10)])
    fanout.start()
    wait_until(lambda: rtmp_server.publishing(KEY), 15, "the RTMP publisher")
    push = with_outage(fanout.push, rtmp_server, down_at_seconds=3.0, down_for_seconds=2.0)
    play_realtime(push, blocks)
    wait_until(lambda: rtmp_server.publishing(KEY), 10, "the publisher to come back")
    status = fanout.statuses()[0]
    fanout.close()
    assert status.reconnects >= 1 and status.state == "connected", status
    assert "rtmp:127.0.0.1" in status.last_error
    assert KEY not in caplog.text and KEY not in status.last_error and KEY not in status.name
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 2, warnings


def test_hung_rtmp_server_is_cut_off_by_the_sinks_own_timeout(rtmp_server: RtmpServer, music: Music) -> None:
    # Noise pictures at 5 Mb/s, pushed 3× faster than real time, fill the socket buffers of a
    # stopped server within seconds.
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)).convert("RGB")
    blocks = [
        dataclasses.replace(b, now_playing=dataclasses.replace(b.now_playing, image=noise))
        for b in music_blocks(music)[: int(30 * 44100 / 4096)]
    ]
    sink = RtmpSink(rtmp_server.url(KEY), width=640, height=360, fps=30, video_bitrate_kbps=5000,
                    preset="ultrafast", timeout_seconds=2.0)  # fmt: skip
    fanout = Fanout([sink], first_retry_seconds=0.5, max_retry_seconds=1.0)
    fanout.start()
    wait_until(lambda: rtmp_server.publishing(KEY), 15, "the RTMP publisher")
    seen: list[str] = []
    pusher = threading.Thread(target=play_realtime, args=(fanout.push, blocks, 3.0), daemon=True)
    pusher.start()
    time.sleep(1.0)
    rtmp_server.pause()
    try:
        wait_until(lambda: "no progress" in fanout.statuses()[0].last_error, 20, "the watchdog to cut the hung write")
        seen.append(fanout.statuses()[0].state)
    finally:
        rtmp_server.resume()
    wait_until(lambda: fanout.statuses()[0].state == "connected" and rtmp_server.publishing(KEY), 15, "reconnect")
    pusher.join(40)
    fanout.close()
    assert seen == ["reconnecting"]


def test_video_frames_scroll_in_time_and_show_the_prompt(music: Music) -> None:
    blocks = music_blocks(music, title_every_seconds=2.0)
    renderer = ScrollingSpectrogram(VideoSettings(640, 360, 25), visible_seconds=4.0)
    step = renderer.columns_per_frame
    frames = [renderer.render(blocks[0].now_playing, n / 25) for n in range(50)]
    y0, y1 = frames[-2][:360], frames[-1][:360]
    band = renderer.band_height
    # one new strip per frame: the picture below the band moved left by exactly `step` columns
    assert np.array_equal(y1[band:, : 640 - step], y0[band:, step:])
    # the prompt is written over the top band (bright text pixels on a darkened band)
    assert (y1[:band] > 200).sum() > 200 and (y1[band:] > 200).sum() < (y1[band:] >= 0).sum()
    title_image = renderer.render(blocks[-1].now_playing, 0.0)[:band]
    assert not np.array_equal(title_image[:, :320], y1[:band, :320])  # a new title redraws the band


def test_factory_hides_the_key_and_checks_options() -> None:
    sink = rtmp_sink_from_spec(OutputSpec("rtmp", {"url": f"rtmp://127.0.0.1:1935/live/{KEY}", "fps": 30}))
    assert KEY not in sink.name and KEY in sink.secrets
    assert sink.gop_frames == 60
    with pytest.raises(ValueError, match="stream key"):
        rtmp_sink_from_spec(OutputSpec("rtmp", {"url": "rtmp://127.0.0.1/live"}))
    with pytest.raises(ValueError, match="even"):
        rtmp_sink_from_spec(OutputSpec("rtmp", {"url": "rtmp://h/live/k", "width": 1281}))
