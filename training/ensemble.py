"""Ensembles: score the fusion of cross-validation runs, and write ``ensemble.json`` over ONNX members.

``ensemble.json`` (read by the engine)::

    {"name": str, "description": str, "fusion": "mean" | "vote", "threshold": 0.5,
     "members": [{"path": "member.onnx", "weight": 1.0}, ...], "metrics": {...}}

Member paths are relative to the folder of ``ensemble.json``. ``mean`` fuses the weighted mean of the members'
cropland probabilities, then thresholds; ``vote`` thresholds each member and takes the weighted majority.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.ensemble import fuse as engine_fuse
from engine.masks import cropland
from engine.metadata import ModelMetadata
from engine.metrics import boundary_f1, pixel_metrics

from .crossval import COLUMNS, summarise
from .data import IGNORE, _label_key, _rasters_in, read_label
from .errors import CheckpointError, DataError


def fuse(probs: list[np.ndarray], weights: list[float] | None = None, fusion: str = "mean",
         threshold: float = 0.5) -> np.ndarray:
    """Fuse members' (H, W) cropland probabilities into one (H, W) float32 score in 0..1, exactly as the engine
    fuses an ensemble (:func:`engine.ensemble.fuse`).

    ``mean``: weighted mean of probabilities. ``vote``: weighted share of members whose probability is above
    ``threshold``; the fused score, like a probability, means cropland when above 0.5 (a strict majority).
    """
    return engine_fuse(probs, list(weights or [1.0] * len(probs)), fusion, [threshold] * len(probs))


def _labels_by_name(folder: Path) -> dict[str, Path]:
    return {_label_key(p): p for p in _rasters_in(folder, "labels")}


def evaluate_cv_ensemble(runs: list[Path], labels_dir: Path, fusion: str = "mean", threshold: float = 0.5,
                         ignore_value: int | None = None) -> dict[str, Any]:
    """Fuse the held-out probabilities of several cross-validation runs and score them per raster.

    Args:
        runs: folders written by ``fit --folds`` (``cv_summary.json``, ``fold_<k>/pred_<raster>.npy``) with
        the
            same folds.
        labels_dir: label rasters of the cross-validated images.

    Returns:
        ``{"members": {run: {"arch", "mean", "pooled", "rows"}}, "ensemble": {"mean", "pooled", "rows"}}``.
    """
    summaries = {}
    for run in runs:
        f = Path(run) / "cv_summary.json"
        if not f.is_file():
            raise CheckpointError(f"{run}: no cv_summary.json; run `fit --folds` into it first.")
        summaries[Path(run).name] = (Path(run), json.loads(f.read_text()))
    folds = {name: {(r["fold"], r["raster"]) for r in s["rows"]} for name, (_, s) in summaries.items()}
    first = next(iter(folds.values()))
    for name, f in folds.items():
        if f != first:
            raise DataError(f"run {name} was cross-validated on other folds than {next(iter(folds))}.")
    labels = _labels_by_name(labels_dir)
    rows = []
    for fold, raster in sorted(first):
        if raster not in labels:
            raise DataError(f"no label for raster {raster} in {labels_dir}.")
        ref = read_label(labels[raster], ignore_value)
        probs = []
        for _, (path, _) in summaries.items():
            pred_file = path / f"fold_{fold}" / f"pred_{raster}.npy"
            if not pred_file.is_file():
                raise CheckpointError(f"{pred_file} is missing.")
            probs.append(np.load(pred_file).astype(np.float32))
        fused = cropland(fuse(probs, fusion=fusion, threshold=threshold), 0.5)
        valid = ref != IGNORE
        m = pixel_metrics(fused, ref == 1, valid)
        m["boundary_f1"] = boundary_f1(fused, ref == 1, 2, valid)["f1"]
        rows.append({"fold": fold, "raster": raster, **{k: m[k] for k in COLUMNS}})
    members = {name: {"arch": s["arch"], "mean": s["mean"], "pooled": s["pooled"], "rows": s["rows"]}
               for name, (_, s) in summaries.items()}
    return {"fusion": fusion, "members": members, "ensemble": summarise(rows)}


def evaluate_cv_with_engine(runs: list[Path], images_dir: Path, labels_dir: Path, out: Path,
                            fusion: str = "mean", fp16: bool = True, threads: int | None = None,
                            ignore_value: int | None = None, log=print) -> dict[str, Any]:
    """Like :func:`evaluate_cv_ensemble`, but through the shipped inference path.

    Every fold's ``last.pt`` is exported to ONNX (``out/onnx/<run>/fold_<k>.onnx``, fp16 weights by default)
    and run by the engine (:func:`engine.api.extract_array`: its tiling, blending and normalisation) on the
    held-out raster, alone and fused in one ``ensemble.json`` per fold. Scores use the fused probability > 0.5
    (no post-processing). Returns the same structure as :func:`evaluate_cv_ensemble`.
    """
    from engine.api import ExtractOptions, extract_array, load_model
    from engine.io import FileSource

    from .data import pair_files
    from .export import export_checkpoint

    images = {img.stem: img for img, _ in pair_files(images_dir, labels_dir)}
    labels = _labels_by_name(labels_dir)
    summaries = {Path(r).name: json.loads((Path(r) / "cv_summary.json").read_text()) for r in runs}
    held = sorted({(row["fold"], row["raster"]) for s in summaries.values() for row in s["rows"]})
    options = ExtractOptions(device="cpu", backend="onnx", threads=threads, opening_px=0)
    member_rows: dict[str, list] = {name: [] for name in summaries}
    rows = []
    for fold, raster in held:
        paths = []
        for run in runs:
            onnx_path = out / "onnx" / Path(run).name / f"fold_{fold}.onnx"
            if not onnx_path.is_file():
                export_checkpoint(Path(run) / f"fold_{fold}" / "last.pt", onnx_path, fp16=fp16,
                                  parity_image=images[raster])
            paths.append(onnx_path)
        write_ensemble_json(out / "onnx" / f"fold_{fold}.ensemble.json", paths, f"fold {fold}", fusion=fusion)
        with FileSource(images[raster]) as src:  # the engine's reader: nodata, masks and NaN as when it runs
            raw, image_valid = src.read_inside(0, 0, src.height, src.width)
        ref = read_label(labels[raster], ignore_value)
        valid = ref != IGNORE
        targets = [(Path(r).name, p) for r, p in zip(runs, paths, strict=True)]
        targets.append(("ensemble", out / "onnx" / f"fold_{fold}.ensemble.json"))
        for name, model_path in targets:
            _, prob, _ = extract_array(raw, load_model(model_path, options), valid_mask=image_valid,
                                       options=options)
            pred = cropland(prob, 0.5)
            m = pixel_metrics(pred, ref == 1, valid)
            m["boundary_f1"] = boundary_f1(pred, ref == 1, 2, valid)["f1"]
            row = {"fold": fold, "raster": raster, **{k: m[k] for k in COLUMNS}}
            (rows if name == "ensemble" else member_rows[name]).append(row)
        log(f"fold {fold} ({raster}): ensemble IoU {rows[-1]['iou']:.4f}; members "
            + ", ".join(f"{n} {member_rows[n][-1]['iou']:.4f}" for n in member_rows))
    members = {name: {"arch": summaries[name]["arch"], **summarise(r)} for name, r in member_rows.items()}
    return {"fusion": fusion, "inference": "engine (ONNX Runtime, fp16 weights)" if fp16 else "engine (ONNX)",
            "members": members, "ensemble": summarise(rows)}


def markdown_table(result: dict[str, Any], metric: str = "iou") -> str:
    """Per-raster and mean ``metric`` of each member and the ensemble as a Markdown table."""
    rows = result["ensemble"]["rows"]
    names = list(result["members"])
    head = f"| held-out raster | {' | '.join(names)} | ensemble ({result['fusion']}) |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for row in rows:
        vals = []
        for n in names:
            hit = [r for r in result["members"][n]["rows"] if r["raster"] == row["raster"]]
            vals.append(f"{hit[0][metric]:.4f}" if hit else "")
        lines.append(f"| {row['raster']} | {' | '.join(vals)} | {row[metric]:.4f} |")
    means = [f"**{result['members'][n]['mean'][metric]:.4f}**" for n in names]
    lines.append(f"| **mean** | {' | '.join(means)} | **{result['ensemble']['mean'][metric]:.4f}** |")
    pooled = [f"{result['members'][n]['pooled'][metric]:.4f}" for n in names]
    lines.append(f"| pooled | {' | '.join(pooled)} | {result['ensemble']['pooled'][metric]:.4f} |")
    return "\n".join(lines)


def write_ensemble_json(path: str | Path, members: list[str | Path], name: str, description: str = "",
                        fusion: str = "mean", threshold: float = 0.5, weights: list[float] | None = None,
                        metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``ensemble.json`` after checking every member's metadata; returns the written dict.

    Raises :class:`CheckpointError` for a missing member, a member without metadata, or members that
    disagree on input bands, scale or classes (the engine feeds them one input).
    """
    import onnx

    path = Path(path)
    if weights is not None and len(weights) != len(members):
        raise CheckpointError(f"{len(weights)} weights for {len(members)} members.")
    if fusion not in ("mean", "vote") or not 0 < threshold < 1:
        raise CheckpointError("fusion must be mean or vote and threshold in (0, 1).")
    weights = weights or [1.0] * len(members)
    metas = []
    for m in members:
        m = Path(m)
        if not m.is_file():
            raise CheckpointError(f"ensemble member {m} does not exist.")
        proto = onnx.load(str(m), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        metas.append(ModelMetadata.from_onnx_props(props, str(m)))
    for m, meta in zip(members, metas, strict=True):
        ref = metas[0]
        if (meta.input_bands, meta.input_scale, meta.normalization, meta.classes) != \
                (ref.input_bands, ref.input_scale, ref.normalization, ref.classes):
            raise CheckpointError(f"ensemble member {m} reads other bands/scale/classes than {members[0]}.")
    data = {
        "name": name,
        "description": description,
        "fusion": fusion,
        "threshold": threshold,
        "members": [{"path": Path(os.path.relpath(Path(m).resolve(), path.resolve().parent)).as_posix(),
                     "weight": float(w)} for m, w in zip(members, weights, strict=True)],
        "metrics": metrics or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def run_evaluate_ensemble(args) -> int:
    """The ``evaluate-ensemble`` command; returns the exit status."""
    if args.engine:
        if args.images is None:
            raise DataError("--engine needs --images (the cross-validated images).")
        result = evaluate_cv_with_engine(args.runs, args.images, args.labels, args.out, args.fusion,
                                         threads=args.threads, ignore_value=args.ignore_value)
    else:
        result = evaluate_cv_ensemble(args.runs, args.labels, args.fusion, 0.5, args.ignore_value)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ensemble_cv.json").write_text(json.dumps(result, indent=2))
    tables = "\n\n".join(f"{m.upper()}\n\n{markdown_table(result, m)}" for m in ("iou", "f1"))
    (args.out / "ensemble_cv.md").write_text(tables + "\n")
    print(tables)
    return 0


def run_build_ensemble(args) -> int:
    """The ``build-ensemble`` command; returns the exit status."""
    metrics = None
    if args.metrics:
        try:
            result = json.loads(Path(args.metrics).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"--metrics {args.metrics}: cannot read JSON ({exc}).") from exc
        ens = result.get("ensemble", result)
        metrics = {"cv": "leave-one-tile-out", "mean": ens.get("mean"), "pooled": ens.get("pooled")}
        if "members" in result:
            metrics["members_mean"] = {k: v["mean"] for k, v in result["members"].items()}
    data = write_ensemble_json(args.out, args.members, args.name, args.description, args.fusion,
                               args.threshold, args.weights, metrics)
    print(f"wrote {args.out} with {len(data['members'])} member(s)")
    return 0
