"""Inference backends: one model file -> a callable from normalised tiles to cropland probabilities.

* ONNX Runtime (default; ``.onnx``), here: CUDAExecutionProvider when present and usable, else CPU.
* PyTorch (``.pt``/``.pth``/``.ckpt`` checkpoints written by ``python -m training``): provided by the training
  package (:mod:`training.backend`), which registers itself with :func:`register_backend` when imported. The engine
  never imports training's code; it only knows, in :data:`BACKEND_PLUGINS`, which module to import the first time
  such a file is asked for (as an entry-point table would, for a folder that is not pip-installed).

A member is called with float32 (N, C, H, W) normalised tiles and returns float32 (N, H, W) cropland
probabilities, and has ``path``, ``meta`` (:class:`ModelMetadata`), ``device`` ("cpu"/"cuda"), ``label`` and
``release_memory()``. When CUDA was asked for (``device="cuda"``) and cannot be used, loading fails and says why;
with ``device="auto"`` the run falls back to the CPU and the log says why.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DependencyError, ModelError
from .metadata import ModelMetadata

LogFn = Callable[[str], None]
# A loader: (path, device, threads, fp16, log) -> member.
Loader = Callable[..., object]


@dataclass(frozen=True)
class Backend:
    """A registered backend: its ``name``, the file ``suffixes`` it loads by default, and its ``load`` function."""

    name: str
    suffixes: tuple[str, ...]
    load: Loader


# Backends that live outside the engine: name -> (module that registers it when imported, suffixes it loads).
BACKEND_PLUGINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("training.backend", (".pt", ".pth", ".ckpt")),
}
TORCH_SUFFIXES = BACKEND_PLUGINS["torch"][1]
_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, suffixes: tuple[str, ...], load: Loader) -> None:
    """Make ``load(path, device=, threads=, fp16=, log=) -> member`` the backend ``name`` (replacing one of the same
    name), used for files with ``suffixes`` when the backend is ``"auto"``."""
    _BACKENDS[name] = Backend(name, tuple(s.lower() for s in suffixes), load)


def get_backend(name: str) -> Backend:
    """The backend ``name``, importing its plugin module first when it is not registered yet.

    Raises :class:`DependencyError` when the plugin or a package it needs cannot be imported.
    """
    if name not in _BACKENDS and name in BACKEND_PLUGINS:
        module = BACKEND_PLUGINS[name][0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DependencyError(
                f"The {name} backend ({module}) cannot be loaded: {exc}. Use the ONNX model, or install "
                "requirements/train.txt."
            ) from exc
    if name not in _BACKENDS:
        raise DependencyError(f"No inference backend named {name!r}; known: {', '.join(sorted(_known()))}.")
    return _BACKENDS[name]


def _known() -> set[str]:
    return set(_BACKENDS) | set(BACKEND_PLUGINS)


def _noop(_: str) -> None:
    pass


def scores_to_probability(scores: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Model output (N, C, H, W) -> float32 (N, H, W) probability of ``meta.cropland_class``.

    Applies a softmax over channels when ``meta.output == "logits"`` (a sigmoid for one-channel logits).
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 4:
        raise ModelError(f"model {meta.name}: expected an output of shape (N, C, H, W), got {scores.shape}.")
    if scores.shape[1] == 1:
        s = scores[:, 0]
        return (1.0 / (1.0 + np.exp(-s))).astype(np.float32) if meta.output == "logits" else s
    if meta.output == "logits":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (e[:, meta.cropland_class] / e.sum(axis=1)).astype(np.float32)
    return scores[:, meta.cropland_class]


def named_outputs(outputs: dict[str, np.ndarray], meta: ModelMetadata) -> np.ndarray:
    """A model's raw outputs (ONNX output name -> array) -> float32 (N, K, H, W), one channel per name of
    ``meta.channels`` (extent first), as ``meta.outputs`` declares them (see :mod:`engine.metadata`)."""
    planes = []
    for name in meta.channels:
        spec = meta.outputs[name]
        tensor = spec.get("tensor", name)
        if tensor not in outputs:
            if len(outputs) == 1 and "tensor" not in spec:
                tensor = next(iter(outputs))
            else:
                raise ModelError(f"model {meta.name}: its metadata reads output {name!r} from the tensor {tensor!r}, "
                                 f"but the network's outputs are {', '.join(outputs)}.")
        scores = np.asarray(outputs[tensor], dtype=np.float32)
        if scores.ndim == 3:
            scores = scores[:, None]
        if scores.ndim != 4:
            raise ModelError(f"model {meta.name}: output {tensor!r} has shape {scores.shape}; expected (N, C, H, W).")
        activation = spec.get("activation", "none" if name == "distance" else "probabilities")
        if activation == "logits":
            if scores.shape[1] == 1:
                scores = 1.0 / (1.0 + np.exp(-scores))
            else:
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores = e / e.sum(axis=1, keepdims=True)
        channels = spec.get("channels")
        if channels is None:
            if scores.shape[1] == 1:
                channels = [0]
            elif name == "extent":
                channels = [meta.cropland_class]
            elif scores.shape[1] == 2:  # softmax over (not edge, edge), as training.v2 exports it
                channels = [1]
            else:
                raise ModelError(f"model {meta.name}: output {name!r} reads {scores.shape[1]} channels of "
                                 f"{tensor!r}; its metadata must say which with 'channels'.")
        if max(channels) >= scores.shape[1]:
            raise ModelError(f"model {meta.name}: output {name!r} reads channels {channels} of {tensor!r}, "
                             f"which has {scores.shape[1]}.")
        planes.append(scores[:, channels].sum(axis=1))
    return np.stack(planes, axis=1).astype(np.float32, copy=False)


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says a (GPU) allocation failed, so a smaller batch may succeed."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(k in text for k in ("out of memory", "outofmemory", "failed to allocate", "cudaerrormemoryallocation"))


class OnnxMember:
    """One ONNX model in an ONNX Runtime session.

    Attributes:
        path, meta (:class:`ModelMetadata`), device ("cpu" or "cuda"), label (e.g. "cpu (onnxruntime, 2 threads)").
    """

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None, log: LogFn = _noop):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DependencyError(
                "onnxruntime is not installed in this Python; install the runtime requirements "
                "(pip install -c requirements/constraints.txt -r requirements/runtime.txt)."
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"Model file not found: {self.path}")
        providers, why_not = _onnx_providers(ort, device)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.log_severity_level = 3
        if providers[0] == "CPUExecutionProvider":
            # Idle pool threads spin for a while by default: in an ensemble they burn the cores the next member
            # (and blending, vectorising) needs; off, the ensemble predicts faster (docs/BENCHMARKS.md §9).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if _shared_cpu_arena(ort):
                opts.add_session_config_entry("session.use_env_allocators", "1")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
            raise ModelError(
                f"{self.path} is not a usable ONNX model (corrupt, truncated or not ONNX): {exc}"
            ) from exc
        used = self.session.get_providers()
        if providers[0] != "CPUExecutionProvider" and used[0] == "CPUExecutionProvider":
            why_not = "onnxruntime could not initialise CUDA (driver, CUDA or cuDNN version mismatch?)"
        if device == "cuda" and why_not:
            raise DependencyError(f"CUDA was asked for but cannot be used: {why_not}.")
        if why_not and device == "auto" and _cuda_hardware_present():
            log(f"CUDA not used for {self.path.name}: {why_not}; running on the CPU.")
        self.device = "cuda" if used[0] == "CUDAExecutionProvider" else "cpu"
        # The CPU arena (one for all members, see _shared_cpu_arena) keeps the largest member's activations
        # between calls; shrinking it after every call costs speed (docs/BENCHMARKS.md §9), so it is shrunk once,
        # by release_memory(), after inference.
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.label = (f"{self.device} (onnxruntime {used[0]}"
                      + (f", {opts.intra_op_num_threads} threads)" if self.device == "cpu" else ")"))
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = ModelMetadata.from_onnx_props(props, str(self.path))
        self.channels = self.meta.channels
        self._output_names = [o.name for o in self.session.get_outputs()]
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        channels = inp.shape[1] if len(inp.shape) == 4 else None
        if isinstance(channels, int) and channels != self.meta.n_bands:
            raise ModelError(
                f"{self.path}: the network takes {channels} channels but its metadata lists "
                f"{self.meta.n_bands} input bands {self.meta.input_bands}."
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) normalised tiles -> float32 (N, H, W) cropland probability, or (N, K, H, W) with
        one channel per name of :attr:`channels` when the model declares named outputs."""
        if self.meta.outputs:
            outs = self.session.run(None, {self._input_name: x.astype(self._input_dtype, copy=False)})
            return named_outputs(dict(zip(self._output_names, outs, strict=True)), self.meta)
        out = self.session.run(None, {self._input_name: x.astype(self._input_dtype, copy=False)})[0]
        return scores_to_probability(out, self.meta)

    def release_memory(self) -> None:
        """Hand the CPU memory arena's free blocks back (a one-tile call of the smallest size with arena
        shrinkage); GPU memory stays with the session."""
        if self.device != "cpu":
            return
        side = max(32, int(self.meta.extra.get("size_multiple", 1) or 1))
        shape = [d if isinstance(d, int) else s for d, s in
                 zip(self.session.get_inputs()[0].shape, (1, self.meta.n_bands, side, side), strict=False)]
        with contextlib.suppress(Exception):  # a model that refuses the probe keeps its arena; nothing else changes
            self.session.run(None, {self._input_name: np.zeros(shape, self._input_dtype)}, self._shrink)


_SHARED_ARENA: list[bool] = []


def _shared_cpu_arena(ort) -> bool:
    """Register one CPU memory arena in ONNX Runtime's process-wide environment (once), for every session that
    opts in: ensemble members run one after another, so sharing it about halves the peak memory of a three-member
    ensemble at no cost in speed (docs/BENCHMARKS.md §9). False if this onnxruntime cannot do it."""
    if not _SHARED_ARENA:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _SHARED_ARENA.append(True)
        except Exception:  # an older onnxruntime, or an allocator another plugin registered first
            _SHARED_ARENA.append(False)
    return _SHARED_ARENA[0]


def _cuda_hardware_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def _onnx_providers(ort, device: str) -> tuple[list, str]:
    """Providers to ask ONNX Runtime for, and why CUDA cannot be used ("" when it may)."""
    if device == "cpu":
        return ["CPUExecutionProvider"], ""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"], (
            f"this onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(available)}); "
            "install requirements/gpu.txt (onnxruntime-gpu) in place of onnxruntime"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], ""


def load_member(path: Path, backend: str = "auto", device: str = "auto", threads: int | None = None,
                fp16: bool | None = None, log: LogFn = _noop):
    """Load one model file with the backend its suffix (or ``backend``) names.

    Returns a member (an :class:`OnnxMember`, or a plugin backend's, e.g. ``training.backend.TorchMember``).
    Raises :class:`ModelError` for a missing or unusable file and :class:`DependencyError` when the backend's
    package is missing or CUDA was required and is unusable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if backend == "auto":
        owner = next((name for name, (_, suffixes) in BACKEND_PLUGINS.items() if suffix in suffixes), None)
        owner = owner or next((b.name for b in _BACKENDS.values() if suffix in b.suffixes), "onnx")
        backend = owner
    if backend == "onnx" and suffix in TORCH_SUFFIXES:
        raise ModelError(f"{path} is a PyTorch checkpoint; use backend 'torch' or export it to ONNX.")
    return get_backend(backend).load(path, device=device, threads=threads, fp16=fp16, log=log)


def _load_onnx(path: Path, device: str = "auto", threads: int | None = None, fp16: bool | None = None,
               log: LogFn = _noop) -> OnnxMember:
    """An :class:`OnnxMember`. ONNX Runtime computes in the precision the graph was exported with, so asking for
    fp16 changes nothing here, and the log says so (``python -m training export --fp16`` stores fp16 weights)."""
    member = OnnxMember(path, device=device, threads=threads, log=log)
    if fp16:
        log(f"fp16 does not apply to the ONNX model {member.path.name}: ONNX Runtime runs it as exported "
            f"({'float16' if member._input_dtype == np.float16 else 'float32'} input); fp16 applies to PyTorch "
            "checkpoints on CUDA.")
    return member


register_backend("onnx", (".onnx",), _load_onnx)
