"""The station: wires playlist → plan/producer → buffer → consumer → fan-out → sinks, and control in.

``Station(playlist).run()`` loads the model (unless an engine is given), opens the outputs, starts
the control servers the playlist configures, produces the first clip, starts the audio clock and
plays until ``seconds`` of audio are out or :meth:`Station.stop` is called (SIGINT/SIGTERM), then
finishes the block in hand, finalises recordings and closes every output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.core.describe import describe_request
from riffradio.errors import RiffradioError
from riffradio.metrics import StationMetrics
from riffradio.playlist.loader import check_playlist
from riffradio.playlist.model import Playlist
from riffradio.sinks.base import Sink, SinkStatus
from riffradio.station.buffer import CrossfadeBuffer
from riffradio.station.consumer import DEFAULT_BLOCK_FRAMES, BlockListener, Consumer
from riffradio.station.producer import Engine, Producer, Vocoder, run_in_daemon_thread
from riffradio.station.state import StationState
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

CHANNELS = 2


def _raise_producer_error(task: asyncio.Task[None]) -> None:
    """Re-raise a finished producer's error as one line."""
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    if isinstance(error, RiffradioError):
        raise error
    message = str(error).splitlines()[0] if str(error) else ""
    raise RiffradioError(f"clip generation failed: {type(error).__name__}: {message}") from error


# The station keys the engine is loaded with: a reload cannot change them in a running station.
_ENGINE_STATION_KEYS = ("model", "device", "dtype", "scheduler", "compile")


class Station:
    """One radio station.

    Args:
        playlist: the checked playlist.
        engine: ``RiffEngine`` (or anything with ``riff(request)``); None loads ``model`` on ``run``.
        vocoder: ``Vocoder`` (or anything with ``image_to_audio``); None makes one on ``run``.
        model: overrides ``playlist.station.model`` when the engine is loaded here.
        device: overrides ``playlist.station.device``.
        dtype: overrides ``playlist.station.dtype``.
        sinks: the outputs; None builds them from ``playlist.outputs`` through the sink registry.
        realtime: play on the real-time clock (``play``); False renders as fast as possible.
        metrics: the station's Prometheus series (a fresh registry if None).
        block_frames: frames per audio block on the way to the sinks.
        control: start the OSC/HTTP servers of ``playlist.control``.
        worker_grace_seconds: after everything is closed, how long ``run`` waits for a riff still
            running in the worker thread (torch must not be running when the interpreter exits);
            the CLI passes 0 and leaves with ``os._exit`` instead, to stop within 5 s.
    """

    def __init__(
        self,
        playlist: Playlist,
        *,
        engine: Engine | None = None,
        vocoder: Vocoder | None = None,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        sinks: Sequence[Sink] | None = None,
        realtime: bool = True,
        metrics: StationMetrics | None = None,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        control: bool = True,
        worker_grace_seconds: float = 120.0,
    ) -> None:
        self.playlist = playlist
        self.path = playlist.path
        self.engine = engine
        self.vocoder = vocoder
        self.model = model or playlist.station.model
        self.device = device or playlist.station.device
        self.dtype = dtype or playlist.station.dtype
        self.realtime = realtime
        self.metrics = metrics or StationMetrics()
        self.block_frames = block_frames
        self.control = control
        self.worker_grace_seconds = worker_grace_seconds
        self.state = StationState(len(playlist.riffs))
        self.buffer = CrossfadeBuffer(
            CHANNELS, SAMPLE_RATE_HZ, playlist.station.crossfade_seconds, on_underrun=self._on_underrun
        )
        if sinks is None:
            from riffradio.sinks.registry import create_sinks

            sinks = create_sinks(playlist.outputs, str(playlist.path))
        self.sinks = list(sinks)
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.fanout: Any = None
        self.started_monotonic: float | None = None
        self._listeners: list[BlockListener] = []
        self._on_air_listeners: list[Callable[[], None]] = []
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._servers: list[Any] = []

    # -- for controllers (OSC, HTTP, reload, systemd) ------------------------------------------------
    def add_block_listener(self, listener: Callable[[AudioBlock], None]) -> None:
        """Call ``listener(block)`` on the audio clock thread after every block (e.g. the watchdog)."""
        self._listeners.append(listener)
        if self.consumer is not None:
            self.consumer.add_listener(listener)

    def add_on_air_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once the first block is on its way to the outputs (systemd READY=1)."""
        self._on_air_listeners.append(listener)

    def stop(self) -> None:
        """Ask the station to stop (thread- and signal-safe); ``run`` returns within a few seconds."""
        self._stop_requested = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass

    def fanout_statuses(self) -> list[SinkStatus]:
        if self.fanout is None:
            return [SinkStatus(name=sink.name) for sink in self.sinks]
        return list(self.fanout.statuses())

    @property
    def seconds_played(self) -> float:
        return self.consumer.seconds_played if self.consumer else 0.0

    def nowplaying(self) -> dict[str, Any]:
        """What is on air, as JSON-able data (AzuraCast-like): now, next, buffer, speed, outputs."""
        now = self.buffer.now_playing()
        pending = self.buffer.pending()
        producer = self.producer
        snapshot = self.state.snapshot()
        current = None
        if now is not None and now.request is not None:
            current = describe_request(now.request) | {"clip_index": now.clip_index}
            current.update(
                elapsed_seconds=round(now.offset_seconds, 3),
                duration_seconds=round(now.duration_seconds, 3),
                fallback=now.fallback,
            )
        upcoming = None
        if pending:
            upcoming = describe_request(pending[0].request) | {"clip_index": pending[0].index}
            upcoming["generation_seconds"] = round(pending[0].generation_seconds, 3)
            upcoming["duration_seconds"] = round(pending[0].duration_seconds, 3)
        elif producer is not None and producer.generating is not None:
            upcoming = describe_request(producer.generating.request) | {"clip_index": producer.generating.index}
            upcoming["generating"] = True
        return {
            "station": self.playlist.station.name,
            "playlist": str(self.path),
            "now": current,
            "next": upcoming,
            "buffered_seconds_ahead": round(self.buffer.seconds_ahead(snapshot.crossfade_seconds), 3),
            "realtime_factor": round(producer.realtime_factor, 3) if producer else 0.0,
            "underruns": self.buffer.underruns,
            "fallback_seconds": round(self.buffer.fallback_frames / SAMPLE_RATE_HZ, 3),
            "played_seconds": round(self.seconds_played, 3),
            "clips_generated": producer.clips_generated if producer else 0,
            "clips_dropped": producer.clips_dropped if producer else 0,
            "clips_committed": producer.clips_committed if producer else 0,
            "state_version": snapshot.version,
            "outputs": [dataclasses.asdict(status) for status in self.fanout_statuses()],
        }

    def clip_image(self, index: int) -> Any:
        """The spectrogram image of clip ``index`` if it is still in the buffer (playing or queued)."""
        playing = self.buffer.playing
        for clip in ([playing] if playing is not None else []) + self.buffer.pending():
            if clip.index == index:
                return clip.image
        return None

    def http_views(self) -> Any:
        """The narrow views the HTTP server gets (``riffradio.control.http.StudioViews``)."""
        from riffradio.control.http import StudioViews
        from riffradio.sinks.http import HttpStreamSink
        from riffradio.sinks.icecast import IcecastSink
        from riffradio.spectrogram.seeds import bundled_seed_image_names

        return StudioViews(
            name=self.playlist.station.name,
            state=self.state,
            metrics=self.metrics,
            nowplaying=self.nowplaying,
            outputs=self.fanout_statuses,
            add_block_listener=self.add_block_listener,
            clip_image=self.clip_image,
            riffs=lambda: [riff.prompt if riff.to is None else f"{riff.prompt} → {riff.to}" for riff in self.playlist.riffs],
            seed_images=tuple(bundled_seed_image_names()),
            streams=tuple(sink for sink in self.sinks if isinstance(sink, HttpStreamSink)),
            icecast_mounts=tuple(
                (sink.target.host, sink.target.port, sink.target.mount) for sink in self.sinks if isinstance(sink, IcecastSink)
            ),
        )

    def reload(self, path: str | Path | None = None) -> list[str]:
        """Re-read the playlist and switch to it at the next clip; returns the errors (empty on success).

        A broken file changes nothing: its ``file:line:column`` errors are logged and the old
        playlist keeps playing. Changes to ``outputs``, ``control`` and the engine's keys of
        ``station`` (model, device, dtype, scheduler, compile) need a restart.
        """
        path = Path(path) if path is not None else self.path
        playlist, errors = check_playlist(path)
        if errors or playlist is None:
            for error in errors:
                log.error("reload: %s", error)
            log.error("reload: %s has %d error(s); still playing the previous playlist", path, len(errors))
            return errors
        if playlist.outputs != self.playlist.outputs or playlist.control != self.playlist.control:
            log.warning("reload: outputs/control changed in %s; they take effect after a restart", path)
        engine_keys = [
            key for key in _ENGINE_STATION_KEYS
            if getattr(playlist.station, key) != getattr(self.playlist.station, key)
        ]  # fmt: skip
        if engine_keys:
            log.warning(
                "reload: station.%s changed in %s; the loaded model is kept until a restart",
                ", station.".join(engine_keys),
                path,
            )
        self.playlist = dataclasses.replace(playlist, outputs=self.playlist.outputs, control=self.playlist.control)
        self.path = path
        self.state.set_riff_count(len(playlist.riffs))
        if self.producer is not None:
            self.producer.switch_playlist(self.playlist)
        log.info("reload: %s: %d riff(s); switching at the next clip", path, len(playlist.riffs))
        return []

    # -- running ---------------------------------------------------------------------------------
    def _on_underrun(self, clip_index: int) -> None:
        self.metrics.underruns.inc()
        producer = self.producer
        rtf = producer.realtime_factor if producer else 0.0
        log.warning(
            "underrun: no clip ready after clip %d; repeating it with a crossfade (real-time factor %.2f, "
            "%.1f s per clip)",
            clip_index,
            rtf,
            producer.last_generation_seconds if producer else 0.0,
        )

    async def _load(self) -> None:
        if self.engine is None:
            from riffradio.engine.pipeline import RiffEngine

            log.info("loading %s on %s", self.model, self.device)
            spec = self.playlist.station
            self.engine = await run_in_daemon_thread(
                lambda: RiffEngine.load(
                    self.model, device=self.device, dtype=self.dtype, scheduler=spec.scheduler, compile=spec.compile
                )
            )
        if self.vocoder is None:
            from riffradio.spectrogram.vocoder import Vocoder as SpectrogramVocoder

            engine_device = getattr(self.engine, "device", "cpu")
            self.vocoder = SpectrogramVocoder(device=engine_device)

    async def _start_control(self) -> None:
        control = self.playlist.control
        for section, module_name, function_name in (
            (control.osc, "riffradio.control.osc", "serve_osc"),
            (control.http, "riffradio.control.http", "serve_http"),
        ):
            if section is None:
                continue
            where = f"{self.path}:{section.line}:{section.column}"
            try:
                module = __import__(module_name, fromlist=[function_name])
            except ModuleNotFoundError as error:
                raise RiffradioError(f"{where}: {module_name} is not installed ({error})") from None
            try:
                server = await getattr(module, function_name)(section, self.http_views() if section is control.http else self)
            except OSError as error:
                raise RiffradioError(f"{where}: cannot listen on {section.host}:{section.port}: {error.strerror or error}") from None
            self._servers.append(server)

    async def run(self, seconds: float | None = None) -> None:
        """Play until ``seconds`` of audio are out (None: until :meth:`stop`), then close everything."""
        from riffradio.sinks.fanout import Fanout

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            return
        from riffradio.control.connections import install_accept_error_log

        accept_errors = install_accept_error_log(self._loop)  # one line per 10 s when descriptors run out
        max_frames = None if seconds is None else int(round(seconds * SAMPLE_RATE_HZ))
        producer_task: asyncio.Task[None] | None = None
        self.fanout = Fanout(self.sinks, self.metrics)
        try:
            if self.control:
                await self._start_control()
            await self._wait_or_stop(self._load())
            if self._stop_requested:
                return
            sample_rate = int(getattr(getattr(self.vocoder, "params", None), "sample_rate_hz", SAMPLE_RATE_HZ))
            if sample_rate != SAMPLE_RATE_HZ:
                raise RiffradioError(f"the vocoder makes {sample_rate} Hz audio; the station runs at {SAMPLE_RATE_HZ} Hz")
            station = self.playlist.station
            assert self.engine is not None and self.vocoder is not None
            self.producer = Producer(
                self.playlist, self.state, self.engine, self.vocoder, self.buffer, SAMPLE_RATE_HZ, self.metrics,
                lookahead_clips=station.lookahead_clips, loudness_lufs=station.loudness_lufs,
                true_peak_dbtp=station.true_peak_dbtp, stop_on_error=not self.realtime,
            )  # fmt: skip
            producer_task = asyncio.create_task(self.producer.run(), name="riffradio producer")
            self.consumer = Consumer(
                self.buffer, self.fanout, self.state, self.metrics, SAMPLE_RATE_HZ, CHANNELS,
                realtime=self.realtime, block_frames=self.block_frames, max_frames=max_frames,
                true_peak_dbtp=station.true_peak_dbtp, producer_alive=lambda: not producer_task.done(),
            )  # fmt: skip
            for listener in self._listeners:
                self.consumer.add_listener(listener)
            # The clock starts with the first clip, so the first block is music, not silence.
            while self.buffer.pending_clips == 0 and not self._stop_requested:
                if producer_task.done():
                    _raise_producer_error(producer_task)
                    raise RiffradioError("the producer stopped before the first clip")
                await asyncio.wait([asyncio.ensure_future(self._stop_event.wait())], timeout=0.05)
            if self._stop_requested:
                return
            self.fanout.start()
            self.started_monotonic = time.monotonic()
            self.consumer.start()
            log.info("on air: %s (%s)", station.name, "real time" if self.realtime else "offline render")
            for on_air in self._on_air_listeners:
                on_air()
            finished = asyncio.ensure_future(run_in_daemon_thread(self.consumer.finished.wait))
            stop = asyncio.ensure_future(self._stop_event.wait())
            await asyncio.wait([finished, stop, producer_task], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if producer_task.done():
                _raise_producer_error(producer_task)
            if self.consumer.error is not None:
                raise RiffradioError(f"the audio clock failed: {self.consumer.error}")
        finally:
            await self._shutdown(producer_task)
            accept_errors.close()

    async def _wait_or_stop(self, work: Any) -> None:
        """Await ``work`` unless a stop comes first (model loading can take minutes)."""
        assert self._stop_event is not None
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()
        else:
            task.cancel()

    async def _shutdown(self, producer_task: asyncio.Task[None] | None) -> None:
        """Finish the block in hand, stop producing, finalise and close outputs, close servers."""
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop)
        if producer_task is not None:
            producer_task.cancel()
            await asyncio.gather(producer_task, return_exceptions=True)
        if self.fanout is not None:
            await asyncio.to_thread(self.fanout.close, 4.0)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.close(), 1.0)
            except Exception as error:  # noqa: BLE001 - closing must go on
                log.warning("closing a control server: %s", error)
        self._servers.clear()
        if self.producer is not None and self.worker_grace_seconds > 0:
            await run_in_daemon_thread(self.producer.idle.wait, self.worker_grace_seconds)
        log.info("stopped after %.1f s of audio (%d underruns)", self.seconds_played, self.buffer.underruns)
