"""GF-2 field extent/boundary tiles (``gf2_iaf_fieldsegda``): ~1 m, 4 bands B, G, R, NIR, standardised floats.

The 90 shared tiles are a sliding-window grid (``tiles.csv``: grid_col, grid_row, x_off_px, y_off_px) over one
scene; neighbours overlap exactly. The reader rebuilds the scene mosaic (columns 0-5: 3000 rows x 1228 columns)
and works on that, so no pixel appears twice.

Undoing the standardisation: the values are z-scores with unknown constants, identical across tiles (the overlaps
match exactly), i.e. one affine map per band for the whole scene. Any affine map disappears under a percentile
stretch, so :func:`training.datasets.scene.unit_stretch` is applied once to the whole mosaic (bands R, G, B); the
result is what the engine's percentile stretch makes of the same scene.

Targets: the set's own extent and boundary masks (the boundary a ~2 px band straddling each outline); instances
are the connected components of extent minus boundary, grown back over the band (:func:`instances_from_masks`;
used for object metrics). The boundary target stays the set's own mask unless the scene is resampled, when it is
derived again from the instances, like the polygon sets' bands.

Validation split (spatial): mosaic columns >= 972 (the last tile column, x 972-1228) are validation, columns < 972
training. The hold-out (columns 12-14) is not in ../shared at all.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from .scene import Scene, split_by_position, unit_stretch

NAME = "gf2"
FOLDER = "gf2_iaf_fieldsegda"
GSD_M = 1.0
TILE = 256
VAL_COL = 972
RGB = [3, 2, 1]  # bands of the files are B, G, R, NIR


def tile_table(root: Path) -> list[dict]:
    """Rows of ``tiles.csv`` for the shared tiles (tile, grid_col, grid_row, x_off_px, y_off_px as ints)."""
    path = root / FOLDER / "tiles.csv"
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "shared"]
    for r in rows:
        for k in ("grid_col", "grid_row", "x_off_px", "y_off_px"):
            r[k] = int(r[k])
    if not rows:
        raise DataError(f"{path}: no shared tiles listed.")
    return rows


def instances_from_masks(extent: np.ndarray, boundary: np.ndarray, grow_px: int = 3) -> np.ndarray:
    """(H, W) int32 fields: connected components (4-connected) of extent minus boundary, grown back over the
    extent pixels of the boundary band (``grow_px`` steps of a 3 x 3 dilation), so fields cover the whole extent and
    touch along the band's middle."""
    interior = ((extent == 1) & (boundary == 0)).astype(np.uint8)
    inst = cv2.connectedComponents(interior, connectivity=4)[1].astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(grow_px):
        todo = (extent == 1) & (inst == 0)
        if not todo.any():
            break
        inst[todo] = cv2.dilate(inst, kernel)[todo]
    return inst.astype(np.int32)


def read_mosaic(root: Path, max_col: int | None = None) -> Scene:
    """The scene mosaic of the shared tiles (grid columns <= ``max_col``) as one :class:`Scene`."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    rows = [r for r in tile_table(root) if max_col is None or r["grid_col"] <= max_col]
    h = max(r["y_off_px"] for r in rows) + TILE
    w = max(r["x_off_px"] for r in rows) + TILE
    raw = np.zeros((3, h, w), np.float32)
    extent = np.zeros((h, w), np.uint8)
    boundary = np.zeros((h, w), np.uint8)
    seen = np.zeros((h, w), bool)
    base = root / FOLDER
    with warnings.catch_warnings():  # the tiles have no CRS, as documented
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for r in rows:
            name = r["tile"] + ".tif"
            win = np.s_[r["y_off_px"]:r["y_off_px"] + TILE, r["x_off_px"]:r["x_off_px"] + TILE]
            with rasterio.open(base / "images_gf2" / name) as ds:
                raw[(slice(None), *win)] = ds.read(RGB)
            with rasterio.open(base / "labels_extent" / name) as ds:
                extent[win] = ds.read(1)
            with rasterio.open(base / "labels_boundary" / name) as ds:
                boundary[win] = ds.read(1)
            seen[win] = True
    if not seen.all():
        raise DataError(f"{base}: the shared tiles do not cover the mosaic {w} x {h} px (tiles.csv offsets?).")
    return Scene("S0_mosaic", NAME, "train", unit_stretch(raw), extent, boundary, GSD_M,
                 instances_from_masks(extent, boundary), has_boundary=True, space=f"{NAME}:S0")


def load(root: Path, limit: int | None = None) -> list[Scene]:
    """(train, val) scenes of the mosaic; ``limit`` is ignored (one scene)."""
    return [s for s in split_by_position(read_mosaic(root), "cols", VAL_COL, "after") if s is not None]
