"""Export a multi-head checkpoint to ONNX with named outputs ``extent`` and ``boundary`` (and ``distance``).

The ONNX graph: input ``input`` (N, 3, H, W) float32 standardised as the metadata says; outputs, in this order,

- ``extent``   (N, 2, H, W) softmax over (other, cropland): the v1 output layout, so it comes first and an engine
  that reads only the first output still works;
- ``boundary`` (N, 2, H, W) softmax over (not edge, field edge);
- ``distance`` (N, 1, H, W) 0..1, only for models trained with the distance head.

The model metadata (:class:`engine.metadata.ModelMetadata` JSON under ``cropland_extractor``) carries, besides the
usual fields, three top-level keys of the v2 contract:

- ``outputs``: the graph's output names in order, e.g. ``["extent", "boundary"]``;
- ``resolution_range_m``: [min, max] GSD (m/px) the engine may feed without resampling (``resolution_m`` is the
  training GSD, the one to resample into otherwise);
- ``stretch``: ``"percentile"``, the value normalisation training used (per-band 2-98 % stretch of the whole raster,
  :func:`engine.normalize.choose_stretch`), before ``input_scale``/``mean``/``std``.

An engine that does not know them keeps them in ``ModelMetadata.extra``. The export itself reuses
:mod:`training.export` (fp16 weights, opset, metadata writing), so both exports stay alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.metadata import METADATA_KEY, ModelMetadata

from .checkpoint import load_checkpoint
from .errors import TrainingError
from .export import DEFAULT_TILE, FP16_TOLERANCE, FP32_TOLERANCE, OPSET, set_metadata_props, weights_to_fp16
from .multihead import ExportHeads, MultiHeadNet
from .multihead_fit import model_from_multihead_checkpoint

#: Keys of ``extra`` written at the top level of the metadata JSON (the v2 output contract).
CONTRACT_KEYS = ("outputs", "resolution_range_m", "stretch")


def metadata_props(meta: ModelMetadata) -> dict[str, str]:
    """ONNX ``metadata_props`` of a multi-head model: :meth:`ModelMetadata.to_onnx_props` with the contract keys
    moved from ``extra`` to the top level of the JSON record."""
    props = meta.to_onnx_props()
    record = json.loads(props[METADATA_KEY])
    for key in CONTRACT_KEYS:
        if key in record["extra"]:
            record[key] = record["extra"].pop(key)
    props[METADATA_KEY] = json.dumps(record, sort_keys=True)
    return props


def export_multihead_onnx(model: MultiHeadNet, meta: ModelMetadata, path: str | Path, fp16: bool = False) -> Path:
    """Write ``model`` as ONNX with the named head outputs and ``meta``; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["extent", "boundary"] + (["distance"] if model.distance else [])
    dims = {0: "batch", 2: "height", 3: "width"}
    tmp = path.with_name(path.name + ".tmp.onnx")
    torch.onnx.export(ExportHeads(model.cpu().eval()).eval(), (torch.zeros(1, meta.n_bands, 64, 64),), str(tmp),
                      dynamo=False, opset_version=OPSET, input_names=["input"], output_names=names,
                      dynamic_axes={"input": dims, **{n: dims for n in names}}, do_constant_folding=True)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    if fp16:
        weights_to_fp16(proto)
    meta.output = "probabilities"
    meta.extra["outputs"] = names
    set_metadata_props(proto, metadata_props(meta))
    proto.producer_name = "cropland-extractor-training"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def parity(model: MultiHeadNet, path: Path, x: np.ndarray) -> dict[str, float]:
    """Max |PyTorch - ONNX Runtime| per output on ``x`` (N, 3, H, W) float32."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})
    with torch.no_grad():
        ref = [t.numpy() for t in ExportHeads(model.cpu().eval())(torch.from_numpy(x))]
    return {o.name: float(np.max(np.abs(a - b))) for o, a, b in zip(sess.get_outputs(), ref, got, strict=True)}


def export_multihead(checkpoint: str | Path, onnx_path: str | Path, fp16: bool = False, tile_size: int | None = None,
                     overlap: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Export a ``python -m training.v2 fit`` checkpoint and check parity on a fixed random tile.

    Returns a report (onnx, bytes, parity per output, tolerance, metadata). Raises :class:`TrainingError` (the
    file removed) when an output differs from PyTorch by more than 1e-4 (fp32) or 1e-2 (fp16 weights).
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_multihead_checkpoint(ckpt)
    meta = ModelMetadata.from_dict(dict(ckpt["metadata"]), source=str(checkpoint))
    meta.tile_size = tile_size or DEFAULT_TILE
    meta.overlap = overlap if overlap is not None else meta.tile_size // 8
    meta.name = name or meta.name
    meta.extra = {**meta.extra, "training_tile": int(ckpt["args"]["tile"]), "fp16_weights": fp16,
                  "fit_args": {k: v for k, v in ckpt["args"].items() if k not in ("resume", "out")},
                  "epochs_done": ckpt["epoch"], "steps_done": ckpt["step"], "torch": torch.__version__}
    meta.validate(str(checkpoint))
    path = export_multihead_onnx(model, meta, onnx_path, fp16)
    x = np.random.default_rng(0).normal(size=(1, meta.n_bands, 128, 128)).astype(np.float32)
    diffs = parity(model, path, x)
    tol = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    if max(diffs.values()) > tol:
        path.unlink()
        raise TrainingError(f"{onnx_path}: ONNX and PyTorch outputs differ by {diffs} (> {tol:.0e}); "
                            "the file was removed.")
    return {"onnx": str(path), "bytes": path.stat().st_size, "parity_max_abs_diff": diffs, "tolerance": tol,
            "metadata": asdict(meta)}
