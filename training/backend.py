"""The PyTorch inference backend: training checkpoints run by the engine, registered with it on import.

:mod:`engine.backends` imports this module the first time a ``.pt``/``.pth``/``.ckpt`` file (or backend "torch") is
asked for; importing it registers :class:`TorchMember` with :func:`engine.backends.register_backend`. So the
dependency points one way: training uses the engine's interface, the engine never imports training's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.backends import BACKEND_PLUGINS, register_backend, scores_to_probability
from engine.errors import DependencyError, ModelError
from engine.metadata import ModelMetadata


def _noop(_: str) -> None:
    pass


class TorchMember:
    """One PyTorch checkpoint written by ``python -m training``, loaded with ``torch.load(weights_only=True)``.

    Runs in fp16 autocast on CUDA when ``fp16`` is not False.
    """

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None, fp16: bool | None = None,
                 log=_noop):
        try:
            import torch
        except ImportError as exc:
            raise DependencyError(
                "PyTorch is not installed in this Python; use the ONNX model, or install requirements/train.txt."
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"Model file not found: {self.path}")
        if device == "cuda" and not torch.cuda.is_available():
            raise DependencyError("CUDA was asked for but torch.cuda.is_available() is False "
                                  f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}).")
        self.device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .errors import CheckpointError

        try:
            ckpt = load_checkpoint(self.path)
            model = model_from_checkpoint(ckpt)
        except (CheckpointError, RuntimeError, KeyError, ValueError) as exc:
            raise ModelError(f"{self.path} is not a usable training checkpoint: {exc}") from exc
        self.meta = ModelMetadata.from_dict(ckpt["metadata"], str(self.path))
        if self.meta.outputs:
            raise ModelError(f"{self.path}: a checkpoint with named outputs ({', '.join(self.meta.channels)}) runs "
                             "through its ONNX export (python -m training export); use the .onnx file.")
        self.channels = ["extent"]
        self.model = model.eval().to(self.device)
        self.fp16 = self.device == "cuda" and fp16 is not False
        gpu = f", {torch.cuda.get_device_name(0)}" if self.device == "cuda" else ""
        self.label = f"{self.device} (torch {torch.__version__}{gpu}{', fp16' if self.fp16 else ''})"
        self._torch = torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) normalised tiles -> float32 (N, H, W) cropland probability."""
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        scores = out.float().cpu().numpy()
        meta = self.meta
        if meta.output == "probabilities":  # checkpoints return logits; exported ONNX adds the softmax
            meta = ModelMetadata(**{**meta.__dict__, "output": "logits"})
        return scores_to_probability(scores, meta)

    def release_memory(self) -> None:
        """Return cached CUDA memory to the driver (nothing to do on the CPU)."""
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


register_backend("torch", BACKEND_PLUGINS["torch"][1], TorchMember)
