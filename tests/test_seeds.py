"""Seed images: bundled, synthesised from specs, from files; seamless loops at their BPM."""

from __future__ import annotations

import numpy as np
import pytest

from riffradio.cli import main
from riffradio.errors import RiffradioError
from riffradio.spectrogram.audio_io import read_audio, write_audio
from riffradio.spectrogram.image import load_spectrogram_image
from riffradio.spectrogram.mel import audio_to_mel
from riffradio.spectrogram.params import SpectrogramParams
from riffradio.spectrogram.seeds import (
    BUNDLED_SPECS,
    DrumLoopSpec,
    bundled_seed_image_names,
    load_seed_image,
    parse_drum_loop_spec,
    render_drum_loop,
    synthesise_seed_image,
)
from tests.music import music_path

PARAMS = SpectrogramParams()


def test_bundled_names_include_og_beat_and_load() -> None:
    names = bundled_seed_image_names()
    assert "og_beat" in names and len(names) >= 4
    image = load_seed_image("og_beat")
    assert image.size == (512, 512) and image.mode == "RGB"
    assert load_seed_image("og_beat") is image  # cached


def test_bundled_og_beat_is_made_by_this_code() -> None:
    shipped = np.asarray(load_seed_image("og_beat"))
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
        ("bpm=120", "whole bars"),
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


def test_audio_and_png_files_become_seed_images(tmp_path) -> None:
    png = load_seed_image(str(music_path("music001.ogg")))
    assert png.size == (512, 512)
    short = tmp_path / "short.wav"
    write_audio(short, np.zeros((1, 1000), np.float32), 44100)
    with pytest.raises(RiffradioError, match=r"needs 225351 \(5.11 s\)"):
        load_seed_image(str(short))
    # Riffusion's own decode of a 512-px image is 225 351 samples (5.11 s): one short of that fails
    music = read_audio(music_path("music001.ogg"), 44100, mono=True)
    for samples, ok in ((225_351, True), (225_350, False)):
        riffusion_clip = tmp_path / f"riffusion-{samples}.wav"
        write_audio(riffusion_clip, music[:, :samples], 44100)
        if ok:
            assert load_seed_image(str(riffusion_clip)).size == (512, 512)
            assert main(["audio-to-image", str(riffusion_clip), str(tmp_path / "r.png")]) == 0
            assert load_spectrogram_image(tmp_path / "r.png").size == (512, 512)
        else:
            with pytest.raises(RiffradioError, match="225350 samples"):
                load_seed_image(str(riffusion_clip))
            assert main(["audio-to-image", str(riffusion_clip), str(tmp_path / "r.png")]) != 0


def test_seed_image_cli_writes_png_and_loop(tmp_path, capsys) -> None:
    out, wav = tmp_path / "seed.png", tmp_path / "seed.wav"
    assert main(["seed-image", "--bpm", "93.75", "--swing", "0.1", "--bass-hz", "55", "-o", str(out), "--audio-out", str(wav)]) == 0
    assert load_spectrogram_image(out).size == (512, 512)
    assert read_audio(wav).shape == (1, PARAMS.clip_samples)
    assert load_seed_image(str(out)).size == (512, 512)
    assert main(["seed-image", "--bpm", "100", "-o", str(out)]) != 0
    assert "whole bars" in capsys.readouterr().err
