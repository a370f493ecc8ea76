"""The dataset catalogue: one reader per labelled set of ``../shared/data``, read natively (no converted copies).

=========  ===============================  =====  ==========================================  ====================
name       folder                           GSD    labels                                      validation split
=========  ===============================  =====  ==========================================  ====================
contest    mathorcup2020_cropland/train     2 m    cropland blocks (extent only, no edges)     bottom 25 % rows
gf2        gf2_iaf_fieldsegda               1 m    extent + boundary masks (instances derived)  mosaic cols >= 972
naip       naip_us_fields_agoro             1 m    field polygons (VIA)                        every 5th tile
nsw        nsw_s2_field_polygons            10 m   field polygons (labelme)                    north of 6,254,000 m
denmark    denmark_lpis2016_s2              10 m   LPIS parcels (shapefile)                    cols >= 339
=========  ===============================  =====  ==========================================  ====================

Every split is spatial: no pixel (no ground, for overlapping tiles) is in both training and validation; each
reader's module docstring says how. Every reader returns :class:`~training.datasets.scene.Scene` objects with the
image stretched to 0..1 by the engine's percentile stretch and extent / boundary (/ instance) targets on its grid.

The data is unlicensed except NAIP (MIT labels, public-domain imagery): it is read from ``../shared/data`` (or
``$CROPLAND_SHARED_DATA``) and never copied into the repository.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import contest, denmark, gf2, naip, nsw
from .scene import IGNORE, Scene, resample

READERS = {m.NAME: m for m in (contest, gf2, naip, nsw, denmark)}
ENV_VAR = "CROPLAND_SHARED_DATA"


def default_root() -> Path:
    """``$CROPLAND_SHARED_DATA`` if set, else ``../shared/data`` beside the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def available(root: Path | None = None) -> dict[str, bool]:
    """Catalogue name -> whether its folder exists under ``root``."""
    root = Path(root or default_root())
    return {name: (root / m.FOLDER).is_dir() for name, m in READERS.items()}


def load_scenes(names: list[str], root: Path | None = None, gsd_m: float | None = None,
                limit: int | None = None, log=print, keep_raw: bool = False) -> list[Scene]:
    """Read the sets ``names`` (catalogue names) as scenes, optionally resampled to ``gsd_m`` metres.

    ``limit`` caps the tiles read per tiled set (for smoke runs). ``keep_raw`` keeps each scene's source values
    (:attr:`Scene.raw`, for running the engine on them); training needs only the stretched image, so by default
    they are let go as soon as a set is read. Raises :class:`DataError` for an unknown name
    or a missing folder (naming both).
    """
    root = Path(root or default_root())
    scenes: list[Scene] = []
    for name in names:
        if name not in READERS:
            raise DataError(f"unknown data set {name!r}; the catalogue has {', '.join(READERS)}.")
        folder = root / READERS[name].FOLDER
        if not folder.is_dir():
            raise DataError(f"data set {name}: folder {folder} does not exist (set {ENV_VAR} or put "
                            "../shared/data beside the repository).")
        got = READERS[name].load(root, limit)
        if not keep_raw:
            got = [replace(s, raw=None) for s in got]
        if gsd_m:
            got = [resample(s, gsd_m) for s in got]
        log(f"{name}: {sum(s.split == 'train' for s in got)} training and {sum(s.split == 'val' for s in got)} "
            f"validation scene(s) from {folder}")
        scenes += got
    return scenes


def summarise(scenes: list[Scene]) -> dict[str, dict[str, dict[str, float]]]:
    """Per set and split: scenes, pixels, megapixels, extent ratio and boundary ratio of labelled pixels, fields."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in scenes:
        d = out.setdefault(s.dataset, {}).setdefault(s.split, {"scenes": 0, "pixels": 0, "extent_px": 0,
                                                               "labelled_px": 0, "boundary_px": 0,
                                                               "boundary_labelled_px": 0, "fields": 0})
        d["scenes"] += 1
        d["pixels"] += s.extent.size
        d["labelled_px"] += int((s.extent != IGNORE).sum())
        d["extent_px"] += int((s.extent == 1).sum())
        d["boundary_labelled_px"] += int((s.boundary != IGNORE).sum())
        d["boundary_px"] += int((s.boundary == 1).sum())
        if s.instances is not None:
            d["fields"] += len(np.unique(s.instances[s.instances > 0]))
    for per_split in out.values():
        for d in per_split.values():
            d["extent_ratio"] = round(d["extent_px"] / max(d["labelled_px"], 1), 4)
            d["boundary_ratio"] = round(d["boundary_px"] / max(d["boundary_labelled_px"], 1), 4)
            d["megapixels"] = round(d["pixels"] / 1e6, 3)
    return out


__all__ = ["READERS", "Scene", "available", "default_root", "load_scenes", "summarise"]
