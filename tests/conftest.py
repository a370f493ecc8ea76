"""Session fixtures for every test; helper functions live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from helpers import green_threshold_onnx


@pytest.fixture(scope="session")
def green_model(tmp_path_factory) -> Path:
    """Path of the tiny green-threshold ONNX model (3 bands, tile 64, overlap 16)."""
    return green_threshold_onnx(tmp_path_factory.mktemp("models") / "green.onnx")
