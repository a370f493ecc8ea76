"""Score exported v2 models (ONNX members or an ``ensemble.json``) on the catalogue's validation splits.

The members run in ONNX Runtime sessions opened by the engine (:func:`engine.api.load_model`), inputs normalised by
the engine's :func:`engine.normalize.normalize` from each member's metadata, outputs fused as the engine fuses
(weighted mean), tiles blended by :func:`training.multihead_fit.predict_scene` (the engine's grid and Hann taper).
The numbers are those of :func:`training.multihead_fit.evaluate_scenes`, per data set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxHeads:
    """Tile runner over exported multi-head members: (N, 3, t, t) float32 on 0..1 -> [extent, boundary]
    probabilities (N, 2, t, t), the weighted mean over members.

    Raises :class:`engine.errors.ModelError` when a member lacks the ``extent``/``boundary`` outputs.
    """

    def __init__(self, model: str | Path, threads: int | None = None) -> None:
        from engine.api import load_model
        from engine.errors import ModelError
        from engine.options import ExtractOptions

        self.ensemble = load_model(model, ExtractOptions(threads=threads) if threads else None)
        for m in self.ensemble.members:
            names = [o.name for o in m.session.get_outputs()]
            if names[:2] != ["extent", "boundary"]:
                raise ModelError(f"{m.path}: outputs {names}; a v2 model has 'extent' and 'boundary' "
                                 "(export it with `python -m training.v2 export`).")

    def __call__(self, xb: np.ndarray) -> list[np.ndarray]:
        from engine.normalize import normalize

        valid = np.ones((xb.shape[0], *xb.shape[2:]), bool)
        total: list[np.ndarray] | None = None
        weights = self.ensemble.weights
        for member, weight in zip(self.ensemble.members, weights, strict=True):
            x = normalize(xb * np.float32(member.meta.input_scale), valid, member.meta, None)
            outs = member.session.run(["extent", "boundary"], {member.session.get_inputs()[0].name: x})
            if total is None:
                total = [np.float32(weight) * o for o in outs]
            else:
                total = [t + np.float32(weight) * o for t, o in zip(total, outs, strict=True)]
        return [t / np.float32(sum(weights)) for t in total]


def evaluate_model(model: str | Path, datasets: list[str], root: Path | None = None, limit: int | None = None,
                   tile: int | None = None, overlap: int | None = None, threads: int | None = None,
                   log=print) -> dict[str, dict[str, float]]:
    """Metrics per data set of ``model`` on the validation splits of ``datasets`` (tile/overlap default: the
    model's)."""
    from .datasets import load_scenes
    from .multihead_fit import evaluate_scenes

    run = OnnxHeads(model, threads)
    val = [s for s in load_scenes(datasets, root, None, limit, log) if s.split == "val"]
    return evaluate_scenes(run, val, tile or run.ensemble.tile_size, overlap if overlap is not None
                           else run.ensemble.overlap)
