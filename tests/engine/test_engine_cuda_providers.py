"""Provider selection and the CUDA fallback of the ONNX backend, with an ONNX Runtime that claims a CUDA provider.

The machines that run the suite have no GPU, so ``onnxruntime`` is wrapped: it lists CUDAExecutionProvider, and its
sessions (real CPU sessions underneath) report either CUDA as used or the fallback to the CPU that ONNX Runtime
makes when CUDA cannot be initialised. What the engine asks for, and what it logs or raises, is then real.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import onnxruntime
import pytest

from engine import backends
from engine.backends import load_member
from engine.errors import DependencyError

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def fake_ort(monkeypatch, listed: list[str], cuda_starts: bool, hardware: bool = True) -> list:
    """Install an onnxruntime listing ``listed`` providers whose sessions use CUDA when ``cuda_starts``; returns
    the provider lists sessions were asked for."""
    asked: list = []
    fake = types.ModuleType("onnxruntime")
    fake.__dict__.update({k: v for k, v in vars(onnxruntime).items() if not k.startswith("__")})

    class Session:
        def __init__(self, path, options=None, providers=None):
            asked.append(list(providers))
            self._real = onnxruntime.InferenceSession(path, options, providers=[CPU])
            self._used = [CUDA, CPU] if (cuda_starts and providers[0] == CUDA) else [CPU]

        def get_providers(self):
            return self._used

        def __getattr__(self, name):
            return getattr(self._real, name)

    fake.__version__ = onnxruntime.__version__
    fake.get_available_providers = lambda: list(listed)
    fake.InferenceSession = Session
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(backends, "_cuda_hardware_present", lambda: hardware)
    return asked


def test_cuda_is_chosen_when_listed_and_usable(monkeypatch, green_model):
    asked = fake_ort(monkeypatch, [CUDA, CPU], cuda_starts=True)
    lines = []
    member = load_member(green_model, device="auto", log=lines.append)
    assert asked == [[CUDA, CPU]] and member.device == "cuda"
    assert member.label == f"cuda (onnxruntime {CUDA})" and lines == []
    tiles = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    assert member(tiles).shape == (2, 64, 64)


def test_cpu_is_asked_for_alone(monkeypatch, green_model):
    asked = fake_ort(monkeypatch, [CUDA, CPU], cuda_starts=True)
    member = load_member(green_model, device="cpu")
    assert asked == [[CPU]] and member.device == "cpu"


def test_cuda_that_fails_to_start_falls_back_with_a_reason(monkeypatch, green_model):
    fake_ort(monkeypatch, [CUDA, CPU], cuda_starts=False)
    lines = []
    member = load_member(green_model, device="auto", log=lines.append)
    assert member.device == "cpu"
    assert len(lines) == 1 and "could not initialise CUDA" in lines[0] and "running on the CPU" in lines[0]
    with pytest.raises(DependencyError, match="CUDA was asked for but cannot be used: onnxruntime could not"):
        load_member(green_model, device="cuda")


def test_a_cpu_build_names_the_gpu_package(monkeypatch, green_model):
    fake_ort(monkeypatch, [CPU], cuda_starts=False)
    lines = []
    assert load_member(green_model, device="auto", log=lines.append).device == "cpu"
    assert len(lines) == 1 and "no CUDAExecutionProvider" in lines[0] and "onnxruntime-gpu" in lines[0]
    with pytest.raises(DependencyError, match=r"requirements/gpu\.txt"):
        load_member(green_model, device="cuda")
    fake_ort(monkeypatch, [CPU], cuda_starts=False, hardware=False)
    lines.clear()
    load_member(green_model, device="auto", log=lines.append)
    assert lines == []  # no GPU in the machine: nothing to explain


def test_fp16_with_onnx_says_it_does_not_apply(green_model):
    lines = []
    member = load_member(green_model, device="cpu", fp16=True, log=lines.append)
    assert member.device == "cpu"
    assert len(lines) == 1 and "fp16 does not apply to the ONNX model green.onnx" in lines[0]
    lines.clear()
    load_member(green_model, device="cpu", fp16=None, log=lines.append)
    assert lines == []
