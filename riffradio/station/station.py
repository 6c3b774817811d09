"""The station: playlist → plan/producer → buffer → consumer → fan-out → sinks, with the state in the middle.

``Station(playlist, sinks=...)`` holds the live state, the buffer and the outputs;
``await station.run(engine, vocoder, seconds)`` goes on air with the seed material at once (in
real time; offline it waits for the first generated clip), takes the engine when it has loaded,
and plays until ``seconds`` of audio are out or :meth:`Station.stop` is called, then finishes
the block in hand, finalises recordings and closes every output. What builds the engine, the
vocoder, the sinks and the controllers is the application (``riffradio.app``), not the station.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from riffradio.core.defaults import SAMPLE_RATE_HZ
from riffradio.core.describe import describe_request
from riffradio.errors import RiffradioError
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import Playlist
from riffradio.sinks.base import Sink, SinkStatus
from riffradio.sinks.fanout import Fanout
from riffradio.station.buffer import CrossfadeBuffer
from riffradio.station.consumer import DEFAULT_BLOCK_FRAMES, BlockListener, Consumer
from riffradio.station.plan import START
from riffradio.station.producer import Engine, Producer, Vocoder, check_live_state, run_in_daemon_thread
from riffradio.station.state import StateSnapshot, StationState
from riffradio.core.types import AudioBlock

log = logging.getLogger(__name__)

CHANNELS = 2


def _raise_one_line(error: BaseException | None, what: str) -> None:
    """Raise ``error`` (if any) as one line: a RiffradioError as it is, else ``what: Type: first line``."""
    if error is None:
        return
    if isinstance(error, RiffradioError):
        raise error
    message = str(error).splitlines()[0] if str(error) else ""
    raise RiffradioError(f"{what}: {type(error).__name__}: {message}") from error


def _raise_producer_error(task: asyncio.Task[None]) -> None:
    """Re-raise a finished producer's error as one line."""
    if not task.cancelled():
        _raise_one_line(task.exception(), "clip generation failed")


class Station:
    """One radio station.

    Args:
        playlist: the checked playlist.
        sinks: the outputs (the application builds them from ``playlist.outputs``).
        realtime: play on the real-time clock (``play``); False renders as fast as possible.
        metrics: the station's Prometheus series (a fresh registry if None).
        block_frames: frames per audio block on the way to the sinks.
        worker_grace_seconds: after everything is closed, how long ``run`` waits for a riff still
            running in the worker thread (torch must not be running when the interpreter exits);
            the CLI passes 0 and leaves with ``os._exit`` instead, to stop within 5 s.
    """

    def __init__(
        self,
        playlist: Playlist,
        *,
        sinks: Sequence[Sink] = (),
        realtime: bool = True,
        metrics: StationMetrics | None = None,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        worker_grace_seconds: float = 120.0,
    ) -> None:
        self.playlist = playlist
        self.realtime = realtime
        self.metrics = metrics or StationMetrics()
        self.block_frames = block_frames
        self.worker_grace_seconds = worker_grace_seconds
        self.state = StationState(len(playlist.riffs), validator=self._check_live_state)
        self.buffer = CrossfadeBuffer(
            CHANNELS, SAMPLE_RATE_HZ, playlist.station.crossfade_seconds, on_underrun=self._on_underrun
        )
        self.sinks = list(sinks)
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.fanout: Fanout | None = None
        self.started_monotonic: float | None = None
        self._listeners: list[BlockListener] = []
        self._on_air_listeners: list[Callable[[], None]] = []
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._arriving: asyncio.Future[Engine] | None = None  # the engine's load, once started

    # -- for the application and its controllers ---------------------------------------------------
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

    def _check_live_state(self, candidate: StateSnapshot) -> None:
        """Every DJ change is planned and resolved before the state takes it (ValueError: refused)."""
        producer = self.producer
        if producer is None:
            check_live_state(self.playlist, candidate, START)
        else:
            check_live_state(self.playlist, candidate, producer.position, producer.engine)

    def fanout_statuses(self) -> list[SinkStatus]:
        if self.fanout is None:
            return [SinkStatus(name=sink.name) for sink in self.sinks]
        return list(self.fanout.statuses())

    @property
    def busy(self) -> bool:
        """True while a riff is being made in a worker thread (torch may be running)."""
        return self.producer is not None and self.producer.busy

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
            "playlist": str(self.playlist.path),
            "now": current,
            "next": upcoming,
            "crossfade_seconds": self.buffer.crossfade_seconds if snapshot.crossfade_seconds is None else snapshot.crossfade_seconds,
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

    def riff_titles(self) -> list[str]:
        """The playlist's riffs as listeners would see them (``"A → B"`` for a transition)."""
        return [riff.prompt if riff.to is None else f"{riff.prompt} → {riff.to}" for riff in self.playlist.riffs]

    def switch_playlist(self, playlist: Playlist) -> None:
        """Play ``playlist`` from the next clip on (a reload checked by the application).

        The outputs and control sections stay those the station was built with.
        """
        self.playlist = dataclasses.replace(playlist, outputs=self.playlist.outputs, control=self.playlist.control)
        self.state.set_riff_count(len(playlist.riffs))
        if self.producer is not None:
            self.producer.switch_playlist(self.playlist)

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

    async def run(self, engine: Engine | Awaitable[Engine], vocoder: Vocoder, seconds: float | None = None) -> None:
        """Play until ``seconds`` of audio are out (None: until :meth:`stop`), then close everything.

        In real time the station is on air at once with the seed material (the first clip's seed
        window, vocoded, on the grid), which the buffer repeats on the grid while ``engine`` is
        still loading — minutes for a real model on a CPU — and until the first generated clip
        is ready; that clip then cuts in at its place on the grid. Offline the render waits for
        the engine and starts with the first generated clip.

        Args:
            engine: the engine that makes the spectrogram images, or an awaitable of it (the
                application's model load): in real time awaited from when the station is on air,
                offline at once.
            vocoder: turns them into audio at the station's 44.1 kHz (needed from the start).
            seconds: of audio to play, or None.

        Raises:
            RiffradioError: the vocoder's rate is not the station's, the engine could not be
                loaded (after the outputs are finalised), the producer failed (offline render)
                or the audio clock failed.
        """
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._arriving = None
        if self._stop_requested:
            self._drop_engine_load(engine)
            return
        max_frames = None if seconds is None else int(round(seconds * SAMPLE_RATE_HZ))
        producer_task: asyncio.Task[None] | None = None
        self.fanout = Fanout(self.sinks, self.metrics)
        try:
            sample_rate = vocoder.params.sample_rate_hz
            if sample_rate != SAMPLE_RATE_HZ:
                raise RiffradioError(f"the vocoder makes {sample_rate} Hz audio; the station runs at {SAMPLE_RATE_HZ} Hz")
            station = self.playlist.station
            self.producer = Producer(
                self.playlist, self.state, None, vocoder, self.buffer, SAMPLE_RATE_HZ, self.metrics,
                lookahead_clips=station.lookahead_clips, loudness_lufs=station.loudness_lufs,
                true_peak_dbtp=station.true_peak_dbtp, stop_on_error=not self.realtime,
                clip_samples=vocoder.params.clip_samples,
            )  # fmt: skip
            self.consumer = Consumer(
                self.buffer, self.fanout, self.state, self.metrics, SAMPLE_RATE_HZ, CHANNELS,
                realtime=self.realtime, block_frames=self.block_frames, max_frames=max_frames,
                true_peak_dbtp=station.true_peak_dbtp,
                producer_alive=lambda: producer_task is not None and not producer_task.done(),
            )  # fmt: skip
            for listener in self._listeners:
                self.consumer.add_listener(listener)
            if self.realtime:
                # On air at once: the seed material (the first clip's seed window, vocoded, on the
                # grid) plays while the engine loads and until the first generated clip is ready.
                overlap = self.producer.overlap_samples(self.state.snapshot().crossfade_seconds)
                self.buffer.push(await run_in_daemon_thread(self.producer.seed_clip, overlap))
            elif not await self._engine_arrived(engine):
                return
            if self._stop_requested:
                return
            if self.producer.engine is not None:
                producer_task = asyncio.create_task(self.producer.run(), name="riffradio producer")
            # Offline, the clock starts with the first clip, so the first block is music, not silence.
            while self.buffer.pending_clips == 0 and not self._stop_requested:
                if producer_task is not None and producer_task.done():
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
            # On air with the seed material while the engine loads (a stop or the end may come first).
            if producer_task is None and await self._engine_arrived(engine, finished):
                producer_task = asyncio.create_task(self.producer.run(), name="riffradio producer")
            if producer_task is not None:
                stop = asyncio.ensure_future(self._stop_event.wait())
                await asyncio.wait([finished, stop, producer_task], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if producer_task.done():
                    _raise_producer_error(producer_task)
            if self.consumer.error is not None:
                raise RiffradioError(f"the audio clock failed: {self.consumer.error}")
        finally:
            self._drop_engine_load(engine)
            await self._shutdown(producer_task)

    async def _engine_arrived(self, engine: Engine | Awaitable[Engine], *also: asyncio.Future[Any]) -> bool:
        """Hand the producer the engine once it is there; False if a stop (or ``also``) came first.

        An awaitable is started here: in real time once the station is on air, so that loading
        the model does not hold up the seed material on a machine with few cores.

        Raises:
            RiffradioError: the engine failed to load (its own one-line error, or one made of it).
        """
        assert self._stop_event is not None and self.producer is not None
        if not inspect.isawaitable(engine):
            self.producer.engine = engine
            return True
        arriving = self._arriving = asyncio.ensure_future(engine)
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait([arriving, stop, *also], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not arriving.done() or arriving.cancelled() or self._stop_requested:
            return False
        _raise_one_line(arriving.exception(), "the engine could not be loaded")
        self.producer.engine = arriving.result()
        log.info("engine ready: generated clips follow the seed material" if self.realtime else "engine ready")
        return True

    def _drop_engine_load(self, engine: Engine | Awaitable[Engine]) -> None:
        """A load still running when the station stops is abandoned (its thread is the caller's to
        wait for or not); one never started is closed."""
        if self._arriving is None:
            if inspect.iscoroutine(engine):
                engine.close()
        elif not self._arriving.done():
            self._arriving.cancel()

    async def _shutdown(self, producer_task: asyncio.Task[None] | None) -> None:
        """Finish the block in hand, stop producing, finalise and close outputs, let the worker finish."""
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop)
        if producer_task is not None:
            producer_task.cancel()
            await asyncio.gather(producer_task, return_exceptions=True)
        if self.fanout is not None:
            await asyncio.to_thread(self.fanout.close, 4.0)
        if self.producer is not None and self.worker_grace_seconds > 0:
            await run_in_daemon_thread(self.producer.idle.wait, self.worker_grace_seconds)
        log.info("stopped after %.1f s of audio (%d underruns)", self.seconds_played, self.buffer.underruns)
