"""A v2-shaped model with the real model's cost and realistic outputs, for timing the split before v2 is trained.

An untrained v2 candidate (outputs ``extent`` and ``boundary``, each (N, 2, H, W)) runs at the trained model's
speed, but its outputs are noise: the boundary split then cuts everything or nothing. This script keeps the
network (its outputs are multiplied by 0 and added, so ONNX Runtime still computes all of it) and replaces what
the engine reads with a cheap head on the model's input: ``extent`` = the smoothed brightness above its 30th
percentile, ``boundary`` = the gradient magnitude of the smoothed image above its 92nd percentile (percentiles
of a calibration raster), as two-channel logits. On the contest mosaics it gives fields along image edges
(11,133 on the 16 Mpx mosaic, many small: a pessimistic case for the split's cost; docs/BENCHMARKS.md §11).

Example::

    .venv/bin/python -m bench.probe_head --model ../probe_v2/unet_w16.onnx --out runs/probe_real
    .venv/bin/python -m bench.speed --sizes 16 --models ensemble --model runs/probe_real/ensemble.json \\
        --split none auto
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DATA, build_mosaic, mosaic_side


def _head(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernels of the head and, for a calibration image (H, W) already normalised as the model's input averaged
    over bands: (kernels, smoothed-and-boxed brightness, gradient magnitude)."""
    import cv2

    k = cv2.getGaussianKernel(9, 2.0)
    gauss = (k @ k.T).astype(np.float32)
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8
    smooth = cv2.filter2D(x, -1, gauss, borderType=cv2.BORDER_REFLECT)
    bright = cv2.blur(smooth, (15, 15))
    grad = np.sqrt(cv2.filter2D(smooth, -1, sobel) ** 2 + cv2.filter2D(smooth, -1, sobel.T) ** 2)
    return (gauss, sobel), bright, grad


def build(model: Path, calibration: Path, out: Path) -> Path:
    """Write ``out``/<model stem>_head.onnx and ``out``/ensemble.json; returns the ensemble path."""
    import onnx
    import rasterio
    from onnx import helper, numpy_helper

    net = onnx.load(str(model))
    meta = json.loads({p.key: p.value for p in net.metadata_props}["cropland_extractor"])
    mean, std = np.array(meta["mean"], np.float32), np.array(meta["std"], np.float32)
    scale = float(meta.get("input_scale", 255.0))
    with rasterio.open(calibration) as ds:
        n = min(2048, ds.height, ds.width)
        img = ds.read(meta.get("input_bands", [1, 2, 3]), window=((0, n), (0, n))).astype(np.float32) / scale
    gray = ((img - mean[:, None, None]) / std[:, None, None]).mean(0)
    (gauss, sobel), bright, grad = _head(gray)
    c, t = float(np.quantile(bright, 0.3)), float(np.quantile(grad, 0.92))
    ks, kt = 8.0 / float(bright.std()), 8.0 / float(grad.std())
    bands = len(meta.get("input_bands", [1, 2, 3]))

    def w(name, arr):
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    net.graph.initializer.extend([
        w("p_w1", np.full((1, bands, 1, 1), 1 / bands)), w("p_g", gauss[None, None]),
        w("p_box", np.full((1, 1, 15, 15), 1 / 225)), w("p_sx", sobel[None, None]), w("p_sy", sobel.T[None, None]),
        w("p_c", c), w("p_t", t), w("p_ks", ks), w("p_kt", kt), w("p_zero", 0.0)])
    outputs = [o.name for o in net.graph.output]
    if sorted(outputs) != ["boundary", "extent"]:
        sys.exit(f"{model}: expected the outputs extent and boundary (a v2 model), got {outputs}")
    for node in net.graph.node:
        node.output[:] = [("u_" + v if v in outputs else v) for v in node.output]
    node = helper.make_node
    net.graph.node.extend([
        node("Conv", [net.graph.input[0].name, "p_w1"], ["p_gray"]),
        node("Conv", ["p_gray", "p_g"], ["p_s"], pads=[4, 4, 4, 4]),
        node("Conv", ["p_s", "p_box"], ["p_big"], pads=[7, 7, 7, 7]),
        node("Conv", ["p_s", "p_sx"], ["p_gx"], pads=[1, 1, 1, 1]),
        node("Conv", ["p_s", "p_sy"], ["p_gy"], pads=[1, 1, 1, 1]),
        node("Mul", ["p_gx", "p_gx"], ["p_gx2"]), node("Mul", ["p_gy", "p_gy"], ["p_gy2"]),
        node("Add", ["p_gx2", "p_gy2"], ["p_m2"]), node("Sqrt", ["p_m2"], ["p_mag"]),
        node("Sub", ["p_big", "p_c"], ["p_e0"]), node("Mul", ["p_e0", "p_ks"], ["p_e"]),
        node("Sub", ["p_mag", "p_t"], ["p_b0"]), node("Mul", ["p_b0", "p_kt"], ["p_b"]),
        node("Mul", ["p_e", "p_zero"], ["p_z"]),
        node("Concat", ["p_z", "p_e"], ["p_ext2"], axis=1), node("Concat", ["p_z", "p_b"], ["p_bnd2"], axis=1),
        node("Mul", ["u_extent", "p_zero"], ["u_e0"]), node("Mul", ["u_boundary", "p_zero"], ["u_b0"]),
        node("Add", ["p_ext2", "u_e0"], ["extent"]), node("Add", ["p_bnd2", "u_b0"], ["boundary"])])
    onnx.checker.check_model(net)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{model.stem}_head.onnx"
    onnx.save(net, str(onnx_path))
    spec = {"name": f"{model.stem}-head", "description": f"{model.name}'s cost, outputs from an image head "
            "(bench.probe_head): for timing only", "fusion": "mean", "threshold": 0.5,
            "members": [{"path": onnx_path.name, "weight": 1.0}], "metrics": {}}
    ensemble = out / "ensemble.json"
    ensemble.write_text(json.dumps(spec, indent=1))
    return ensemble


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probe_head", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="ONNX of a v2 model (outputs extent and boundary)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="raster whose percentiles set the head's thresholds (default: the 16 Mpx contest mosaic)")
    p.add_argument("--out", type=Path, required=True, help="folder for the model and its ensemble.json")
    args = p.parse_args(argv)
    calibration = args.calibration or build_mosaic(DATA / f"contest_image_{mosaic_side(16)}.tif", mosaic_side(16))
    print(f"wrote {build(args.model, calibration, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
