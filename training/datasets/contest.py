"""MathorCup 2020 contest tiles (``mathorcup2020_cropland/train``): ZY-3 RGB at 2 m, block-level cropland labels.

600 x 500 px uint16 tiles holding 8-bit values, labels {0, 1}, no CRS (2 m nominal). The labels outline blocks of
fields, not single fields, so there are no instances and no boundary labels (boundary all IGNORE: these tiles
train the extent head only).

Validation split (spatial): the bottom quarter of every tile's rows (rows >= 375) is validation, the top three
quarters training; the parts share no pixel. Cross-validation over whole tiles stays with ``python -m training fit
--folds`` (leave one tile out).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from .scene import IGNORE, Scene, split_by_position, unit_stretch

NAME = "contest"
FOLDER = "mathorcup2020_cropland/train"
GSD_M = 2.0
VAL_FRACTION = 0.25


def tile_names(root: Path) -> list[str]:
    """Stems of the labelled tiles, sorted (Data1, Data2, ...)."""
    return sorted(p.stem for p in (root / FOLDER / "images").glob("Data*.tif"))


def read_tile(root: Path, name: str) -> Scene:
    """One whole tile as a :class:`Scene` (split ``"train"``)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    img_path = root / FOLDER / "images" / f"{name}.tif"
    lab_path = root / FOLDER / "labels" / f"{name}_reference.tif"
    with warnings.catch_warnings():  # the tiles have no CRS, as documented
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(img_path) as ds:
            raw = ds.read([1, 2, 3])
        with rasterio.open(lab_path) as ds:
            label = ds.read(1)
    if set(np.unique(label).tolist()) - {0, 1}:
        raise DataError(f"{lab_path}: expected labels 0/1, found {sorted(np.unique(label).tolist())}.")
    extent = label.astype(np.uint8)
    boundary = np.full(extent.shape, IGNORE, np.uint8)
    return Scene(name, NAME, "train", unit_stretch(raw), extent, boundary, GSD_M, None, has_boundary=False,
                 space=f"{NAME}:{name}", raw=raw)


def load(root: Path, limit: int | None = None) -> list[Scene]:
    """Training and validation scenes of every tile (``limit``: only the first tiles)."""
    out = []
    for name in tile_names(root)[:limit]:
        scene = read_tile(root, name)
        cut = round(scene.shape[0] * (1 - VAL_FRACTION))
        out += [s for s in split_by_position(scene, "rows", cut, "after") if s is not None]
    return out
