"""The whole extraction pipeline on synthetic rasters with a tiny deterministic ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from helpers import field_scene, green_threshold_onnx, write_raster
from rasterio.crs import CRS

from engine.api import extract, extract_array
from engine.errors import Cancelled, DependencyError
from engine.options import ExtractOptions, OutputPaths

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)


@pytest.fixture
def scene(tmp_path):
    image, truth = field_scene()
    return write_raster(tmp_path / "scene.tif", image, T2M, UTM), truth


def test_end_to_end_outputs(scene, green_model, tmp_path):
    path, truth = scene
    out = OutputPaths(vector=tmp_path / "fields.gpkg", mask=tmp_path / "mask.tif",
                      probability=tmp_path / "prob.tif", report=tmp_path / "report.json")
    result = extract(path, green_model, out, ExtractOptions(opening_px=0))
    assert result.field_count == 6
    assert result.cropland_pixels == truth.sum()
    assert result.cropland_area_m2 == pytest.approx(4.0 * truth.sum())
    assert result.valid_area_m2 == pytest.approx(4.0 * truth.size)
    assert result.cropland_ratio == pytest.approx(truth.mean())
    with rasterio.open(out.mask) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs == UTM and ds.transform == T2M
        np.testing.assert_array_equal(ds.read(1), truth)
    with rasterio.open(out.probability) as ds:
        prob = ds.read(1)
        assert ds.dtypes[0] == "float32"
        np.testing.assert_array_equal(prob > 0.5, truth == 1)
        assert prob.min() >= 0 and prob.max() <= 1
    meta, _, _geom, data = pyogrio.raw.read(out.vector)
    assert list(meta["fields"]) == ["id", "area_m2", "area_ha", "perimeter_m", "mean_prob"]
    assert meta["crs"] == "EPSG:32633" and meta["geometry_type"] == "Polygon"
    areas = dict(zip(meta["fields"], data, strict=True))["area_m2"]
    assert areas.sum() == pytest.approx(4.0 * truth.sum())
    assert np.allclose(dict(zip(meta["fields"], data, strict=True))["area_ha"], areas / 1e4)
    report = json.loads(out.report.read_text())
    row = report["rows"][0]
    for key in ("input", "crs", "pixel_size_m", "valid_area_m2", "cropland_area_m2", "cropland_ratio",
                "field_count", "models", "device", "seconds"):
        assert key in row
    assert row["field_count"] == 6 and row["crs"] == "EPSG:32633" and row["pixel_size_m"] == 2.0
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind
    # each field's mean probability is the mean of the probability raster over its pixels (the same without
    # --probability, taken from the rows as inference makes them; with filters on, from a uint8 copy, at most
    # 1/508 off)
    mean_prob = dict(zip(meta["fields"], data, strict=True))["mean_prob"]
    ids = rasterio.features.rasterize(zip(shapely.from_wkb(_geom), range(1, len(mean_prob) + 1), strict=True),
                                      out_shape=prob.shape, transform=T2M, dtype="int32")
    expected = [prob[ids == k].mean() for k in range(1, len(mean_prob) + 1)]
    np.testing.assert_allclose(mean_prob, expected, atol=1e-5)
    lean = extract(path, green_model, OutputPaths(vector=tmp_path / "lean.gpkg"), ExtractOptions(opening_px=0))
    assert [f.mean_probability for f in lean.fields] == pytest.approx(list(mean_prob), abs=1e-6)
    filtered = extract(path, green_model, OutputPaths(vector=tmp_path / "filtered.gpkg"),
                       ExtractOptions(opening_px=0, min_area_m2=1.0))
    assert [f.mean_probability for f in filtered.fields] == pytest.approx(list(mean_prob), abs=1 / 508)
    assert [f.mean_probability for f in filtered.fields] != pytest.approx(list(mean_prob), abs=1e-5)
    assert [f.geometry.wkb for f in filtered.fields] == [f.geometry.wkb for f in lean.fields]


def test_nodata_is_never_cropland(tmp_path, green_model):
    image, truth = field_scene()
    image[:, :50, :60] = 0  # nodata corner over a field
    path = write_raster(tmp_path / "nodata.tif", image, T2M, UTM, nodata=0)
    out = OutputPaths(mask=tmp_path / "mask.tif")
    result = extract(path, green_model, out, ExtractOptions(opening_px=0))
    with rasterio.open(out.mask) as ds:
        mask = ds.read(1)
    assert (mask[:50, :60] == 255).all()
    assert result.valid_pixels == truth.size - 50 * 60
    expected = truth.copy()
    expected[:50, :60] = 0
    assert result.cropland_pixels == expected.sum()
    assert result.valid_area_m2 == pytest.approx(4.0 * (truth.size - 50 * 60))


def test_uint16_holding_bytes_equals_uint8(tmp_path, green_model, scene):
    path, truth = scene
    image, _ = field_scene()
    path16 = write_raster(tmp_path / "scene16.tif", image.astype(np.uint16), T2M, UTM, nodata=256)
    a = extract(path, green_model, options=ExtractOptions(opening_px=0))
    b = extract(path16, green_model, options=ExtractOptions(opening_px=0))
    assert a.cropland_pixels == b.cropland_pixels == truth.sum()


def test_reflectance_range_is_stretched(tmp_path, green_model):
    image, truth = field_scene()
    path = write_raster(tmp_path / "refl.tif", image.astype(np.uint16) * 12 + 300, T2M, UTM)
    logs: list[str] = []
    auto = extract(path, green_model, options=ExtractOptions(opening_px=0), log=logs.append)
    assert any("0..4095" in line for line in logs)  # one range for the raster (12-bit), all bands alike
    assert auto.cropland_pixels == truth.sum()
    raw = extract(path, green_model, options=ExtractOptions(opening_px=0, stretch="none"))
    assert raw.cropland_ratio == 1.0  # what a blind divide-by-255 gives: everything cropland


def test_raster_smaller_than_a_tile(tmp_path, green_model):
    image, truth = field_scene(40, 50)
    path = write_raster(tmp_path / "small.tif", image, T2M, UTM)
    result = extract(path, green_model, options=ExtractOptions(tile_size=128, overlap=16, opening_px=0))
    assert result.cropland_pixels == truth.sum()


def test_seamless_blending_matches_single_tile(tmp_path):
    """A model with a 9x9 receptive field: many 32 px tiles blended agree with one big tile."""
    model = green_threshold_onnx(tmp_path / "blur.onnx", kernel=9)
    image, _ = field_scene()
    _, one, _ = extract_array(image, model, options=ExtractOptions(tile_size=320, overlap=0, opening_px=0))
    _, many, _ = extract_array(image, model, options=ExtractOptions(tile_size=32, overlap=16, opening_px=0))
    inner = (slice(8, -8), slice(8, -8))  # the zero padding of the convolution differs at the raster edge
    assert np.abs(one[inner] - many[inner]).max() < 0.02


def test_array_api_and_geographic_crs(green_model):
    image, truth = field_scene()
    transform = Affine(0.00002, 0, 15.0, 0, -0.00002, 52.0)
    result, prob, mask = extract_array(image, green_model, transform=transform, crs="EPSG:4326",
                                       options=ExtractOptions(opening_px=0))
    assert prob.shape == mask.shape == truth.shape
    np.testing.assert_array_equal(mask, truth)
    assert result.area_method == "geodesic"
    # 0.00002° is about 2.22 m north-south and 1.37 m east-west at 52° N
    assert result.cropland_area_m2 == pytest.approx(truth.sum() * 2.2264 * 1.3712, rel=0.005)
    assert sum(f.area_m2 for f in result.fields) == pytest.approx(result.cropland_area_m2, rel=1e-4)


def test_no_crs_needs_pixel_size(green_model):
    image, truth = field_scene()
    logs: list[str] = []
    result, _, _ = extract_array(image, green_model, options=ExtractOptions(opening_px=0), log=logs.append)
    assert result.cropland_area_m2 is None and result.fields[0].area_m2 is None
    assert result.cropland_ratio == pytest.approx(truth.mean())
    assert any("--pixel-size" in line for line in logs)
    sized, _, _ = extract_array(image, green_model, options=ExtractOptions(opening_px=0, pixel_size_m=2.0))
    assert sized.cropland_area_m2 == pytest.approx(4.0 * truth.sum())
    assert sized.fields[0].area_m2 == pytest.approx(4.0 * sized.fields[0].geometry.area)


def test_cancel_leaves_nothing(scene, green_model, tmp_path):
    path, _ = scene
    out = OutputPaths(vector=tmp_path / "f.gpkg", mask=tmp_path / "m.tif", probability=tmp_path / "p.tif",
                      report=tmp_path / "r.json")
    calls = []

    def cancel_after_first() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        extract(path, green_model, out, ExtractOptions(tile_size=32, overlap=8, batch_size=2),
                is_cancelled=cancel_after_first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def _cuda_usable() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and (
        Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists())


@pytest.mark.skipif(_cuda_usable(), reason="CUDA is usable here: the run would succeed (see the mocked tests)")
def test_cuda_required_but_missing_says_why(scene, green_model):
    path, _ = scene
    with pytest.raises(DependencyError, match="CUDA"):
        extract(path, green_model, options=ExtractOptions(device="cuda"))


def test_progress_reaches_one(scene, green_model):
    path, _ = scene
    seen: list[float] = []
    extract(path, green_model, options=ExtractOptions(tile_size=32, overlap=8, batch_size=3),
            progress=lambda f, _msg: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 5


def test_filters_change_the_mask_counts_and_fields_alike(tmp_path, green_model):
    """--min-area and --max-hole act on the mask, the counts and the polygons alike: a small hole is filled
    (with the small island in it), a large hole and a small hole holding nodata are kept, a speck is dropped."""
    truth = np.zeros((200, 300), np.uint8)
    truth[10:120, 10:200] = 1  # field A
    truth[40:60, 40:60] = 0    # its small hole (1600 m²) ...
    truth[48:52, 48:52] = 1    # ... with an island of 64 m² in it
    truth[60:100, 120:160] = 0  # its large hole (6400 m²)
    truth[20:30, 150:160] = 0  # a small hole that holds nodata
    truth[140:190, 10:100] = 1  # field B
    truth[150:153, 250:253] = 1  # a speck of 36 m²
    nodata = np.zeros_like(truth, bool)
    nodata[23:27, 153:157] = True
    image = np.where(truth.astype(bool), np.array([60, 200, 50])[:, None, None],
                     np.array([140, 90, 140])[:, None, None]).astype(np.uint8)
    image[:, nodata] = 0
    path = write_raster(tmp_path / "scene.tif", image, T2M, UTM, nodata=0)
    out = OutputPaths(vector=tmp_path / "fields.gpkg", mask=tmp_path / "mask.tif")
    result = extract(path, green_model, out, ExtractOptions(opening_px=0, min_area_m2=100, max_hole_m2=2000))

    expected = truth.copy()
    expected[40:60, 40:60] = 1
    expected[150:153, 250:253] = 0
    expected[nodata] = 255
    with rasterio.open(out.mask) as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
    assert result.cropland_pixels == int((expected == 1).sum())
    assert result.cropland_area_m2 == pytest.approx(4.0 * (expected == 1).sum())
    assert result.field_count == 2
    a, b = result.fields
    assert a.id == 1 and b.id == 2 and a.geometry.bounds[3] > b.geometry.bounds[3]  # numbered from the top
    assert len(a.geometry.interiors) == 2
    assert a.area_m2 + b.area_m2 == pytest.approx(result.cropland_area_m2)
    burnt = rasterio.features.rasterize([(f.geometry, 1) for f in result.fields], out_shape=truth.shape,
                                        transform=T2M, dtype="uint8")
    np.testing.assert_array_equal(burnt, expected == 1)


@pytest.mark.parametrize("opening", [1, 2])
def test_one_pass_and_filtered_passes_make_the_same_mask(tmp_path, green_model, opening):
    """Without filters the mask is opened and vectorised as inference emits its rows; with filters on (that
    here change nothing) it is read back from a temporary raster. Both give the opening of the whole mask."""
    import cv2

    rng = np.random.default_rng(opening)
    green = np.where(rng.random((300, 260)) < 0.7, 200, 60).astype(np.uint8)
    image = np.stack([np.full_like(green, 100), green, np.full_like(green, 100)])
    path = write_raster(tmp_path / "noisy.tif", image, T2M, UTM)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * opening + 1, 2 * opening + 1))
    expected = cv2.morphologyEx((green > 127).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    results = []
    for name, min_area in (("one", 0.0), ("filtered", 1e-6)):
        out = OutputPaths(vector=tmp_path / f"{name}.gpkg", mask=tmp_path / f"{name}.tif")
        results.append(extract(path, green_model, out, ExtractOptions(opening_px=opening, min_area_m2=min_area,
                                                                      split="none")))
        with rasterio.open(out.mask) as ds:
            np.testing.assert_array_equal(ds.read(1), expected)
    one, filtered = results
    assert one.cropland_pixels == filtered.cropland_pixels == int(expected.sum())
    assert [f.geometry.wkb for f in one.fields] == [f.geometry.wkb for f in filtered.fields]
    assert one.field_count == cv2.connectedComponents(expected, connectivity=4)[0] - 1


def test_mask_stream_bands_of_any_height_give_the_whole_opening():
    """Rows pushed in bands of random heights come out, in strips, as the opening of the whole mask."""
    import cv2

    from engine.mask_stream import MaskStream

    rng = np.random.default_rng(3)
    mask = (rng.random((157, 40)) < 0.6).astype(np.uint8)
    valid = rng.random(mask.shape) < 0.95
    mask &= valid
    for radius in (0, 1, 3):
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1,) * 2)
        expected = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel) if radius else mask
        got: list = []

        def take(r, m, v, _p, got=got):
            got.append((r, m.copy(), v.copy()))

        stream = MaskStream(radius, take, strip_rows=16)
        row = 0
        while row < mask.shape[0]:
            n = int(rng.integers(1, 30))
            stream.push(row, mask[row:row + n], valid[row:row + n])
            row += n
        stream.close()
        assert [r for r, _, _ in got] == sorted({r for r, _, _ in got}) and got[0][0] == 0
        np.testing.assert_array_equal(np.concatenate([m for _, m, _ in got]), expected)
        np.testing.assert_array_equal(np.concatenate([v for _, _, v in got]), valid)


def test_output_folder_made_meanwhile_by_another_run_is_not_an_error(tmp_path, monkeypatch):
    """Two runs (e.g. two Dask tasks) creating the same missing output folder at once: the second one's mkdir
    finds it made; that is not an error, and only the folder this run made is recorded for removal."""
    from pathlib import Path

    from engine.options import OutputPaths
    from engine.outputs import make_folders

    shared = tmp_path / "out"
    real_exists = Path.exists

    def racing_exists(self):
        if self == shared and not real_exists(self):
            shared.mkdir()  # the other run wins the race right after this check
            return False
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", racing_exists)
    assert make_folders(OutputPaths(vector=shared / "fields.gpkg")) == []
    assert shared.is_dir()
