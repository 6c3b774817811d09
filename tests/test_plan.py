"""The plan: endless, deterministic, a pure function of playlist, state and position."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from riffradio.playlist import check_playlist_text
from riffradio.playlist.model import Playlist
from riffradio.station.plan import LOOP_SEED_STRIDE, START, plan_clips, plan_next
from riffradio.station.state import StateSnapshot, StationState

TEXT = """\
station: {steps: 4}
riffs:
  - {prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 4,
     denoising: 0.6, to_denoising: 0.8, guidance: 7}
  - {prompt: church bells on sunday, clips: 8}
"""


def _playlist(text: str = TEXT) -> Playlist:
    playlist, errors = check_playlist_text(text, Path("plan.yaml"))
    assert errors == [] and playlist is not None
    return playlist


def test_transition_then_seed_walk_then_loop() -> None:
    playlist = _playlist()
    clips = plan_clips(playlist, StateSnapshot(), 14)
    requests = [clip.request for clip in clips]
    assert [clip.index for clip in clips] == list(range(14))
    # a transition: alpha moves by 1/clips from prompt/seed to to/to_seed
    assert [r.alpha for r in requests[:4]] == [0.0, 0.25, 0.5, 0.75]
    assert {(r.start_prompt, r.end_prompt, r.start_seed, r.end_seed) for r in requests[:4]} == {
        ("jazzy lofi hip hop", "church bells on sunday", 42, 43)
    }
    assert (requests[0].start_denoising, requests[0].end_denoising) == (0.6, 0.8)
    assert requests[0].num_inference_steps == 4
    # a held prompt walks seeds like Riffusion's app: 43→44 in four steps, then 44→45
    held = requests[4:12]
    assert all(r.start_prompt == r.end_prompt == "church bells on sunday" for r in held)
    assert [(r.start_seed, r.end_seed, r.alpha) for r in held] == [
        (43, 44, 0.0), (43, 44, 0.25), (43, 44, 0.5), (43, 44, 0.75),
        (44, 45, 0.0), (44, 45, 0.25), (44, 45, 0.5), (44, 45, 0.75),
    ]  # fmt: skip
    # the playlist loops, seeds moved on so it never repeats itself
    assert requests[12].start_prompt == "jazzy lofi hip hop" and requests[12].alpha == 0.0
    assert requests[12].start_seed == 42 + LOOP_SEED_STRIDE
    assert clips[12].riff_index == 0


def test_endless_and_deterministic() -> None:
    playlist = _playlist()
    first = plan_clips(playlist, StateSnapshot(), 500)
    again = plan_clips(playlist, StateSnapshot(), 500)
    assert first == again
    # resuming from any position gives the same continuation: the producer can rewind
    position = START
    for _ in range(37):
        _, position = plan_next(playlist, StateSnapshot(), position)
    assert plan_clips(playlist, StateSnapshot(), 20, position) == first[37:57]


def test_goto_next_hold_and_knobs_steer_the_plan() -> None:
    playlist = _playlist()
    state = StationState(len(playlist.riffs))
    position = START
    _, position = plan_next(playlist, state.snapshot(), position)
    state.goto_riff(1)
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert clip.riff_index == 1 and clip.request.start_seed == 43 and clip.request.alpha == 0.0
    state.set_knob("denoising", 0.3)
    state.set_knob("steps", 9)
    state.set_knob("guidance", 3)
    state.set_seed_image("bpm=140.625")
    clip, position = plan_next(playlist, state.snapshot(), position)
    request = clip.request
    assert (request.start_denoising, request.end_denoising, request.num_inference_steps) == (0.3, 0.3, 9)
    assert (request.start_guidance, request.seed_image) == (3.0, "bpm=140.625")
    assert clip.state_version == state.snapshot().version
    # hold: past the riff's 8 clips it keeps walking seeds instead of moving on
    state.set_hold(True)
    for _ in range(12):
        clip, position = plan_next(playlist, state.snapshot(), position)
        assert clip.riff_index == 1 and clip.request.start_prompt == "church bells on sunday"
    state.set_hold(False)
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert clip.riff_index == 0  # released: on to the next riff (the loop)
    state.advance_riff(position.riff_index)  # as the producer does after each plan
    state.next_riff()
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert clip.riff_index == 1


def test_live_prompt_transitions_from_what_plays_then_holds() -> None:
    playlist = _playlist()
    state = StationState(len(playlist.riffs))
    position = START
    for _ in range(3):  # jazz → bells at alpha 0.5: "what plays now" is nearer the bells
        _, position = plan_next(playlist, state.snapshot(), position)
    state.set_knob("clips", 2)
    state.set_prompt("rainy night piano")
    first, position = plan_next(playlist, state.snapshot(), position)
    second, position = plan_next(playlist, state.snapshot(), position)
    third, position = plan_next(playlist, state.snapshot(), position)
    assert (first.request.start_prompt, first.request.end_prompt, first.request.alpha) == (
        "church bells on sunday", "rainy night piano", 0.5,
    )  # fmt: skip
    assert first.request.start_seed == first.request.end_seed == 43
    assert second.request.alpha == 1.0 and second.request.title == "rainy night piano"
    assert third.request.start_prompt == third.request.end_prompt == "rainy night piano"
    assert (third.request.start_seed, third.request.alpha) == (43, 0.25)  # walking on from the new prompt
    assert first.live and third.live
    # a live seed while live: a new transition to the same prompt at that seed
    state.set_seed(7)
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert (clip.request.start_prompt, clip.request.end_prompt) == ("rainy night piano", "rainy night piano")
    assert (clip.request.start_seed, clip.request.end_seed) == (43, 7)
    # goto drops the live prompt and returns to the playlist
    state.goto_riff(0)
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert clip.request.start_prompt == "jazzy lofi hip hop" and not clip.live


def test_a_blend_of_two_live_prompts_sits_at_the_fader_and_walks_seeds() -> None:
    playlist = _playlist()
    state = StationState(len(playlist.riffs))
    _, position = plan_next(playlist, state.snapshot(), START)  # jazz → bells, seed 42
    state.set_prompt("rainy jazz")
    state.set_to_prompt("church organ")
    first, position = plan_next(playlist, state.snapshot(), position)
    assert (first.request.start_prompt, first.request.end_prompt, first.request.alpha) == (
        "rainy jazz", "church organ", 0.5,
    )  # fmt: skip
    assert first.request.start_seed == first.request.end_seed == 43 and first.live
    assert first.request.title == "rainy jazz → church organ"
    state.set_alpha(0.2)
    second, position = plan_next(playlist, state.snapshot(), position)
    assert (second.request.alpha, second.request.start_seed) == (0.2, 44)  # the seed walks on
    state.set_alpha(0.0)
    third, position = plan_next(playlist, state.snapshot(), position)
    assert third.request.title == "rainy jazz"
    state.set_seed(7)
    fourth, position = plan_next(playlist, state.snapshot(), position)
    assert fourth.request.start_seed == 7 + position.clip - 1
    # "" ends the blend: back to the live prompt, by a transition from what plays
    state.set_to_prompt("")
    after, position = plan_next(playlist, state.snapshot(), position)
    assert after.request.end_prompt == "rainy jazz" and state.snapshot().live_alpha == 0.0
    state.next_riff()
    snapshot = state.snapshot()
    assert snapshot.live_to_prompt is None and snapshot.live_alpha is None


def test_live_seed_replaces_playlist_seeds() -> None:
    playlist = _playlist()
    state = StationState(len(playlist.riffs))
    state.set_seed(1000)
    clip, _ = plan_next(playlist, state.snapshot(), START)
    assert (clip.request.start_seed, clip.request.end_seed) == (1000, 1001)


@settings(max_examples=60, deadline=None)
@given(
    riffs=st.lists(
        st.tuples(st.integers(0, 2**40), st.booleans(), st.integers(1, 6)), min_size=1, max_size=4
    ),
    count=st.integers(1, 60),
)
def test_any_playlist_plans_valid_requests(riffs: list[tuple[int, bool, int]], count: int) -> None:
    lines = ["riffs:"]
    for number, (seed, transition, clips) in enumerate(riffs):
        to = f", to: prompt {number + 1}" if transition else ""
        lines.append(f"  - {{prompt: prompt {number}, seed: {seed}, clips: {clips}{to}}}")
    playlist = _playlist("\n".join(lines) + "\n")
    planned = plan_clips(playlist, StateSnapshot(), count)
    assert [clip.index for clip in planned] == list(range(count))
    for clip in planned:
        request = clip.request
        assert 0.0 <= request.alpha < 1.0
        assert 0 <= request.start_seed < 2**63 and 0 <= request.end_seed < 2**63
        assert request.start_prompt == playlist.riffs[clip.riff_index].prompt
    # the plan never depends on anything but its inputs
    assert planned == plan_clips(replace(playlist), StateSnapshot(), count)


def test_continuation_comes_from_the_live_knob_then_the_riff_then_the_station() -> None:
    playlist = _playlist(
        "station: {steps: 4, continuation_seconds: 1.28}\n"
        "riffs:\n"
        "  - {prompt: jazzy lofi hip hop, clips: 2}\n"
        "  - {prompt: church bells on sunday, clips: 2, continuation_seconds: 0}\n"
    )
    state = StationState(len(playlist.riffs))
    planned = plan_clips(playlist, state.snapshot(), 4)
    assert [clip.request.continuation_seconds for clip in planned] == [1.28, 1.28, 0.0, 0.0]
    state.set_knob("continuation_seconds", 0.64)
    planned = plan_clips(playlist, state.snapshot(), 4)
    assert {clip.request.continuation_seconds for clip in planned} == {0.64}
    for bad in (3.0, -0.1, float("nan")):
        try:
            state.set_knob("continuation_seconds", bad)
        except ValueError as error:
            assert "continuation_seconds" in str(error)
        else:
            raise AssertionError(f"continuation_seconds {bad} was accepted")
    _, errors = check_playlist_text("station: {continuation_seconds: 3}\nriffs: [{prompt: a}]\n", Path("bad.yaml"))
    assert len(errors) == 1 and "station.continuation_seconds must be between 0 and 2.56" in errors[0]


CIRCLE = """\
station: {steps: 4}
riffs:
  - {prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 4}
  - {prompt: church bells on sunday, clips: 8}
  - {prompt: church bells on sunday, to: rainy night piano, clips: 4}
  - {prompt: rainy night piano, seed: 7, clips: 4}
  - {prompt: rainy night piano, to: jazzy lofi hip hop, to_seed: 42, clips: 4}
"""


def test_seeds_go_on_where_the_music_is_at_riff_boundaries_and_the_wrap() -> None:
    """Decided (issue 14, item 6): a riff without its own seed starts at the seed the music
    reached; a written seed is a deliberate jump; a last riff that leads back to the first ends
    at the next pass's (shifted) seed, so the loop joins like any riff."""
    clips = plan_clips(_playlist(CIRCLE), StateSnapshot(), 48)
    requests = [clip.request for clip in clips]
    # riff 1 walks 43→45 in 8 clips; riff 2 (no seed:) starts at 45, not back at 43
    assert (requests[11].start_seed, requests[11].end_seed, requests[11].alpha) == (44, 45, 0.75)
    assert (requests[12].start_seed, requests[12].end_seed) == (45, 45)
    # riff 3 says seed: 7: a jump the playlist asks for
    assert requests[16].start_seed == 7
    # riff 4 (no seed:) after riff 3's walk 7→8; it leads back to the first riff: ends at 42 + stride
    assert (requests[20].start_seed, requests[20].end_seed) == (8, 42 + LOOP_SEED_STRIDE)
    assert (requests[24].start_seed, requests[24].start_prompt, clips[24].riff_index) == (
        42 + LOOP_SEED_STRIDE, "jazzy lofi hip hop", 0,
    )  # fmt: skip
    # every join of the second pass is as smooth as the first
    assert [r.start_seed - LOOP_SEED_STRIDE for r in requests[24:48]] == [r.start_seed for r in requests[0:24]][:16] + [
        r.start_seed for r in requests[16:24]
    ]  # riff 3's written seed 7 is shifted too: 1007
    # a jump (goto) plays the riff as written
    state = StationState(5)
    position = START
    for _ in range(14):
        _, position = plan_next(_playlist(CIRCLE), state.snapshot(), position)
    state.goto_riff(2)
    clip, _ = plan_next(_playlist(CIRCLE), state.snapshot(), position)
    assert clip.request.start_seed == 43


def test_a_live_prompt_transition_is_not_as_long_as_the_riff() -> None:
    """Decided (item 6): a live prompt takes LIVE_TRANSITION_CLIPS (4) clips, or the DJ's clips knob."""
    from riffradio.station.plan import LIVE_TRANSITION_CLIPS

    playlist = _playlist("riffs:\n  - {prompt: jazzy lofi hip hop, seed: 42, clips: 100}\n")
    state = StationState(1)
    _, position = plan_next(playlist, state.snapshot(), START)
    state.set_prompt("rainy night piano")
    live = []
    for _ in range(LIVE_TRANSITION_CLIPS + 1):
        clip, position = plan_next(playlist, state.snapshot(), position)
        live.append(clip.request)
    assert [r.alpha for r in live[:4]] == [0.25, 0.5, 0.75, 1.0] and LIVE_TRANSITION_CLIPS == 4
    assert live[4].start_prompt == live[4].end_prompt == "rainy night piano"
    state.set_knob("clips", 2)
    state.set_prompt("church bells")
    clip, position = plan_next(playlist, state.snapshot(), position)
    assert clip.request.alpha == 0.5
