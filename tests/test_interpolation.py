"""Properties of the riff's interpolation maths (lerp, mix, slerp), checked with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from riffradio.engine.interpolation import SLERP_DOT_THRESHOLD, lerp, mix, slerp, slerp_numpy

alphas = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
sizes = st.integers(min_value=2, max_value=64)


def _vectors(seed: int, size: int, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip(_cos(a, b), -1.0, 1.0)))


@settings(max_examples=200, deadline=None)
@given(seed=seeds, size=sizes, dtype=st.sampled_from([np.float32, np.float64]))
def test_slerp_is_exact_at_both_ends(seed: int, size: int, dtype: type) -> None:
    a, b = _vectors(seed, size, dtype)
    assert np.array_equal(slerp_numpy(a, b, 0.0), a)
    assert np.array_equal(slerp_numpy(a, b, 1.0), b)
    assert slerp_numpy(a, b, 0.5).dtype == dtype


@settings(max_examples=200, deadline=None)
@given(seed=seeds, size=sizes, alpha=alphas)
def test_slerp_moves_along_the_great_circle_at_constant_speed(seed: int, size: int, alpha: float) -> None:
    a, b = _vectors(seed, size)
    b = b / np.linalg.norm(b) * np.linalg.norm(a)  # same radius: slerp stays on that sphere
    assume(abs(_cos(a, b)) < SLERP_DOT_THRESHOLD)
    c = slerp_numpy(a, b, alpha)
    theta = _angle(a, b)
    assert np.linalg.norm(c) == pytest.approx(np.linalg.norm(a), rel=1e-9)
    assert _angle(a, c) == pytest.approx(alpha * theta, abs=1e-6)
    assert _angle(c, b) == pytest.approx((1 - alpha) * theta, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(seed=seeds, size=sizes, alpha=alphas)
def test_slerp_is_symmetric(seed: int, size: int, alpha: float) -> None:
    a, b = _vectors(seed, size)
    assume(abs(_cos(a, b)) < SLERP_DOT_THRESHOLD)
    np.testing.assert_allclose(slerp_numpy(a, b, alpha), slerp_numpy(b, a, 1.0 - alpha), rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    seed=seeds,
    size=sizes,
    alpha=alphas,
    epsilon=st.floats(min_value=0.0, max_value=1e-3),
    sign=st.sampled_from([1.0, -1.0]),
)
def test_slerp_falls_back_to_lerp_for_nearly_parallel_vectors(
    seed: int, size: int, alpha: float, epsilon: float, sign: float
) -> None:
    a, noise = _vectors(seed, size)
    b = sign * 2.0 * (a + epsilon * np.linalg.norm(a) * noise / np.linalg.norm(noise))
    assume(abs(_cos(a, b)) > SLERP_DOT_THRESHOLD)
    assert np.array_equal(slerp_numpy(a, b, alpha), (1 - alpha) * a + alpha * b)


def test_slerp_keeps_gaussian_noise_gaussian_where_lerp_shrinks_it() -> None:
    # Why noise is slerped: the midpoint of two independent N(0, 1) draws has std 1/√2 on a line.
    a, b = _vectors(0, 16_384)
    assert np.std(slerp_numpy(a, b, 0.5)) == pytest.approx(1.0, abs=0.02)
    assert np.std(0.5 * a + 0.5 * b) == pytest.approx(2**-0.5, abs=0.02)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, alpha=alphas, dtype=st.sampled_from([torch.float32, torch.float16, torch.float64]))
def test_tensor_slerp_is_the_numpy_maths_in_the_tensors_dtype(seed: int, alpha: float, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn((1, 4, 8, 8), generator=generator, dtype=dtype)
    b = torch.randn((1, 4, 8, 8), generator=generator, dtype=dtype)
    c = slerp(a, b, alpha)
    assert c.dtype == dtype and c.shape == a.shape
    assert np.array_equal(c.numpy(), slerp_numpy(a.numpy(), b.numpy(), alpha))
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)


def test_tensor_slerp_supports_bfloat16() -> None:
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn((2, 64), generator=generator), torch.randn((2, 64), generator=generator)
    c = slerp(a.bfloat16(), b.bfloat16(), 0.25)
    assert c.dtype == torch.bfloat16
    torch.testing.assert_close(c.float(), slerp(a, b, 0.25), atol=0.03, rtol=0.02)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(min_value=-1e6, max_value=1e6),
    end=st.floats(min_value=-1e6, max_value=1e6),
    alpha=alphas,
)
def test_lerp_and_mix_are_exact_at_the_ends_and_between_them_in_between(
    start: float, end: float, alpha: float
) -> None:
    assert lerp(start, end, 0.0) == start and lerp(start, end, 1.0) == end
    assert mix(start, end, 0.0) == start and mix(start, end, 1.0) == end
    low, high = min(start, end), max(start, end)
    slack = 1e-9 * max(abs(start), abs(end), 1.0)
    for value in (lerp(start, end, alpha), mix(start, end, alpha)):
        assert low - slack <= value <= high + slack


def test_lerp_uses_riffusions_embedding_form_and_mix_its_knob_form() -> None:
    # Same number on paper, different roundings: each must match Riffusion's own expression.
    start, end, alpha = 0.1, 0.7, 0.3
    assert lerp(start, end, alpha) == start + alpha * (end - start)
    assert mix(start, end, alpha) == start * (1.0 - alpha) + end * alpha
    a, b = torch.randn(77, 8), torch.randn(77, 8)
    assert torch.equal(lerp(a, b, 0.4), a + 0.4 * (b - a))
