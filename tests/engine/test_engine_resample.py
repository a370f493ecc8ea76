"""Resampling to the model's resolution (engine.resample): a 10 m raster through a 2 m model and back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import write_raster
from rasterio.crs import CRS

from engine.api import extract
from engine.options import ExtractOptions, OutputPaths

UTM = CRS.from_epsg(32633)
T10 = Affine(10, 0, 500000, 0, -10, 6000000)


def _scene_10m(tmp_path):
    """A 10 m RGB raster (64 x 80 px) of four green fields, 1 px roads between them, and its truth."""
    truth = np.zeros((64, 80), np.uint8)
    truth[4:30, 4:38] = 1
    truth[4:30, 39:76] = 1
    truth[31:60, 4:50] = 1
    truth[31:60, 51:76] = 1
    image = np.where(truth.astype(bool), np.array([60, 200, 50])[:, None, None],
                     np.array([140, 90, 140])[:, None, None]).astype(np.uint8)
    return write_raster(tmp_path / "s10.tif", image, T10, UTM, nodata=None), truth


def test_a_10m_raster_goes_through_a_2m_model_and_comes_back_on_its_own_grid(tmp_path, green_model):
    path, truth = _scene_10m(tmp_path)
    out = OutputPaths(vector=tmp_path / "f.gpkg", mask=tmp_path / "m.tif", probability=tmp_path / "p.tif",
                      report=tmp_path / "r.json")
    logs: list[str] = []
    result = extract(path, green_model, out, ExtractOptions(tile_size=64, overlap=16, split="none"), log=logs.append)
    assert result.resampling["resampled"] is True
    assert result.resampling["model_grid"] == [400, 320]  # 10 m -> 2 m: five times finer
    assert any(line.startswith("Resampling:") and "10 m/px" in line for line in logs)
    with rasterio.open(out.mask) as ds, rasterio.open(out.probability) as pds:
        assert (ds.width, ds.height, ds.transform, ds.crs) == (80, 64, T10, UTM)  # the native grid
        assert (pds.width, pds.height, pds.transform) == (80, 64, T10)
        mask = ds.read(1)
    np.testing.assert_array_equal(mask, truth)  # the 1 px roads survive the detour
    # areas are the native pixels' areas, unchanged by the detour
    assert result.cropland_area_m2 == pytest.approx(100.0 * truth.sum())
    assert result.field_count == 4
    assert sum(f.area_m2 for f in result.fields) == pytest.approx(result.cropland_area_m2)
    box = shapely.box(500000, 6000000 - 640, 500800, 6000000)
    assert all(box.contains(f.geometry) for f in result.fields)  # in the raster's CRS
    report = json.loads(out.report.read_text())["rows"][0]
    assert report["resampling"]["resampled"] and report["resampling"]["native_m"] == 10.0


def test_resample_off_and_in_range_rasters_are_read_as_they_are(tmp_path, green_model):
    path, truth = _scene_10m(tmp_path)
    logs: list[str] = []
    off = extract(path, green_model, OutputPaths(), ExtractOptions(tile_size=64, overlap=16, resample="off"),
                  log=logs.append)
    assert off.resampling["resampled"] is False and any("--resample off" in line for line in logs)
    on = extract(path, green_model, OutputPaths(), ExtractOptions(tile_size=64, overlap=16))
    assert on.cropland_area_m2 == pytest.approx(off.cropland_area_m2, rel=0.01)
    t2 = Affine(2, 0, 500000, 0, -2, 6000000)
    image = np.where(truth.astype(bool), np.array([60, 200, 50])[:, None, None],
                     np.array([140, 90, 140])[:, None, None]).astype(np.uint8)
    at_2m = extract(write_raster(tmp_path / "s2.tif", image, t2, UTM), green_model, OutputPaths(), ExtractOptions())
    assert at_2m.resampling["resampled"] is False and at_2m.resampling["native_m"] == 2.0


def test_the_model_can_declare_the_range_it_accepts(tmp_path):
    from engine.errors import ModelError
    from engine.metadata import ModelMetadata
    from engine.resample import accepted_range

    meta = ModelMetadata(name="m", architecture="a", input_bands=[1, 2, 3], resolution_m=2.0,
                         resolution_range_m=[1.0, 12.0])
    assert accepted_range(meta) == (1.0, 12.0)
    assert accepted_range(ModelMetadata(name="m", architecture="a", input_bands=[1], mean=[0], std=[1],
                                        resolution_m=2.0)) == (1.0, 4.0)
    with pytest.raises(ModelError, match="resolution_range_m"):
        ModelMetadata(name="m", architecture="a", input_bands=[1, 2, 3], resolution_m=2.0,
                      resolution_range_m=[3.0, 12.0])


def test_a_model_trained_across_a_range_reads_rasters_at_the_nearest_end_of_it():
    """A declared range (v2: 1-10 m) sends a 30 m raster to 10 m and a 0.5 m one to 1 m; a model with only a
    resolution (v1) reads both at its 2 m; the plan's grid follows."""
    from affine import Affine

    from engine.metadata import ModelMetadata
    from engine.resample import plan_resample, target_resolution

    ranged = ModelMetadata(name="m", architecture="a", input_bands=[1, 2, 3], resolution_m=2.0,
                           resolution_range_m=[1.0, 10.0])
    single = ModelMetadata(name="m", architecture="a", input_bands=[1, 2, 3], resolution_m=2.0)
    assert target_resolution(ranged, 30.0) == 10.0 and target_resolution(ranged, 0.5) == 1.0
    assert target_resolution(single, 30.0) == 2.0 and target_resolution(single, 0.5) == 2.0

    class Source:  # the fields plan_resample reads of a FileSource
        width, height, crs = 300, 200, "EPSG:32633"
        transform = Affine(30, 0, 500000, 0, -30, 6000000)

    plan = plan_resample(Source(), 30.0, ranged, "auto")
    assert (plan.model_m, plan.width, plan.height) == (10.0, 900, 600) and plan.transform.a == 10.0
    plan = plan_resample(Source(), 30.0, single, "auto")
    assert (plan.model_m, plan.width, plan.height) == (2.0, 4500, 3000)
