"""The typed playlist: what a YAML playlist says, after checking, with where each part was written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riffradio.core.defaults import DEFAULT_MODEL, DEFAULT_SEED_IMAGE
from riffradio.core.knobs import KNOBS


@dataclass(frozen=True)
class StationSpec:
    """The ``station:`` section.

    Attributes:
        name: shown to listeners (Icecast, now-playing API).
        model: hub id or local directory of the Riffusion (Stable Diffusion 1.5) pipeline.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        dtype: the weights' dtype (``float32``, ``float16``, ``bfloat16``), or ``None``: float16
            on CUDA, float32 elsewhere.
        scheduler: ``pndm``, ``dpm++``, ``ddim`` or ``euler``, or ``None``: the checkpoint's own
            (PNDM for Riffusion). DPM-Solver++ is meant for fewer steps: 20 at denoising 0.75 are
            15 UNet calls, against PNDM's 38 at 50 steps.
        compile: ``torch.compile`` the UNet (slow start, faster clips on a GPU).
        steps: default scheduler steps per riff (img2img runs ``steps * denoising`` of them).
        crossfade_seconds: equal-power crossfade at each join of two clips.
        lookahead_clips: how many clips the producer may have ready before they are heard.
        loudness_lufs: integrated loudness every clip is normalised to (BS.1770).
        true_peak_dbtp: ceiling of the output's true-peak limiter.
        continuation_seconds: how much of each clip the next one starts with, kept (0 = off:
            independent clips); a riff or the live knob may override it.
    """

    name: str = "riffradio"
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str | None = None
    scheduler: str | None = None
    compile: bool = False
    steps: int = KNOBS["steps"].default
    crossfade_seconds: float = KNOBS["crossfade_seconds"].default
    lookahead_clips: int = KNOBS["lookahead_clips"].default
    loudness_lufs: float = KNOBS["loudness_lufs"].default
    true_peak_dbtp: float = KNOBS["true_peak_dbtp"].default
    continuation_seconds: float = KNOBS["continuation_seconds"].default


@dataclass(frozen=True)
class RiffSpec:
    """One entry of ``riffs:``: a prompt held (walking seeds) or a transition to ``to``.

    Attributes:
        prompt: the text prompt at the start of the riff.
        seed: seed at the start (defaults to the previous riff's end seed, 42 for the first).
        seed_from_previous: ``seed`` was not written: the plan starts the riff at the seed the
            music reached (after a held riff's seed walk, where the walk got to).
        to: prompt at the end; ``None`` holds ``prompt`` and walks seeds ``seed, seed+1, ...``.
        to_seed: seed at the end of a transition (defaults to ``seed``).
        clips: clips the riff lasts (a transition moves alpha by ``1/clips`` per clip).
        denoising, to_denoising: img2img strength at the start and end, in [0, 1].
        guidance, to_guidance: classifier-free guidance at the start and end.
        steps: scheduler steps, or ``None`` for the station's.
        seed_image: reference of the init spectrogram: bundled name, path or ``"bpm=..."`` spec.
        negative_prompt: text to steer away from.
        mask_image: optional reference of a mask image.
        continuation_seconds: the station's ``continuation_seconds`` for this riff, or ``None``.
        line, column: where the riff was written (1-based), for messages.
    """

    prompt: str
    seed: int = KNOBS["seed"].default
    seed_from_previous: bool = False  # no ``seed:`` given: the plan starts it where the music is
    to: str | None = None
    to_seed: int | None = None
    clips: int = KNOBS["clips"].default
    denoising: float = KNOBS["denoising"].default
    to_denoising: float | None = None
    guidance: float = KNOBS["guidance"].default
    to_guidance: float | None = None
    steps: int | None = None
    seed_image: str = DEFAULT_SEED_IMAGE
    negative_prompt: str = ""
    mask_image: str | None = None
    continuation_seconds: float | None = None
    line: int = 0
    column: int = 0

    @property
    def end_prompt(self) -> str:
        return self.to if self.to is not None else self.prompt

    @property
    def end_seed(self) -> int:
        return self.to_seed if self.to_seed is not None else self.seed


@dataclass(frozen=True)
class OutputSpec:
    """One entry of ``outputs:``; ``options`` are the other keys, checked by the sink's factory."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class OscConfig:
    """``control.osc``: where the OSC server listens and which senders it accepts (empty = all)."""

    host: str = "127.0.0.1"
    port: int = 9000
    allow: list[str] = field(default_factory=list)
    tcp: bool | int = False  # OSC over TCP too: True = on the same port number, or a port
    max_messages_per_second: float | None = None  # each sender's rate limit (None: the server's default)
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class HttpConfig:
    """``control.http``: the web studio, its API, the ``http`` stream outputs and Prometheus metrics.

    Attributes:
        host: address to listen on (this machine only by default).
        port: TCP port.
        token_env: name of the environment variable that holds the edit token (``POST
            /api/state`` needs ``Authorization: Bearer <token>``); None: nobody may steer over HTTP.
        cors: origins allowed to read ``/api/nowplaying`` from other sites' pages (``"*"`` for
            any); empty: CORS off.
        origins: other origins (``https://radio.example.org`` behind a reverse proxy) whose pages
            may open the WebSocket and post; the server's own origin always may.
        max_connections: open connections at most; more are answered 503 and closed.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token_env: str | None = None
    cors: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    max_connections: int = 256
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class ControlConfig:
    """The ``control:`` section; a server runs only when its part is present."""

    osc: OscConfig | None = None
    http: HttpConfig | None = None


@dataclass(frozen=True)
class Playlist:
    """A checked playlist. It loops forever: after the last riff comes the first again."""

    path: Path
    station: StationSpec
    riffs: tuple[RiffSpec, ...]
    outputs: tuple[OutputSpec, ...] = ()
    control: ControlConfig = ControlConfig()

    def where(self, line: int, column: int) -> str:
        """``file:line:column`` for messages about a part of this playlist."""
        return f"{self.path}:{line}:{column}"
