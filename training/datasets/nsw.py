"""NSW Sentinel-2 field polygons (``nsw_s2_field_polygons``): 256 x 256 px RGB uint8 at 10 m, EPSG:32755.

Labels: labelme JSON per tile, in pixel coordinates (vertex = pixel centre); ``polygon`` shapes and open
``linestrip`` outlines, which are closed here (as the data's provenance notes do). Later shapes overwrite earlier
ones. Instances, extent and the boundary band are derived from them.

Validation split (spatial; tiles overlap heavily, so never at random): a line at northing 6,254,000 m. Validation
= tiles lying wholly north of it (27 tiles); training = every other tile's rows south of it (tiles crossing the
line are cut there and keep only their southern part), so every training pixel lies south and every validation
pixel north of the line: no ground is shared. Duplicated ground between overlapping tiles on the same side stays
(each tile was annotated separately).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from .scene import Scene, rasterise_fields, targets_from_instances, unit_stretch

NAME = "nsw"
FOLDER = "nsw_s2_field_polygons"
GSD_M = 10.0
VAL_NORTHING = 6_254_000.0


def tile_names(root: Path) -> list[str]:
    """Tile stems in sorted order."""
    return sorted(p.stem for p in (root / FOLDER / "images").glob("*.tif"))


def tile_bounds(root: Path) -> dict[str, tuple[float, float]]:
    """Tile stem -> (bottom, top) northing in metres, from ``tiles.csv`` (shared tiles)."""
    with open(root / FOLDER / "tiles.csv", newline="") as f:
        return {r["tile"]: (float(r["bottom"]), float(r["top"])) for r in csv.DictReader(f)}


def labelme_polygons(path: Path) -> list:
    """Shapely polygons of a labelme file, in pixel coordinates; linestrips are closed."""
    from shapely.geometry import Polygon
    from shapely.validation import make_valid

    data = json.loads(path.read_text())
    polys = []
    for shape in data.get("shapes", []):
        if shape.get("shape_type") not in ("polygon", "linestrip"):
            raise DataError(f"{path}: shape type {shape.get('shape_type')!r}; expected polygon or linestrip.")
        if len(shape["points"]) >= 3:
            polys.append(make_valid(Polygon(shape["points"])))
    return polys


def read_tile(root: Path, name: str) -> tuple[Scene, float]:
    """One tile as a :class:`Scene`, and the northing (m) of the top edge of its first row."""
    import rasterio

    with rasterio.open(root / FOLDER / "images" / f"{name}.tif") as ds:
        raw = ds.read([1, 2, 3])
        transform, space = ds.transform, str(ds.crs)
        top, res = transform.f, transform.a
    if abs(res - GSD_M) > 1e-6:
        raise DataError(f"{name}: pixel size {res} m, expected {GSD_M} m.")
    instances = rasterise_fields(labelme_polygons(root / FOLDER / "labels_labelme" / f"{name}.json"),
                                 raw.shape[1:])
    extent, boundary = targets_from_instances(instances)
    scene = Scene(name, NAME, "train", unit_stretch(raw), extent, boundary, GSD_M, instances,
                  transform=transform, space=space, raw=raw)
    return scene, top


def load(root: Path, limit: int | None = None) -> list[Scene]:
    """Training parts and validation tiles as documented (``limit``: at most that many tiles per split)."""
    table = tile_bounds(root)
    out: list[Scene] = []
    for name in tile_names(root):
        is_val = table[name][0] >= VAL_NORTHING
        if limit is not None and sum(s.split == ("val" if is_val else "train") for s in out) >= limit:
            continue
        scene, top = read_tile(root, name)
        h = scene.shape[0]
        bottom = top - h * GSD_M
        if bottom >= VAL_NORTHING:
            scene.split = "val"
            out.append(scene)
            continue
        first_south = int(np.ceil((top - VAL_NORTHING) / GSD_M)) if top > VAL_NORTHING else 0
        if h - first_south >= 32:
            out.append(scene.crop(slice(first_south, h), slice(0, scene.shape[1]), split="train"))
    return out
