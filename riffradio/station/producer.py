"""The producer: an asyncio task that plans clips and has them made off the event loop.

Each step (1) snapshots the station state, (2) on a new state version drops queued clips of
older versions and rewinds the plan and the timeline to just after the clip playing, (3) waits
while ``lookahead_clips`` are already queued, (4) plans the next clip (a pure function), (5) in a
worker thread places it on the timeline (:func:`~riffradio.core.timeline.place_clip`: its start,
and the window of the seed loop it starts from) and runs engine + vocoder + loudness
normalisation — abandoning the clip between UNet steps or Griffin-Lim iterations if the state
changes meanwhile — and (6) queues the clip in the buffer, which plays it at its place.

Before the first generated clip, :meth:`Producer.seed_clip` makes the seed material the station
plays from the start (the first clip's seed window, vocoded and normalised, no diffusion).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from riffradio.core.timeline import LoopShape, Placement, TimelineCursor, cursor_after, overlap_samples, place_clip
from riffradio.engine.continuation import LATENT_COLUMN_PIXELS, latent_column_seconds
from riffradio.core.types import Clip, RiffRequest, RiffResult
from riffradio.errors import CancelCheck, Cancelled
from riffradio.metrics import StationMetrics
from riffradio.playlist.model import Playlist
from riffradio.station.buffer import CrossfadeBuffer, match_channels
from riffradio.station.loudness import normalise_clip, overlap_match_db
from riffradio.station.plan import START, PlanPosition, PlannedClip, plan_next
from riffradio.station.state import StateSnapshot, StationState

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from riffradio.spectrogram.params import SpectrogramParams
    from riffradio.spectrogram.vocoder import VocodedClip

log = logging.getLogger(__name__)

T = TypeVar("T")
# A change is planned once the state has been still this long: the messages of one gesture
# (a prompt and its seed, a controller's burst) come within a few ms of each other.
DEFAULT_SETTLE_SECONDS = 0.05
# A state that keeps changing this long is a fader being moved: plan with its state of now and
# let that clip finish, so the music follows the move instead of restarting at every message.
DEFAULT_MAX_SETTLE_SECONDS = 0.5
_MAX_FAILURE_BACKOFF_SECONDS = 10.0
#: a live state whose clips fail this many times in a row is rolled back to the last that made one
ROLLBACK_AFTER_FAILED_CLIPS = 3


class Engine(Protocol):
    """What the producer needs of the diffusion engine (:class:`riffradio.engine.pipeline.RiffEngine`)."""

    @property
    def device(self) -> torch.device:
        """Where the engine runs (the vocoder runs there too)."""

    def riff(
        self, request: RiffRequest, should_cancel: CancelCheck | None = None, previous_latents: Any = None
    ) -> RiffResult:
        """The spectrogram image for ``request``; raises ``Cancelled`` when ``should_cancel()`` says so.

        ``previous_latents`` is the ``RiffResult.latents`` of the clip this one continues (the
        engine's own kind: a latent tensor, or the rehearsal engine's pixels); the producer
        passes it only to continue a clip whose result had some
        (:meth:`riffradio.engine.pipeline.RiffEngine.riff`, :meth:`riffradio.engine.rehearsal.RehearsalEngine.riff`).
        """


def check_live_state(playlist: Playlist, snapshot: StateSnapshot, position: PlanPosition, engine: Any = None) -> None:
    """Raise ``ValueError`` (one line) if ``snapshot`` would make a clip that cannot be made.

    Plans the next clip from ``position`` and the first clip of every riff under ``snapshot``
    (live knobs apply to all of them), resolves their seed and mask images and, when the engine
    can say (``engine.check_request``), checks their knobs the way it would. So a seed image
    that does not resolve, a spec with ``bpm=nan`` or steps too few for the denoising are refused
    to the controller that sent them, and the music goes on as it was.
    """
    from riffradio.spectrogram.seeds import load_seed_image

    check_request = getattr(engine, "check_request", None)
    positions = [position] + [
        replace(position, riff_index=index, clip=0, live=None, jump_count=snapshot.jump_count)
        for index in range(len(playlist.riffs))
    ]
    checked: set[RiffRequest] = set()
    try:
        for start in positions:
            request = plan_next(playlist, snapshot, start)[0].request
            if request in checked:
                continue
            checked.add(request)
            for reference in (request.seed_image, request.mask_image):
                if reference:
                    load_seed_image(reference)  # cached: the producer finds it resolved
            if check_request is not None:
                check_request(request)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - RiffradioError, a spec the maths refuses, ...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(message) from None


class Vocoder(Protocol):
    """What the producer needs of the vocoder (:class:`riffradio.spectrogram.vocoder.Vocoder`)."""

    params: SpectrogramParams
    """The spectrogram's parameters; ``params.sample_rate_hz`` is the audio's rate."""

    def image_to_audio(self, image: Image.Image, should_cancel: CancelCheck | None = None) -> np.ndarray:
        """Float32 audio ``(channels, samples)`` (or ``(samples,)``) at ``params.sample_rate_hz``."""

    def decode(
        self,
        image: Image.Image,
        should_cancel: CancelCheck | None = None,
        previous: VocodedClip | None = None,
        overlap_frames: int = 0,
    ) -> VocodedClip:
        """:meth:`image_to_audio` continuing the phase of ``previous`` over ``overlap_frames`` shared frames."""


@dataclass(frozen=True)
class MadeClip:
    """What the clip after a generated clip may continue (kept by the producer for a few clips).

    Attributes:
        placement: where the clip sits on the timeline.
        latents: its engine result's ``latents`` (final latents, or the rehearsal engine's pixels;
            None: the engine gave none, nothing to keep).
        vocoded: its decoded audio and phase (for a phase-continuous join).
        gain_db: the loudness gain it ends at (the next clip starts level with it).
    """

    placement: Placement
    latents: Any
    vocoded: VocodedClip
    gain_db: float


def continued_request(request: RiffRequest, previous: Placement | None, hop_samples: int) -> RiffRequest:
    """``request`` with the continuation it really gets after ``previous`` (pure).

    A clip continues the one before only if that one sits right before it on the timeline and
    overlaps it by whole latent columns: then the whole overlap is kept (the crossfade mixes
    two renderings of the same columns). Otherwise — the first clip, a continuation just turned
    on after a crossfade-only overlap — ``continuation_seconds`` becomes 0: the clip is made on
    its own. ``hop_samples`` is one image column (441 samples at 44.1 kHz).
    """
    column_samples = LATENT_COLUMN_PIXELS * hop_samples
    overlap = 0 if previous is None else previous.overlap_samples
    if request.continuation_seconds <= 0 or overlap <= 0 or overlap % column_samples:
        return request if request.continuation_seconds == 0 else replace(request, continuation_seconds=0.0)
    return replace(request, continuation_seconds=overlap // column_samples * latent_column_seconds())


SEED_CLIP_INDEX = -1  # the seed material played before the first generated clip


def seed_loop_shape(reference: str) -> LoopShape:
    """The timeline's view of a seed loop (loads and caches it; one-line RiffradioError if it cannot)."""
    from riffradio.spectrogram.seeds import load_seed_loop

    loop = load_seed_loop(reference)
    return LoopShape(reference, loop.loop_samples, loop.bars, loop.beats_per_bar)


async def run_in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` in a fresh daemon thread and await its result.

    A daemon thread (not an executor's) so that a riff still running on a slow CPU when the station
    stops never holds up the process exit: SIGTERM must be done within 5 s.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = function(*args), None
        except BaseException as caught:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, caught
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: the station stopped meanwhile
            pass

    threading.Thread(target=work, name="riffradio generate", daemon=True).start()
    return await future


class Producer:
    """Plans and generates clips into ``buffer`` ahead of playback.

    Args:
        playlist: what to play (replaced by :meth:`switch_playlist` on reload).
        state: the live state, snapshotted before each clip is planned.
        engine: anything with ``riff(request, should_cancel, previous_latents) -> RiffResult``
            (``RiffEngine``, ``RehearsalEngine``); may be set after construction (the seed
            material needs none: the station sets it when the model has loaded), before :meth:`run`.
        vocoder: anything with ``image_to_audio(image, should_cancel) -> (channels, samples)`` (``Vocoder``).
        buffer: where clips go.
        sample_rate_hz: the vocoder's output rate.
        metrics: the station's Prometheus series.
        lookahead_clips: clips queued ahead of the one playing before the producer waits.
        loudness_lufs: loudness target of every clip (BS.1770), as played: in ``buffer``'s
            channels and after the output's true-peak limiter.
        true_peak_dbtp: the ceiling of that limiter (None: normalise without regard to it).
        keep_images: keep each clip's spectrogram image (for a video output).
        stop_on_error: raise the first generation error (offline render) instead of logging it
            and retrying while the buffer keeps playing (live).
        settle_seconds: after a change, the state must be still this long before the next clip
            is planned (one gesture's messages become one change).
        max_settle_seconds: if it is still changing after this long (a fader being moved), the
            clip is planned with the state of that moment and *committed*: later changes do not
            abandon it; the clip after it takes them, once the committed clip is heard (a fast
            engine would otherwise replace every queued committed clip before its place on the
            timeline came). Changes that settle keep abandoning the clip in the making, and
            replace a queued one, as before.
        clip_samples: the vocoder's clip length (5.12 s), for the timeline.
    """

    def __init__(
        self,
        playlist: Playlist,
        state: StationState,
        engine: Engine | None,
        vocoder: Vocoder,
        buffer: CrossfadeBuffer,
        sample_rate_hz: int,
        metrics: StationMetrics,
        lookahead_clips: int = 2,
        loudness_lufs: float = -14.0,
        true_peak_dbtp: float | None = None,
        keep_images: bool = True,
        stop_on_error: bool = False,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        max_settle_seconds: float = DEFAULT_MAX_SETTLE_SECONDS,
        clip_samples: int = 225_792,
    ) -> None:
        self.playlist = playlist
        self.state = state
        self.engine = engine
        self.vocoder = vocoder
        self.buffer = buffer
        self.sample_rate_hz = sample_rate_hz
        self.metrics = metrics
        self.lookahead_clips = lookahead_clips
        self.loudness_lufs = loudness_lufs
        self.true_peak_dbtp = true_peak_dbtp
        self.keep_images = keep_images
        self.stop_on_error = stop_on_error
        self.settle_seconds = settle_seconds
        self.max_settle_seconds = max_settle_seconds
        self.clip_samples = clip_samples
        self.position: PlanPosition = START
        self.cursor = TimelineCursor()  # where the next clip goes on the timeline
        self.realtime_factor = 0.0
        self.last_generation_seconds = 0.0
        self.clips_generated = 0
        self.clips_dropped = 0
        self.clips_committed = 0  # planned while the state kept changing, not abandoned
        self.generating: PlannedClip | None = None
        self.idle = threading.Event()  # clear while a worker thread runs the engine
        self.idle.set()
        self._version = state.snapshot().version
        self._planned_version = self._version  # the state version the last clip was planned under
        self._committed_index: int | None = None  # the last committed clip queued
        self._seed_placement: Placement | None = None  # the seed material's, until the first clip is placed
        self._gain_db: float | None = None
        self._after: OrderedDict[int, PlanPosition] = OrderedDict()  # clip index -> position after it
        self._made: OrderedDict[int, MadeClip] = OrderedDict()  # the last few generated clips, to continue
        self._failures = 0
        self._good_state = state.snapshot()  # the last state that made a clip (or the first one)
        self.rollbacks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # set on every state change and every clip started

    @property
    def busy(self) -> bool:
        """True while a worker thread is making a clip (torch may be running)."""
        return not self.idle.is_set()

    def wake(self) -> None:
        """Something the producer waits for may have changed (thread-safe: the state's and the buffer's listeners)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed: the station stopped
            pass

    async def _wait_for_wake(self, timeout_seconds: float | None = None) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_seconds)
        except asyncio.TimeoutError:
            pass

    # -- control ---------------------------------------------------------------------------------
    def switch_playlist(self, playlist: Playlist) -> None:
        """Use ``playlist`` from the next clip planned on (a reload).

        A playlist whose riffs changed starts at its first riff, from its first clip and its own
        seeds (keeping the old place would skip into, or past, the new first riff); one with the
        same riffs (a change of station values only) keeps its place. A live prompt stays.
        """
        def written(riffs: tuple[Any, ...]) -> list[Any]:  # what a riff says, not where it stands in the file
            return [replace(riff, line=0, column=0) for riff in riffs]

        if written(playlist.riffs) != written(self.playlist.riffs):
            self.position = replace(self.position, riff_index=0, clip=0, loop=0, seed_shift=0)
            self._after.clear()  # places in the old playlist mean nothing in the new one
            self.state.advance_riff(0)
        self.playlist = playlist

    # -- the task --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Produce forever (until cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        unsubscribe = self.state.subscribe(lambda _name, _value: self.wake())
        self.buffer.add_change_listener(self.wake)
        try:
            await self._produce()
        finally:
            unsubscribe()
            self.buffer.remove_change_listener(self.wake)

    async def _produce(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()  # before looking: a change from now on wakes the wait below
            snapshot = self.state.snapshot()
            if snapshot.version != self._version:
                self._replan(snapshot.version)
            if self.buffer.pending_clips_since(snapshot.version) >= self.lookahead_clips:
                await self._wait_for_wake()
                continue
            committed = False
            if snapshot.version != self._planned_version:
                committed = not await self._wait_until_settled()
                snapshot = self.state.snapshot()
                if snapshot.version != self._version:
                    self._replan(snapshot.version)
            planned, after = plan_next(self.playlist, snapshot, self.position)
            self._planned_version = snapshot.version
            self.position = after
            self.state.advance_riff(after.riff_index)
            self.generating = planned
            if committed:
                self.clips_committed += 1
                self.metrics.clips_committed.inc()
                log.info(
                    "clip %d: the station state is still changing (a fader being moved?): made with "
                    "its state of now and finished whatever comes; the next clip takes the rest",
                    planned.index,
                )
            try:
                self.idle.clear()
                overlap = self.overlap_samples(snapshot.crossfade_seconds, planned.request.continuation_seconds)
                clip, gain_db = await run_in_daemon_thread(self._generate_then_idle, planned, committed, overlap)
            except Cancelled:
                # The DJ changed the state while this clip was being made: it would be dropped
                # on arrival anyway, so stop it now and make the new state's clip next.
                self._count_dropped([planned.index], "abandoned mid-generation, the station state changed")
                continue
            except Exception as error:  # noqa: BLE001 - one bad clip must not stop the music
                if self.stop_on_error:
                    raise
                self._failures += 1
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                if self._roll_back_if_stuck(planned, snapshot, reason):
                    continue
                backoff = min(_MAX_FAILURE_BACKOFF_SECONDS, 0.5 * 2 ** min(self._failures, 5))
                log.error(
                    "clip %d: generation failed: %s (retrying in %.1f s; the buffer keeps playing)",
                    planned.index,
                    reason,
                    backoff,
                )
                await asyncio.sleep(backoff)
                continue
            finally:
                self.generating = None
            self._failures = 0
            self._good_state = snapshot
            self._after[planned.index] = after
            while len(self._after) > 64:
                self._after.popitem(last=False)
            dropped = self.buffer.push(clip)
            if clip in dropped:
                self._count_dropped([clip.index], "a clip made under a newer station state is queued")
                continue
            self._gain_db = gain_db
            if committed:
                self._committed_index = clip.index
            self._count_dropped([c.index for c in dropped], "the station state changed")

    def _roll_back_if_stuck(self, planned: PlannedClip, snapshot: StateSnapshot, reason: str) -> bool:
        """The last line of defence: after :data:`ROLLBACK_AFTER_FAILED_CLIPS` failures in a row
        under a live state, put back the last state that made a clip; True if it did."""
        if self._failures < ROLLBACK_AFTER_FAILED_CLIPS:
            return False
        changed = self.state.roll_back(
            self._good_state, f"{self._failures} clips in a row failed ({reason}); back to the last state that made a clip"
        )
        if not changed:
            return False  # the playlist's own values fail: nothing live to undo
        self.rollbacks += 1
        self._failures = 0
        log.error(
            "clip %d: %d clips in a row failed with the live state of now (%s); rolled back %s to the "
            "last state that made a clip",
            planned.index, ROLLBACK_AFTER_FAILED_CLIPS, reason, ", ".join(changed),
        )  # fmt: skip
        return True

    def _committed_unheard(self) -> bool:
        """True while the last committed clip waits in the buffer for its place."""
        return self._committed_index is not None and any(
            clip.index == self._committed_index for clip in self.buffer.pending()
        )

    async def _wait_until_settled(self) -> bool:
        """Wait until the state has been still for ``settle_seconds``; False if it still changes
        after ``max_settle_seconds`` and no committed clip is still waiting to be heard."""
        assert self._wake is not None
        started = last_change = time.monotonic()
        version = self.state.snapshot().version
        while True:
            now = time.monotonic()
            still_for, changing_for = now - last_change, now - started
            if still_for >= self.settle_seconds:
                return True
            if changing_for >= self.max_settle_seconds and not self._committed_unheard():
                return False
            timeout = self.settle_seconds - still_for
            if changing_for < self.max_settle_seconds:
                timeout = min(timeout, self.max_settle_seconds - changing_for)
            self._wake.clear()
            if self.state.snapshot().version == version:
                await self._wait_for_wake(timeout)  # a change, or the committed clip starting, wakes it
            current = self.state.snapshot().version
            if current != version:
                version, last_change = current, time.monotonic()

    def _replan(self, version: int) -> None:
        """Continue the plan from the clip heard now; the next clip is made with the new state.

        Queued clips of the old state keep playing until that clip arrives, which replaces them
        and cuts in at once (see :meth:`CrossfadeBuffer.push`), so the station never goes silent.
        """
        self._version = version
        anchor = self.buffer.playing
        if anchor is not None and anchor.index in self._after:
            self.position = replace(self._after[anchor.index], index=self.position.index)
            if anchor.placement is not None:
                self.cursor = cursor_after(anchor.placement)

    def _count_dropped(self, clip_indices: list[int], why: str) -> None:
        if not clip_indices:
            return
        self.clips_dropped += len(clip_indices)
        self.metrics.clips_dropped.inc(len(clip_indices))
        log.info("dropped clip(s) %s: %s", ", ".join(str(index) for index in clip_indices), why)

    # -- the worker thread -----------------------------------------------------------------------
    def _generate_then_idle(self, planned: PlannedClip, committed: bool, overlap: int) -> tuple[Clip, float]:
        try:
            return self.generate(self.place(planned, overlap), committed)
        finally:
            self.idle.set()

    def overlap_samples(self, crossfade_seconds: float | None, continuation_seconds: float = 0.0) -> int:
        """How much of a clip the next one overlaps at ``crossfade_seconds`` (None: the buffer's default).

        Without continuation, the crossfade rounded up to whole image columns (441 samples), so
        the vocoder continues the previous clip's phase at any crossfade (:meth:`_phase_start`).
        With continuation on, whole latent columns (3 528 samples): the continuation or the
        crossfade rounded up, whichever is longer, at most half a clip — the next clip keeps all
        of it (:func:`continued_request`), so the crossfade lies inside what both clips share.
        """
        crossfade = self.buffer.crossfade_seconds if crossfade_seconds is None else crossfade_seconds
        hop = self.vocoder.params.hop_length_samples
        return overlap_samples(
            crossfade, continuation_seconds, self.sample_rate_hz, self.clip_samples, LATENT_COLUMN_PIXELS * hop, hop
        )

    def place(self, planned: PlannedClip, overlap: int, advance: bool = True) -> PlannedClip:
        """``planned`` placed at the timeline cursor, its request asking for the seed window there.

        Advances the cursor unless ``advance`` is False. Loads the seed loop (worker thread:
        synthesis or a file); a reference that cannot be loaded raises its one-line error.
        """
        loop = seed_loop_shape(planned.request.seed_image)
        at = self.cursor
        if advance and self._seed_placement is not None:
            # The first clip after the seed material goes where the seed material is now on its
            # grid (it cuts in late only by its own making), not where the seed began: a model
            # that loads for a while would leave it little or nothing to play before the next.
            seed, self._seed_placement = self._seed_placement, None
            at = TimelineCursor(max(seed.start_samples, self.buffer.plan_position_samples), seed.grid)
        placement, cursor = place_clip(at, loop, self.clip_samples, overlap)
        if advance:
            self.cursor = cursor
        request = replace(planned.request, seed_window_start_samples=placement.window_start_samples)
        return replace(planned, request=request, placement=placement)

    def _made_before(self, placement: Placement | None) -> MadeClip | None:
        """The most recent generated clip that ends where ``placement`` begins its overlap (right before it)."""
        if placement is None:
            return None
        for made in reversed(self._made.values()):
            if made.placement.next_start_samples == placement.start_samples:
                return made
        return None

    def _phase_start(self, previous: MadeClip | None) -> dict[str, Any]:
        """``decode``'s arguments that continue ``previous``'s phase over a crossfade-only overlap.

        Only for a clip right before on the timeline whose overlap is whole image columns (frames
        line up: :meth:`overlap_samples` rounds any crossfade up to them); none (``{}``: decoded
        alone, as :meth:`Vocoder.image_to_audio`) otherwise.
        The known frames stay locked through Griffin-Lim (``decode``'s default): on recorded
        music at a 0.5 s crossfade the overlap's correlation is −0.12 decoded alone, 0.79 with
        the phase only as a start and 0.98 locked, and the rest of the clip decodes as well
        (within 0.2 dB spectral convergence; bench/seams.py, docs/benchmarks.md).
        """
        hop = self.vocoder.params.hop_length_samples
        if previous is None or previous.placement.overlap_samples <= 0 or previous.placement.overlap_samples % hop:
            return {}
        return {"previous": previous.vocoded, "overlap_frames": previous.placement.overlap_samples // hop}

    def _level_start(self, previous: MadeClip | None, vocoded: VocodedClip) -> dict[str, Any]:
        """``normalise_clip``'s arguments that start a clip level with ``previous`` over their overlap.

        The vocoder peak-normalises each clip, so the same overlap comes out of two clips at
        levels that differ by their peaks' ratio (1.4–3.6 dB on recorded music, bench/seams.py):
        the new clip starts at the previous clip's gain plus :func:`overlap_match_db`, holds it
        across the overlap (the crossfade mixes two clips at one level), then glides to its own
        loudness gain. None before it (``{}``): it starts at the last gain, as before.
        """
        overlap = 0 if previous is None else previous.placement.overlap_samples
        if previous is None or overlap <= 0:
            return {}
        match_db = overlap_match_db(previous.vocoded.audio[..., -overlap:], vocoded.audio[..., :overlap])
        return {"start_gain_db": previous.gain_db + match_db, "hold_frames": overlap}

    def seed_clip(self, overlap: int) -> Clip:
        """The seed material for the station's start: the first clip's seed window at its place,
        vocoded and loudness-normalised, no diffusion (runs in a worker thread).

        Neither the plan nor the timeline advance: the first generated clip is placed where the
        seed material has got to on its grid when it is planned (see :meth:`place`) and cuts in
        there (the buffer repeats the seed loop till then).
        """
        from riffradio.spectrogram.seeds import load_seed_window

        planned, _ = plan_next(self.playlist, self.state.snapshot(), self.position)
        placed = self.place(planned, overlap, advance=False)
        self._seed_placement = placed.placement
        image = load_seed_window(placed.request.seed_image, placed.request.seed_window_start_samples)
        audio = match_channels(self.vocoder.image_to_audio(image), self.buffer.channels)  # normalised as played
        normalised = normalise_clip(
            audio, self.sample_rate_hz, self.loudness_lufs, self._gain_db, ceiling_dbtp=self.true_peak_dbtp
        )
        self._gain_db = normalised.gain_db
        log.info("seed material on air: %s from %.2f s of its loop", placed.request.seed_image,
                 placed.request.seed_window_start_samples / self.sample_rate_hz)  # fmt: skip
        return Clip(
            index=SEED_CLIP_INDEX, request=placed.request, audio=normalised.audio, sample_rate_hz=self.sample_rate_hz,
            image=image if self.keep_images else None, state_version=planned.state_version,
            placement=placed.placement, fallback=True,
        )  # fmt: skip

    def generate(self, planned: PlannedClip, committed: bool = False) -> tuple[Clip, float]:
        """Engine → vocoder → loudness for one planned clip, and the gain it got (runs in a worker thread).

        Unless ``committed``, a change of the station state abandons it (raises ``Cancelled``).
        """
        started = time.perf_counter()
        version = planned.state_version

        def state_changed() -> bool:
            return self.state.snapshot().version != version

        should_cancel = None if committed else state_changed
        assert self.engine is not None, "Producer.engine must be set before clips are generated"
        # Continue the clip right before this one on the timeline, if it is still known (it is
        # the one playing after a change: a change bends the music, it does not restart it).
        previous = self._made_before(planned.placement)
        hop = self.vocoder.params.hop_length_samples
        request = continued_request(planned.request, previous.placement if previous else None, hop)
        planned = replace(planned, request=request)
        continued = previous is not None and request.continuation_seconds > 0 and previous.latents is not None
        if continued:
            result = self.engine.riff(request, should_cancel=should_cancel, previous_latents=previous.latents)
            overlap_frames = previous.placement.overlap_samples // hop
            vocoded = self.vocoder.decode(result.image, should_cancel, previous=previous.vocoded, overlap_frames=overlap_frames)
        else:
            result = self.engine.riff(request, should_cancel=should_cancel)
            # A crossfade-only overlap: two renderings of the same columns; starting (and keeping)
            # the previous clip's phase there makes them mix without comb filtering.
            vocoded = self.vocoder.decode(result.image, should_cancel, **self._phase_start(previous))
        # Normalised as played: a mono clip copied to two channels measures 3 dB louder (BS.1770).
        audio = match_channels(vocoded.audio, self.buffer.channels)
        normalised = normalise_clip(
            audio, self.sample_rate_hz, self.loudness_lufs, self._gain_db, ceiling_dbtp=self.true_peak_dbtp,
            **self._level_start(previous, vocoded),
        )  # fmt: skip
        if planned.placement is not None:
            self._made[planned.index] = MadeClip(planned.placement, result.latents, vocoded, normalised.gain_db)
            while len(self._made) > self.lookahead_clips + 2:
                self._made.popitem(last=False)
        seconds = time.perf_counter() - started
        clip = Clip(
            index=planned.index,
            request=planned.request,
            audio=normalised.audio,
            sample_rate_hz=self.sample_rate_hz,
            image=result.image if self.keep_images else None,
            generation_seconds=seconds,
            state_version=planned.state_version,
            placement=planned.placement,
        )
        self.clips_generated += 1
        self.last_generation_seconds = seconds
        self.realtime_factor = clip.duration_seconds / seconds if seconds > 0 else 0.0
        self.metrics.clips_generated.inc()
        self.metrics.generation_seconds.observe(seconds)
        self.metrics.realtime_factor.set(self.realtime_factor)
        log.info(
            "clip %d generated in %.2f s (%.2fx real time): %s, seed %d→%d, alpha %.2f",
            planned.index,
            seconds,
            self.realtime_factor,
            planned.request.title,
            planned.request.start_seed,
            planned.request.end_seed,
            planned.request.alpha,
        )
        return clip, normalised.gain_db
