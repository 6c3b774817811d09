"""Loading the engine and the ``riffradio riff`` CLI: one-line failures, device and dtype choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from riffradio.app.cli import main
from riffradio.engine.loading import (
    canonical_scheduler_name,
    is_out_of_memory,
    out_of_memory_message,
    resolve_device,
    resolve_dtype,
)
from riffradio.engine.pipeline import RiffEngine
from riffradio.errors import RiffradioError


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI in-process; return stderr, which must be exactly one line, and a failure code."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("riffradio: error: ")
    return lines[0]


def test_missing_weights_offline_is_one_line_saying_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real, empty hub cache and offline mode: exactly a first run without network.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    process = subprocess.run(
        [sys.executable, "-m", "riffradio", "riff", "--prompt", "jazz", "-o", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode != 0
    assert process.stdout == ""
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "riffusion/riffusion-model-v1" in lines[0]
    assert "not in the Hugging Face cache" in lines[0] and str(tmp_path / "hf") in lines[0]
    assert "hf download riffusion/riffusion-model-v1" in lines[0] and "--model" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_a_directory_that_is_not_a_diffusers_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    line = _cli_error(capsys, ["riff", "--prompt", "x", "--model", str(tmp_path), "-o", str(tmp_path / "o.png")])
    assert f"{tmp_path} is not a diffusers model directory (no model_index.json)" in line
    missing = tmp_path / "nope" / "model"
    line = _cli_error(capsys, ["riff", "--prompt", "x", "--model", str(missing), "-o", str(tmp_path / "o.png")])
    assert f"model directory {missing} does not exist" in line


def test_a_broken_diffusers_directory_is_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((tiny_model_dir / "model_index.json").read_text())
    line = _cli_error(capsys, ["riff", "--prompt", "x", "--model", str(broken), "-o", str(tmp_path / "o.png")])
    assert f"cannot load model {broken}" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_but_absent_is_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["riff", "--prompt", "x", "--model", str(tiny_model_dir), "--device", "cuda", "-o", str(tmp_path / "o.png")]
    line = _cli_error(capsys, argv)
    assert "device 'cuda' requested but CUDA is not available" in line and "--device cpu" in line


def test_device_dtype_and_scheduler_choices() -> None:
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    with pytest.raises(RiffradioError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", cpu)
    with pytest.raises(RiffradioError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", cpu)
    with pytest.raises(RiffradioError, match="unknown device 'tpu0'"):
        resolve_device("tpu0")
    assert canonical_scheduler_name("DPMSolver++") == "dpm++"
    assert canonical_scheduler_name(None) is None
    with pytest.raises(RiffradioError, match="unknown scheduler 'lms'.*pndm, dpm\\+\\+, ddim, euler"):
        canonical_scheduler_name("lms")


def test_out_of_memory_message_names_the_knobs_that_lower_memory() -> None:
    cuda = torch.device("cuda:0")
    message = out_of_memory_message(cuda, "running the UNet", 4, torch.float32)
    assert message.startswith("out of GPU memory on cuda:0 while running the UNet: ")
    assert "run fewer riffs at once (this batch had 4" in message
    assert "--dtype float16" in message and "--device cpu" in message
    assert "\n" not in message
    single = out_of_memory_message(cuda, "making a riff", 1, torch.float16)
    assert "fewer riffs" not in single and "--dtype float16" not in single
    assert out_of_memory_message(torch.device("cpu"), "making a riff", 1, torch.float32).startswith(
        "out of memory on cpu while making a riff"
    )
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_riff_cli_writes_a_spectrogram_and_audio(tiny_model_dir: Path, tmp_path: Path) -> None:
    out, audio = tmp_path / "riff.png", tmp_path / "riff.wav"
    argv = [
        "riff", "--prompt", "jazz", "--to", "rock", "--seed", "3", "--to-seed", "4", "--alpha", "0.5",
        "--steps", "2", "--bpm", "93.75", "--model", str(tiny_model_dir), "--device", "cpu",
        "-o", str(out), "--audio", str(audio),
    ]  # fmt: skip
    assert main(argv) == 0
    image = Image.open(out)
    assert image.size == (512, 512) and image.mode == "RGB"
    assert np.asarray(image).std() > 0
    samples, rate = soundfile.read(audio)
    assert rate == 44_100 and samples.shape[0] == pytest.approx(5.12 * 44_100, rel=0.01)
    assert np.abs(samples).max() > 0.1


def test_make_test_model_writes_a_loadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "model"
    assert main(["make-test-model", str(directory), "--size", "tiny", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(directory)
    assert (directory / "model_index.json").is_file() and (directory / "unet").is_dir()
    engine = RiffEngine.load(str(directory), device="cpu", scheduler="ddim")
    assert type(engine.model.scheduler).__name__ == "DDIMScheduler"
    assert engine.model.scheduler.config.steps_offset == 1  # the checkpoint's betas and offset kept
