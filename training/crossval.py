"""Cross-validation: one ``fit`` per fold on the other folds' rasters, scored on the held-out fold.

With K equal to the number of rasters this is leave-one-raster-out. The held-out rasters are never used to
choose anything (no early stopping, no checkpoint choice on them): each fold's model is its last epoch, or
the best epoch on a validation strip cut from its own training rasters when ``val_fraction`` > 0.
Writes ``fold_<k>/`` (one fit each, with ``pred_<raster>.npy``), ``cv_metrics.csv`` (one row per held-out
raster) and ``cv_summary.json`` (per-fold rows, mean over folds, pooled counts).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.metrics import metrics_from_counts

from .data import Raster, spatial_groups, split_strip
from .loop import FitConfig, fit

REPORTED = ("iou", "f1", "precision", "recall", "accuracy", "boundary_f1", "ratio_error")
COLUMNS = (*REPORTED, "tp", "fp", "fn", "tn")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over rows of :data:`REPORTED` metrics, plus metrics of the pooled confusion counts."""
    mean = {k: float(np.mean([r[k] for r in rows])) for k in REPORTED if all(k in r for r in rows)}
    counts = {k: int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn", "tn")}
    pooled = {k: v for k, v in metrics_from_counts(counts).items() if k in REPORTED}
    return {"mean": mean, "pooled": pooled, "rows": rows}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write per-raster rows (fold, raster, metrics) as CSV."""
    keys = ["fold", "raster", *REPORTED, "tp", "fp", "fn", "tn"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def cross_validate(cfg: FitConfig, rasters: list[Raster], k: int, val_fraction: float = 0.0,
                   extra: list[Raster] | None = None, log=print) -> dict[str, Any]:
    """Run K-fold spatial cross-validation; returns (and writes) the summary.

    Args:
        cfg: fit options; ``cfg.out`` is the CV folder, each fold writes to ``<out>/fold_<k>``.
        rasters: the rasters to split (see :func:`training.data.spatial_groups`).
        k: number of folds (== len(rasters): leave one raster out).
        val_fraction: share of rows of each training raster kept as a validation strip (0 = none).
        extra: rasters added to every fold's training set, never held out.
    """
    out = Path(cfg.out)
    groups = spatial_groups(rasters, k)
    rows: list[dict[str, Any]] = []
    for fold, held in enumerate(groups, start=1):
        train = [r for i, r in enumerate(rasters) if i not in held]
        val: list[Raster] = []
        if val_fraction > 0:
            parts = [split_strip(r, val_fraction) for r in train]
            train, val = [p[0] for p in parts], [p[1] for p in parts]
        test = [rasters[i] for i in held]
        log(f"fold {fold}/{k}: hold out {', '.join(r.name for r in test)}")
        fold_cfg = replace(cfg, out=str(out / f"fold_{fold}"), resume=None)
        summary = fit(fold_cfg, train, val, test, log=log, extra=extra)
        for name, m in summary["test"].items():
            rows.append({"fold": fold, "raster": name, **{k2: m[k2] for k2 in COLUMNS}})
        write_rows(out / "cv_metrics.csv", rows)
    result = {"arch": cfg.arch, "folds": k, "val_fraction": val_fraction, **summarise(rows)}
    (out / "cv_summary.json").write_text(json.dumps(result, indent=2))
    mean = result["mean"]
    log(f"{cfg.arch}: mean IoU {mean['iou']:.4f}, mean F1 {mean['f1']:.4f} over {k} folds")
    return result
