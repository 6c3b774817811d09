"""Real servers and real audio for sink tests: icecast2, nginx-rtmp, PulseAudio null sink.

Every server runs its own Debian binary in the foreground on a free 127.0.0.1 port, with its
config in a temp dir, and is stopped (SIGTERM, then SIGKILL) when the test ends. Recipes:
``shared/notes/{icecast,rtmp,pulseaudio}.md``. A missing binary skips the test with the apt
package to install (``tests/setup-debian.sh`` installs them all).

Use from a test module in either way::

    pytest_plugins = ["servers"]              # all fixtures below become available
    # or
    from servers import icecast_server, IcecastServer, music_blocks   # import what you use

Fixtures: ``icecast_server`` (an :class:`IcecastServer`, started), ``rtmp_server`` (an
:class:`RtmpServer`, started), ``pulse_server`` (a :class:`PulseServer`, started; PULSE_SERVER
etc. set for this test and PortAudio re-scanned), ``music`` (:class:`Music`: a planetblupi track).

Helpers: :func:`free_port`, :func:`music_blocks` (AudioBlocks of real music with changing
titles), :func:`play_realtime` (push blocks into a fan-out at the audio's own pace),
:func:`record_url` (ffmpeg as a listener: decoded samples of a URL), :func:`ffprobe_streams`,
:func:`dominant_frequency_hz`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from riffradio.core.types import AudioBlock, NowPlaying

SOURCE_PASSWORD = "srcpw-secret"
ADMIN_PASSWORD = "adminpw"
RELAY_PASSWORD = "relaypw"
MUSIC_DIR = Path("/usr/share/planetblupi/music")  # Debian package planetblupi-music-ogg


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on right now (for OSC)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def join_generate_threads(timeout_seconds: float = 120.0) -> None:
    """Wait for clips still being made in the station's daemon threads: they must not outlive a test."""
    import threading

    for thread in threading.enumerate():
        if thread.name == "riffradio generate":
            thread.join(timeout_seconds)


def wait_until(predicate: Callable[[], object], timeout_seconds: float, what: str, interval_seconds: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; that value, or AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            value = predicate()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(interval_seconds)


class OscListener:
    """A UDP socket on 127.0.0.1 that keeps every OSC message sent to it, for asyncio tests.

    ``heard`` fills with ``(address, params)`` while :meth:`collect` runs (as a task); send
    from ``sock`` so that the station's replies (``/riffradio/subscribe``) come back here.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.heard: list[tuple[str, list[object]]] = []

    async def collect(self) -> None:
        import asyncio

        from pythonosc.osc_packet import OscPacket

        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.heard.extend((m.message.address, m.message.params) for m in OscPacket(data).messages)

    async def send(self, packet: bytes, port: int) -> None:
        import asyncio

        await asyncio.get_running_loop().sock_sendto(self.sock, packet, ("127.0.0.1", port))

    def close(self) -> None:
        self.sock.close()


def _require(binary: str, package: str) -> str:
    return shutil.which(binary) or pytest.skip(f"{binary} not found: apt-get install {package}")


class _Daemon:
    """A foreground server process with its log in ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            # own process group: signals reach nginx's workers too, not only its master
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _wait_ready(self, ready: Callable[[], object], timeout_seconds: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.log_path.name} exited rc={self.process.returncode}:\n{self.log()}")
            try:
                if ready():
                    return
            except (OSError, ValueError):  # icecast serves invalid JSON for its first ~0.25 s
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.log_path.name} not ready after {timeout_seconds} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the whole server (workers too): it vanishes without a goodbye, like a crash."""
        if self.running:
            assert self.process is not None
            self._signal_group(signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP to the whole server: a hung server (connections stay open, nothing is read)."""
        if self.running:
            self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            self._signal_group(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (clean exit), SIGKILL if it does not go within 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(10)
        self._signal_group(signal.SIGKILL)  # anything of the group left behind (workers)


# -- Icecast --------------------------------------------------------------------------------------

_ICECAST_XML = """<icecast>
  <location>test</location><admin>test@localhost</admin><hostname>127.0.0.1</hostname>
  <limits><clients>100</clients><sources>10</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout><burst-size>65535</burst-size></limits>
  <authentication>
    <source-password>{source_password}</source-password>
    <relay-password>{relay_password}</relay-password>
    <admin-user>admin</admin-user><admin-password>{admin_password}</admin-password>
  </authentication>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <mount type="default"><charset>UTF-8</charset></mount>
  {extra}
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir><logdir>{dir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
    <pidfile>{dir}/icecast.pid</pidfile>
  </paths>
  <logging><accesslog>-</accesslog><errorlog>-</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>
    <changeowner><user>icecast2</user><group>icecast</group></changeowner></security>
</icecast>
"""


class IcecastServer(_Daemon):
    """icecast2 on a free port. ``start()``/``stop()``/``kill()`` may be repeated (same port).

    Args:
        directory: where the config and log go.
        relay_of: the port of a master Icecast on 127.0.0.1: this server then relays all of
            the master's mounts (master/slave mode, re-checked every 2 s).
    """

    def __init__(self, directory: Path, relay_of: int | None = None) -> None:
        super().__init__(directory, "icecast")
        self.exe = _require("icecast2", "icecast2")
        self.port = free_port()
        self.relay_of = relay_of
        self.configure(SOURCE_PASSWORD)

    def configure(self, source_password: str) -> None:
        """Write the config with this source password (takes effect at the next ``start``)."""
        relay_of = self.relay_of
        directory = self.directory
        extra = ""
        if relay_of is not None:
            extra = (
                f"<master-server>127.0.0.1</master-server><master-server-port>{relay_of}</master-server-port>"
                "<master-update-interval>2</master-update-interval>"
                f"<master-username>relay</master-username><master-password>{RELAY_PASSWORD}</master-password>"
                "<relays-on-demand>0</relays-on-demand>"
            )
        self.config_path = directory / "icecast.xml"
        self.config_path.write_text(
            _ICECAST_XML.format(
                port=self.port,
                dir=directory,
                extra=extra,
                source_password=source_password,
                relay_password=RELAY_PASSWORD,
                admin_password=ADMIN_PASSWORD,
            )
        )

    def start(self) -> IcecastServer:
        self._spawn([self.exe, "-c", str(self.config_path)])
        self._wait_ready(lambda: self.mounts() is not None)
        return self

    def source_url(self, mount: str, password: str = SOURCE_PASSWORD) -> str:
        """What a playlist's ``url:`` says for ``mount`` on this server."""
        return f"icecast://source:{password}@127.0.0.1:{self.port}{mount}"

    def listen_url(self, mount: str) -> str:
        return f"http://127.0.0.1:{self.port}{mount}"

    def mounts(self) -> dict[str, dict]:
        """``status-json.xsl``'s sources by mount (``{}`` when none; key absent/dict/list handled)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status-json.xsl", timeout=3) as response:
            sources = json.load(response)["icestats"].get("source") or []
        sources = sources if isinstance(sources, list) else [sources]
        return {"/" + s["listenurl"].split("/", 3)[3]: s for s in sources}

    def wait_mount(self, mount: str, timeout_seconds: float = 15.0) -> dict:
        """Wait until ``mount`` has a source; its status-json entry."""
        return wait_until(lambda: self.mounts().get(mount), timeout_seconds, f"icecast mount {mount}")


# -- nginx-rtmp -----------------------------------------------------------------------------------

_NGINX_CONF = """load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 128; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application live {{ live on; record off; }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp_body; proxy_temp_path {dir}/tmp_proxy;
    fastcgi_temp_path {dir}/tmp_fcgi; uwsgi_temp_path {dir}/tmp_uwsgi; scgi_temp_path {dir}/tmp_scgi;
    server {{ listen 127.0.0.1:{http_port}; location /stat {{ rtmp_stat all; }} }}
}}
"""


class RtmpServer(_Daemon):
    """nginx with libnginx-mod-rtmp: application ``live`` on a free RTMP port, ``/stat`` on HTTP."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "nginx")
        self.exe = _require("nginx", "nginx libnginx-mod-rtmp")
        if not Path("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists():
            pytest.skip("nginx RTMP module missing: apt-get install libnginx-mod-rtmp")
        self.port = free_port()
        self.http_port = free_port()
        self.config_path = directory / "nginx.conf"
        self.config_path.write_text(
            _NGINX_CONF.format(
                dir=directory,
                rtmp_port=self.port,
                http_port=self.http_port,
                user="user root;" if os.geteuid() == 0 else "",
            )
        )

    def start(self) -> RtmpServer:
        d = str(self.directory)
        self._spawn([self.exe, "-c", str(self.config_path), "-p", d + "/", "-e", str(self.directory / "error.log")])
        self._wait_ready(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True)
        return self

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def stat(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/stat", timeout=3) as response:
            return response.read().decode()

    def publishing(self, key: str) -> bool:
        stat = self.stat()
        return f"<name>{key}</name>" in stat and "<publishing/>" in stat


# -- PulseAudio -----------------------------------------------------------------------------------


class PulseServer(_Daemon):
    """pulseaudio in user mode with one null sink ``radio`` (monitor ``radio.monitor``), no D-Bus.

    ``env`` holds HOME, XDG_RUNTIME_DIR and PULSE_SERVER for clients (parec, pactl, PortAudio).
    """

    sink_name = "radio"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "pulse")
        self.exe = _require("pulseaudio", "pulseaudio pulseaudio-utils libportaudio2")
        _require("parec", "pulseaudio-utils")
        run, home = directory / "run", directory / "home"
        run.mkdir(mode=0o700, exist_ok=True)
        home.mkdir(mode=0o700, exist_ok=True)
        self.socket_path = run / "native"
        self.env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(run), PULSE_SERVER=f"unix:{self.socket_path}")

    def start(self) -> PulseServer:
        self._spawn(
            [
                self.exe, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                "--use-pid-file=no", "--log-target=stderr",
                "-L", f"module-native-protocol-unix socket={self.socket_path} auth-anonymous=1",
                "-L", f"module-null-sink sink_name={self.sink_name} rate=48000 channels=2 "
                "sink_properties=device.description=RadioSink",
            ],
            env=self.env,
        )  # fmt: skip
        self._wait_ready(
            lambda: subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=5).returncode == 0
        )
        return self

    def record_monitor(self, rate_hz: int = 16000) -> MonitorRecording:
        """Start recording the null sink's monitor (what was played) with ``parec``."""
        return MonitorRecording(self, rate_hz)


class MonitorRecording:
    """``parec`` recording a PulseAudio monitor to a file (a pipe would fill and stall it).

    Use as a context manager, or call :meth:`stop`; then ``samples`` is mono float32 at ``rate_hz``.
    """

    def __init__(self, server: PulseServer, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self.path = server.directory / f"monitor-{time.monotonic_ns()}.raw"
        self.samples = np.zeros(0, np.float32)
        with open(self.path, "wb") as out:
            self.process = subprocess.Popen(
                ["parec", f"--device={server.sink_name}.monitor", "--format=s16le", f"--rate={rate_hz}",
                 "--channels=1", "--latency-msec=50"],
                env=server.env, stdout=out,
            )  # fmt: skip
        time.sleep(0.3)  # parec connected before anything plays

    def stop(self) -> np.ndarray:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.samples = np.fromfile(self.path, np.int16).astype(np.float32) / 32768
        return self.samples

    def __enter__(self) -> MonitorRecording:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def rescan_portaudio() -> None:
    """PortAudio lists devices once, at import: re-scan after the audio server changed."""
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def icecast_server(tmp_path: Path) -> Iterator[IcecastServer]:
    """A started icecast2 (source password :data:`SOURCE_PASSWORD`), stopped after the test."""
    server = IcecastServer(tmp_path / "icecast").start()
    yield server
    server.stop()


@pytest.fixture
def rtmp_server(tmp_path: Path) -> Iterator[RtmpServer]:
    """A started nginx-rtmp (``rtmp_server.url(key)``), stopped after the test."""
    server = RtmpServer(tmp_path / "nginx").start()
    yield server
    server.stop()


@pytest.fixture
def pulse_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A started PulseAudio with null sink ``radio``; this process's PortAudio talks to it."""
    server = PulseServer(tmp_path / "pulse").start()
    for key in ("HOME", "XDG_RUNTIME_DIR", "PULSE_SERVER"):
        monkeypatch.setenv(key, server.env[key])
    rescan_portaudio()
    yield server
    server.stop()
    monkeypatch.undo()
    rescan_portaudio()


# -- real audio -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Music:
    """Decoded real music: float32 ``(2, frames)`` at ``sample_rate_hz``."""

    samples: np.ndarray
    sample_rate_hz: int

    @property
    def duration_seconds(self) -> float:
        return self.samples.shape[1] / self.sample_rate_hz


def load_music(seconds: float = 30.0, track: str = "music001.ogg", start_seconds: float = 20.0) -> Music:
    """``seconds`` of a planetblupi track (44.1 kHz stereo), from ``start_seconds`` (past any intro silence)."""
    import av

    path = MUSIC_DIR / track
    if not path.exists():
        pytest.skip(f"{path} missing: apt-get install planetblupi-music-ogg")
    chunks, have = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        skip = int(start_seconds * rate)
        for frame in container.decode(stream):
            x = frame.to_ndarray().astype(np.float32)
            if x.shape[0] == 1:
                x = np.repeat(x, 2, axis=0)
            if skip >= x.shape[1]:
                skip -= x.shape[1]
                continue
            x, skip = x[:, skip:], 0
            chunks.append(x)
            have += x.shape[1]
            if have >= seconds * rate:
                break
    samples = np.concatenate(chunks, axis=1)[:, : int(seconds * rate)]
    samples *= min(1.0, 0.9 / float(np.abs(samples).max()))  # the station's audio is limited below full scale
    return Music(np.ascontiguousarray(samples), rate)


@pytest.fixture(scope="session")
def music() -> Music:
    """30 s of real music (planetblupi), decoded once per session."""
    return load_music()


def music_blocks(
    music: Music,
    block_frames: int = 4096,
    title_every_seconds: float = 5.12,
    titles: tuple[str, ...] = ("lofi hip hop beat", "jazzy piano → techno", "church bells on sunday"),
    image_size: int = 512,
    loops: int = 1,
) -> list[AudioBlock]:
    """The music cut into AudioBlocks, as the station's consumer would push them.

    The title (and a spectrogram-like image with a different brightness pattern per clip)
    changes every ``title_every_seconds``, like clips do; ``offset_seconds`` runs within each "clip".
    """
    from PIL import Image

    rate = music.sample_rate_hz
    clip_frames = int(title_every_seconds * rate)
    images = []
    for i in range(len(titles)):
        # a 512×512 picture of the clip's loudness over time and frequency, for the video sink
        y = np.linspace(0, 1, image_size)[:, None]
        x = np.linspace(0, 1, image_size)[None, :]
        pattern = (127 + 127 * np.sin(2 * np.pi * ((i + 2) * x + 3 * y))).astype(np.uint8)
        images.append(Image.fromarray(pattern, "L").convert("RGB"))
    blocks = []
    total = music.samples.shape[1] * loops
    for start in range(0, total - block_frames + 1, block_frames):
        first = start % music.samples.shape[1]
        samples = np.take(music.samples, np.arange(first, first + block_frames), axis=1, mode="wrap")
        clip = start // clip_frames
        now = NowPlaying(
            clip_index=clip,
            title=titles[clip % len(titles)],
            request=None,
            offset_seconds=(start % clip_frames) / rate,
            image=images[clip % len(images)],
        )
        blocks.append(AudioBlock(samples, rate, start, now))
    return blocks


def play_realtime(push: Callable[[AudioBlock], None], blocks: list[AudioBlock], speed: float = 1.0) -> None:
    """Push ``blocks`` at the pace of their audio (``speed`` > 1 is faster), like the station's clock."""
    t0 = time.monotonic()
    for block in blocks:
        due = t0 + block.start_seconds / speed - blocks[0].start_seconds / speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        push(block)


# -- listeners ------------------------------------------------------------------------------------


def record_url(url: str, seconds: float, rate_hz: int = 16000, extra_args: tuple[str, ...] = ()) -> np.ndarray:
    """ffmpeg (Debian's CLI) as a listener: ``seconds`` of ``url`` decoded to mono float32 at ``rate_hz``."""
    exe = _require("ffmpeg", "ffmpeg")
    result = subprocess.run(
        [exe, "-nostdin", "-loglevel", "error", "-rw_timeout", "15000000", *extra_args, "-i", url,
         "-t", str(seconds), "-ac", "1", "-ar", str(rate_hz), "-f", "f32le", "-"],
        capture_output=True, timeout=seconds * 3 + 30,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"ffmpeg could not decode {url}: {result.stderr.decode(errors='replace')[-500:]}")
    return np.frombuffer(result.stdout, np.float32)


def ffprobe_streams(url: str, *extra_args: str) -> list[dict]:
    """ffprobe's ``streams`` (codec_type, codec_name, sample_rate, width, height, ...) of a URL or file."""
    exe = _require("ffprobe", "ffmpeg")
    result = subprocess.run(
        [exe, "-v", "error", *extra_args, "-show_entries",
         "stream=codec_type,codec_name,sample_rate,channels,width,height,r_frame_rate", "-of", "json", url],
        capture_output=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"ffprobe failed on {url}: {result.stderr.decode(errors='replace')[-500:]}")
    return json.loads(result.stdout)["streams"]


def dominant_frequency_hz(samples: np.ndarray, rate_hz: int) -> float:
    """The strongest frequency of a mono signal (Hann-windowed FFT)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate_hz / len(samples))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def match_audio(
    received: np.ndarray, received_rate_hz: int, reference: Music, probe_seconds: float = 4.0, skip_seconds: float = 0.5
) -> tuple[float, float]:
    """Where ``received`` (mono) sits in ``reference`` and how alike they are.

    ``probe_seconds`` of ``received``, from ``skip_seconds`` in (past codec start-up delay, so
    the true lag is not negative), are looked for in the reference.

    Returns (offset_seconds into the reference, correlation coefficient at that offset, 1 = identical).
    A lossy codec at the bit rates we use gives about 0.9 or more for the right music, near 0 otherwise.
    """
    from math import gcd

    from scipy.signal import fftconvolve, resample_poly

    g = gcd(received_rate_hz, reference.sample_rate_hz)
    ref = resample_poly(reference.samples.mean(axis=0), received_rate_hz // g, reference.sample_rate_hz // g)
    skip = int(skip_seconds * received_rate_hz)
    probe = received[skip : skip + int(probe_seconds * received_rate_hz)].astype(np.float64)
    probe = probe - probe.mean()
    corr = fftconvolve(ref, probe[::-1], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    window = ref[lag : lag + len(probe)]
    window = window - window.mean()
    coefficient = float(np.dot(window, probe) / (np.linalg.norm(window) * np.linalg.norm(probe) + 1e-12))
    return (lag - skip) / received_rate_hz, coefficient


def with_outage(
    push: Callable[[AudioBlock], None],
    server: _Daemon,
    down_at_seconds: float,
    down_for_seconds: float,
    on_restart: Callable[[], None] | None = None,
) -> Callable[[AudioBlock], None]:
    """``push`` that crashes ``server`` (SIGKILL) when the audio reaches ``down_at_seconds`` and
    starts it again ``down_for_seconds`` of audio later (then calls ``on_restart``)."""
    state = {"killed": False, "restarted": False}

    def push_with_outage(block: AudioBlock) -> None:
        if not state["killed"] and block.start_seconds >= down_at_seconds:
            state["killed"] = True
            server.kill()
        if state["killed"] and not state["restarted"] and block.start_seconds >= down_at_seconds + down_for_seconds:
            state["restarted"] = True
            server.start()  # type: ignore[attr-defined] - every server class here has start()
            if on_restart is not None:
                on_restart()
        push(block)

    return push_with_outage
