"""Turn the GF-2 tiles of ``gf2_iaf_fieldsegda`` into one 8-bit RGB training raster and its label.

Experimental: extra training data for a candidate default ensemble (``--extra-images``/``--extra-labels`` of
``python -m training fit``); no shipped model uses it yet.

    python training/recipes/gf2_to_rgb8.py [--data ../shared/data/gf2_iaf_fieldsegda] [--out runs/v2/gf2_rgb]

The shared tiles (256 x 256 px, about 1 m, 4 bands B, G, R, NIR as *standardised floats*) are a sliding-window
grid over one scene (``tiles.csv`` gives every tile's offset; overlapping tiles hold identical pixels). They are
pasted back into the scene mosaic (grid columns 0-5: 1228 x 3000 px), then bands 3, 2, 1 (R, G, B) are each
stretched linearly from their 2nd to their 98th percentile onto 0..255 (uint8, clipped) - one stretch for the
whole mosaic rather than per tile, so the pasted tiles do not show seams. The label is ``labels_extent``
(1 = inside an arable field; roads, ditches, villages, ponds, trees = 0). NIR is dropped: the models are RGB.

Writes ``OUT/images/gf2_scene.tif`` and ``OUT/labels/gf2_scene.tif`` (no CRS; about 1 m/px, so train with
``--extra-scale 0.5`` like the US tiles). The GF-2 data has no stated licence: OUT must stay outside the
repository's tracked files (runs/ is git-ignored) and the output must never be shipped.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    import rasterio

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gf2_iaf_fieldsegda")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "v2" / "gf2_rgb")
    args = p.parse_args(argv)
    with open(args.data / "tiles.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "shared"]
    width = max(int(r["x_off_px"]) for r in rows) + 256
    height = max(int(r["y_off_px"]) for r in rows) + 256
    image = np.full((3, height, width), np.nan, np.float32)
    label = np.zeros((height, width), np.uint8)
    for r in rows:
        x, y = int(r["x_off_px"]), int(r["y_off_px"])
        with rasterio.open(args.data / "images_gf2" / f"{r['tile']}.tif") as ds:
            image[:, y:y + 256, x:x + 256] = ds.read([3, 2, 1])
        with rasterio.open(args.data / "labels_extent" / f"{r['tile']}.tif") as ds:
            label[y:y + 256, x:x + 256] = ds.read(1)
    if np.isnan(image).any():
        raise SystemExit("the shared tiles do not cover the mosaic")
    rgb = np.empty(image.shape, np.uint8)
    for b in range(3):
        lo, hi = np.percentile(image[b], [2, 98])
        rgb[b] = np.clip(np.rint((image[b] - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
        print(f"band {'RGB'[b]}: 2-98 % = {lo:.3f} .. {hi:.3f} -> 0 .. 255")
    for sub, arr in (("images", rgb), ("labels", label[None])):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
        profile = {"driver": "GTiff", "width": width, "height": height, "count": arr.shape[0],
                   "dtype": "uint8", "compress": "deflate"}
        with rasterio.open(args.out / sub / "gf2_scene.tif", "w", **profile) as ds:
            ds.write(arr)
    print(f"{args.out}: {width} x {height} px, field share {label.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
