"""The station's HTTP server (aiohttp): the web studio, its API, the ``http`` stream outputs, metrics.

Routes (docs/http.md):

- ``GET /`` the studio page (``riffradio/control/studio/``: plain HTML, CSS and JS, no build
  step, nothing from a CDN) and ``GET /static/…`` its files;
- ``GET /api/nowplaying`` what is on air, in AzuraCast's shape plus riffradio's own fields;
- ``GET /api/state`` / ``POST /api/state`` the live state; a POST's names and ranges are the OSC
  address space's (:data:`riffradio.control.fields.FIELDS`), it needs ``Authorization: Bearer
  <token>`` with the token from the environment variable ``control.http.token_env`` names;
- ``GET /api/art/<clip>.png`` a clip's spectrogram image (its cover art);
- ``GET /api/live`` a WebSocket that pushes state changes, now playing and new clips;
- ``GET <path>`` of every ``{type: http}`` output: the station as MP3 or Ogg/Opus (ICY titles
  on request);
- ``GET /metrics`` Prometheus.

A slow or hostile client can neither grow memory nor hold the station: at most
``max_connections`` connections (more are answered 503), a connection with no request in
progress is closed after :data:`IDLE_TIMEOUT_SECONDS`, request heads and bodies are bounded
(too large: 400/413/431), each client address has a token bucket for API requests (429), the
WebSocket and POSTs accept only the server's own origin and ``control.http.origins``. It listens
on 127.0.0.1 by default. The public now-playing document names no file paths and no hosts;
a request with the edit token gets the operator's view (outputs by name, the playlist's path).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import io
import json
import logging
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from riffradio.core.types import AudioBlock
from riffradio.control.fields import FIELDS, Rejected, apply_field
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import HttpConfig  # the playlist's control.http section
from riffradio.sinks.base import SinkError, SinkStatus
from riffradio.station.state import StateSnapshot, StationState

if TYPE_CHECKING:
    from PIL import Image

    from riffradio.sinks.http import HttpStreamSink

log = logging.getLogger(__name__)

IDLE_TIMEOUT_SECONDS = 15.0
REFUSAL_LOG_SECONDS = 10.0  # a connection without a request in progress is closed after this
MAX_BODY_BYTES = 16 * 1024
MAX_HEADER_LINE_BYTES = 8190
MAX_HEADERS = 128
API_BURST = 60  # API requests a client may make at once …
API_PER_SECOND = 20.0  # … and then per second
MAX_WEBSOCKETS = 64
HISTORY_CLIPS = 10
ICECAST_POLL_SECONDS = 10.0  # how often Icecast's listener counts are read
ART_CACHE_CLIPS = 32
STUDIO_FILES = ("index.html", "studio.css", "studio.js")
_CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


@dataclasses.dataclass(frozen=True)
class StudioViews:
    """What the HTTP server reads from and writes to the station (narrow views, no Station).

    Attributes:
        name: the station's name.
        state: the live state (read, written by POST /api/state, subscribed for the WebSocket).
        metrics: the station's Prometheus registry.
        nowplaying: the station's own now-playing document (``Station.nowplaying``).
        outputs: every output's status.
        add_block_listener: registers a callable the audio clock calls after every block.
        clip_image: the spectrogram image of a clip still in the buffer (playing or queued), or None.
        riffs: the playlist's riffs as titles, for "go to a riff".
        seed_images: names of the bundled seed images.
        streams: the ``http`` outputs this server serves.
        icecast_mounts: ``(host, port, mount)`` of each Icecast output, whose listeners the
            server reads from that Icecast's ``status-json.xsl``.
    """

    name: str
    state: StationState
    metrics: StationMetrics
    nowplaying: Callable[[], dict[str, Any]]
    outputs: Callable[[], Iterable[SinkStatus]]
    add_block_listener: Callable[[Callable[[AudioBlock], None]], None] = lambda listener: None
    clip_image: Callable[[int], Image.Image | None] = lambda index: None
    riffs: Callable[[], Sequence[str]] = tuple
    seed_images: Sequence[str] = ()
    streams: Sequence[HttpStreamSink] = ()
    icecast_mounts: Sequence[tuple[str, int, str]] = ()


# -- pure pieces ----------------------------------------------------------------------------------


class TokenBuckets:
    """One token bucket per client address: ``burst`` requests at once, then ``per_second``.

    Holds at most ``max_clients`` buckets (the fullest are forgotten first), so a spray of
    addresses cannot grow memory.
    """

    def __init__(
        self, burst: int = API_BURST, per_second: float = API_PER_SECOND, max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.burst = float(burst)
        self.per_second = per_second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, client: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str], scheme: str = "http") -> bool:
    """A browser's ``Origin`` may act here: none (not a browser page), our own, or a listed one."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if host and origin.lower() in (f"{scheme}://{host}".lower(), f"https://{host}".lower()):
        return True
    return "*" in allowed or origin in allowed


def state_document(snapshot: StateSnapshot, riff_count: int) -> dict[str, Any]:
    """The live state by field name (the names POST /api/state and OSC take); unset = null."""
    knobs = dataclasses.asdict(snapshot.knobs)
    return {
        "version": snapshot.version,
        "prompt": snapshot.live_prompt,
        "to_prompt": snapshot.live_to_prompt,
        "alpha": snapshot.live_alpha,
        "seed": snapshot.live_seed,
        **knobs,
        "goto": snapshot.riff_index,
        "riffs": riff_count,
        "hold": snapshot.hold,
        "volume": snapshot.volume,
        "crossfade": snapshot.crossfade_seconds,
    }


def icecast_listeners(status: dict[str, Any], mount: str) -> int | None:
    """Listeners of ``mount`` in an Icecast ``status-json.xsl`` document; None when it is not there."""
    sources = (status.get("icestats") or {}).get("source") or []
    for source in [sources] if isinstance(sources, dict) else sources:
        if isinstance(source, dict) and urllib.parse.urlsplit(str(source.get("listenurl", ""))).path == mount:
            try:
                return int(source.get("listeners", 0))
            except (TypeError, ValueError):
                return None
    return None


def _read_icecast_status(host: str, port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{host}:{port}/status-json.xsl", timeout=3.0) as response:
        return json.loads(response.read(1 << 20).decode("utf-8", "replace"))


def art_url(clip_index: int | None) -> str | None:
    return None if clip_index is None else f"/api/art/{clip_index}.png"


def _song(clip: dict[str, Any], artist: str) -> dict[str, Any]:
    title = clip.get("title") or ""
    return {
        "id": str(clip.get("clip_index")),
        "text": title,
        "artist": artist,
        "title": title,
        "album": "",
        "genre": "",
        "lyrics": "",
        "art": art_url(clip.get("clip_index")),
        "custom_fields": {},
    }


def _riff_fields(clip: dict[str, Any] | None) -> dict[str, Any]:
    clip = clip or {}
    fields = {name: clip.get(name) for name in ("prompt", "to_prompt", "alpha", "seed", "to_seed", "seed_image")}
    fields["knobs"] = {name: clip.get(name) for name in ("denoising", "guidance", "steps", "continuation_seconds")}
    return fields


def _public_output(status: dict[str, Any]) -> dict[str, Any]:
    """An output for everyone: its type and health, no host, port, path or error text."""
    kind = str(status.get("name", "")).split(":", 1)[0]
    return {"type": kind, "state": status.get("state"), "connected": status.get("state") == "connected"}


def nowplaying_document(
    station: dict[str, Any],
    name: str,
    history: Sequence[dict[str, Any]],
    streams: Sequence[dict[str, Any]],
    now_unix: float,
    operator: bool = False,
    icecast: Sequence[int] = (),
) -> dict[str, Any]:
    """``/api/nowplaying``: AzuraCast's shape where it applies, plus riffradio's own fields.

    Args:
        station: ``Station.nowplaying()`` (``now``, ``next``, buffer and speed figures, ``outputs``).
        name: the station's name.
        history: clips heard before the current one, newest first (``clip_index``, ``title``,
            ``played_at`` unix seconds, ``duration_seconds``).
        streams: the http outputs (``path``, ``format``, ``bitrate_kbps``, ``listeners``).
        now_unix: the time the document describes.
        icecast: listeners of each Icecast output, as its server last reported them.
        operator: the edit token came with the request: ``riffradio`` is then the station's whole
            own document (``now``, ``next``, outputs by name, the playlist's path).
    """
    now = station.get("now")
    upcoming = station.get("next")
    listeners = sum(int(stream["listeners"]) for stream in streams) + sum(icecast)
    document: dict[str, Any] = {
        "station": {
            "name": name,
            "shortcode": "riffradio",
            "description": "An endless AI radio station (Riffusion)",
            "listen_url": streams[0]["path"] if streams else None,
            "mounts": [
                {
                    "name": stream["path"], "url": stream["path"], "format": stream["format"],
                    "bitrate": stream["bitrate_kbps"], "is_default": index == 0,
                    "listeners": {"total": stream["listeners"], "unique": stream["listeners"], "current": stream["listeners"]},
                }
                for index, stream in enumerate(streams)
            ],
            "is_public": False,
        },
        "listeners": {"total": listeners, "unique": listeners, "current": listeners},
        "live": {"is_live": False, "streamer_name": "", "broadcast_start": None, "art": None},
        "now_playing": None,
        "playing_next": None,
        "song_history": [
            {
                "sh_id": clip["clip_index"], "played_at": int(clip["played_at"]),
                "duration": round(clip["duration_seconds"], 3), "playlist": name, "streamer": "",
                "is_request": False, "song": _song(clip, name),
            }
            for clip in history
        ],
        "is_online": now is not None,
        "cache": None,
    }
    if now is not None:
        duration = float(now.get("duration_seconds") or 0.0)
        elapsed = float(now.get("elapsed_seconds") or 0.0)
        document["now_playing"] = {
            "sh_id": now.get("clip_index"),
            "played_at": int(now_unix - elapsed),
            "duration": round(duration, 3),
            "elapsed": round(elapsed, 3),
            "remaining": round(max(0.0, duration - elapsed), 3),
            "playlist": name,
            "streamer": "",
            "is_request": False,
            "song": _song(now, name),
            "fallback": bool(now.get("fallback")),
        }
    if upcoming is not None:
        document["playing_next"] = {
            "cued_at": int(now_unix),
            "duration": upcoming.get("duration_seconds"),
            "playlist": name,
            "is_request": False,
            "generating": bool(upcoming.get("generating")),
            "song": _song(upcoming, name),
        }
    document.update(_riff_fields(now))
    document["riffradio"] = {
        key: station.get(key)
        for key in (
            "crossfade_seconds", "buffered_seconds_ahead", "realtime_factor", "underruns", "fallback_seconds", "played_seconds",
            "clips_generated", "clips_dropped", "clips_committed", "state_version",
        )
    }  # fmt: skip
    outputs = [dict(output) for output in station.get("outputs", ())]
    if operator:  # the station's whole own document: outputs by name, the playlist's path
        document["riffradio"] = dict(station)
        for output in outputs:
            output.setdefault("connected", output.get("state") == "connected")
        document["riffradio"]["outputs"] = outputs
    else:
        document["riffradio"]["outputs"] = [_public_output(output) for output in outputs]
    document["served_at"] = round(now_unix, 3)
    return document


# -- the connection guard --------------------------------------------------------------------------


class _Refused(asyncio.Protocol):
    """Answers a connection over the limit with 503 and closes it.

    It reads (and drops) what the client sends until the client closes or a second has
    passed: closing with unread bytes would reset the connection before the 503 is read.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
            b"Connection: close\r\nRetry-After: 5\r\n\r\ntoo many connections, retry\r\n"
        )
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class ConnectionGuard:
    """At most ``max_connections`` open connections; idle ones closed after ``idle_timeout_seconds``.

    "Idle" means no request in progress (streams and WebSockets are requests in progress), so a
    client that connects and sends nothing, or trickles a request head, is closed in time.
    """

    def __init__(self, max_connections: int, idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS) -> None:
        self.max_connections = max_connections
        self.idle_timeout_seconds = idle_timeout_seconds
        self.refused = 0
        self.closed_idle = 0
        self._busy: collections.Counter[int] = collections.Counter()  # id(transport) → requests in progress
        self._idle_since: dict[int, float] = {}
        self._last_refusal_log = -REFUSAL_LOG_SECONDS
        self._refusals_logged = 0

    def _log_refusals(self) -> None:
        """One line per interval with the count, never one per connection."""
        now = time.monotonic()
        if self.refused > self._refusals_logged and now - self._last_refusal_log >= REFUSAL_LOG_SECONDS:
            log.warning(
                "http: %d connection(s) refused (503) since the last line: more than %d open",
                self.refused - self._refusals_logged, self.max_connections,
            )  # fmt: skip
            self._refusals_logged = self.refused
            self._last_refusal_log = now

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                self.refused += 1
                self._log_refusals()
                return _Refused()
            return server()

        return factory

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        key = id(request.transport)
        self._busy[key] += 1
        try:
            return await handler(request)
        finally:
            self._busy[key] -= 1
            if self._busy[key] <= 0:
                del self._busy[key]
                self._idle_since[key] = time.monotonic()

    def sweep(self, server: web.Server) -> None:
        """Close connections idle for longer than the timeout (called once a second)."""
        self._log_refusals()
        now = time.monotonic()
        alive: set[int] = set()
        for handler in server.connections:
            transport = handler.transport
            if transport is None:
                continue
            key = id(transport)
            alive.add(key)
            if self._busy.get(key):
                continue
            since = self._idle_since.setdefault(key, now)
            if now - since > self.idle_timeout_seconds:
                self.closed_idle += 1
                transport.close()
        for key in list(self._idle_since):
            if key not in alive:
                del self._idle_since[key]


# -- the server -------------------------------------------------------------------------------------


class HttpServer:
    """The running server; :attr:`address` is ``(host, port)`` actually bound, :attr:`url` its base URL."""

    def __init__(self, config: HttpConfig, views: StudioViews, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.views = views
        environ = os.environ if environ is None else environ
        token = environ.get(config.token_env, "") if config.token_env else ""
        self._token = token.encode() if token else None  # never logged, never sent
        self.guard = ConnectionGuard(config.max_connections)
        self.buckets = TokenBuckets()
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_CLIPS)
        self.clips: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_CLIPS + 2)
        self._art: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._clip_on_air: tuple[int, float] | None = None  # (clip index, offset) of the last block
        self._sockets: set[web.WebSocketResponse] = set()
        self._listener_starts: collections.OrderedDict[str, StreamStart] = collections.OrderedDict()
        self._streams = {stream.path: stream for stream in views.streams}
        self._icecast: dict[tuple[str, int, str], int | None] = {mount: None for mount in views.icecast_mounts}
        self.icecast_poll_seconds = ICECAST_POLL_SECONDS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._state_push_pending = False
        self._closed = False
        self.address: tuple[str, int] = ("", 0)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def writable(self) -> bool:
        return self._token is not None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self.guard.middleware, self._limits])
        app.on_response_prepare.append(_plain_server_header)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/nowplaying", self._nowplaying)
        app.router.add_route("OPTIONS", "/api/nowplaying", self._preflight)
        app.router.add_get("/api/state", self._get_state)
        app.router.add_post("/api/state", self._post_state)
        app.router.add_get("/api/art/{index}.png", self._art_png)
        app.router.add_get("/api/live", self._websocket)
        app.router.add_get("/metrics", self._metrics)
        for path in self._streams:
            app.router.add_get(path, self._stream)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT_SECONDS,
            max_line_size=MAX_HEADER_LINE_BYTES, max_field_size=MAX_HEADER_LINE_BYTES,
        )  # fmt: skip
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        self._server = await self._loop.create_server(
            self.guard.protocol_factory(server), self.config.host, self.config.port, backlog=128
        )
        self.address = self._server.sockets[0].getsockname()[:2]
        self._spawn(self._housekeeping())
        if self._icecast:
            self._spawn(self._poll_icecast())
        self._unsubscribe = self.views.state.subscribe(self._on_state_change)
        self.views.add_block_listener(self._on_block)
        if self.config.host not in ("127.0.0.1", "::1", "localhost"):
            log.info("http: listening on %s for every address that can reach it", self.config.host)
        log.info(
            "http: studio at %s/ (%s), now playing at /api/nowplaying, metrics at /metrics%s", self.url,
            "steering with the token" if self.writable else "listen only: no control.http.token_env",
            "".join(f", stream at {path}" for path in self._streams),
        )  # fmt: skip

    async def close(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for stream in self._streams.values():
            stream.close()  # ends every listener's response
        for socket in list(self._sockets):
            await socket.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _housekeeping(self) -> None:
        """Once a second: close idle connections, push now playing to the WebSockets."""
        assert self._runner is not None and self._runner.server is not None
        while True:
            await asyncio.sleep(1.0)
            self.guard.sweep(self._runner.server)
            if self._sockets:
                self._broadcast({"type": "nowplaying", "nowplaying": self._nowplaying_document(False)})

    async def _poll_icecast(self) -> None:
        """Read each Icecast output's listener count from its server (unknown while it is down)."""
        while True:
            for host, port in {(host, port) for host, port, _ in self._icecast}:
                try:
                    status = await asyncio.to_thread(_read_icecast_status, host, port)
                except (OSError, ValueError):
                    status = {}
                for key in self._icecast:
                    if key[:2] == (host, port):
                        self._icecast[key] = icecast_listeners(status, key[2])
            await asyncio.sleep(self.icecast_poll_seconds)

    # -- middleware -------------------------------------------------------------------------------
    @web.middleware
    async def _limits(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if len(request.headers) > MAX_HEADERS:
            return _text(431, f"more than {MAX_HEADERS} header lines")
        if request.path.startswith("/api/") or request.path == "/metrics":
            client = request.remote or "?"
            if not self.buckets.allow(client):
                return _text(429, f"too many requests from {client}; at most {API_PER_SECOND:g} per second", {"Retry-After": "1"})
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if error.status >= 400 and not error.text:
                error.text = f"{error.status}: {error.reason}"
            raise
        except Exception:  # a broken view must not kill the server
            log.exception("http: %s %s failed", request.method, request.path)
            return _text(500, f"{request.path} failed; the log has the details")
        if not isinstance(response, web.WebSocketResponse) and not response.prepared:
            response.headers.setdefault("Cache-Control", "no-store")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    def _operator(self, request: web.Request) -> bool:
        """The request carries the edit token."""
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return (
            self._token is not None and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)
        )

    def _origin_ok(self, request: web.Request) -> bool:
        return origin_allowed(request.headers.get("Origin"), request.host, self.config.origins, request.scheme)

    # -- the page ---------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return await self._studio_file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STUDIO_FILES or name == "index.html":
            raise web.HTTPNotFound(text=f"no such studio file: {name[:100]}")
        return await self._studio_file(name)

    async def _studio_file(self, name: str) -> web.Response:
        data = (resources.files("riffradio.control") / "studio" / name).read_bytes()
        content_type = _CONTENT_TYPES[name[name.rindex(".") :]]
        headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'"}
        return web.Response(body=data, content_type=content_type, charset="utf-8", headers=headers)

    # -- the API ----------------------------------------------------------------------------------
    def _stream_documents(self) -> list[dict[str, Any]]:
        return [
            {"path": s.path, "format": s.settings.format, "bitrate_kbps": s.settings.bitrate_kbps, "listeners": s.listeners}
            for s in self._streams.values()
        ]

    def _nowplaying_document(self, operator: bool) -> dict[str, Any]:
        station = dict(self.views.nowplaying())
        if "outputs" not in station:
            station["outputs"] = [dataclasses.asdict(status) for status in self.views.outputs()]
        icecast = [count for count in self._icecast.values() if count is not None]
        return nowplaying_document(
            station, self.views.name, list(self.history), self._stream_documents(), time.time(), operator, icecast
        )

    async def _nowplaying(self, request: web.Request) -> web.Response:
        response = _json(self._nowplaying_document(self._operator(request)))
        self._cors(request, response)
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        if self._cors(request, response):
            response.headers["Access-Control-Allow-Methods"] = "GET"
        return response

    def _cors(self, request: web.Request, response: web.StreamResponse) -> bool:
        """CORS only for the configured origins (none by default)."""
        origin = request.headers.get("Origin")
        allowed = self.config.cors
        if origin is None or not allowed:
            return False
        if "*" in allowed:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        else:
            return False
        return True

    def _state_document(self) -> dict[str, Any]:
        document = state_document(self.views.state.snapshot(), self.views.state.riff_count)
        return document

    async def _get_state(self, request: web.Request) -> web.Response:
        return _json({
            "state": self._state_document(), "writable": self.writable, "fields": list(FIELDS),
            "riffs": list(self.views.riffs()), "seed_images": list(self.views.seed_images),
        })  # fmt: skip

    async def _post_state(self, request: web.Request) -> web.Response:
        if not self._origin_ok(request):
            return _text(403, f"origin {request.headers.get('Origin', '')[:100]!r} may not steer this station")
        if self._token is None:
            return _text(403, "steering over HTTP is off: control.http.token_env names no set environment variable")
        if not request.headers.get("Authorization"):
            return _text(401, "steering needs Authorization: Bearer <token>", {"WWW-Authenticate": 'Bearer realm="riffradio"'})
        if not self._operator(request):
            return _text(403, "wrong edit token")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _text(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            changes = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            return _text(400, f"the body is not JSON: {error}")
        if not isinstance(changes, dict) or not changes:
            return _text(400, 'the body must be a JSON object of fields, e.g. {"prompt": "rainy jazz"}')
        unknown = [name for name in changes if name not in FIELDS]
        if unknown:
            return _error(400, str(unknown[0])[:100], f"unknown field {str(unknown[0])[:100]!r}; fields are {', '.join(FIELDS)}")
        state = self.views.state
        # Check every field before changing anything: a request applies whole or not at all.
        for name, value in changes.items():
            field = FIELDS[name]
            try:
                field.parse(name, [] if value is None else [value])
            except Rejected as rejected:
                return _error(400, name, rejected.reason)
        for name, value in changes.items():
            try:
                apply_field(state, name, [] if value is None else [value])
            except Rejected as rejected:  # a range the state checks (the earlier fields stay applied)
                return _error(400, name, rejected.reason)
        return _json({"state": self._state_document()})

    async def _art_png(self, request: web.Request) -> web.Response:
        try:
            index = int(request.match_info["index"])
        except ValueError:
            raise web.HTTPNotFound(text="art is /api/art/<clip index>.png") from None
        png = self._art.get(index)
        if png is None:
            image = self.views.clip_image(index)
            if image is None:
                raise web.HTTPNotFound(text=f"no image of clip {index} (only recent clips are kept)")
            png = await asyncio.to_thread(_png, image)
            self._remember_art(index, png)
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "public, max-age=86400, immutable"})

    def _remember_art(self, index: int, png: bytes) -> None:
        self._art[index] = png
        while len(self._art) > ART_CACHE_CLIPS:
            self._art.popitem(last=False)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.views.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the WebSocket ----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_ok(request):
            return _text(403, f"origin {request.headers.get('Origin', '')[:100]!r} may not open the live socket")
        if len(self._sockets) >= MAX_WEBSOCKETS:
            return _text(503, f"{MAX_WEBSOCKETS} live sockets open already")
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await socket.send_json({
                "type": "hello", "state": self._state_document(), "nowplaying": self._nowplaying_document(False),
                "clips": list(self.clips), "clock": self._clock(),
            })  # fmt: skip
            async for message in socket:
                if message.type != WSMsgType.TEXT or not self.buckets.allow(request.remote or "?"):
                    continue
                await self._on_socket_message(socket, message.data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sockets.discard(socket)
        return socket

    async def _on_socket_message(self, socket: web.WebSocketResponse, text: str) -> None:
        """``{"listener": ID}``: when did the stream of that listener start on the station clock?"""
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("listener"), str):
            start = self._listener_starts.get(message["listener"][:64])
            if start is not None and start.listener.start_seconds is not None:
                await socket.send_json({"type": "listener", "start_seconds": start.listener.start_seconds, "clock": self._clock()})

    def _clock(self) -> dict[str, float]:
        """The station clock (seconds of audio played) against wall time, for the page's scroll."""
        played = self.views.nowplaying().get("played_seconds", 0.0)
        return {"station_seconds": float(played or 0.0), "unix": time.time()}

    def _broadcast(self, message: dict[str, Any]) -> None:
        if not self._sockets:
            return
        text = json.dumps(message, ensure_ascii=False, default=str)
        for socket in list(self._sockets):
            if socket.closed:
                self._sockets.discard(socket)
                continue
            self._spawn(_send_quietly(socket, text))

    def _on_state_change(self, name: str, value: Any) -> None:
        # Setters run on any thread (OSC, HTTP, reload); push once per burst, on the loop.
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed or self._state_push_pending:
            return
        self._state_push_pending = True
        try:
            loop.call_soon_threadsafe(self._push_state)
        except RuntimeError:
            pass

    def _push_state(self) -> None:
        self._state_push_pending = False
        self._broadcast({"type": "state", "state": self._state_document()})

    # -- clips as they are heard (the audio clock's thread → the loop) ------------------------
    def _on_block(self, block: AudioBlock) -> None:
        now = block.now_playing
        if self._closed or self._loop is None:
            return
        # A new clip, or the same clip again from its start (the fallback when the next is late)
        last_index, last_offset = self._clip_on_air or (None, 0.0)
        self._clip_on_air = (now.clip_index, now.offset_seconds)
        if now.clip_index == last_index and now.offset_seconds >= last_offset:
            return
        clip = {
            "clip_index": now.clip_index,
            "title": now.title,
            "start_seconds": round(block.start_seconds - now.offset_seconds, 4),
            "duration_seconds": round(now.duration_seconds, 4),
            "played_at": time.time() - now.offset_seconds,
            "fallback": now.fallback,
            "art": art_url(now.clip_index) if now.image is not None else None,
        }
        try:
            self._loop.call_soon_threadsafe(self._on_clip, clip, now.image)
        except RuntimeError:
            pass

    def _on_clip(self, clip: dict[str, Any], image: Image.Image | None) -> None:
        # the history lists clips, not their repeats; the timeline (self.clips) has every start
        if self.clips and self.clips[-1]["clip_index"] != clip["clip_index"]:
            previous = self.clips[-1]
            if not self.history or self.history[0]["clip_index"] != previous["clip_index"]:
                self.history.appendleft(previous)
        self.clips.append(clip)
        if image is not None and clip["clip_index"] not in self._art:
            self._spawn(self._encode_art(clip["clip_index"], image))
        self._broadcast({"type": "clip", "clip": clip, "clock": self._clock()})

    async def _encode_art(self, index: int, image: Image.Image) -> None:
        self._remember_art(index, await asyncio.to_thread(_png, image))

    # -- the http outputs -------------------------------------------------------------------------
    async def _stream(self, request: web.Request) -> web.StreamResponse:
        from riffradio.sinks.http import ICY_METAINT_BYTES, StreamListener

        stream = self._streams[request.path]
        icy = stream.settings.format == "mp3" and request.headers.get("Icy-MetaData", "").strip() == "1"
        assert self._loop is not None
        listener = StreamListener(self._loop, icy=icy)
        try:
            remove = stream.add_listener(listener)
        except SinkError as error:
            return _text(503, str(error))
        key = urllib.parse.parse_qs(request.query_string).get("listener", [""])[0][:64]
        if key:
            self._listener_starts[key] = StreamStart(listener)
            while len(self._listener_starts) > 1024:
                self._listener_starts.popitem(last=False)
        headers = {
            "Content-Type": stream.content_type, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "icy-name": self.views.name, "icy-br": str(stream.settings.bitrate_kbps),
        }  # fmt: skip
        if icy:
            headers["icy-metaint"] = str(ICY_METAINT_BYTES)
        response = web.StreamResponse(headers=headers)
        try:
            await response.prepare(request)
            while True:
                data = await listener.next_bytes()
                if data is None:
                    break
                await asyncio.wait_for(response.write(data), IDLE_TIMEOUT_SECONDS)
        except (ConnectionError, asyncio.TimeoutError, asyncio.CancelledError):
            pass
        finally:
            remove()
        return response


@dataclasses.dataclass
class StreamStart:
    """A listener the page named (``?listener=ID``), so it can learn where its stream started."""

    listener: Any


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "riffradio"  # not the Python and aiohttp versions


async def _send_quietly(socket: web.WebSocketResponse, text: str) -> None:
    try:
        await asyncio.wait_for(socket.send_str(text), 10.0)
    except (ConnectionError, asyncio.TimeoutError, RuntimeError):
        await socket.close()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(document, ensure_ascii=False, default=str),
        content_type="application/json", charset="utf-8",
    )  # fmt: skip


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain", charset="utf-8", headers=headers)


def _error(status: int, field: str, message: str) -> web.Response:
    """A refused change: the field it names and the one-line reason (the same words as over OSC)."""
    return _json({"error": message, "field": field}, status)


async def serve_http(config: HttpConfig, views: StudioViews, environ: dict[str, str] | None = None) -> HttpServer:
    """Start serving the studio for ``views`` on ``config.host:config.port``; returns once listening.

    Args:
        config: the playlist's ``control.http``.
        views: what the server reads from and writes to the station.
        environ: where the edit token is looked up (``os.environ`` if None).

    Raises:
        OSError: the address cannot be bound (port in use, no such interface).
    """
    server = HttpServer(config, views, environ)
    await server.start()
    return server
