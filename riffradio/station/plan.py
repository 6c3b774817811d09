"""The plan: a pure function of (playlist, station state, position) → the next clip request.

Walking it from :data:`START` gives an endless, deterministic sequence of
:class:`~riffradio.core.types.RiffRequest`:

* a riff with ``to`` moves alpha ``0, 1/clips, 2/clips, ...`` from ``prompt``/``seed`` to
  ``to``/``to_seed`` (the next riff starts where alpha reaches 1);
* a riff without ``to`` holds its prompt and walks seeds like Riffusion's app: alpha goes
  ``0, 0.25, 0.5, 0.75`` between ``seed`` and ``seed + 1``, then between ``seed + 1`` and ``seed + 2``...;
* a riff without its own ``seed:`` starts where the music is: at the seed the clip before it
  reached (after a held riff, where its seed walk got to, not back at that riff's first seed);
* after the last riff the playlist loops, every seed shifted by :data:`LOOP_SEED_STRIDE` per pass so
  the station never repeats itself; a last riff that leads back to the first (``to_seed`` = the
  first riff's seed) ends at the next pass's shifted seed, so the wrap is as smooth as any join;
* the state steers it: ``goto``/``next`` jump (noticed by ``jump_count``), ``hold`` keeps walking
  seeds on the current prompt, a live prompt transitions from what plays now to it over the ``clips``
  knob if the DJ set one, else :data:`LIVE_TRANSITION_CLIPS` (never the riff's own ``clips``:
  a riff of 100 clips would make a live prompt crawl), and then holds it, a live seed replaces the playlist's seeds, knobs override riff values;
  a live prompt with a second prompt (``to_prompt``) blends the two at the live ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from riffradio.core.timeline import Placement
from riffradio.core.types import RiffRequest
from riffradio.playlist.model import Playlist, RiffSpec
from riffradio.station.state import StateSnapshot

SEED_WALK_ALPHA_STEP = 0.25  # Riffusion's app moves alpha by 0.25 per clip between seeds s and s+1
LOOP_SEED_STRIDE = 1000
#: clips a live prompt's transition takes unless the DJ sets ``clips`` (alpha 0.25 a clip, as a seed walk)
LIVE_TRANSITION_CLIPS = 4
BLEND_ALPHA = 0.5  # a blend whose fader was never moved sits in the middle
_SEED_MODULUS = 2**63


@dataclass(frozen=True)
class LiveSegment:
    """A transition the DJ asked for: from what played to a live prompt/seed, then a hold."""

    key: tuple[str, int | None]
    from_prompt: str
    from_seed: int
    to_prompt: str
    to_seed: int


@dataclass(frozen=True)
class PlanPosition:
    """Where the plan is. The producer keeps one per planned clip so it can rewind on a change.

    Attributes:
        index: index the next clip gets (0, 1, 2, ... for the station's lifetime).
        riff_index: playlist riff the plan is on.
        clip: clips already planned in that riff (or in the live segment).
        loop: passes through the playlist so far.
        jump_count: the state's ``jump_count`` last acted on.
        live: the live segment in progress, if any.
        last: the request planned last ("what plays now" when a live prompt arrives).
        seed_shift: how far the riff's seeds are moved from the playlist's so that a riff
            without its own ``seed:`` starts where the music was (after a seed walk).
    """

    index: int = 0
    riff_index: int = 0
    clip: int = 0
    loop: int = 0
    jump_count: int = 0
    live: LiveSegment | None = None
    last: RiffRequest | None = None
    seed_shift: int = 0


START = PlanPosition()


@dataclass(frozen=True)
class PlannedClip:
    """A request and where it came from; ``placement``: where it sits on the timeline, once placed."""

    index: int
    request: RiffRequest
    riff_index: int
    state_version: int
    live: bool = False
    placement: Placement | None = None


def _seed(value: int) -> int:
    return value % _SEED_MODULUS


def _walk(prompt: str, seed: int, step: int) -> tuple[str, str, int, int, float]:
    """Held prompt, walking seeds: step 0 is exactly ``seed``; 4 steps later exactly ``seed + 1``."""
    per_seed = round(1 / SEED_WALK_ALPHA_STEP)
    base = seed + step // per_seed
    return prompt, prompt, _seed(base), _seed(base + 1), (step % per_seed) * SEED_WALK_ALPHA_STEP


def _request(
    playlist: Playlist,
    snapshot: StateSnapshot,
    riff: RiffSpec,
    prompts_seeds_alpha: tuple[str, str, int, int, float],
) -> RiffRequest:
    start_prompt, end_prompt, start_seed, end_seed, alpha = prompts_seeds_alpha
    knobs = snapshot.knobs
    transition = riff.to is not None
    start_denoising = knobs.denoising if knobs.denoising is not None else riff.denoising
    end_denoising = knobs.denoising if knobs.denoising is not None else riff.to_denoising
    start_guidance = knobs.guidance if knobs.guidance is not None else riff.guidance
    end_guidance = knobs.guidance if knobs.guidance is not None else riff.to_guidance
    return RiffRequest(
        start_prompt=start_prompt,
        end_prompt=end_prompt,
        start_seed=start_seed,
        end_seed=end_seed,
        alpha=float(alpha),
        start_denoising=float(start_denoising),
        end_denoising=float(end_denoising if transition and end_denoising is not None else start_denoising),
        start_guidance=float(start_guidance),
        end_guidance=float(end_guidance if transition and end_guidance is not None else start_guidance),
        negative_prompt=knobs.negative_prompt if knobs.negative_prompt is not None else riff.negative_prompt,
        num_inference_steps=int(knobs.steps or riff.steps or playlist.station.steps),
        seed_image=knobs.seed_image or riff.seed_image,
        mask_image=riff.mask_image,
        continuation_seconds=_first_set(
            knobs.continuation_seconds, riff.continuation_seconds, playlist.station.continuation_seconds
        ),
    )


def _first_set(*values: float | None) -> float:
    """The first value that is not None (a live knob, then the riff's, then the station's)."""
    return float(next(value for value in values if value is not None))


def _riff_seeds(playlist: Playlist, snapshot: StateSnapshot, position: PlanPosition) -> tuple[int, int]:
    """Start and end seed of the riff at ``position`` on its pass; a live seed replaces the playlist's."""
    riff = playlist.riffs[position.riff_index]
    if snapshot.live_seed is not None:
        return snapshot.live_seed, snapshot.live_seed + (riff.end_seed - riff.seed)
    start = riff.seed + position.loop * LOOP_SEED_STRIDE + position.seed_shift
    end = start + (riff.end_seed - riff.seed)
    first = playlist.riffs[0]
    if position.riff_index == len(playlist.riffs) - 1 and riff.to_seed is not None and riff.to_seed == first.seed:
        end = first.seed + (position.loop + 1) * LOOP_SEED_STRIDE  # leads into the next pass's first riff
    return start, end


def _enter_riff(playlist: Playlist, snapshot: StateSnapshot, position: PlanPosition) -> PlanPosition:
    """``position`` at the start of its riff: a riff without its own seed continues from the seed
    the music reached (the nearest seed of the clip planned last)."""
    riff = playlist.riffs[position.riff_index]
    shift = 0
    if getattr(riff, "seed_from_previous", False) and position.last is not None and snapshot.live_seed is None:
        _, reached = _now_playing_point(position.last, riff)
        shift = reached - (riff.seed + position.loop * LOOP_SEED_STRIDE)
    return replace(position, seed_shift=shift)


def _now_playing_point(request: RiffRequest | None, riff: RiffSpec) -> tuple[str, int]:
    """The prompt and seed nearest to what ``request`` sounds like (where a live change starts)."""
    if request is None:
        return riff.prompt, riff.seed
    if request.alpha >= 0.5:
        return request.end_prompt, request.end_seed
    return request.start_prompt, request.start_seed


def plan_next(playlist: Playlist, snapshot: StateSnapshot, position: PlanPosition) -> tuple[PlannedClip, PlanPosition]:
    """The clip after ``position`` under ``snapshot``, and the position after it. Pure."""
    riff_count = len(playlist.riffs)
    if snapshot.jump_count != position.jump_count:
        position = replace(
            position, riff_index=snapshot.riff_index % riff_count, clip=0, jump_count=snapshot.jump_count, live=None,
            seed_shift=0,  # a jump plays the riff as the playlist writes it
        )  # fmt: skip
    riff = playlist.riffs[position.riff_index % riff_count]
    clips = snapshot.knobs.clips or riff.clips
    live_clips = snapshot.knobs.clips or LIVE_TRANSITION_CLIPS

    if snapshot.live_prompt is not None and snapshot.live_to_prompt is not None:
        # A blend (a fader between two prompts): both prompts at the fader's alpha, the seed
        # walking on by one per clip, so the music keeps moving while the fader rests.
        alpha = BLEND_ALPHA if snapshot.live_alpha is None else snapshot.live_alpha
        if snapshot.live_seed is not None:
            seed = snapshot.live_seed + position.clip
        else:
            seed = position.last.start_seed + 1 if position.last is not None else riff.seed
        point = (snapshot.live_prompt, snapshot.live_to_prompt, _seed(seed), _seed(seed), alpha)
        request = _request(playlist, snapshot, riff, point)
        planned = PlannedClip(position.index, request, position.riff_index, snapshot.version, live=True)
        return planned, replace(position, index=position.index + 1, clip=position.clip + 1, live=None, last=request)

    if snapshot.live_prompt is not None:
        key = (snapshot.live_prompt, snapshot.live_seed)
        if position.live is None or position.live.key != key:
            from_prompt, from_seed = _now_playing_point(position.last, riff)
            to_seed = snapshot.live_seed if snapshot.live_seed is not None else from_seed
            live = LiveSegment(key, from_prompt, from_seed, snapshot.live_prompt, to_seed)
            position = replace(position, live=live, clip=0)
        live = position.live
        assert live is not None
        if position.clip < live_clips:  # the first live clip already moves: alpha 1/clips ... 1
            point = (live.from_prompt, live.to_prompt, live.from_seed, live.to_seed, (position.clip + 1) / live_clips)
        else:
            point = _walk(live.to_prompt, live.to_seed, position.clip - live_clips + 1)
        request = _request(playlist, snapshot, riff, point)
        planned = PlannedClip(position.index, request, position.riff_index, snapshot.version, live=True)
        return planned, replace(position, index=position.index + 1, clip=position.clip + 1, last=request)

    if position.live is not None:  # the live prompt was cleared without a jump: back to the riff
        position = replace(position, live=None, clip=0)

    while position.clip >= clips and not snapshot.hold:
        next_index = position.riff_index + 1
        loop = position.loop + (1 if next_index >= riff_count else 0)
        position = _enter_riff(playlist, snapshot, replace(position, riff_index=next_index % riff_count, clip=0, loop=loop))
        riff = playlist.riffs[position.riff_index]
        clips = snapshot.knobs.clips or riff.clips

    start_seed, end_seed = _riff_seeds(playlist, snapshot, position)
    if riff.to is None:
        point = _walk(riff.prompt, start_seed, position.clip)
    elif position.clip < clips:
        point = (riff.prompt, riff.to, _seed(start_seed), _seed(end_seed), position.clip / clips)
    else:  # held at the end of a transition
        point = _walk(riff.to, end_seed, position.clip - clips)
    request = _request(playlist, snapshot, riff, point)
    planned = PlannedClip(position.index, request, position.riff_index, snapshot.version)
    return planned, replace(position, index=position.index + 1, clip=position.clip + 1, last=request)


def plan_clips(
    playlist: Playlist, snapshot: StateSnapshot, count: int, position: PlanPosition = START
) -> list[PlannedClip]:
    """The next ``count`` clips from ``position`` with the state held at ``snapshot`` (for tests, tools)."""
    planned: list[PlannedClip] = []
    for _ in range(count):
        clip, position = plan_next(playlist, snapshot, position)
        planned.append(clip)
    return planned
