"""US NAIP fields (``naip_us_fields_agoro``, MIT labels, public-domain imagery): 1024 x 1024 px RGB at ~1 m.

Images are JPEG data in ``.png`` files, read with GDAL (rasterio) only, as the engine does. Labels: VIA polygons
(``annotations_via.json``, pixel coordinates, vertex = pixel centre), one per field; drawn here as an instance
map (:func:`training.datasets.scene.rasterise_fields`), from which extent and the boundary band are derived.

Validation split (spatial): the tiles lie kilometres apart and never overlap, so whole tiles are split: every 5th
tile in sorted name order (8 of 40) is validation - the same tiles as the v1 model card's US check
(``training/recipes/us_checks.py holdout``) - and the other 32 train.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import DataError
from .scene import Scene, rasterise_fields, targets_from_instances, unit_stretch

NAME = "naip"
FOLDER = "naip_us_fields_agoro"
GSD_M = 1.0
VAL_EVERY = 5


def tile_names(root: Path) -> list[str]:
    """Tile stems in sorted order (the order the split counts in)."""
    return sorted(p.name[:-4] for p in (root / FOLDER / "images_png").glob("*.png"))


def val_tiles(root: Path) -> set[str]:
    """Every 5th tile (5th, 10th, ... in sorted name order)."""
    return {n for i, n in enumerate(tile_names(root), start=1) if i % VAL_EVERY == 0}


def field_polygons(root: Path) -> dict[str, list]:
    """Tile stem -> shapely Polygons in pixel coordinates (x = column, y = row of the pixel centre)."""
    from shapely.geometry import Polygon
    from shapely.validation import make_valid

    path = root / FOLDER / "annotations_via.json"
    data = json.loads(path.read_text())
    out = {}
    for entry in data.values():
        polys = []
        for region in entry.get("regions", []):
            shape = region["shape_attributes"]
            if shape.get("name") != "polygon":
                raise DataError(f"{path}: {entry['filename']} has a {shape.get('name')} region; expected polygons.")
            pts = list(zip(shape["all_points_x"], shape["all_points_y"], strict=True))
            if len(pts) >= 3:
                polys.append(make_valid(Polygon(pts)))
        out[Path(entry["filename"]).stem] = polys
    return out


def read_tile(root: Path, name: str, polygons: list) -> Scene:
    """One tile as a :class:`Scene` with instances, extent and boundary."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():  # a tile without its .aux.xml has no CRS: pixel coordinates then
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / FOLDER / "images_png" / f"{name}.png") as ds:
            raw = ds.read([1, 2, 3])
            transform, space = ds.transform, str(ds.crs) if ds.crs else f"{NAME}:{name}"
    instances = rasterise_fields(polygons, raw.shape[1:])
    extent, boundary = targets_from_instances(instances)
    return Scene(name, NAME, "train", unit_stretch(raw), extent, boundary, GSD_M, instances,
                 transform=transform, space=space, raw=raw)


def load(root: Path, limit: int | None = None) -> list[Scene]:
    """Every tile (``limit``: at most that many per split, in sorted order), split ``train`` / ``val`` as documented."""
    polys = field_polygons(root)
    val = val_tiles(root)
    out: list[Scene] = []
    for name in tile_names(root):
        split = "val" if name in val else "train"
        if limit is not None and sum(s.split == split for s in out) >= limit:
            continue
        scene = read_tile(root, name, polys.get(name, []))
        scene.split = split
        out.append(scene)
    return out
