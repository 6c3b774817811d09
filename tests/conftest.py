"""Shared fixtures. Real things wherever a user has real things; no network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the hub: models are built here and loaded back from a local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline saved with save_pretrained (about 4 MB)."""
    from riffradio.engine.testmodel import build_test_model

    return build_test_model(tmp_path_factory.mktemp("tiny-model"), size="tiny")
