"""Export a checkpoint to ONNX with the engine's metadata, and check it against PyTorch.

The graph is ``softmax(model(x), dim=1)``: input ``input`` (N, bands, H, W) float32 standardised as the
metadata says, output ``probabilities`` (N, 2, H, W) float32; N, H and W are dynamic (H and W multiples of
32). ``torch.onnx.export(dynamo=False, opset_version=17)``. The metadata
(:meth:`engine.metadata.ModelMetadata.to_onnx_props`) goes into ``model.metadata_props``.

``fp16`` stores every float32 weight as float16 followed by a ``Cast`` to float32: the file is half the size
and computation stays float32, which is what CPUs run fastest (ONNX Runtime folds the casts when it loads
the model).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.metadata import METADATA_KEY, ModelMetadata

from .checkpoint import load_checkpoint, model_from_checkpoint
from .errors import CheckpointError, DataError, TrainingError

OPSET = 17
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
#: Tile size written to the metadata by default: large tiles give the model more context and fewer seams, and
#: cover a 600 x 500 contest tile in two.
DEFAULT_TILE = 512


class WithSoftmax(nn.Module):
    """Wraps a logits model: (N, C, H, W) logits -> probabilities over C."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def weights_to_fp16(model_proto) -> int:
    """Store float32 initializers of an ONNX model as float16 + Cast; returns the number converted (in
    place)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    casts, kept = [], []
    converted = 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "__cast"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return converted


def export_onnx(model: nn.Module, metadata: ModelMetadata, path: str | Path, fp16: bool = False) -> Path:
    """Write ``model`` (logits) as an ONNX file of probabilities carrying ``metadata``; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = WithSoftmax(model.cpu().eval()).eval()
    dummy = torch.zeros(1, metadata.n_bands, 64, 64)
    tmp = path.with_name(path.name + ".tmp.onnx")
    torch.onnx.export(
        wrapped, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
        input_names=["input"], output_names=["probabilities"],
        dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                      "probabilities": {0: "batch", 2: "height", 3: "width"}},
        do_constant_folding=True,
    )
    proto = onnx.load(str(tmp))
    tmp.unlink()
    if fp16:
        weights_to_fp16(proto)
    metadata.output = "probabilities"
    set_metadata_props(proto, metadata.to_onnx_props())
    proto.producer_name = "cropland-extractor-training"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def onnx_probabilities(path: str | Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Run an exported model with ONNX Runtime on CPU: x (N, bands, H, W) float32 -> (N, 2, H, W) float32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def parity_input(metadata: ModelMetadata, image_path: str | Path | None, size: int = 256) -> np.ndarray:
    """A real tile for the parity check: the top-left ``size`` px of ``image_path``, standardised, (1, b, s,
    s).

    Without an image a fixed random tile is used (and the check says so).
    """
    if image_path is None:
        rng = np.random.default_rng(0)
        return rng.normal(size=(1, metadata.n_bands, size, size)).astype(np.float32)
    from .data import read_image

    scale = metadata.input_scale if metadata.normalization == "input_scale" else None
    img, _, _ = read_image(Path(image_path), metadata.input_bands, scale)
    h, w = img.shape[1:]
    s = min(size, h, w) // 32 * 32
    if s < 32:
        raise DataError(f"parity image {image_path} is smaller than 32 px.")
    tile = img[:, :s, :s]
    mean = np.asarray(metadata.mean, np.float32)[:, None, None]
    std = np.asarray(metadata.std, np.float32)[:, None, None]
    tile = (tile - mean) / std
    return tile[None].astype(np.float32)


def parity_check(model: nn.Module, path: str | Path, x: np.ndarray) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime probabilities on ``x``."""
    with torch.no_grad():
        ref = WithSoftmax(model.cpu().eval())(torch.from_numpy(x)).numpy()
    return float(np.max(np.abs(ref - onnx_probabilities(path, x))))


def export_checkpoint(checkpoint: str | Path, onnx_path: str | Path, fp16: bool = False,
                      tile_size: int | None = None, overlap: int | None = None, name: str | None = None,
                      metrics: dict[str, Any] | None = None, parity_image: str | Path | None = None,
                      parity_tol: float | None = None) -> dict[str, Any]:
    """Export a ``fit`` checkpoint and check parity; returns a report (path, size, parity, tolerance).

    Raises :class:`TrainingError` when the ONNX probabilities differ from PyTorch's by more than the tolerance
    (1e-4 for fp32, 1e-2 for fp16 weights); the file is removed then.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    meta = ModelMetadata.from_dict(dict(ckpt["metadata"]), source=str(checkpoint))
    train_tile = int(ckpt["args"]["tile"])
    meta.tile_size = tile_size or DEFAULT_TILE
    meta.overlap = overlap if overlap is not None else meta.tile_size // 8
    if name:
        meta.name = name
    if metrics is not None:
        meta.metrics = metrics
    meta.extra = {**meta.extra, "training_tile": train_tile, "fp16_weights": fp16,
                  "fit_args": {k: v for k, v in ckpt["args"].items() if k not in ("resume", "out")},
                  "epochs_done": ckpt["epoch"], "steps_done": ckpt["step"], "torch": torch.__version__}
    meta.validate(str(checkpoint))
    if parity_image is None:
        names = ckpt["metadata"].get("training_data") or []
        parity_image = _find_training_image(ckpt, names)
    x = parity_input(meta, parity_image)
    path = export_onnx(model, meta, onnx_path, fp16=fp16)
    diff = parity_check(model, path, x)
    tol = parity_tol or (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    report = {"onnx": str(path), "bytes": path.stat().st_size, "parity_max_abs_diff": diff, "tolerance": tol,
              "parity_input": str(parity_image) if parity_image else "random tile", "metadata": asdict(meta)}
    if diff > tol:
        path.unlink()
        raise TrainingError(f"{onnx_path}: ONNX and PyTorch probabilities differ by {diff:.2e} "
                            f"(> {tol:.0e}); the file was removed.")
    return report


def _find_training_image(ckpt: dict[str, Any], names: list[str]) -> Path | None:
    images = ckpt["args"].get("images")
    if images and names:
        folder = Path(images)
        for candidate in sorted(folder.glob(f"{names[0]}.*")) if folder.is_dir() else []:
            return candidate
    return None


def run_export(args) -> int:
    """The ``export`` command; returns the exit status."""
    metrics = None
    if args.metrics:
        try:
            data = json.loads(Path(args.metrics).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"--metrics {args.metrics}: cannot read JSON ({exc}).") from exc
        metrics = data.get("mean", data)
    report = export_checkpoint(args.checkpoint, args.onnx, args.fp16, args.tile_size, args.overlap, args.name,
                               metrics, args.parity_image, args.parity_tol)
    print(f"wrote {report['onnx']} ({report['bytes'] / 2**20:.2f} MiB); parity max |diff| "
          f"{report['parity_max_abs_diff']:.2e} <= {report['tolerance']:.0e} on {report['parity_input']}")
    return 0


def set_metadata_props(proto, props: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX ModelProto ``proto`` by ``props`` (key -> string value)."""
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def restamp_metadata(path: str | Path) -> bool:
    """Rewrite the metadata of an exported ONNX model from the engine record it carries (graph untouched).

    Models exported before the Deepness keys were JSON-encoded (``model_type`` = ``Segmentor``) load in
    Deepness after this. Returns whether the file changed; raises :class:`engine.errors.ModelError` for a file
    without engine metadata.
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    metadata = ModelMetadata.from_onnx_props(props, str(path))
    wanted = {**props, **metadata.to_onnx_props()}
    wanted[METADATA_KEY] = props[METADATA_KEY]  # the engine's record is kept byte for byte
    if wanted == props:
        return False
    set_metadata_props(proto, wanted)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return True


def deepness_copy(path: str | Path, out: str | Path, size: int | None = None) -> Path:
    """Write a copy of the exported model ``path`` whose input height and width are fixed, for Deepness.

    Deepness (0.6.5) sets its tile size from the model's input shape and cannot use a dynamic one; the engine
    keeps using the dynamic original (any tile size). ``size``: the fixed edge in pixels (default: the
    metadata's ``tile_size``). The batch dimension stays dynamic; weights and metadata are unchanged.
    Returns ``out``.
    """
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    metadata = ModelMetadata.from_onnx_props(props, str(path))
    size = int(size or metadata.tile_size)
    multiple = int(metadata.extra.get("size_multiple", 1) or 1)
    if size % multiple:
        raise DataError(f"{path}: the fixed size {size} px must be a multiple of {multiple} px for this network.")
    for value in (*proto.graph.input[:1], *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for axis in (2, 3):
                dims[axis].ClearField("dim_param")
                dims[axis].dim_value = size
    del proto.graph.value_info[:]  # intermediate shapes were inferred for symbolic sizes; ONNX Runtime re-infers
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out
