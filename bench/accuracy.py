"""Accuracy, leave one tile out: each member and the ensemble, with and without TTA, through the real engine.

The six labelled contest tiles (Data1, 2, 4, 5, 7, 8; 600 x 500 px, 2 m) give six folds. The training helper's
cross-validation (``python -m training fit --folds 6``) left one checkpoint per member and fold under
``runs/cv/<member>/fold_<k>/last.pt``, trained on the other five tiles (the last epoch, as in MODEL_CARD.md:
nothing is chosen on the held-out tile). Each is exported to ONNX with the shipped
ensemble's tiling and float16 weights (``training.export.export_checkpoint``, the code of ``python -m training
export --fp16``), or run from the checkpoint with ``--backend torch``. The fold's members also form a fold ensemble
(an ``ensemble.json`` with the shipped ensemble's fusion, weights and threshold). Each model runs on the held-out
tile through ``engine.api.extract_array`` (pixel size 2 m; tiling, Hann blending, threshold and the default 1 px
opening included) and its final mask is scored against the label with ``engine.metrics``: cropland IoU, F1,
precision, recall, boundary F1 (2 px), ratio error, object precision/recall/F1 (connected fields matched at
IoU >= 0.5).

A trivial row, every pixel called cropland, shows what the tile's cropland share alone scores (IoU = that share).
The study baseline (``bench.study_baseline``) writes its own JSON on the same folds; ``bench.report`` puts both
into one table.

Examples::

    .venv/bin/python -m bench.accuracy                        # all members + ensemble, TTA off and on
    .venv/bin/python -m bench.accuracy --tta off --folds 1 2  # quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import CONTEST, DEFAULT_ENSEMBLE, REPO, RUNS, add_device_args, machine_facts, write_json

METRICS = ("iou", "f1", "precision", "recall", "boundary_f1", "ratio_pred", "ratio_ref", "ratio_error",
           "object_precision", "object_recall", "object_f1")


def score(pred: np.ndarray, label: np.ndarray, tolerance_px: int = 2) -> dict:
    """Metrics of a predicted cropland mask (bool (H, W)) against a label (uint8: 1 cropland, 0 other, 255 ignored)."""
    from engine import metrics as m

    valid = label != 255
    ref = label == 1
    pred = pred & valid
    pix = m.pixel_metrics(pred, ref, valid)
    bnd = m.boundary_f1(pred, ref, tolerance_px, valid)
    obj = m.object_metrics(m.label_instances(pred), m.label_instances(ref), 0.5, valid)
    return {**{k: pix[k] for k in ("iou", "f1", "precision", "recall", "ratio_pred", "ratio_ref", "ratio_error",
                                   "tp", "fp", "fn", "tn")},
            "boundary_f1": bnd["f1"], "object_precision": obj["precision"], "object_recall": obj["recall"],
            "object_f1": obj["f1"], "fields_pred": int(obj["n_pred"]), "fields_ref": int(obj["n_ref"])}


def summarise(rows: list[dict], keys=("model", "tta")) -> list[dict]:
    """Mean over folds of :data:`METRICS` per (model, tta), plus pooled IoU/F1 from the summed counts."""
    from engine.metrics import metrics_from_counts

    out = []
    for key in dict.fromkeys(tuple(r[k] for k in keys) for r in rows):
        mine = [r for r in rows if tuple(r[k] for k in keys) == key]
        counts = {c: int(sum(r[c] for r in mine)) for c in ("tp", "fp", "fn", "tn")}
        pooled = metrics_from_counts(counts)
        out.append({**dict(zip(keys, key, strict=True)), "folds": len(mine),
                    **{k: float(np.mean([r[k] for r in mine])) for k in METRICS},
                    "mean_abs_ratio_error": float(np.mean([abs(r["ratio_error"]) for r in mine])),
                    "pooled_iou": pooled["iou"], "pooled_f1": pooled["f1"]})
    return out


def read_tile(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image (3, H, W) uint16, label (H, W) uint8 with 255 = ignored) of a contest tile."""
    import rasterio

    from training.data import read_label

    with rasterio.open(CONTEST / "images" / f"{name}.tif") as ds:
        image = ds.read()
    return image, read_label(CONTEST / "labels" / f"{name}_reference.tif")


def shipped_ensemble() -> dict:
    """Fusion, threshold, weights, tiling and member names of the shipped ensemble (defaults when absent)."""
    spec = {"fusion": "mean", "threshold": 0.5, "weights": None, "tile_size": 512, "overlap": 64, "members": []}
    if DEFAULT_ENSEMBLE.is_file():
        from engine.api import load_model
        from engine.options import ExtractOptions

        ens = load_model(DEFAULT_ENSEMBLE, ExtractOptions(device="cpu", threads=1))
        spec.update(fusion=ens.fusion, threshold=ens.threshold, weights=ens.weights, tile_size=ens.tile_size,
                    overlap=ens.overlap, members=[m.meta.name for m in ens.members])
    return spec


def fold_dirs(cv_run: Path) -> dict[int, tuple[str, Path]]:
    """fold number -> (held-out raster, checkpoint) of one cross-validation run."""
    out = {}
    for d in sorted(cv_run.glob("fold_*")):
        summary = d / "summary.json"
        if summary.is_file() and (d / "last.pt").is_file():
            held = list(json.loads(summary.read_text())["test"])
            out[int(d.name.split("_")[1])] = (held[0], d / "last.pt")
    return out


def fold_model(ckpt: Path, member: str, fold: int, backend: str, tile: int, overlap: int, fp16: bool) -> Path:
    """The file the engine runs for one member and fold: an ONNX export (cached) or the checkpoint itself.

    ``fp16``: store float16 weights (float32 compute), as the shipped members are exported.
    """
    if backend == "torch":
        return ckpt
    from training.export import export_checkpoint

    out = RUNS / "accuracy" / "onnx" / member / f"fold_{fold}{'_fp16w' if fp16 else ''}.onnx"
    if not out.is_file() or out.stat().st_mtime < ckpt.stat().st_mtime:
        export_checkpoint(ckpt, out, fp16=fp16, tile_size=tile, overlap=overlap)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cv-root", type=Path, default=REPO / "runs" / "cv", help="folder of runs/cv/<member>/fold_<k>")
    p.add_argument("--members", nargs="+", default=None,
                   help="member run names under --cv-root (default: the shipped ensemble's members)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="only these fold numbers")
    p.add_argument("--tta", choices=("off", "on", "both"), default="both", help="test-time augmentation (8 views)")
    p.add_argument("--tile-size", type=int, default=None, help="default: the shipped ensemble's")
    p.add_argument("--overlap", type=int, default=None, help="default: the shipped ensemble's")
    p.add_argument("--fusion", choices=("mean", "vote"), default=None, help="default: the shipped ensemble's")
    p.add_argument("--no-ensemble", action="store_true", help="members only")
    p.add_argument("--fp32-weights", action="store_true",
                   help="export fold models with float32 weights (default: float16 weights, as the shipped members)")
    p.add_argument("--out", type=Path, default=RUNS / "accuracy.json", help="result JSON")
    add_device_args(p)
    args = p.parse_args(argv)

    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from engine.api import extract_array, load_model
    from engine.options import ExtractOptions

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    shipped = shipped_ensemble()
    tile = args.tile_size or shipped["tile_size"]
    overlap = args.overlap if args.overlap is not None else shipped["overlap"]
    fusion = args.fusion or shipped["fusion"]
    members = args.members or shipped["members"] or sorted(
        d.name for d in args.cv_root.iterdir() if (d / "cv_summary.json").is_file())
    folds = {m: fold_dirs(args.cv_root / m) for m in members}
    common = sorted(set.intersection(*(set(f) for f in folds.values())))
    if args.folds:
        common = [k for k in common if k in args.folds]
    if not common:
        sys.exit(f"no fold has a checkpoint for every member of {members} under {args.cv_root}")
    weights = shipped["weights"] if shipped["weights"] and len(shipped["weights"]) == len(members) else \
        [1.0] * len(members)
    ttas = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
    result = {"benchmark": "accuracy", "command": "python -m bench.accuracy " + " ".join(argv or sys.argv[1:]),
              "machine": machine_facts(), "backend": args.backend, "device": args.device, "tile": tile,
              "overlap": overlap, "fusion": fusion, "threshold": shipped["threshold"], "weights": weights,
              "members": members, "rows": []}
    for k in common:
        held = {folds[m][k][0] for m in members}
        if len(held) != 1:
            sys.exit(f"fold {k} holds out different rasters across members: {held}")
        raster = held.pop()
        image, label = read_tile(raster)
        result["rows"].append({"fold": k, "raster": raster, "model": "all cropland (trivial)", "tta": False,
                               "seconds": 0.0, **score(np.ones(label.shape, bool), label)})
        files = {m: fold_model(folds[m][k][1], m, k, args.backend, tile, overlap, not args.fp32_weights)
                 for m in members}
        models = dict(files)
        if not args.no_ensemble and len(members) > 1:
            ens_json = RUNS / "accuracy" / f"fold_{k}_{args.backend}_ensemble.json"
            write_json(ens_json, {"name": f"fold_{k}", "fusion": fusion, "threshold": shipped["threshold"],
                                  "tile_size": tile, "overlap": overlap,
                                  "members": [{"path": str(files[m]), "weight": w}
                                              for m, w in zip(members, weights, strict=True)]})
            models["ensemble"] = ens_json
        for name, path in models.items():
            base = ExtractOptions(device=args.device, backend=args.backend, threads=args.threads, pixel_size_m=2.0,
                                  tile_size=tile, overlap=overlap)
            ens = load_model(path, base)
            for tta in ttas:
                opts = ExtractOptions(**{**base.__dict__, "tta": tta})
                t0 = time.perf_counter()
                _, _, mask = extract_array(image, ens, options=opts)
                row = {"fold": k, "raster": raster, "model": name, "tta": tta,
                       "seconds": time.perf_counter() - t0, **score(mask == 1, label)}
                result["rows"].append(row)
                print(f"fold {k} ({raster}) {name}{' +TTA' if tta else ''}: IoU {row['iou']:.4f}, F1 {row['f1']:.4f}, "
                      f"boundary F1 {row['boundary_f1']:.4f}, ratio error {row['ratio_error']:+.4f}, "
                      f"object F1 {row['object_f1']:.3f}", flush=True)
        result["summary"] = summarise(result["rows"])
        write_json(args.out, result)
    for s in result["summary"]:
        print(f"mean {s['model']}{' +TTA' if s['tta'] else ''}: IoU {s['iou']:.4f}, F1 {s['f1']:.4f}, boundary F1 "
              f"{s['boundary_f1']:.4f}, |ratio error| {s['mean_abs_ratio_error']:.4f}, object F1 {s['object_f1']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
