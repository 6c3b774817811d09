"""Load a Riffusion (Stable Diffusion 1.5) model: from the hub or a local diffusers directory.

Users run ``riffusion/riffusion-model-v1`` through diffusers' ``from_pretrained``, so the hub
cache and ``HF_HOME`` work as they expect; tests and benchmarks load directories written by
:func:`riffradio.engine.testmodel.build_test_model` through exactly the same call.

Every failure a user can fix becomes a one-line :class:`~riffradio.errors.RiffradioError`:
weights not cached and no network, a directory that is not a diffusers model, a device that
is not there, out of memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from riffradio.core.defaults import DEFAULT_MODEL
from riffradio.errors import RiffradioError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Scheduler names a user may pass (None keeps the checkpoint's own: PNDM for Riffusion).
SCHEDULER_NAMES: tuple[str, ...] = ("pndm", "dpm++", "ddim", "euler")
_SCHEDULER_ALIASES: dict[str, str] = {
    "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++",
    "dpm": "dpm++",
}

DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}

# float32 on the CPU: it is the dtype Riffusion runs there (so images match it bit for bit), and
# bfloat16's UNet speed-up on the dev VM (docs/benchmarks.md, bench/engine.py) does not make a
# CPU real-time; pass --dtype bfloat16 to trade exactness for speed.
DEFAULT_CPU_DTYPE = "float32"


@dataclass(frozen=True)
class LoadedModel:
    """The components of a Stable Diffusion img2img model, on one device in one dtype.

    Attributes:
        model: the hub id or directory it came from.
        tokenizer: CLIP tokenizer.
        text_encoder: CLIP text model.
        unet: the denoiser (possibly wrapped by ``torch.compile``).
        vae: the autoencoder.
        scheduler: the noise scheduler in use (the checkpoint's own unless another was chosen).
        device: where the weights live.
        dtype: the weights' dtype.
    """

    model: str
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` picks CUDA, then MPS, then CPU.

    Raises:
        RiffradioError: the device is unknown or not available in this torch build / machine.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RiffradioError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise RiffradioError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__} is a "
                f"{build} build or no NVIDIA driver/GPU is visible): install a CUDA build of torch, "
                "or pass --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RiffradioError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RiffradioError(f"device {name!r} requested but MPS is not available: pass --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RiffradioError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: ``name``, or float16 on CUDA, float32 on MPS, DEFAULT_CPU_DTYPE on CPU.

    Raises:
        RiffradioError: unknown name, or float16 on a CPU (no fast kernels there).
    """
    import torch

    if name is None:
        name = {"cuda": "float16", "mps": "float32"}.get(device.type, DEFAULT_CPU_DTYPE)
    canonical = DTYPE_NAMES.get(name.lower())
    if canonical is None:
        raise RiffradioError(f"unknown dtype {name!r}: use float32, float16 or bfloat16")
    if canonical == "float16" and device.type == "cpu":
        raise RiffradioError("dtype float16 is not supported on the CPU: use float32 or bfloat16")
    return getattr(torch, canonical)


def make_scheduler(name: str | None, checkpoint_scheduler: Any) -> Any:
    """The scheduler to run: the checkpoint's own for ``None``, else one built from its config.

    Args:
        name: ``None`` (the checkpoint's: PNDM for Riffusion), ``"pndm"``, ``"dpm++"``
            (DPM-Solver++ multistep, good at 15–25 steps), ``"ddim"`` or ``"euler"``.
        checkpoint_scheduler: the scheduler loaded with the model; its config (betas, offset)
            is kept.

    Raises:
        RiffradioError: an unknown name.
    """
    key = canonical_scheduler_name(name)
    if key is None:
        return checkpoint_scheduler
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    config = checkpoint_scheduler.config
    if key == "pndm":
        return PNDMScheduler.from_config(config)
    if key == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if key == "ddim":
        return DDIMScheduler.from_config(config)
    return EulerDiscreteScheduler.from_config(config)


def canonical_scheduler_name(name: str | None) -> str | None:
    """``name`` as one of ``SCHEDULER_NAMES`` (aliases such as ``dpmsolver++`` accepted), or None.

    Raises:
        RiffradioError: an unknown name.
    """
    if name is None:
        return None
    key = _SCHEDULER_ALIASES.get(name.lower(), name.lower())
    if key not in SCHEDULER_NAMES:
        raise RiffradioError(f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULER_NAMES)}")
    return key


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocator out-of-memory errors."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def out_of_memory_message(device: torch.device, stage: str, batch_size: int, dtype: torch.dtype) -> str:
    """The one-line message for running out of memory, naming the knobs that lower memory.

    Args:
        device: the engine's device.
        stage: what was running, e.g. ``"the UNet loop"`` or ``"loading the model"``.
        batch_size: how many riffs ran at once.
        dtype: the weights' dtype.
    """
    what = "GPU memory" if device.type in ("cuda", "mps") else "memory"
    knobs = []
    if batch_size > 1:
        knobs.append(f"run fewer riffs at once (this batch had {batch_size}; lower the station's lookahead)")
    if str(dtype) == "torch.float32" and device.type != "cpu":
        knobs.append("use --dtype float16 (half the memory of float32)")
    knobs.append("close other programs using the device")
    if device.type != "cpu":
        knobs.append("or pass --device cpu")
    return f"out of {what} on {device} while {stage}: " + ", ".join(knobs)


def _looks_like_path(model: str) -> bool:
    """True for strings that can only be a directory (a hub id is ``name`` or ``org/name``)."""
    return (
        model.startswith(("/", "./", "../", "~", "\\"))
        or model.count("/") > 1
        or (os.sep != "/" and os.sep in model)
    )


def _hub_help(model: str) -> str:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface")), "hub"
    )
    return (
        f"model {model!r} is not in the Hugging Face cache ({cache}) and the hub cannot be reached"
        f"{' (HF_HUB_OFFLINE=1)' if os.environ.get('HF_HUB_OFFLINE') not in (None, '', '0') else ''}: "
        f"download it once with `hf download {model}` on a connected machine, "
        "or pass --model /path/to/a/local/diffusers/directory"
    )


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers/transformers warnings and progress bars, so failures stay one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity())
    bars = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecation notes of the libraries
            yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def _check_local_dir(model: str) -> Path | None:
    """The directory ``model`` names, if it names one; raises if it is not a diffusers model."""
    path = Path(model).expanduser()
    if not path.exists():
        if _looks_like_path(model):
            raise RiffradioError(f"model directory {model} does not exist")
        return None
    if not path.is_dir():
        raise RiffradioError(f"{model} is a file, not a diffusers model directory")
    if not (path / "model_index.json").is_file():
        raise RiffradioError(
            f"{model} is not a diffusers model directory (no model_index.json): pass a directory "
            "written by save_pretrained (e.g. `riffradio make-test-model DIR`) or a hub id"
        )
    return path


def load_model(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str | None = None,
    scheduler: str | None = None,
    compile: bool = False,
    channels_last: bool = False,
) -> LoadedModel:
    """Load the tokenizer, text encoder, UNet, VAE and scheduler of an SD 1.5 model.

    The arguments are those of :meth:`riffradio.engine.pipeline.RiffEngine.load`.

    Raises:
        RiffradioError: one line, naming the problem and how to fix it.
    """
    import torch

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    scheduler = canonical_scheduler_name(scheduler)  # fail before the slow part
    local_dir = _check_local_dir(model)
    with quiet_libraries():
        from diffusers import StableDiffusionPipeline

        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                str(local_dir) if local_dir is not None else model,
                torch_dtype=torch_dtype,
                # Riffusion disables the NSFW filter: it flags spectrograms at random.
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        except RiffradioError:
            raise
        except Exception as error:  # diffusers raises OSError, ValueError, EnvironmentError...
            if local_dir is None and (
                "cached" in str(error) or "connect" in str(error).lower() or "offline" in str(error).lower()
            ):
                raise RiffradioError(_hub_help(model)) from None
            raise RiffradioError(f"cannot load model {model}: {_one_line(error)}") from None
        try:
            pipeline.to(torch_device)
        except Exception as error:
            if is_out_of_memory(error):
                raise RiffradioError(
                    out_of_memory_message(torch_device, "loading the model", 1, torch_dtype)
                ) from None
            raise
    unet, vae = pipeline.unet, pipeline.vae
    # PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels where available).
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    for module in (pipeline.text_encoder, unet, vae):
        module.eval().requires_grad_(False)
    if compile:
        unet = torch.compile(unet)
    logger.info("loaded %s on %s in %s", model, torch_device, str(torch_dtype).removeprefix("torch."))
    return LoadedModel(
        model=model,
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        unet=unet,
        vae=vae,
        scheduler=make_scheduler(scheduler, pipeline.scheduler),
        device=torch_device,
        dtype=torch_dtype,
    )


def stock_img2img_pipeline(model: LoadedModel) -> Any:
    """diffusers' stock ``StableDiffusionImg2ImgPipeline`` on the same components (and a fresh
    scheduler of the same kind): the reference that tests and benchmarks compare the engine with."""
    from diffusers import StableDiffusionImg2ImgPipeline

    stock = StableDiffusionImg2ImgPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=type(model.scheduler).from_config(model.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    return stock
