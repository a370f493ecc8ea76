"""Which ``--split`` default is best on real data: the shipped default ensemble on the 8 held-out NAIP tiles.

The held-out tiles are :func:`training.recipes.us_checks.holdout_tiles` (every 5th of the 40 tiles of
``../shared/data/naip_us_fields_agoro``), resampled to the models' 2 m as ``us_checks.read_2m`` does. Each tile is
written as a GeoTIFF on a local 2 m UTM grid, its reference fields (the tile's instance mask, resampled alike)
polygonised into a GeoPackage on the same grid; the engine extracts fields with each ``--split`` and
``python -m engine evaluate`` scores them (pixel IoU, object F1 at IoU >= 0.5). Writes ``OUT/split_default.json``
and prints a Markdown table.

    nice -n 10 .venv/bin/python -m bench.split_default --out runs/bench/split_default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "naip_us_fields_agoro"
SPLITS = ("none", "extent", "image", "auto")


def write_tile(data: Path, name: str, out: Path) -> tuple[Path, Path]:
    """The tile at 2 m as ``out/NAME.tif`` and its reference fields as ``out/NAME_ref.gpkg`` (same grid)."""
    import cv2
    import pyogrio
    import rasterio
    import shapely
    from rasterio.crs import CRS
    from rasterio.features import shapes
    from rasterio.transform import from_origin

    from training.recipes.us_checks import read_2m

    img, _ = read_2m(data, name)
    with rasterio.open(data / "derived" / "instance_masks" / f"{name}.tif") as ds:
        inst = ds.read(1)
    inst = cv2.resize(inst, (img.shape[2], img.shape[1]), interpolation=cv2.INTER_NEAREST)
    transform, crs = from_origin(500000.0, 4000000.0, 2.0, 2.0), "EPSG:32616"
    tif = out / f"{name}.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=3, dtype="uint8",
                       crs=crs, transform=transform) as dst:
        dst.write(img)
    geoms = [shapely.geometry.shape(g) for g, v in shapes(inst.astype(np.int32), mask=inst > 0,
                                                         transform=transform, connectivity=4)]
    ref = out / f"{name}_ref.gpkg"
    ref.unlink(missing_ok=True)
    pyogrio.raw.write(str(ref), shapely.to_wkb(geoms), [np.arange(1, len(geoms) + 1, dtype=np.int64)], ["id"],
                      geometry_type="Polygon", crs=CRS.from_string(crs).to_wkt(), driver="GPKG")
    return tif, ref


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "split_default")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS))
    args = ap.parse_args(argv)
    from engine.api import ExtractOptions, OutputPaths, extract, load_model
    from training.recipes.us_checks import holdout_tiles

    args.out.mkdir(parents=True, exist_ok=True)
    names = holdout_tiles(args.data)
    tiles = [write_tile(args.data, n, args.out) for n in names]
    model = load_model(None, ExtractOptions())
    rows = {}
    for split in args.splits:
        scores, seconds = [], 0.0
        for name, (tif, ref) in zip(names, tiles, strict=True):
            fields = args.out / f"{name}_{split}.gpkg"
            fields.unlink(missing_ok=True)
            t0 = time.perf_counter()
            result = extract(tif, model, OutputPaths(vector=fields), ExtractOptions(split=split))
            seconds += time.perf_counter() - t0
            ev = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(fields), str(ref), "--json", "-"],
                                capture_output=True, text=True, check=True)
            scores.append({"fields": result.field_count, **json.loads(ev.stdout)})
        rows[split] = {"tiles": scores, "seconds": seconds}
        (args.out / "split_default.json").write_text(json.dumps(rows, indent=2))
        print(f"{split}: {sum(x['fields'] for x in scores)} fields", flush=True)
    print("| --split | pixel IoU (mean) | object F1 (mean) | object P (pooled) | object R (pooled) | "
          "object F1 (pooled) | fields | reference | matched |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split, row in rows.items():
        t = row["tiles"]
        matched, pred, ref = (sum(x[k] for x in t) for k in ("matched_fields", "fields_pred", "fields_ref"))
        p, r = matched / max(pred, 1), matched / max(ref, 1)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        print(f"| {split} | {np.mean([x['iou'] for x in t]):.3f} | {np.mean([x['object_f1'] for x in t]):.3f} | "
              f"{p:.3f} | {r:.3f} | {f1:.3f} | {pred} | {ref} | {matched} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
