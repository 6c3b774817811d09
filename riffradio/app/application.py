"""The composition root: one station with its engine, vocoder, outputs and controllers.

``StationApp(playlist, ...)`` builds, in data-flow order, the outputs of ``playlist.outputs``
and the :class:`~riffradio.station.station.Station`; :meth:`StationApp.run` then

1. guards the loop's accept errors (one line per 10 s when descriptors run out);
2. starts the controllers of ``playlist.control`` — OSC and HTTP, each given narrow views of the
   station (its state, its metrics, a now-playing callable), never the station itself;
3. with ``operations``, starts the systemd notifier, watchdog and status line and the playlist
   reloader (SIGHUP and file changes → :meth:`StationApp.reload`);
4. makes the vocoder on the engine's device (a stop meanwhile ends the run at once);
5. runs the station until its seconds are out or :meth:`StationApp.stop`, handing it the
   engine's load (:meth:`load_engine`, a worker thread, unless one was given): the station is on
   air with the seed material, starts the load and takes the engine when it arrives; a load
   that fails stops it with the load's one-line error, after the outputs are finalised;

and tears down in the opposite order: the station (audio, producer, outputs), the reloader, the
controllers, the notifier (``STOPPING=1``), the accept-error guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from riffradio.app.outputs import build_sinks, check_output
from riffradio.control.connections import install_accept_error_log
from riffradio.control.http import StudioViews, serve_http
from riffradio.control.osc import OscViews, serve_osc
from riffradio.control.reload import PlaylistReloader
from riffradio.control.systemd import Notifier, StatusReporter, Watchdog
from riffradio.engine.loading import resolve_device
from riffradio.engine.pipeline import RiffEngine
from riffradio.engine.rehearsal import REHEARSAL_MODEL, RehearsalEngine
from riffradio.errors import RiffradioError
from riffradio.metrics import StationMetrics
from riffradio.playlist.loader import check_playlist
from riffradio.playlist.model import Playlist
from riffradio.sinks.base import Sink
from riffradio.sinks.http import HttpStreamSink
from riffradio.sinks.icecast import IcecastSink
from riffradio.spectrogram.seeds import bundled_seed_image_names
from riffradio.station.consumer import DEFAULT_BLOCK_FRAMES
from riffradio.station.producer import Engine, Vocoder, run_in_daemon_thread
from riffradio.station.station import Station

log = logging.getLogger(__name__)

# The station keys the engine is loaded with: a reload cannot change them in a running station.
ENGINE_STATION_KEYS = ("model", "device", "dtype", "scheduler", "compile")


class StationApp:
    """A station, built and wired.

    Args:
        playlist: the checked playlist.
        engine: the diffusion engine; None loads ``model`` (:meth:`make_engine`) during :meth:`run`.
        vocoder: the vocoder; None makes one on the engine's device.
        model, device, dtype: override ``playlist.station``'s when the engine is loaded here.
        sinks: the outputs; None builds them from ``playlist.outputs``.
        realtime: play on the real-time clock (``play``); False renders as fast as possible.
        control: start the OSC/HTTP servers of ``playlist.control``.
        operations: run the systemd notifier/watchdog and the playlist reloader (``play``).
        metrics: the station's Prometheus series (a fresh registry if None).
        block_frames: frames per audio block on the way to the sinks.
        worker_grace_seconds: see :class:`~riffradio.station.station.Station`.

    Raises:
        RiffradioError: an output that cannot be built, at its ``file:line:column``.
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
        control: bool = True,
        operations: bool = False,
        metrics: StationMetrics | None = None,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        worker_grace_seconds: float = 120.0,
    ) -> None:
        self.playlist = playlist
        self.path = playlist.path
        self.engine = engine
        self.vocoder = vocoder
        self.model = model or playlist.station.model
        self.device = device or playlist.station.device
        self.dtype = dtype or playlist.station.dtype
        self.control = control
        self.operations = operations
        if sinks is None:
            sinks = build_sinks(playlist.outputs, str(playlist.path))
        self.station = Station(
            playlist, sinks=sinks, realtime=realtime, metrics=metrics, block_frames=block_frames,
            worker_grace_seconds=worker_grace_seconds,
        )  # fmt: skip
        self.servers: list[Any] = []  # the running controllers (OscServer, HttpServer), in start order
        self.notifier: Notifier | None = None
        self.reloader: PlaylistReloader | None = None
        self._loading = threading.Event()  # set while the engine loads in a worker thread
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # -- for the command line ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a worker thread still runs torch (loading the model, or making a riff)."""
        return self._loading.is_set() or self.station.busy

    def stop(self) -> None:
        """Ask everything to stop (thread- and signal-safe); :meth:`run` returns within a few seconds."""
        self._stop_requested = True
        self.station.stop()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass

    def reload(self, path: str | Path | None = None) -> list[str]:
        """Re-read the playlist and switch to it at the next clip; returns the errors (empty on success).

        A broken file changes nothing: its ``file:line:column`` errors are logged and the old
        playlist keeps playing. Changes to ``outputs``, ``control`` and the engine's keys of
        ``station`` (model, device, dtype, scheduler, compile) need a restart.
        """
        path = Path(path) if path is not None else self.path
        playlist, errors = check_playlist(path, check_output=check_output)
        if errors or playlist is None:
            for error in errors:
                log.error("reload: %s", error)
            log.error("reload: %s has %d error(s); still playing the previous playlist", path, len(errors))
            return errors
        if playlist.outputs != self.playlist.outputs or playlist.control != self.playlist.control:
            log.warning("reload: outputs/control changed in %s; they take effect after a restart", path)
        engine_keys = [
            key for key in ENGINE_STATION_KEYS
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
        self.station.switch_playlist(self.playlist)
        log.info("reload: %s: %d riff(s); switching at the next clip", path, len(playlist.riffs))
        return []

    # -- building ----------------------------------------------------------------------------------
    def make_engine(self) -> Engine:
        """The engine of ``model``, loaded (blocking: minutes for a real model on a CPU; a worker thread's work).

        ``none`` is the rehearsal engine; anything else a :class:`RiffEngine` with the
        playlist's engine keys.

        Raises:
            RiffradioError: one line: missing weights, not a model directory, no such device.
        """
        if self.model == REHEARSAL_MODEL:
            log.info("rehearsal: no model, each clip is its seed window (vocoder on %s)", self.device)
            return RehearsalEngine(self.device)
        log.info("loading %s on %s", self.model, self.device)
        spec = self.playlist.station
        return RiffEngine.load(self.model, device=self.device, dtype=self.dtype, scheduler=spec.scheduler, compile=spec.compile)

    async def load_engine(self) -> Engine:
        """The engine: the one given, or :meth:`make_engine` in a worker thread (kept as ``self.engine``)."""
        if self.engine is None:
            self._loading.set()

            def load() -> Engine:
                try:
                    return self.make_engine()
                finally:
                    self._loading.clear()

            self.engine = await run_in_daemon_thread(load)
        return self.engine

    async def make_vocoder(self) -> Vocoder:
        """The vocoder: the one given, or one made on the engine's device (the given engine's, else
        ``device`` resolved as the engine will resolve it), so it exists before the model loads."""
        if self.vocoder is None:
            engine = self.engine

            def make() -> Vocoder:
                # The vocoder's module imports torch (seconds): not at the top, so that `check` stays quick.
                from riffradio.spectrogram.vocoder import Vocoder as SpectrogramVocoder

                return SpectrogramVocoder(device=engine.device if engine is not None else resolve_device(self.device))

            self.vocoder = await run_in_daemon_thread(make)
        return self.vocoder

    def osc_views(self) -> OscViews:
        """The narrow views the OSC server gets."""
        station = self.station
        return OscViews(
            state=station.state, metrics=station.metrics, nowplaying=station.nowplaying,
            add_block_listener=station.add_block_listener,
        )  # fmt: skip

    def http_views(self) -> StudioViews:
        """The narrow views the HTTP server gets."""
        station = self.station
        return StudioViews(
            name=self.playlist.station.name,
            state=station.state,
            metrics=station.metrics,
            nowplaying=station.nowplaying,
            outputs=station.fanout_statuses,
            add_block_listener=station.add_block_listener,
            clip_image=station.clip_image,
            riffs=station.riff_titles,
            seed_images=tuple(bundled_seed_image_names()),
            streams=tuple(sink for sink in station.sinks if isinstance(sink, HttpStreamSink)),
            icecast_mounts=tuple(
                (sink.target.host, sink.target.port, sink.target.mount)
                for sink in station.sinks
                if isinstance(sink, IcecastSink)
            ),
        )

    async def _start_controllers(self) -> None:
        control = self.playlist.control
        starts: list[tuple[Any, Any]] = []
        if control.osc is not None:
            starts.append((control.osc, lambda: serve_osc(control.osc, self.osc_views())))
        if control.http is not None:
            starts.append((control.http, lambda: serve_http(control.http, self.http_views())))
        for section, start in starts:
            try:
                self.servers.append(await start())
            except OSError as error:
                where = f"{self.path}:{section.line}:{section.column}"
                reason = error.strerror or error
                raise RiffradioError(f"{where}: cannot listen on {section.host}:{section.port}: {reason}") from None

    async def _start_operations(self) -> None:
        station = self.station
        notifier = self.notifier = Notifier()
        watchdog = Watchdog(notifier)
        station.add_block_listener(lambda block: watchdog.pet())
        station.add_block_listener(StatusReporter(notifier, lambda: self.playlist.station.name).on_block)
        station.add_on_air_listener(lambda: notifier.ready(f"on air: {self.playlist.station.name}"))
        self.reloader = PlaylistReloader(self, self.path, notifier=notifier)
        await self.reloader.start()

    # -- running -----------------------------------------------------------------------------------
    async def run(self, seconds: float | None = None) -> None:
        """Start everything, play until ``seconds`` of audio are out (None: until :meth:`stop`), tear down."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            return
        accept_errors = install_accept_error_log(self._loop)
        try:
            if self.control:
                await self._start_controllers()
            if self.operations:
                await self._start_operations()
            await self._wait_or_stop(self.make_vocoder())
            if self._stop_requested:
                return
            assert self.vocoder is not None
            # On air with the seed material while the model loads: the station starts the load
            # once on air and takes the engine when it arrives, so a slow load never starts the
            # station in silence (a stop meanwhile leaves the loading thread to finish on its own).
            await self.station.run(self.load_engine(), self.vocoder, seconds)
        finally:
            await self._tear_down()
            accept_errors.close()

    async def _wait_or_stop(self, work: Awaitable[Any]) -> None:
        """Await ``work`` unless a stop comes first (importing torch and building the vocoder take seconds)."""
        assert self._stop_event is not None
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()
        else:
            task.cancel()

    async def _tear_down(self) -> None:
        """The reloader, the controllers, then ``STOPPING=1`` (the station has closed itself)."""
        if self.reloader is not None:
            await self.reloader.close()
            self.reloader = None
        for server in reversed(self.servers):
            try:
                await asyncio.wait_for(server.close(), 1.0)
            except Exception as error:  # noqa: BLE001 - closing must go on
                log.warning("closing a control server: %s", error)
        self.servers.clear()
        if self.notifier is not None:
            self.notifier.stopping()
