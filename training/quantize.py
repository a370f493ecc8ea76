"""int8 static quantisation of an exported member (ONNX Runtime QDQ), calibrated on training tiles.

    python -m training.v2 quantize runs/v2/models/unet_w16_fp32.onnx --out runs/v2/models/unet_w16_int8.onnx

The member must have fp32 weights (``python -m training.v2 export`` without ``--fp16``). Calibration tiles are
random crops of the catalogue's *training* scenes (never validation ground), normalised exactly as the engine
normalises them for this member (:func:`engine.normalize.normalize` from its metadata), so the activation ranges
ONNX Runtime records are those the engine will feed. Weights are int8 per output channel, activations uint8
(the combination ONNX Runtime's x86 kernels run fastest with VNNI), in QDQ format, so the file stays a plain
ONNX graph any runtime reads. The metadata of the fp32 file is carried over with ``int8`` recorded in it.
Whether the quantised member is kept is decided on the validation splits (``python -m training.v2 evaluate``):
issue 13 keeps it only where it costs at most 0.005 IoU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.metadata import METADATA_KEY

from .errors import TrainingError


class TileReader:
    """ONNX Runtime calibration reader: ``n_tiles`` crops of ``tile`` px from ``scenes``, in batches of one.

    ``scenes``: :class:`training.datasets.scene.Scene` (image (3, H, W) float32 on 0..1); ``meta``: the
    member's :class:`engine.metadata.ModelMetadata`; ``input_name``: the graph's input. Crops are drawn with
    probability proportional to scene area, from a fixed seed.
    """

    def __init__(self, scenes: list, meta, input_name: str, n_tiles: int = 64, tile: int = 256,
                 seed: int = 0) -> None:
        from engine.normalize import normalize

        rng = np.random.default_rng(seed)
        usable = [s for s in scenes if min(s.shape) >= tile]
        if not usable:
            raise TrainingError(f"no training scene is at least {tile} px on each side to calibrate on; give a "
                                "smaller --tile.")
        area = np.array([s.shape[0] * s.shape[1] for s in usable], np.float64)
        self.batches: list[dict[str, np.ndarray]] = []
        for k in rng.choice(len(usable), n_tiles, p=area / area.sum()):
            s = usable[k]
            r = int(rng.integers(0, s.shape[0] - tile + 1))
            c = int(rng.integers(0, s.shape[1] - tile + 1))
            x = s.image[None, :, r:r + tile, c:c + tile].astype(np.float32)
            valid = np.ones((1, tile, tile), bool)
            self.batches.append({input_name: normalize(x * np.float32(meta.input_scale), valid, meta, None)})
        self._next = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration feed, or None when all were given (the ONNX Runtime reader protocol)."""
        return next(self._next, None)


def quantize_member(model: str | Path, out: str | Path, scenes: list, n_tiles: int = 64, tile: int = 256,
                    seed: int = 0) -> dict[str, Any]:
    """Quantise the fp32 ONNX member ``model`` to int8 QDQ at ``out``, calibrated on ``scenes`` (training split).

    Returns {"onnx", "bytes", "fp32_bytes", "max_abs_diff" (per output, on the first calibration tile)}.
    Raises :class:`TrainingError` for fp16-weight members, members without engine metadata, or an existing
    ``out``.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engine.metadata import ModelMetadata

    from .export import set_metadata_props

    model, out = Path(model), Path(out)
    if out.exists():
        raise TrainingError(f"{out} exists; give another --out (nothing is overwritten).")
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise TrainingError(f"{model} carries no engine metadata ({METADATA_KEY}); export it with "
                            "`python -m training.v2 export`.")
    meta = ModelMetadata.from_onnx_props(props, str(model))
    if meta.extra.get("fp16_weights") or any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        raise TrainingError(f"{model} has float16 weights; quantise the fp32 export (`python -m training.v2 "
                            "export` without --fp16).")
    reader = TileReader(scenes, meta, proto.graph.input[0].name, n_tiles, tile, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepared = out.with_name(out.stem + ".prep.onnx")
    try:
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        prepared.unlink(missing_ok=True)
    q = onnx.load(str(out))
    record = json.loads(props[METADATA_KEY])
    record.setdefault("extra", {})["int8"] = {"format": "QDQ", "weights": "int8 per channel",
                                              "activations": "uint8", "calibration_tiles": n_tiles,
                                              "calibration_tile_px": tile, "from": model.name}
    set_metadata_props(q, {**props, METADATA_KEY: json.dumps(record)})
    onnx.save(q, str(out))
    feed = reader.batches[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, feed)
    got = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(None, feed)
    names = [o.name for o in proto.graph.output]
    diffs = {n: float(np.abs(a - b).max()) for n, a, b in zip(names, ref, got, strict=True)}
    return {"onnx": str(out), "bytes": out.stat().st_size, "fp32_bytes": model.stat().st_size,
            "max_abs_diff": diffs}
