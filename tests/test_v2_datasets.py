"""The v2 dataset catalogue on the real labelled sets of ../shared/data (skipped when it is absent).

Every number checked here is computed from the data files themselves (label rasters, polygon files, tiles.csv),
independently of the readers.
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from helpers import shared_path

from training.datasets import load_scenes, summarise
from training.datasets.scene import IGNORE, boundary_from_instances

pytestmark = pytest.mark.shared


def read_band(path, index=1):
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read(index)


def footprint_overlap(a, b) -> float:
    """Area shared by two scenes' footprints (0 when they lie in different coordinate spaces)."""
    if a.space != b.space:
        return 0.0
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    return max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))


@pytest.fixture(scope="module")
def root():
    return shared_path()


@pytest.fixture(scope="module")
def scenes(root):
    """Every set, the tiled ones capped at 3 tiles per split (enough for the split checks, and fast)."""
    return load_scenes(["contest", "gf2", "naip", "nsw", "denmark"], root, limit=3, log=lambda _: None)


def test_no_ground_is_shared_between_training_and_validation(scenes):
    for name in ("contest", "gf2", "naip", "nsw", "denmark"):
        train = [s for s in scenes if s.dataset == name and s.split == "train"]
        val = [s for s in scenes if s.dataset == name and s.split == "val"]
        assert train and val, name
        worst = max(footprint_overlap(t, v) for t in train for v in val)
        assert worst == 0.0, f"{name}: a training and a validation scene share ground"


def test_contest_tiles_split_by_rows_and_keep_the_label_ratio(root, scenes):
    d1 = [s for s in scenes if s.name.startswith("Data1")]
    label = read_band(root / "mathorcup2020_cropland/train/labels/Data1_reference.tif")
    assert sum(s.shape[0] for s in d1) == label.shape[0]
    ratio = sum(int((s.extent == 1).sum()) for s in d1) / label.size
    assert ratio == pytest.approx(float(label.mean()), abs=1e-9)
    assert all(not s.has_boundary and (s.boundary == IGNORE).all() for s in d1)


def test_gf2_mosaic_reproduces_every_tile_and_its_boundary(root, scenes):
    train, val = (next(s for s in scenes if s.dataset == "gf2" and s.split == sp) for sp in ("train", "val"))
    with open(root / "gf2_iaf_fieldsegda/tiles.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "shared"]
    assert train.shape[1] + val.shape[1] == max(int(r["x_off_px"]) for r in rows) + 256
    extent = np.concatenate([train.extent, val.extent], axis=1)
    boundary = np.concatenate([train.boundary, val.boundary], axis=1)
    for r in rows[::17]:
        y, x = int(r["y_off_px"]), int(r["x_off_px"])
        tile_ext = read_band(root / f"gf2_iaf_fieldsegda/labels_extent/{r['tile']}.tif")
        tile_bnd = read_band(root / f"gf2_iaf_fieldsegda/labels_boundary/{r['tile']}.tif")
        np.testing.assert_array_equal(extent[y:y + 256, x:x + 256], tile_ext)
        np.testing.assert_array_equal(boundary[y:y + 256, x:x + 256], tile_bnd)
        assert float(tile_ext.mean()) == pytest.approx(float(r["extent_fraction"]), abs=1e-4)
    # the band derived from the instances lies on the set's own boundary (so resampling keeps its meaning)
    derived = boundary_from_instances(train.instances) == 1
    given = train.boundary == 1
    assert given[derived].mean() > 0.9 and derived[given].mean() > 0.99
    assert ((train.instances > 0) == (train.extent == 1)).mean() > 0.999  # fields cover the extent
    # the standardisation is undone once for the whole scene: 2 % of each band's pixels at 0, 2 % at 1
    image = np.concatenate([train.image, val.image], axis=2)
    assert np.allclose((image == 0).mean(axis=(1, 2)), 0.02, atol=0.005)
    assert np.allclose((image == 1).mean(axis=(1, 2)), 0.02, atol=0.005)


def test_naip_fields_match_the_via_polygons(root, scenes):
    via = json.loads((root / "naip_us_fields_agoro/annotations_via.json").read_text())
    naip = [s for s in scenes if s.dataset == "naip"]
    names = sorted(v["filename"][:-4] for v in via.values())
    assert [s.name for s in naip if s.split == "val"] == names[4::5][:3]
    for s in naip[:3]:
        regions = next(v["regions"] for v in via.values() if v["filename"][:-4] == s.name)
        assert len(np.unique(s.instances[s.instances > 0])) == len(regions)
        helper_mask = read_band(root / f"naip_us_fields_agoro/derived/instance_masks/{s.name}.tif")
        assert (helper_mask == s.instances).mean() > 0.98  # same fields, edge pixels may differ
        band = s.boundary == 1
        assert 0.01 < band.mean() < 0.1 and (s.extent[band] == 1).mean() > 0.3  # thin, straddling the edges


def test_nsw_split_line_and_polygons(root, scenes):
    nsw = [s for s in scenes if s.dataset == "nsw"]
    cut = 6_254_000.0
    for s in nsw:
        south, north = s.bounds[1], s.bounds[3]
        assert (south >= cut) if s.split == "val" else (north <= cut), s.name
    tile = next(s for s in nsw if s.split == "val")
    shapes = json.loads((root / f"nsw_s2_field_polygons/labels_labelme/{tile.name}.json").read_text())["shapes"]
    assert tile.instances.max() == len(shapes)
    helper_mask = read_band(root / f"nsw_s2_field_polygons/derived/extent_masks/{tile.name}.tif")
    assert ((helper_mask == 1) == (tile.extent == 1)).mean() > 0.94  # PIL outline+fill vs centre-in


def test_denmark_parcels_cover_their_declared_area(root, scenes):
    import pyogrio

    dk = [s for s in scenes if s.dataset == "denmark"]
    assert {s.split for s in dk} == {"train", "val"}
    assert sum(s.shape[1] for s in dk) == 452
    info = pyogrio.read_info(root / "denmark_lpis2016_s2/marker2016_small.shp")
    ids = set()
    for s in dk:
        ids |= set(np.unique(s.instances[s.instances > 0]).tolist())
    assert len(ids) == info["features"]  # every parcel drawn (the tile clips, never drops, them)
    field_m2 = sum(int((s.extent == 1).sum()) for s in dk) * 100.0
    assert field_m2 / 1e6 == pytest.approx(14.57, abs=0.1)  # PROVENANCE: polygon areas sum to 14.57 km²


def test_summary_counts_fields_and_ratios(scenes):
    table = summarise(scenes)
    assert set(table) == {"contest", "gf2", "naip", "nsw", "denmark"}
    assert table["contest"]["train"]["fields"] == 0 and table["contest"]["train"]["boundary_ratio"] == 0
    assert 0.3 < table["gf2"]["train"]["extent_ratio"] < 0.6
