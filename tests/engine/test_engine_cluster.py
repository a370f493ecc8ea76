"""Runs on a Dask cluster (a LocalCluster of 2 worker processes): the same outputs as the in-process run, a failing
scene reported without losing the others, a worker killed mid-task, an unreachable scheduler."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import edge_model_onnx, field_scene, green_threshold_onnx, mosaic_scene, patchwork_scene, write_raster
from rasterio.crs import CRS

from engine.api import extract, extract_many
from engine.options import ExtractOptions, OutputPaths

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                  "(bash scripts/setup.sh cluster; the dev setup installs it)")

from engine.bands import extract_bands, run_band  # noqa: E402
from engine.cli import main  # noqa: E402
from engine.cluster import connect, extract_scenes, run_scene  # noqa: E402
from engine.errors import ClusterError, InputError  # noqa: E402
from engine.result import SceneFailure  # noqa: E402

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-threaded worker processes (no dashboard), shared by this module's tests."""
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=50) as c:
        yield c


def _scenes(folder: Path, n: int = 3) -> list[Path]:
    paths = []
    for k in range(n):
        image, _ = field_scene(height=200 + 20 * k, width=300, seed=k)
        paths.append(write_raster(folder / f"scene{k}.tif", image, T2M, UTM))
    return paths


def _outputs(folder: Path, stem: str) -> OutputPaths:
    return OutputPaths(vector=folder / f"{stem}.gpkg", mask=folder / f"{stem}_mask.tif",
                       probability=folder / f"{stem}_prob.tif")


def assert_same_outputs(a: OutputPaths, b: OutputPaths) -> None:
    """Mask and probability rasters equal byte for byte (values and grid); the same fields, areas to 1e-9."""
    for kind in ("mask", "probability"):
        if getattr(a, kind) is None:
            continue
        with rasterio.open(getattr(a, kind)) as x, rasterio.open(getattr(b, kind)) as y:
            assert (x.transform, x.crs, x.dtypes, x.nodata) == (y.transform, y.crs, y.dtypes, y.nodata)
            np.testing.assert_array_equal(x.read(), y.read())
    (ma, _, ga, da), (mb, _, gb, db) = pyogrio.raw.read(a.vector), pyogrio.raw.read(b.vector)
    assert len(ga) == len(gb) > 0
    ca, cb = dict(zip(ma["fields"], da, strict=True)), dict(zip(mb["fields"], db, strict=True))
    np.testing.assert_array_equal(ca["id"], cb["id"])
    np.testing.assert_allclose(ca["area_m2"], cb["area_m2"], rtol=1e-9)
    np.testing.assert_allclose(ca["perimeter_m"], cb["perimeter_m"], rtol=1e-9)
    np.testing.assert_allclose(ca["mean_prob"], cb["mean_prob"], atol=1e-6)
    assert ("edge_conf" in ca) == ("edge_conf" in cb)
    if "edge_conf" in ca:  # models with a boundary output: each field's outline confidence
        np.testing.assert_allclose(ca["edge_conf"], cb["edge_conf"], atol=1e-6)
    assert all(shapely.equals(shapely.from_wkb(ga), shapely.from_wkb(gb)))


def test_many_scenes_match_the_in_process_run(client, green_model, tmp_path):
    inputs = _scenes(tmp_path)
    options = ExtractOptions(min_area_m2=100)
    local = extract_many(inputs, green_model, [_outputs(tmp_path / "local", p.stem) for p in inputs], options)
    results = extract_many(inputs, green_model, [_outputs(tmp_path / "dask", p.stem) for p in inputs], options,
                           client=client)
    assert not [r for r in results if isinstance(r, SceneFailure)], results
    assert [r.input for r in results] == [str(p) for p in inputs]  # input order, whatever finished first
    for p, mine, theirs in zip(inputs, results, local, strict=True):
        assert_same_outputs(_outputs(tmp_path / "local", p.stem), _outputs(tmp_path / "dask", p.stem))
        assert (mine.field_count, mine.cropland_pixels, mine.valid_pixels) == \
            (theirs.field_count, theirs.cropland_pixels, theirs.valid_pixels)
        assert mine.cropland_area_m2 == pytest.approx(theirs.cropland_area_m2, rel=1e-12)
    assert not list((tmp_path / "dask").glob(".*part*"))


def test_a_failing_scene_is_reported_and_the_others_kept(client, green_model, tmp_path):
    good = _scenes(tmp_path, 2)
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    inputs = [good[0], bad, good[1]]
    results = extract_scenes(client, inputs, green_model, [_outputs(tmp_path / "out", p.stem) for p in inputs])
    assert isinstance(results[1], SceneFailure) and "broken.tif" in results[1].error
    assert "Cannot open" in results[1].error
    for k in (0, 2):
        assert results[k].field_count > 0 and (tmp_path / "out" / f"{inputs[k].stem}.gpkg").exists()
    assert not list((tmp_path / "out").glob("broken*"))
    here = extract_many(inputs, green_model, [_outputs(tmp_path / "here", p.stem) for p in inputs])
    assert [type(r) for r in here] == [type(r) for r in results] and here[1].error == results[1].error


def kill_on_first_try(marker: str, *args, **kwargs):
    """A scene task that kills its own worker process half-way through its first try (after the first batch of
    tiles, with its temporary outputs open), and runs normally once ``marker`` exists."""

    def progress(fraction: float, _message: str) -> None:
        if fraction > 0 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)

    return run_scene(*args, progress=progress, **kwargs)


def test_a_worker_killed_mid_task_is_retried_with_the_same_result(client, green_model, tmp_path):
    inputs = _scenes(tmp_path, 2)
    local = [extract(p, green_model, _outputs(tmp_path / "local", p.stem)) for p in inputs]
    marker = tmp_path / "killed-once"

    def task(*args, **kwargs):
        return kill_on_first_try(str(marker), *args, **kwargs)

    results = extract_scenes(client, inputs, green_model, [_outputs(tmp_path / "dask", p.stem) for p in inputs],
                             task=task)
    assert marker.exists()  # a worker did die
    assert [r.field_count for r in results] == [r.field_count for r in local]
    for p in inputs:
        assert_same_outputs(_outputs(tmp_path / "local", p.stem), _outputs(tmp_path / "dask", p.stem))
    assert not list((tmp_path / "dask").glob(".*part*"))  # the killed try's temporary files are gone
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the next tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_clear_error_at_once(green_model, tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(ClusterError, match="Cannot reach the Dask scheduler at " + address):
        connect(address)
    scene = _scenes(tmp_path, 1)[0]
    code = main(["extract", str(scene), "--model", str(green_model), "-o", str(tmp_path / "f.gpkg"),
                 "--cluster", address, "-q"])
    assert code == 2 and "Cannot reach the Dask scheduler" in capsys.readouterr().err
    assert time.perf_counter() - start < 10  # not Dask's retries for half a minute
    assert not (tmp_path / "f.gpkg").exists()
    with pytest.raises(ClusterError, match="at least 1"):
        connect("local:0")
    assert main(["extract", str(scene), "--model", str(green_model), "--band-rows", "64", "-q"]) == 2
    assert "give it with --cluster" in capsys.readouterr().err


def test_cli_many_scenes_on_a_local_cluster(green_model, tmp_path, capsys):
    inputs = _scenes(tmp_path, 3)
    bad = tmp_path / "missing.tif"
    code = main(["extract", *map(str, inputs[:2]), str(bad), str(inputs[2]), "--model", str(green_model),
                 "-o", str(tmp_path / "out" / "{stem}.gpkg"), "--report", str(tmp_path / "report.json"),
                 "--cluster", "local:2"])
    captured = capsys.readouterr()
    assert code == 2 and "1 of 4 input(s) failed" in captured.err
    assert "Dask cluster tcp://" in captured.err and "dashboard http" in captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == [str(p) for p in [*inputs[:2], bad, inputs[2]]]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["input"] for row in report["rows"]] == [str(p) for p in [*inputs[:2], bad, inputs[2]]]
    assert "not found" in report["rows"][2]["error"] and report["total"]["failed"] == 1
    assert report["total"]["field_count"] == sum(r["field_count"] for r in report["rows"] if "error" not in r) > 0
    assert all((tmp_path / "out" / f"{p.stem}.gpkg").exists() for p in inputs)


# ---- one raster in row bands -------------------------------------------------------------------------------------


def test_band_plan_covers_the_raster_and_infers_each_seam_tile_row_twice_at_most():
    from engine.bands import plan_bands
    from engine.tiling import TileGrid

    for height, tile, overlap, opening, rows in [(480, 64, 16, 1, 60), (1000, 512, 64, 1, 900), (300, 64, 32, 0, 1),
                                                 (777, 64, 16, 8, 100), (50, 64, 16, 1, 10)]:
        grid = TileGrid(height, 100, tile, overlap)
        bands = plan_bands(grid, opening, rows)
        assert bands[0].row0 == 0 and bands[-1].row1 == height
        assert all(a.row1 == b.row0 for a, b in itertools.pairwise(bands))
        origins = grid.row_origins
        for b in bands:
            assert (b.need0, b.need1) == (max(b.row0 - 2 * opening, 0), min(b.row1 + 2 * opening, height))
            touching = [i for i, o in enumerate(origins) if o < b.need1 and o + tile > b.need0]
            assert list(range(b.tile_row0, b.tile_row1 + 1)) == touching
        if overlap + 4 * opening <= grid.stride:  # seams below the overlap: one tile row shared per seam
            assert all(a.tile_row1 - b.tile_row0 == 0 for a, b in itertools.pairwise(bands))


def _mosaic(folder: Path, seed: int = 0) -> Path:
    return write_raster(folder / "mosaic.tif", mosaic_scene(480, 256, seed=seed), T2M, UTM, nodata=0)


@pytest.fixture(scope="module")
def blur_model(tmp_path_factory) -> Path:
    """The green model with a 5 x 5 receptive field, so that tiles differ near their edges and blending counts."""
    return green_threshold_onnx(tmp_path_factory.mktemp("models") / "blur.onnx", kernel=5)


@pytest.mark.parametrize("options", [
    ExtractOptions(),
    ExtractOptions(opening_px=0),
    ExtractOptions(opening_px=2, min_area_m2=300, max_hole_m2=150),  # fields dropped, holes filled across seams
    ExtractOptions(simplify_m=3, min_area_m2=100),
    ExtractOptions(min_area_m2=100, aoi="POLYGON((500020 5999100, 500500 5999150, 500400 5999990, 500030 5999900, "
                                        "500020 5999100))"),  # a window of the raster, nodata outside the polygon
], ids=["one-pass", "no-opening", "filtered", "simplified", "area-of-interest"])
def test_row_bands_match_the_single_run(client, blur_model, tmp_path, options):
    src = _mosaic(tmp_path, seed=3)
    single = extract(src, blur_model, _outputs(tmp_path / "single", "m"), options)
    banded = extract(src, blur_model, _outputs(tmp_path / "bands", "m"), options, client=client, band_rows=48,
                     keep_fields=True)
    assert_same_outputs(_outputs(tmp_path / "single", "m"), _outputs(tmp_path / "bands", "m"))
    assert (banded.cropland_pixels, banded.valid_pixels, banded.field_count) == \
        (single.cropland_pixels, single.valid_pixels, single.field_count)
    assert banded.cropland_area_m2 == pytest.approx(single.cropland_area_m2, rel=1e-12)
    assert banded.split == single.split and banded.split["method"] == "image"  # the default split, in bands too
    top = T2M.f if options.aoi is None else 5999990.0  # the AOI's window starts at its top row
    bands = int(banded.device.rsplit(", ", 1)[1].split()[0])
    assert bands == (10 if options.aoi is None else 9)  # one tile row (48 px) each
    seams = np.arange(1, bands) * 48  # at the tops of tile rows: the split's halo does not fit below the overlap
    rows = [(-(f.geometry.bounds[3] - top) / 2, -(f.geometry.bounds[1] - top) / 2) for f in banded.fields]
    assert max(((seams > top) & (seams < bottom)).sum() for top, bottom in rows) >= 3  # a field over 3 seams
    assert not [p for p in tmp_path.rglob(".*") if p.name != "."]  # no part raster, no band folder left


@pytest.fixture(scope="module")
def edge_model(tmp_path_factory) -> Path:
    """A model with extent and boundary outputs (the v2 contract): boundary = the scene's red lines."""
    return edge_model_onnx(tmp_path_factory.mktemp("models") / "edges.onnx")


def _split_across_seams(fields, seams: np.ndarray, top: float) -> int:
    """How many pairs of the result's fields share an outline (the split cut them apart; without a split,
    fields never share an edge) along a stretch that crosses a band seam (rows ``seams``, raster top ``top``)."""
    geoms = [f.geometry for f in fields]
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="touches")
    count = 0
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        shared = geoms[i].intersection(geoms[j]) if i < j else None
        if shared is None or shared.length == 0:
            continue
        lines = [g for g in getattr(shared, "geoms", [shared]) if g.length > 0]
        spans = [((top - g.bounds[3]) / 2, (top - g.bounds[1]) / 2) for g in lines]  # rows, 2 m pixels
        count += any(((seams > a) & (seams < b)).any() for a, b in spans)
    return count


@pytest.mark.parametrize(("model", "options"), [
    ("blur", ExtractOptions()),  # auto = image edges for an extent-only model
    ("blur", ExtractOptions(split="image", min_area_m2=300, max_hole_m2=150)),  # filtered: the cue read back
    ("blur", ExtractOptions(split="extent", min_area_m2=100)),
    ("blur", ExtractOptions(split="none")),
    ("edges", ExtractOptions()),  # auto = the boundary output
    ("edges", ExtractOptions(split="boundary", opening_px=2, min_area_m2=200, simplify_m=3)),
], ids=["image-auto", "image-filtered", "extent", "none", "boundary-auto", "boundary-filtered-simplified"])
def test_split_fields_across_band_seams_match_the_single_run(client, blur_model, edge_model, tmp_path, model,
                                                             options):
    """Touching fields cut apart by the split, along edges that cross band seams: the same fields (ids,
    outlines, areas, outline confidence), mask and split summary as the single run."""
    model = {"blur": blur_model, "edges": edge_model}[model]
    src = write_raster(tmp_path / "patch.tif", patchwork_scene(480, 256, seed=1), T2M, UTM, nodata=0)

    def outputs(name: str) -> OutputPaths:  # filtered without a probability output: the split reads uint8 copies
        out = _outputs(tmp_path / name, "p")
        return dataclasses.replace(out, probability=None) if options.split == "image" else out

    single = extract(src, model, outputs("single"), options)
    banded = extract(src, model, outputs("bands"), options, client=client, band_rows=48, keep_fields=True)
    assert_same_outputs(outputs("single"), outputs("bands"))
    assert (banded.cropland_pixels, banded.field_count) == (single.cropland_pixels, single.field_count)
    assert banded.split == single.split
    bands = int(banded.device.rsplit(", ", 1)[1].split()[0])
    assert bands >= 8
    if options.split == "none":
        assert banded.split == {"method": "none"}
        return
    assert banded.split["fields_added_by_split"] > 0
    from engine.bands import context_rows, plan_bands
    from engine.split import resolve_split
    from engine.tiling import TileGrid

    plan = plan_bands(TileGrid(480, 256, 64, 16), options.opening_px, 48,
                      context_rows(0, resolve_split(options.split, model == edge_model)))
    assert len(plan) == bands
    seams = np.array([b.row0 for b in plan[1:]])
    assert _split_across_seams(banded.fields, seams, T2M.f) >= 3


@pytest.mark.parametrize("pixel_m", [0.5, 6.0], ids=["model-grid-coarser", "model-grid-finer"])
def test_resampled_raster_in_bands_matches_the_single_run(client, blur_model, tmp_path, pixel_m):
    """A raster outside the model's GSD range (2 m, accepting 1-4 m) is read on the model's grid in bands too:
    the same mask, probability and fields as the single run, split on its own grid."""
    height, width = (480, 256) if pixel_m < 2 else (300, 96)  # more than one strip (256 rows) read back
    transform = Affine(pixel_m, 0, 500000, 0, -pixel_m, 6000000)
    src = write_raster(tmp_path / "fine.tif", mosaic_scene(height, width, seed=2), transform, UTM, nodata=0)
    options = ExtractOptions(min_area_m2=20)
    single = extract(src, blur_model, _outputs(tmp_path / "single", "r"), options)
    banded = extract(src, blur_model, _outputs(tmp_path / "bands", "r"), options, client=client, band_rows=40)
    assert single.resampling["resampled"] and banded.resampling == single.resampling
    assert_same_outputs(_outputs(tmp_path / "single", "r"), _outputs(tmp_path / "bands", "r"))
    assert (banded.cropland_pixels, banded.field_count, banded.split) == \
        (single.cropland_pixels, single.field_count, single.split)
    assert int(banded.device.rsplit(", ", 1)[1].split()[0]) >= 3


def kill_band_on_first_try(marker: str, *args, **kwargs):
    """A band task that kills its own worker process half-way through band 2's first try."""
    band = args[4]

    def progress(fraction: float, _message: str) -> None:
        if band.index == 2 and fraction >= 0.5 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)

    return run_band(*args, progress=progress, **kwargs)


def test_a_worker_killed_during_a_band_is_retried_with_the_same_result(client, blur_model, tmp_path):
    src = _mosaic(tmp_path, seed=4)
    options = ExtractOptions(min_area_m2=200, max_hole_m2=100)
    extract(src, blur_model, _outputs(tmp_path / "single", "m"), options)
    marker = tmp_path / "killed-once"

    def task(*args, **kwargs):
        return kill_band_on_first_try(str(marker), *args, **kwargs)

    extract_bands(client, src, blur_model, _outputs(tmp_path / "bands", "m"), options, band_rows=96, task=task)
    assert marker.exists()
    assert_same_outputs(_outputs(tmp_path / "single", "m"), _outputs(tmp_path / "bands", "m"))
    client.wait_for_workers(2, timeout=60)


def fail_band_one(*args, **kwargs):
    """A band task that fails on band 1 (after the others may have written their parts)."""
    if args[4].index == 1:
        raise InputError("band 1 could not be read")
    return run_band(*args, **kwargs)


def test_a_failing_band_leaves_nothing_behind(client, blur_model, tmp_path):
    src = _mosaic(tmp_path, seed=6)
    with pytest.raises(InputError, match="band 1 could not be read"):
        extract_bands(client, src, blur_model, _outputs(tmp_path / "out", "m"), ExtractOptions(), band_rows=96,
                      task=fail_band_one)
    assert not (tmp_path / "out").exists()  # the folder it made for the outputs is gone too


def test_geographic_raster_in_bands(client, blur_model, tmp_path):
    geo = Affine(0.00002, 0, 10.0, 0, -0.00002, 50.0)  # ~1.4 x 2.2 m pixels at 50° N: geodesic areas
    src = write_raster(tmp_path / "geo.tif", mosaic_scene(480, 256, seed=7), geo, CRS.from_epsg(4326), nodata=0)
    options = ExtractOptions(min_area_m2=100, max_hole_m2=50)
    extract(src, blur_model, _outputs(tmp_path / "single", "g"), options)
    result = extract(src, blur_model, _outputs(tmp_path / "bands", "g"), options, client=client, band_rows=48)
    assert result.area_method == "geodesic"
    assert_same_outputs(_outputs(tmp_path / "single", "g"), _outputs(tmp_path / "bands", "g"))


def test_cli_one_raster_in_bands(blur_model, tmp_path, capsys):
    src = _mosaic(tmp_path, seed=5)
    single, banded = _outputs(tmp_path / "single", "m"), _outputs(tmp_path / "bands", "m")
    extract(src, blur_model, single, ExtractOptions(min_area_m2=100))
    code = main(["extract", str(src), "--model", str(blur_model), "-o", str(banded.vector), "--mask",
                 str(banded.mask), "--probability", str(banded.probability), "--min-area", "100",
                 "--max-hole", "0", "--cluster", "local:2", "--band-rows", "64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "in 10 band(s)" in captured.err and "dashboard http" in captured.err
    assert_same_outputs(single, banded)
