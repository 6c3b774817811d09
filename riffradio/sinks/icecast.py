"""Icecast output: MP3 or Ogg/Opus to one mount, the prompt playing now as its title.

We speak Icecast's source protocol ourselves (one HTTP ``PUT`` on a plain socket) instead of
PyAV's ``icecast://``: PyAV cannot pass protocol options, so every mount would be announced as
``audio/mpeg`` (late Ogg listeners then get undecodable data), and a hung server would block a
PyAV write for good. Our socket has a timeout, so every network write returns or raises within
``timeout_seconds``.

Encoding is shared: every mount with the same format and bit rate gets its bytes from one
:class:`~riffradio.sinks.encoders.SharedEncoder` (the fan-out hands its sinks one
:class:`~riffradio.sinks.encoders.EncoderPool`).

Now playing follows the audio, not the generator: when the block carrying a new
``now_playing.title`` is sent, MP3 mounts get ``/admin/metadata?mode=updinfo`` (ICY
``StreamTitle`` and ``status-json.xsl``'s ``title``), Ogg mounts a new chained stream whose
OpusTags carry ``TITLE`` (Icecast 2.4.4 does not show Opus titles in ``status-json.xsl``;
listeners still get them in-stream).
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import threading
import urllib.parse
from dataclasses import dataclass

from riffradio.playlist.model import OutputSpec
from riffradio.sinks.base import Sink, SinkError
from riffradio.sinks.encoders import EncoderPool, EncoderSettings, EncodingOutput, OggChainFollower, SharedEncoder
from riffradio.sinks.options import OutputOptions
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

DEFAULT_BITRATE_KBPS = {"mp3": 128, "opus": 96}


@dataclass(frozen=True)
class IcecastTarget:
    """Where and how to connect, parsed from ``icecast://user:password@host:port/mount``.

    Attributes:
        host: server host name or address.
        port: server port (8000 if the URL gives none).
        mount: mount point, starting with ``/``.
        user: source user (``source`` if the URL gives none).
        password: source password (never logged).
    """

    host: str
    port: int
    mount: str
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> IcecastTarget:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("icecast", "http"):
            raise SinkError(f"icecast url must start with icecast:// (got {parts.scheme or 'no'} scheme)")
        if not parts.hostname:
            raise SinkError("icecast url has no host")
        if not parts.path or parts.path == "/":
            raise SinkError(f"icecast url for {parts.hostname} has no mount (…/riffradio.mp3)")
        if not parts.password:
            raise SinkError(f"icecast url for {parts.hostname}{parts.path} has no password (user:password@host)")
        return cls(
            host=parts.hostname,
            port=parts.port or 8000,
            mount=parts.path,
            user=urllib.parse.unquote(parts.username or "source"),
            password=urllib.parse.unquote(parts.password),
        )


class IcecastSink(EncodingOutput, Sink):
    """One Icecast mount (MP3 or Ogg/Opus) with the prompt as now-playing title.

    Args:
        url: ``icecast://source:PASSWORD@host:port/mount``.
        format: ``"mp3"`` or ``"opus"``; if None, taken from the mount's extension (``.mp3`` →
            MP3, ``.opus``/``.ogg`` → Opus).
        bitrate_kbps: encoder bit rate (default 128 for MP3, 96 for Opus).
        stream_name: ``Ice-Name`` (listed by directories and players).
        genre: ``Ice-Genre``.
        description: ``Ice-Description``.
        public: ``Ice-Public``: ask the server to list the stream in public directories.
        timeout_seconds: limit for connecting, each network write and each metadata update.
        encoders: the station's encoder pool; mounts sharing one pool share their encodes.
            If None the sink gets its own (the fan-out binds its pool before ``open``).
        admin_user: user for metadata updates (default: the source user; Icecast accepts the
            source credentials for its own mount).
        admin_password: password for metadata updates (default: the source password).
    """

    def __init__(
        self,
        url: str,
        format: str | None = None,
        bitrate_kbps: int | None = None,
        stream_name: str = "riffradio",
        genre: str = "AI",
        description: str = "An endless AI radio station (Riffusion)",
        public: bool = False,
        timeout_seconds: float = 5.0,
        encoders: EncoderPool | None = None,
        admin_user: str | None = None,
        admin_password: str | None = None,
    ) -> None:
        self.target = IcecastTarget.from_url(url)
        if format is None:
            format = "mp3" if self.target.mount.endswith(".mp3") else "opus"
        format = {"ogg": "opus"}.get(format, format)
        if format not in DEFAULT_BITRATE_KBPS:
            raise SinkError(f"icecast {self.target.mount}: format must be mp3 or opus, not {format!r}")
        self.settings = EncoderSettings(format, int(bitrate_kbps or DEFAULT_BITRATE_KBPS[format]))
        self.stream_name = stream_name
        self.genre = genre
        self.description = description
        self.public = public
        self.timeout_seconds = timeout_seconds
        self.admin_user = admin_user or self.target.user
        self.admin_password = admin_password or self.target.password
        self.name = f"icecast:{self.target.host}:{self.target.port}{self.target.mount}"
        self.secrets = tuple({self.target.password, self.admin_password})
        self._pool = encoders
        self._encoder: SharedEncoder | None = None
        self._socket: socket.socket | None = None
        self._ogg = OggChainFollower()  # Ogg chains whose headers this connection has sent
        self._titles: TitleUpdater | None = None  # MP3 mounts: admin metadata updates

    # -- Sink ---------------------------------------------------------------------------------
    def open(self) -> None:
        self._open_encoder()
        self._socket = self._connect()
        self._ogg.reset()
        if self.settings.format == "mp3":
            self._titles = TitleUpdater(self.target, self.admin_user, self.admin_password, self.timeout_seconds, self.name)

    def write(self, block: AudioBlock) -> int:
        if self._socket is None or self._encoder is None:
            raise SinkError(f"{self.name}: not connected")
        encoded = self._encoder.encode(block)
        if self.settings.format == "mp3":
            data = encoded.data
        else:
            data = self._ogg.bytes_for(encoded.pages, self._encoder)
        try:
            if data:
                self._socket.sendall(data)  # bounded by the socket timeout
        except OSError as error:
            raise SinkError(f"{self.name}: send failed ({type(error).__name__}: {error})") from error
        if self._titles is not None:
            self._titles.want(block.now_playing.title)  # as heard: after this block's audio went out
        return len(data)

    def close(self) -> None:
        titles, self._titles = self._titles, None
        if titles is not None:
            titles.stop()
        sock, self._socket = self._socket, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # -- source connection ------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=self.timeout_seconds)
        except OSError as error:
            raise SinkError(f"{self.name}: cannot connect ({type(error).__name__}: {error})") from error
        # A small send buffer (about 2 s of audio) lets a hung server show as a send timeout
        # within seconds instead of after megabytes of autotuned buffer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(16384, self.settings.bitrate_kbps * 1000 // 4))
        auth = base64.b64encode(f"{t.user}:{t.password}".encode()).decode()
        headers = {
            "Host": f"{t.host}:{t.port}",
            "Authorization": f"Basic {auth}",
            "User-Agent": "riffradio",
            "Content-Type": self.settings.content_type,
            "Ice-Name": self.stream_name,
            "Ice-Genre": self.genre,
            "Ice-Description": self.description,
            "Ice-Public": str(int(self.public)),
            "Ice-Audio-Info": f"bitrate={self.settings.bitrate_kbps}",
            "Expect": "100-continue",
        }
        request = f"PUT {urllib.parse.quote(t.mount)} HTTP/1.1\r\n" + "".join(
            f"{k}: {_header_value(v)}\r\n" for k, v in headers.items()
        )
        try:
            sock.sendall((request + "\r\n").encode("utf-8"))
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed the connection during the handshake")
                response += chunk
                if len(response) > 65536:
                    raise ConnectionError("no end of HTTP headers in the server's answer")
        except OSError as error:
            sock.close()
            raise SinkError(f"{self.name}: handshake failed ({type(error).__name__}: {error})") from error
        status = response.split(b"\r\n", 1)[0].decode("latin-1").strip()
        code = status.split(" ")[1] if status.count(" ") >= 1 else ""
        if code not in ("100", "200"):
            sock.close()
            hint = {"401": " (wrong source password?)", "403": " (mount already in use or not allowed)"}.get(code, "")
            raise SinkError(f"{self.name}: server refused the source: {status}{hint}")
        return sock


class TitleUpdater:
    """Sends ``/admin/metadata`` title updates for one source connection of an MP3 mount, on its own thread.

    Audio writes never wait for the admin request: :meth:`want` only records the newest title.
    A failed update is retried once a second while that title is still the newest.
    """

    def __init__(self, target: IcecastTarget, user: str, password: str, timeout_seconds: float, name: str) -> None:
        self.target, self.timeout_seconds, self.name = target, timeout_seconds, name
        self._auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._wanted: str | None = None
        self._sent: str | None = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"titles {name}", daemon=True)
        self._thread.start()

    def want(self, title: str) -> None:
        with self._cond:
            if title != self._wanted:
                self._wanted = title
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        failed_once = False
        while True:
            with self._cond:
                while not self._stopped and (self._wanted is None or self._wanted == self._sent):
                    self._cond.wait()
                if self._stopped:
                    return
                title = self._wanted
            assert title is not None
            problem = self._send(title)
            if problem is None:
                with self._cond:
                    self._sent = title
                failed_once = False
                continue
            if not failed_once:  # one line per run of failures
                log.warning("%s: title update failed (%s)", self.name, problem)
            failed_once = True
            with self._cond:
                self._cond.wait(1.0)

    def _send(self, title: str) -> str | None:
        """None when the server took ``title``, else the problem in a few words."""
        t = self.target
        query = urllib.parse.urlencode({"mount": t.mount, "mode": "updinfo", "song": title})
        connection = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout_seconds)
        try:
            connection.request(
                "GET", f"/admin/metadata?{query}", headers={"Authorization": f"Basic {self._auth}", "User-Agent": "riffradio"}
            )
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
        except OSError as error:
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        # 200 with "will not accept URL updates" is a refusal too: check the message
        if response.status != 200 or "successful" not in body:
            return f"server answered HTTP {response.status}"
        return None


def _header_value(value: str) -> str:
    """One HTTP header line: no CR/LF (a title or name must not inject headers)."""
    return " ".join(str(value).split())


ICECAST_OPTIONS = (
    "url", "format", "bitrate_kbps", "name", "genre", "description", "public", "timeout_seconds",
    "admin_user", "admin_password",
)  # fmt: skip


def icecast_sink_from_spec(spec: OutputSpec) -> IcecastSink:
    """The factory for ``{type: icecast, url: "icecast://source:${PW}@host:8000/mount.mp3", format: mp3, ...}``."""
    o = OutputOptions("icecast", spec.options, ICECAST_OPTIONS)
    url = o.text("url", example='"icecast://source:${ICECAST_PASSWORD}@127.0.0.1:8000/riffradio.mp3"')
    assert url is not None
    try:
        return IcecastSink(
            url,
            format=o.choice("format", None, ("mp3", "opus", "ogg")),
            bitrate_kbps=o.number("bitrate_kbps", None, minimum=8, integer=True),
            stream_name=o.text("name", "riffradio") or "riffradio",
            genre=o.text("genre", "AI") or "",
            description=o.text("description", "An endless AI radio station (Riffusion)") or "",
            public=o.flag("public", False),
            timeout_seconds=o.number("timeout_seconds", 5.0),
            admin_user=o.text("admin_user", None),
            admin_password=o.text("admin_password", None),
        )
    except SinkError as error:
        raise ValueError(str(error)) from None
