"""Area of interest (ExtractOptions.aoi): only pixels inside it are classified, counted and vectorised."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from helpers import field_scene, write_raster
from rasterio.crs import CRS

from engine.aoi import parse_aoi
from engine.api import extract
from engine.errors import InputError
from engine.options import ExtractOptions, OutputPaths

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)  # 2 m pixels; the scene is 300 x 200 px


@pytest.fixture
def scene(tmp_path):
    image, truth = field_scene()
    return write_raster(tmp_path / "scene.tif", image, T2M, UTM), truth


def test_extent_restricts_statistics_outputs_and_fields(scene, green_model, tmp_path):
    path, truth = scene
    # columns 50..200 and rows 20..120 of the raster, in map coordinates
    extent = (500000 + 50 * 2, 6000000 - 120 * 2, 500000 + 200 * 2, 6000000 - 20 * 2)
    logs = []
    out = OutputPaths(vector=tmp_path / "f.gpkg", mask=tmp_path / "m.tif")
    result = extract(path, green_model, out, ExtractOptions(opening_px=0, aoi=extent), log=logs.append)
    inside = truth[20:120, 50:200]
    assert result.valid_pixels == inside.size
    assert result.valid_area_m2 == pytest.approx(4.0 * inside.size)
    assert result.cropland_pixels == inside.sum()
    assert result.cropland_ratio == pytest.approx(inside.mean())
    assert any(line.startswith("Area of interest: columns 50-200, rows 20-120") for line in logs)
    with rasterio.open(out.mask) as ds:  # the mask covers the extent only, on the raster's grid
        assert (ds.width, ds.height) == (150, 100)
        assert ds.transform == T2M * Affine.translation(50, 20)
        np.testing.assert_array_equal(ds.read(1), inside)
    import pyogrio.raw

    _, _, wkb, _ = pyogrio.raw.read(out.vector)
    union = shapely.union_all(shapely.from_wkb(wkb))
    assert shapely.box(*extent).buffer(1e-6).contains(union)


def test_polygon_aoi_counts_only_the_pixels_inside(scene, green_model):
    path, truth = scene
    triangle = shapely.Polygon([(500000 + 20, 6000000 - 20), (500000 + 560, 6000000 - 20),
                                (500000 + 20, 6000000 - 380)])
    result = extract(path, green_model, None, ExtractOptions(opening_px=0, aoi=triangle.wkt))
    inside = rasterio.features.geometry_mask([triangle], (200, 300), T2M, invert=True)
    assert result.valid_pixels == inside.sum()
    assert result.valid_area_m2 == pytest.approx(triangle.area, rel=0.02)
    assert result.cropland_pixels == (truth.astype(bool) & inside).sum()


@pytest.mark.parametrize(("aoi", "message"), [
    ((0, 0, 10, 10), "does not overlap"),
    ((5, 5, 1, 1), "is empty"),
    ("POINT (500100 5999900)", "holds no polygon"),
    ("not wkt", "not valid WKT"),
])
def test_bad_aoi_is_refused_clearly(scene, green_model, aoi, message):
    path, _ = scene
    with pytest.raises(InputError, match=message):
        extract(path, green_model, None, ExtractOptions(aoi=aoi))


def test_parse_aoi_repairs_a_self_intersecting_polygon():
    bowtie = "POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))"
    assert parse_aoi(bowtie).area == pytest.approx(50.0)

