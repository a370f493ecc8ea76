"""The model card's numbers: each model run by the engine, as a user runs it, on every set's validation split.

For every validation scene of the v2 dataset catalogue (:mod:`training.datasets`: contest, gf2, naip, nsw, denmark;
spatial splits, no pixel shared with training), the scene's source values (as the data set delivers them: 8-bit
NAIP, 16-bit contest, Sentinel-2 and Danish DN; GF-2, delivered as standardised floats with no DN to go back to,
as its percentile-stretched 8-bit image) are written as a GeoTIFF on its own grid
(its CRS and transform; sets without a CRS get their pixel size stated), :func:`engine.api.extract` runs each model
with the engine's defaults (tiling, normalisation, resampling, ``--split auto``, clean-up), and the fields it
returns are burnt back onto the scene grid and compared with the reference: pixel IoU/F1 and cropland-ratio error
against the extent labels (unlabelled pixels left out), object precision/recall/F1 at IoU >= 0.5 against the
reference fields (sets with fields; the contest's block labels have none). Counts are pooled over a set's scenes.
The all-cropland baseline (every labelled pixel called cropland) is scored alike.

This differs from ``python -m training.v2 evaluate``, which scores a v2 model's heads on the same splits with its own
simple field rule: here what is scored is the engine's output, so v1 (extent only, 2 m) and v2 compare as users
would see them.

    nice -n 5 .venv/bin/python -m bench.model_card --model v2=resources/models/ensemble.json \
        --model v1=resources/models/v1/ensemble.json --out runs/bench/model_card

Writes ``OUT/model_card.json`` (and with ``--pictures`` one PNG per set and model: reference outlines green,
the engine's red) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETS = ("contest", "gf2", "naip", "nsw", "denmark")


def write_scene(scene, path: Path) -> tuple[object, float | None]:
    """The scene's source values (``scene.raw``, in their own dtype; else ``scene.image`` on 0..1 as 8-bit) as an
    RGB GeoTIFF at ``path``.

    Returns (the transform the engine's polygons come back in, the pixel size to state for rasters without a
    CRS, else None)."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_user_input(scene.space) if scene.space else None
    except CRSError:
        crs = None
    transform = scene.transform if crs is not None else Affine.identity()
    data = scene.raw
    if data is None:
        data = np.clip(np.rint(scene.image * 255.0), 0, 255).astype(np.uint8)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": 3,
               "dtype": data.dtype.name, "transform": transform, "tiled": True, "blockxsize": 256,
               "blockysize": 256}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return transform, None if crs is not None else float(scene.gsd_m)


def burn_fields(fields, shape: tuple[int, int], transform) -> np.ndarray:
    """Field polygons -> (H, W) int32 instance image on the grid ``transform`` (0 = no field)."""
    from rasterio.features import rasterize

    shapes = [(f.geometry, k) for k, f in enumerate(fields, start=1) if f.geometry is not None]
    if not shapes:
        return np.zeros(shape, np.int32)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")


def picture(scene, pred_inst: np.ndarray, path: Path, max_px: int = 900) -> None:
    """``scene``'s stretched image with the reference fields' outlines (green) and the predicted ones (red), at
    most ``max_px`` wide, as a PNG at ``path``."""
    import cv2

    def outlines(inst: np.ndarray) -> np.ndarray:  # pixels next to another label (field, other field, none)
        edge = np.zeros(inst.shape, bool)
        edge[:, 1:] |= inst[:, 1:] != inst[:, :-1]
        edge[1:, :] |= inst[1:, :] != inst[:-1, :]
        return edge

    rgb = np.clip(scene.image.transpose(1, 2, 0) * 255, 0, 255).astype(np.uint8).copy()
    if scene.instances is not None:
        rgb[outlines(scene.instances)] = (40, 220, 40)
    rgb[outlines(pred_inst)] = (240, 40, 40)
    scale = min(1.0, max_px / rgb.shape[1])
    if scale < 1.0:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), rgb[:, :, ::-1])


class Pool:
    """Pixel and object counts of one set, summed over its scenes."""

    def __init__(self) -> None:
        self.pix = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        self.obj = {"tp": 0.0, "n_pred": 0.0, "n_ref": 0.0}
        self.has_objects = False
        self.seconds = 0.0

    def add(self, pred_inst: np.ndarray, scene) -> None:
        from engine import metrics as m
        from training.datasets.scene import IGNORE

        valid = scene.extent != IGNORE
        for k, v in m.confusion(pred_inst > 0, scene.extent == 1, valid).items():
            self.pix[k] += v
        if scene.instances is not None:
            self.has_objects = True
            o = m.object_metrics(pred_inst, scene.instances, 0.5, valid)
            for k in self.obj:
                self.obj[k] += o[k]

    def metrics(self) -> dict[str, float | None]:
        from engine import metrics as m

        pix = m.metrics_from_counts(self.pix)
        out = {"iou": pix["iou"], "f1": pix["f1"], "ratio_pred": pix["ratio_pred"], "ratio_ref": pix["ratio_ref"],
               "ratio_error": pix["ratio_error"], "seconds": round(self.seconds, 1)}
        if self.has_objects:
            tp, n_pred, n_ref = self.obj["tp"], self.obj["n_pred"], self.obj["n_ref"]
            p = tp / n_pred if n_pred else 0.0
            r = tp / n_ref if n_ref else 0.0
            out.update(object_precision=p, object_recall=r, object_f1=2 * p * r / (p + r) if p + r else 0.0,
                       fields_pred=int(n_pred), fields_ref=int(n_ref))
        return out


def score_model(model_path: str | None, scenes: list, work: Path, threads: int, log=print,
                pictures: Path | None = None, label: str = "", min_area_m2: float = 0.0,
                max_hole_m2: float = 0.0) -> dict[str, dict]:
    """Per set, the engine's fields of ``model_path`` (None: the all-cropland baseline) scored on ``scenes``;
    with ``pictures``, each set's largest scene drawn there as ``SET_LABEL.png`` (see :func:`picture`);
    ``min_area_m2`` / ``max_hole_m2``: the engine's area filters (0: off, the command line's default)."""
    from engine.api import ExtractOptions, extract, load_model

    model = None
    if model_path is not None:
        model = load_model(model_path, ExtractOptions(threads=threads, device="cpu"))
    pools: dict[str, Pool] = {}
    drawn = set()  # each set's largest scene, drawn with ``pictures``
    if pictures is not None:
        largest: dict[str, object] = {}
        for s in scenes:
            if s.dataset not in largest or s.extent.size > largest[s.dataset].extent.size:
                largest[s.dataset] = s
        drawn = {id(s) for s in largest.values()}
    for scene in scenes:
        pool = pools.setdefault(scene.dataset, Pool())
        if model is None:
            pool.add(np.ones(scene.extent.shape, np.int32), scene)
            continue
        path = work / f"{scene.dataset}_{scene.name}.tif"
        transform, pixel = write_scene(scene, path)
        t0 = time.perf_counter()
        options = ExtractOptions(threads=threads, device="cpu", pixel_size_m=pixel, min_area_m2=min_area_m2,
                                 max_hole_m2=max_hole_m2)
        result = extract(path, model, options=options, log=lambda _msg: None)
        pool.seconds += time.perf_counter() - t0
        pred = burn_fields(result.fields, scene.extent.shape, transform)
        pool.add(pred, scene)
        path.unlink()
        if id(scene) in drawn:
            picture(scene, pred, pictures / f"{scene.dataset}_{label}.png")
    out = {name: pool.metrics() for name, pool in sorted(pools.items())}
    log(json.dumps({"model": model_path or "all-cropland", **{k: round(v["iou"], 4) for k, v in out.items()}}))
    return out


def table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (set, model): IoU, F1, ratio error, object P/R/F1, fields predicted / reference."""
    rows = ["| set | model | pixel IoU | pixel F1 | ratio error | object precision | object recall | object F1 "
            "| fields (pred / ref) |", "|---|---|---|---|---|---|---|---|---|"]
    sets = sorted({s for per in results.values() for s in per}, key=lambda s: SETS.index(s) if s in SETS else 99)
    for s in sets:
        for name, per in results.items():
            r = per.get(s)
            if r is None:
                continue
            obj = ("| {object_precision:.3f} | {object_recall:.3f} | {object_f1:.3f} | {fields_pred} / {fields_ref} "
                   .format(**r) if "object_f1" in r else "| - | - | - | - ")
            rows.append(f"| {s} | {name} | {r['iou']:.3f} | {r['f1']:.3f} | {r['ratio_error']:+.3f} {obj}|")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model to score (repeatable); NAME labels its rows")
    p.add_argument("--datasets", default=",".join(SETS), help="catalogue names, comma-separated")
    p.add_argument("--data-root", type=Path, help="folder of the data sets (default ../shared/data)")
    p.add_argument("--limit", type=int, help="at most this many tiles per tiled set (smoke runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-baseline", action="store_true", help="skip the all-cropland rows")
    p.add_argument("--min-area", type=float, default=0.0, help="drop fields below this (m²), as the engine's option")
    p.add_argument("--max-hole", type=float, default=0.0, help="fill holes below this (m²), as the engine's option")
    p.add_argument("--pictures", action="store_true",
                   help="draw each set's largest scene with reference (green) and predicted (red) outlines")
    p.add_argument("--out", type=Path, default=Path("runs/bench/model_card"))
    args = p.parse_args(argv)
    from training.datasets import load_scenes

    models = [(m.split("=", 1) if "=" in m else (Path(m).stem, m)) for m in args.model]
    if not models:
        p.error("give at least one --model NAME=PATH")
    names = [s.strip() for s in args.datasets.split(",") if s.strip()]
    scenes = [s for s in load_scenes(names, args.data_root, None, args.limit, log=lambda _m: None, keep_raw=True)
              if s.split == "val"]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for name, path in models:
            results[name] = score_model(path, scenes, Path(tmp), args.threads,
                                        pictures=args.out if args.pictures else None, label=name,
                                        min_area_m2=args.min_area, max_hole_m2=args.max_hole)
        if not args.no_baseline:
            results["all-cropland"] = score_model(None, scenes, Path(tmp), args.threads)
    doc = {"models": dict(models), "datasets": names, "limit": args.limit, "min_area_m2": args.min_area,
           "max_hole_m2": args.max_hole, "results": results}
    (args.out / "model_card.json").write_text(json.dumps(doc, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
