"""Seed images: bundled, synthesised from specs, from files; seamless loops at their BPM."""

from __future__ import annotations

import numpy as np
import pytest

from riffradio.app.cli import main
from riffradio.errors import RiffradioError
from riffradio.spectrogram.audio_io import read_audio, write_audio
from riffradio.spectrogram.image import load_spectrogram_image
from riffradio.spectrogram.mel import audio_to_mel
from riffradio.spectrogram.params import SpectrogramParams
from riffradio.spectrogram.seeds import (
    BUNDLED_SPECS,
    DrumLoopSpec,
    bundled_seed_image_names,
    bundled_seed_image_path,
    load_seed_image,
    load_seed_loop,
    load_seed_window,
    parse_drum_loop_spec,
    render_drum_loop,
    synthesise_seed_image,
)
from tests.beats import grid_deviations_seconds, kick_onsets_seconds
from tests.music import music_path

PARAMS = SpectrogramParams()


def test_bundled_names_include_og_beat_and_load() -> None:
    names = bundled_seed_image_names()
    assert "og_beat" in names and len(names) >= 4
    image = load_seed_image("og_beat")
    assert image.size == (512, 512) and image.mode == "RGB"
    assert load_seed_image("og_beat") is image  # cached


def test_bundled_og_beat_is_made_by_this_code() -> None:
    shipped = np.asarray(load_spectrogram_image(bundled_seed_image_path("og_beat")).convert("RGB"))
    regenerated = np.asarray(synthesise_seed_image(parse_drum_loop_spec(BUNDLED_SPECS["og_beat"])))
    assert np.mean(np.abs(shipped.astype(int) - regenerated.astype(int))) < 1.0


def test_spec_string_keys() -> None:
    spec = parse_drum_loop_spec("bpm=93.75, pattern=boom_bap, swing=0.1, bass_hz=55, seed=3")
    assert spec == DrumLoopSpec(bpm=93.75, pattern="boom_bap", swing=0.1, bass_hz=55.0, seed=3)
    assert load_seed_image("bpm=140.625,pattern=breakbeat").size == (512, 512)
    assert parse_drum_loop_spec("bpm=105.46875,beats_per_bar=3").beats == 9


@pytest.mark.parametrize(
    ("reference", "needle"),
    [
        ("bpm=300", "bpm must be within 40 … 240"),
        ("bpm=nan", "bpm must be within"),
        ("bpm=120,bars=65", "bars must be within"),
        ("file=x.wav,swing=0.1", "with file= only"),
        ("bpm=93.75,tempo=2", "unknown key 'tempo'"),
        ("bpm=fast", "not a number"),
        ("bpm=93.75,pattern=polka", "unknown pattern"),
        ("bpm=93.75,swing=0.9", "swing"),
        ("pattern=rock", "needs bpm"),
        ("no_such_seed", "not a bundled name"),
    ],
)
def test_bad_reference_is_one_line_naming_it(reference: str, needle: str) -> None:
    with pytest.raises(RiffradioError) as caught:
        load_seed_image(reference)
    message = str(caught.value)
    assert needle in message and reference.split(",")[0] in message and "\n" not in message


def test_loop_is_exactly_one_clip_with_kicks_on_the_beat_grid() -> None:
    loop = render_drum_loop(DrumLoopSpec(bpm=93.75, pattern="four_on_the_floor"))[0]
    assert loop.size == PARAMS.clip_samples
    beat_samples = PARAMS.clip_samples // 8
    # Kick onsets: the low-passed energy jumps at every beat (four on the floor: all 8 beats).
    low = np.convolve(loop, np.ones(64) / 64, mode="same") ** 2
    for beat in range(8):
        start = beat * beat_samples
        before = low[(start - 600) % loop.size : (start - 200) % loop.size or None].mean() if beat else low[-600:-200].mean()
        after = low[start + 200 : start + 600].mean()
        assert after > 5 * before


def test_seed_image_loops_seamlessly() -> None:
    spec = DrumLoopSpec(bpm=140.625, pattern="breakbeat", swing=0.2)
    loop = render_drum_loop(spec)
    image = np.asarray(synthesise_seed_image(spec))[:, :, 0].astype(float)
    # The image equals the middle of the encoding of the loop played three times.
    tiled_mel = audio_to_mel(np.tile(loop, 3), PARAMS)[0]
    middle = tiled_mel[:, 512:1024]
    expected = (255 - np.power(middle / middle.max(), 0.25) * 255).astype(np.uint8)[::-1]
    assert np.mean(np.abs(image - expected)) < 0.5
    # Wrapping from the last column to the first is no bigger a step than typical neighbours.
    steps = np.abs(np.diff(image, axis=1)).mean(axis=0)
    seam = np.abs(image[:, 0] - image[:, -1]).mean()
    assert seam <= np.percentile(steps, 95)


@pytest.mark.parametrize(("bpm", "beats_per_bar", "bars"), [(128.0, 4, 0), (99.5, 4, 1), (174.0, 4, 4), (126.0, 7, 2)])
def test_any_tempo_makes_a_loop_of_whole_bars(bpm: float, beats_per_bar: int, bars: int) -> None:
    spec = DrumLoopSpec(bpm=bpm, beats_per_bar=beats_per_bar, bars=bars, pattern="four_on_the_floor")
    loop = render_drum_loop(spec)[0]
    expected_bars = bars or max(1, round(5.12 / (beats_per_bar * 60 / bpm)))
    assert spec.bar_count == expected_bars
    assert loop.size == round(expected_bars * beats_per_bar * 60 / bpm * 44100)
    # Every kick of four-on-the-floor sits on the loop's beat grid: played twice, every onset is
    # the same distance (the detector's constant offset, < 3 ms) from a grid line, within 1 ms.
    beat_seconds = loop.size / spec.beats / 44100
    onsets = kick_onsets_seconds(np.tile(loop, 2), 44100)
    assert len(onsets) >= 2 * spec.beats - 1
    deviations = grid_deviations_seconds(onsets, beat_seconds)
    assert abs(np.median(deviations)) < 0.003 and np.ptp(deviations) < 0.001
    seed = load_seed_loop(f"bpm={bpm:g},beats_per_bar={beats_per_bar},bars={bars},pattern=four_on_the_floor")
    assert (seed.loop_samples, seed.bars) == (loop.size, expected_bars) and seed.bpm == pytest.approx(bpm, rel=1e-5)


def test_window_wraps_around_the_loop() -> None:
    reference = "bpm=128,bars=1,pattern=breakbeat"
    loop = load_seed_loop(reference)
    assert loop.loop_samples == round(1.875 * 44100) < PARAMS.clip_samples  # the window wraps 2.7 times
    start = 50_053
    window = np.asarray(load_seed_window(reference, start))[:, :, 0].astype(float)
    # Column j is the loop at start + j hops, wrapping: the encoding of the loop played five times.
    assert loop.audio is not None
    tiled_mel = audio_to_mel(np.tile(loop.audio, 5)[None], PARAMS)[0]
    first = (loop.loop_samples + start) // PARAMS.hop_length_samples
    assert (loop.loop_samples + start) % PARAMS.hop_length_samples == 0  # 50 053 + 82 688 = 301 hops
    middle = tiled_mel[:, first : first + 512]
    expected = (255 - np.power(middle / middle.max(), 0.25) * 255).astype(np.uint8)[::-1]
    assert np.mean(np.abs(window - expected)) < 0.5
    assert load_seed_window(reference, start + 3 * loop.loop_samples) is load_seed_window(reference, start)


def test_audio_files_are_loops_as_a_whole(tmp_path) -> None:
    from tests.music import music_excerpt

    four_bars = tmp_path / "four_bars.wav"
    samples = round(4 * 4 * 60 / 126 * 44100)  # 4 bars at 126 BPM = 7.62 s
    write_audio(four_bars, music_excerpt("music001.ogg", 30.0, samples / 44100)[:, :samples], 44100)
    loop = load_seed_loop(str(four_bars))
    assert (loop.loop_samples, loop.bars, loop.beats_per_bar) == (samples, 1, 4)  # untagged: one bar
    tagged = load_seed_loop(f"file={four_bars},bpm=126")
    assert tagged.bars == 4 and tagged.bpm == pytest.approx(126, rel=1e-4)
    assert load_seed_image(str(four_bars)).size == (512, 512)
    with pytest.raises(RiffradioError, match="not a whole number of 4-beat bars at 120 BPM"):
        load_seed_loop(f"file={four_bars},bpm=120")
    short = tmp_path / "short.wav"
    write_audio(short, np.zeros((1, 1000), np.float32), 44100)
    with pytest.raises(RiffradioError, match="the loop is the whole file"):
        load_seed_image(str(short))
    # Riffusion's own decode of a 512-px image is 225 351 samples (5.11 s): a seed loop of that
    # length; audio-to-image needs at least that many samples, one short of it fails there.
    music = read_audio(music_path("music001.ogg"), 44100, mono=True, duration_seconds=6.0)
    for samples, ok in ((225_351, True), (225_350, False)):
        riffusion_clip = tmp_path / f"riffusion-{samples}.wav"
        write_audio(riffusion_clip, music[:, :samples], 44100)
        assert load_seed_loop(str(riffusion_clip)).loop_samples == samples
        assert load_seed_image(str(riffusion_clip)).size == (512, 512)
        assert (main(["audio-to-image", str(riffusion_clip), str(tmp_path / "r.png")]) == 0) == ok
        if ok:
            assert load_spectrogram_image(tmp_path / "r.png").size == (512, 512)


def test_png_seed_is_a_five_second_loop(tmp_path) -> None:
    png = tmp_path / "seed.png"
    load_seed_image("og_beat").save(png, exif=load_seed_image("og_beat").info["exif"])
    loop = load_seed_loop(f"file={png},bpm=93.75")
    assert (loop.loop_samples, loop.bars) == (PARAMS.clip_samples, 2)
    shifted = np.asarray(load_seed_window(str(png), 100 * PARAMS.hop_length_samples + 100))
    assert np.array_equal(shifted, np.roll(np.asarray(load_seed_image(str(png))), -100, axis=1))


def test_seed_image_cli_writes_png_and_loop(tmp_path, capsys) -> None:
    out, wav = tmp_path / "seed.png", tmp_path / "seed.wav"
    assert main(["seed-image", "--bpm", "93.75", "--swing", "0.1", "--bass-hz", "55", "-o", str(out), "--audio-out", str(wav)]) == 0
    assert load_spectrogram_image(out).size == (512, 512)
    assert read_audio(wav).shape == (1, PARAMS.clip_samples)
    assert load_seed_image(str(out)).size == (512, 512)
    assert main(["seed-image", "--bpm", "128", "--bars", "2", "-o", str(out), "--audio-out", str(wav)]) == 0
    assert read_audio(wav).shape == (1, round(2 * 1.875 * 44100))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # the CLI's number check: one line, exit 2
        main(["seed-image", "--bpm", "300", "-o", str(out)])
    assert exit_info.value.code == 2
    assert "argument --bpm: must be between 40 and 240, got 300" in capsys.readouterr().err
