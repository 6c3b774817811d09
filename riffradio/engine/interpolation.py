"""The interpolation maths of a riff: pure functions, no model, no device.

Riffusion moves from a start to an end point with two different formulas, and reproducing
its images bit for bit means keeping both exactly as they are:

* text embeddings: ``start + alpha * (end - start)`` (:func:`lerp`);
* guidance scale and denoising strength: ``start * (1 - alpha) + end * alpha`` (:func:`mix`);
* noise: spherical interpolation (:func:`slerp`), so that the interpolated noise keeps the
  norm of Gaussian noise instead of shrinking towards the middle as a straight line would.

Both lerp forms are the same number on paper; in floating point they round differently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

# Above this |cos(angle)| the two vectors are nearly parallel and slerp's 1/sin(angle) blows
# up; Riffusion (and the usual slerp recipe) then falls back to a straight line.
SLERP_DOT_THRESHOLD = 0.9995

ArrayT = TypeVar("ArrayT")


def lerp(start: ArrayT, end: ArrayT, alpha: float) -> ArrayT:
    """Linear interpolation in Riffusion's embedding form ``start + alpha * (end - start)``.

    Args:
        start: value at ``alpha = 0`` (a tensor, an array or a float).
        end: value at ``alpha = 1``, same shape as ``start``.
        alpha: position, usually in [0, 1].

    Returns:
        ``start`` itself at ``alpha = 0`` (the formula is exact there) and ``end`` itself at
        ``alpha = 1``, where the formula can be one rounding off; the formula in between.
    """
    if alpha == 1.0:
        return end
    return start + alpha * (end - start)  # type: ignore[operator]


def mix(start: float, end: float, alpha: float) -> float:
    """Linear interpolation of a scalar knob in Riffusion's form ``start * (1 - alpha) + end * alpha``.

    Used for the guidance scale and the denoising strength; exact at both ends.
    """
    return start * (1.0 - alpha) + end * alpha


def slerp_numpy(
    start: np.ndarray, end: np.ndarray, alpha: float, dot_threshold: float = SLERP_DOT_THRESHOLD
) -> np.ndarray:
    """Spherical interpolation between two arrays, treated as single vectors.

    Args:
        start: value at ``alpha = 0``; any shape, not all zeros.
        end: value at ``alpha = 1``; same shape and dtype as ``start``, not all zeros.
        alpha: position along the great circle, usually in [0, 1].
        dot_threshold: when ``|cos(angle)|`` exceeds this, the vectors are (anti)parallel and
            the result is the straight line ``(1 - alpha) * start + alpha * end`` instead.

    Returns:
        An array of the inputs' shape and dtype. Computed in that dtype, in the order of
        operations of Riffusion's ``slerp``, so that it matches it bit for bit.
    """
    dot = np.sum(start * end / (np.linalg.norm(start) * np.linalg.norm(end)))
    if np.abs(dot) > dot_threshold:
        return (1 - alpha) * start + alpha * end
    theta_0 = np.arccos(dot)
    sin_theta_0 = np.sin(theta_0)
    theta_t = theta_0 * alpha
    sin_theta_t = np.sin(theta_t)
    s0 = np.sin(theta_0 - theta_t) / sin_theta_0
    s1 = sin_theta_t / sin_theta_0
    return s0 * start + s1 * end


def slerp(
    start: torch.Tensor, end: torch.Tensor, alpha: float, dot_threshold: float = SLERP_DOT_THRESHOLD
) -> torch.Tensor:
    """:func:`slerp_numpy` for tensors: same maths, result on the input's device and dtype.

    Like Riffusion, the arithmetic runs in numpy on the CPU (a latent is 16 384 numbers, so this
    costs microseconds). bfloat16, which numpy lacks, is computed in float32 and rounded back.
    """
    import torch

    compute_dtype = torch.float32 if start.dtype == torch.bfloat16 else start.dtype
    start_np = start.detach().to("cpu", compute_dtype).numpy()
    end_np = end.detach().to("cpu", compute_dtype).numpy()
    result = np.asarray(slerp_numpy(start_np, end_np, alpha, dot_threshold))
    return torch.from_numpy(result).to(device=start.device, dtype=start.dtype)
