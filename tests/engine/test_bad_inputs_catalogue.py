"""The catalogue of awkward inputs (issue 14; docs/BAD_INPUTS.md lists the same cases for users).

Every case runs ``python -m engine`` in-process and asserts: the exit status, the first line it prints (stderr for
refusals, stdout for runs that succeed), no traceback, every file that existed before the run byte-identical
afterwards, and no temporary file (``.part-``, ``cropland-*`` spool folder) left behind. Case ids start with the
row of the issue's table they cover (``rowNN-``) or ``kept-`` for inputs that already behaved well, so that none
regresses. Cases that need a real process (SIGTERM) or a small tmpfs (disk full) follow the table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from helpers import REPO, field_scene, write_raster
from rasterio.crs import CRS

from engine.cli import main

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)
H, W = 60, 80


@dataclass
class Case:
    """One awkward input: ``make(folder, model) -> argv`` builds the files and the command line."""

    id: str
    make: Callable[[Path, Path], list]
    code: int
    first: str  # expected (case-insensitive) in the first line printed
    quiet: bool = True
    changes: tuple[str, ...] = ()  # pre-existing files the run may replace (with --overwrite)
    check: Callable[[Path, str, str], None] | None = None  # more assertions: (folder, stdout, stderr)
    needs_no_cuda: bool = False
    patch: Callable | None = None  # (monkeypatch) -> None, before the run
    writes: tuple[str, ...] = ()  # files a failed or cancelled run still writes (those of finished inputs)


def scene(folder: Path, name: str = "scene.tif", h: int = H, w: int = W, **kw) -> Path:
    image, _ = field_scene(h, w)
    return write_raster(folder / name, image, kw.pop("transform", T2M), kw.pop("crs", UTM), **kw)


def extract(folder, model, *extra, output="out.gpkg"):
    return ["extract", scene(folder), "--model", model, "--output", folder / output, *extra]


# --- kept: inputs that behaved well before issue 14 -------------------------------------------------------------

def _corrupt(folder, model):
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x17" * 500)
    return ["extract", folder / "corrupt.tif", "--model", model, "--output", folder / "out.gpkg"]


def _not_raster(folder, model):
    (folder / "notes.txt").write_text("field notes, not imagery\n")
    return ["extract", folder / "notes.txt", "--model", model, "--output", folder / "out.gpkg"]


def _truncated(folder, model):
    big = scene(folder, "big.tif", 300, 400)
    data = big.read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    big.unlink()
    return ["extract", folder / "cut.tif", "--model", model, "--output", folder / "out.gpkg"]


def _gray(folder, model):
    gray = write_raster(folder / "gray.tif", np.full((H, W), 100, np.uint8), T2M, UTM)
    return ["extract", gray, "--model", model, "--output", folder / "out.gpkg"]


def _all_nodata(folder, model):
    empty = write_raster(folder / "empty.tif", np.zeros((3, H, W), np.uint8), T2M, UTM, nodata=0)
    return ["extract", empty, "--model", model, "--output", folder / "out.gpkg"]


def _existing(folder, model):
    (folder / "out.gpkg").write_bytes(b"precious")
    return extract(folder, model)


def _existing_overwrite(folder, model):
    return [*_existing(folder, model), "--overwrite"]


def _replaced(folder, out, err):
    assert (folder / "out.gpkg").read_bytes() != b"precious"


def _output_is_input(folder, model):
    path = scene(folder)
    return ["extract", path, "--model", model, "--mask", path]


def _folder_is_file(folder, model):
    (folder / "a_file").write_text("x")
    return extract(folder, model, output="a_file/out.gpkg")


def _corrupt_model(folder, model):
    (folder / "broken.onnx").write_bytes(b"\x08\x07garbage" * 50)
    return ["extract", scene(folder), "--model", folder / "broken.onnx", "--output", folder / "out.gpkg"]


def _ctrl_c(monkeypatch):
    from engine.ensemble import Ensemble

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Ensemble, "predict", interrupted)


# --- rows of the table ----------------------------------------------------------------------------------

def _float_with(value, nodata=None):
    def make(folder, model):
        image, _ = field_scene(H, W)
        data = image.astype(np.float32)
        data[:, 20:30, :] = value  # a band of bad pixels across the raster
        path = write_raster(folder / "float.tif", data, T2M, UTM, nodata=nodata)
        return ["extract", path, "--model", model, "--output", folder / "out.gpkg", "--report", folder / "r.json",
                "--opening", "0"]
    return make


def _same_numbers_as_nodata_block(folder, out, err):
    """The run with bad pixels counts exactly what the same scene with that block as nodata counts."""
    row = json.loads((folder / "r.json").read_text())["rows"][0]
    image, truth = field_scene(H, W)
    image[:, 20:30, :] = 0
    ref = write_raster(folder / "ref.tif", image, T2M, UTM, nodata=0)
    assert main(["extract", str(ref), "--model", str(folder / "model.onnx"), "--report", str(folder / "ref.json"),
                 "--opening", "0", "-q"]) == 0
    want = json.loads((folder / "ref.json").read_text())["rows"][0]
    assert row["valid_pixels"] == H * W - 10 * W == want["valid_pixels"]
    assert row["cropland_pixels"] == want["cropland_pixels"] == int(truth.sum() - truth[20:30].sum())


def _rescaled(kind):
    def make(folder, model):
        image, _ = field_scene(H, W)
        data = {"uint16_12bit": np.rint(image * (4095 / 255)).astype(np.uint16),
                "float_0_1": (image / 255).astype(np.float32),
                "int16_x10000": np.rint(image * (10000 / 255)).astype(np.int16)}[kind]
        path = write_raster(folder / f"{kind}.tif", data, T2M, UTM)
        return ["extract", path, "--model", model, "--report", folder / "r.json", "--opening", "0"]
    return make


def _same_as_uint8(chosen: str):
    def check(folder, out, err):
        row = json.loads((folder / "r.json").read_text())["rows"][0]
        _, truth = field_scene(H, W)
        assert row["cropland_pixels"] == int(truth.sum())
        assert chosen in row["normalization"], row["normalization"]  # the choice is reported
    return check


def _report_is(kind):
    def make(folder, model):
        target = folder / ("out.gpkg" if kind == "output" else "mask.tif")
        return extract(folder, model, "--mask", folder / "mask.tif", "--report", target)
    return make


def _stem_clash(folder, model):
    for sub in ("a", "b"):
        (folder / sub).mkdir()
        scene(folder / sub, "x.tif")
    return ["extract", folder / "a" / "x.tif", folder / "b" / "x.tif", "--model", model,
            "--output", folder / "out" / "{stem}.gpkg"]


def _same_input_twice(folder, model):
    path = scene(folder)
    return ["extract", path, path, "--model", model, "--output", folder / "out" / "{stem}.gpkg"]


def _lonlat_field_with_hole(folder, model):
    image, _ = field_scene(H, W)
    image[1] = 90  # no cropland but one field ...
    image[1, 10:50, 10:70] = 200
    image[1, 25:35, 30:40] = 90  # ... with a hole
    t = Affine(0.00003, 0, 15.0, 0, -0.00002, 52.0)
    path = write_raster(folder / "lonlat.tif", image, t, CRS.from_epsg(4326))
    return ["extract", path, "--model", model, "--output", folder / "f.gpkg", "--opening", "0"]


def _perimeter_counts_the_hole(folder, out, err):
    import pyogrio.raw
    import shapely
    from pyproj import Geod, Transformer
    from shapely.ops import transform

    meta, _, geometry, columns = pyogrio.raw.read(folder / "f.gpkg")
    perimeter = columns[list(meta["fields"]).index("perimeter_m")]
    assert len(geometry) == 1
    geom = shapely.from_wkb(geometry[0])
    assert len(geom.interiors) == 1
    geod = Geod(ellps="WGS84")
    outer = geod.geometry_length(geom.exterior)
    inner = geod.geometry_length(geom.interiors[0])
    assert perimeter[0] == pytest.approx(outer + inner, rel=1e-6)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform
    assert perimeter[0] == pytest.approx(transform(to_utm, geom).length, rel=0.01)


def _shp_sidecar(folder, model):
    (folder / "fields.dbf").write_bytes(b"someone's table")
    return extract(folder, model, output="fields.shp")


def _shp_stale_index(folder, model):
    assert main(["extract", str(scene(folder)), "--model", str(model), "--output", str(folder / "fields.shp"),
                 "-q"]) == 0
    (folder / "fields.qix").write_bytes(b"stale spatial index")
    (folder / "fields.sbn").write_bytes(b"stale ArcGIS index")
    return extract(folder, model, "--overwrite", output="fields.shp")


def _stale_index_removed(folder, out, err):
    import pyogrio

    assert not (folder / "fields.qix").exists() and not (folder / "fields.sbn").exists()
    assert pyogrio.read_info(folder / "fields.shp")["features"] > 0


def _bad_second_input(folder, model):
    good = scene(folder, "a.tif")
    gray = write_raster(folder / "b.tif", np.full((H, W), 100, np.uint8), T2M, UTM)
    return ["extract", good, gray, "--model", model, "--output", folder / "{stem}.gpkg", "--report",
            folder / "r.json"]


def _ctrl_c_second(monkeypatch):
    from engine.ensemble import Ensemble

    real = Ensemble.predict
    calls = {"inputs": set()}

    def predict(self, raw, valid, *a, **k):
        calls["inputs"].add(id(raw))
        if os.environ.get("CATALOGUE_SECOND"):
            raise KeyboardInterrupt
        return real(self, raw, valid, *a, **k)

    import engine.pipeline as pipeline
    real_run_file = pipeline.run_file
    done = []

    def run_file(path, *a, **k):
        if done:
            monkeypatch.setenv("CATALOGUE_SECOND", "1")
        result = real_run_file(path, *a, **k)
        done.append(path)
        return result

    monkeypatch.setattr(Ensemble, "predict", predict)
    monkeypatch.setattr(pipeline, "run_file", run_file)


def _two_inputs(folder, model):
    a, b = scene(folder, "a.tif"), scene(folder, "b.tif")
    return ["extract", a, b, "--model", model, "--output", folder / "{stem}.gpkg", "--report", folder / "r.json"]


def _first_kept_with_report_row(folder, out, err):
    assert (folder / "a.gpkg").exists() and not (folder / "b.gpkg").exists()
    rows = json.loads((folder / "r.json").read_text())["rows"]
    assert [Path(r["input"]).name for r in rows] == ["a.tif"]


def _ensemble(**spec):
    def make(folder, model):
        doc = {"members": [{"path": str(model), "weight": spec.pop("weight", 1.0)}], **spec}
        (folder / "ens.json").write_text(json.dumps(doc))
        return ["extract", scene(folder), "--model", folder / "ens.json", "--output", folder / "out.gpkg"]
    return make


def _vrt(folder, model):
    src = scene(folder, "src.tif")
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">src.tif'
        f'</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    (folder / "mosaic.vrt").write_text(f'<VRTDataset rasterXSize="{W}" rasterYSize="{H}">{bands}</VRTDataset>')
    src.unlink()
    return ["extract", folder / "mosaic.vrt", "--model", model, "--output", folder / "out.gpkg"]


def _vsimem(folder, model):
    import rasterio

    image, _ = field_scene(H, W)
    path = "/vsimem/catalogue/scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=UTM,
                       transform=T2M) as ds:
        ds.write(image)
    return ["extract", path, "--model", model, "--output", folder / "out" / "{stem}.gpkg"]


def _url(folder, model):
    return ["extract", "http://127.0.0.1:9/tiles/scene.tif", "--model", model, "--output", folder / "out.gpkg"]


def _no_crs(folder, model):
    image, _ = field_scene(H, W)
    path = write_raster(folder / "nocrs.tif", image)
    return ["extract", path, "--model", model, "--output", folder / "out.gpkg"]


def _no_raw_warning(folder, out, err):
    """No raw library warning; the missing CRS is said once, in the engine's words (nothing with --quiet)."""
    assert "Warning" not in err and "warnings.warn" not in err and "was not provided" not in err, err
    assert err.lower().count("no crs") <= 1, err


def _masks(grid_b: Affine | None, crs_b, shape_b=(H, W), crs_a=UTM):
    def make(folder, model):
        _, truth = field_scene(H, W)
        a = write_raster(folder / "a.tif", truth, T2M if crs_a else Affine(1, 0, 0, 0, 1, 0), crs_a)
        b_truth = np.zeros(shape_b, np.uint8)
        b_truth[: min(H, shape_b[0]), : min(W, shape_b[1])] = truth[: shape_b[0], : shape_b[1]]
        b = write_raster(folder / "b.tif", b_truth, grid_b or Affine(1, 0, 0, 0, 1, 0), crs_b)
        return ["evaluate", a, b, "--json", folder / "m.json"]
    return make


def _identical_metrics(folder, out, err):
    m = json.loads((folder / "m.json").read_text())
    assert m["iou"] == 1.0 and m["valid_pixels"] == H * W


CASES = [
    Case("kept-missing-input", lambda f, m: ["extract", f / "nope.tif", "--model", m, "--output", f / "out.gpkg"],
         2, "error: input raster not found"),
    Case("kept-corrupt-raster", _corrupt, 2, "cannot open"),
    Case("kept-not-a-raster", _not_raster, 2, "cannot open"),
    Case("kept-truncated-raster", _truncated, 2, "cut.tif"),
    Case("kept-too-few-bands", _gray, 2, "needs 3 (red, green, blue)"),
    Case("kept-missing-band", lambda f, m: extract(f, m, "--bands", "1,2,5"), 2, "band(s) 5 were requested"),
    Case("kept-all-nodata", _all_nodata, 2, "every pixel is nodata"),
    Case("kept-existing-output", _existing, 2, "already exists"),
    Case("kept-existing-output-overwrite", _existing_overwrite, 0, "ratio", changes=("out.gpkg",), check=_replaced),
    Case("kept-output-is-input", _output_is_input, 2, "is an input"),
    Case("kept-folder-not-writable", _folder_is_file, 2, "not writable"),
    Case("kept-bad-output-extension", lambda f, m: extract(f, m, output="out.xyz"), 2, "unsupported vector output"),
    Case("kept-missing-model", lambda f, m: extract(f, f / "missing.onnx"), 2, "model file not found"),
    Case("kept-corrupt-model", _corrupt_model, 2, "not a usable onnx model"),
    Case("kept-cuda-without-cuda", lambda f, m: extract(f, m, "--device", "cuda"), 2, "cuda was asked for",
         needs_no_cuda=True),
    Case("kept-ctrl-c", lambda f, m: extract(f, m, "--mask", f / "mask.tif"), 130, "cancelled: no output",
         patch=_ctrl_c),
    Case("row01-nan-pixels", _float_with(np.nan), 0, "ratio", check=_same_numbers_as_nodata_block),
    Case("row01-inf-pixels-declared-nodata", _float_with(np.inf, nodata=-1), 0, "ratio",
         check=_same_numbers_as_nodata_block),
    Case("row02-uint16-12bit", _rescaled("uint16_12bit"), 0, "ratio", check=_same_as_uint8("0..4095")),
    Case("row02-float-0-1", _rescaled("float_0_1"), 0, "ratio", check=_same_as_uint8("0..1,")),
    Case("row02-int16-x10000", _rescaled("int16_x10000"), 0, "ratio", check=_same_as_uint8("0..10000")),
    Case("row03-report-equals-output", _report_is("output"), 2, "error: the same file"),
    Case("row03-report-equals-mask", _report_is("mask"), 2, "error: the same file"),
    Case("row04-stem-clash", _stem_clash, 2, "would both write"),
    Case("row04-same-input-twice", _same_input_twice, 2, "is given twice"),
    Case("row06-threads-huge", lambda f, m: extract(f, m, "--threads", "100000"), 0, "capped at", quiet=False),
    Case("row07-tile-size-huge", lambda f, m: extract(f, m, "--tile-size", "100000"), 2,
         "--tile-size (px) must be a number >= 32 and <= 8192"),
    Case("row07-tile-larger-than-raster", lambda f, m: extract(f, m, "--tile-size", "4096"), 0,
         "larger than the raster", quiet=False),
    Case("row08-evaluate-no-overlap", _masks(Affine(2, 0, 900000, 0, -2, 6000000), UTM), 2, "do not overlap"),
    Case("row08-evaluate-one-without-crs", _masks(None, None, (H + 5, W)), 2, "has no crs"),
    Case("row09-evaluate-no-crs-other-size", _masks(None, None, (H + 5, W), crs_a=None), 2,
         "have no crs and different sizes"),
    Case("row09-evaluate-no-crs-same-size", _masks(Affine(3, 0, 7, 0, 3, 9), None, crs_a=None), 0,
         "cropland iou", check=_identical_metrics),
    Case("row10-lonlat-perimeter-with-hole", _lonlat_field_with_hole, 0, "ratio", check=_perimeter_counts_the_hole),
    Case("row11-shp-sidecar-exists", _shp_sidecar, 2, "fields.dbf) already exists"),
    Case("row11-shp-overwrite-stale-index", _shp_stale_index, 0, "ratio",
         changes=("fields.shp", "fields.shx", "fields.dbf", "fields.prj", "fields.cpg", "fields.qix", "fields.sbn"),
         check=_stale_index_removed),
    Case("row13-bad-second-input", _bad_second_input, 2, "b.tif has 1 band(s)"),
    Case("row13-ctrl-c-second-input", _two_inputs, 130, "cancelled: ", patch=_ctrl_c_second,
         check=_first_kept_with_report_row, writes=("a.gpkg", "r.json")),
    Case("row14-ensemble-weight-string", _ensemble(weight="heavy"), 2, "'weight' must be a number > 0, got 'heavy'"),
    Case("row14-ensemble-threshold-7", _ensemble(threshold=7), 2, "'threshold' must be a number > 0 and < 1, got 7"),
    Case("row15-vrt-missing-source", _vrt, 2, "source file"),
    Case("row16-vsimem-input", _vsimem, 0, "/vsimem/catalogue/scene.tif"),
    Case("row16-url-not-mangled", _url, 2, "http://127.0.0.1:9/tiles/scene.tif"),
    Case("row17-min-area-nan", lambda f, m: extract(f, m, "--min-area", "nan"), 2,
         "--min-area (m²) must be a number >= 0, got nan"),
    Case("row17-pixel-size-inf", lambda f, m: extract(f, m, "--pixel-size", "inf"), 2, "--pixel-size (m) must be"),
    Case("row17-threshold-nan", lambda f, m: extract(f, m, "--threshold", "nan"), 2, "--threshold must be"),
    Case("row17-evaluate-tolerance-negative",
         lambda f, m: [*_masks(None, UTM)(f, m)[:3], "--tolerance", "-1"], 2, "--tolerance (px) must be a number >= 0"),
    Case("row17-evaluate-iou-threshold-2",
         lambda f, m: [*_masks(None, UTM)(f, m)[:3], "--iou-threshold", "2"], 2, "--iou-threshold must be a number"),
    Case("warnings-quiet-no-crs", _no_crs, 0, "area unknown", check=_no_raw_warning),
    Case("warnings-no-crs-said-once", _no_crs, 0, "has no crs", quiet=False, check=_no_raw_warning),
]


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, green_model, capsys, monkeypatch):
    if case.needs_no_cuda:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this machine has CUDA, so asking for it is not an error here")
    work = tmp_path / "work"
    work.mkdir()
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    model = work / "model.onnx"
    model.write_bytes(Path(green_model).read_bytes())
    argv = [str(a) for a in case.make(work, model)]
    if case.quiet and argv[0] == "extract":
        argv.append("-q")
    before = _snapshot(work)
    capsys.readouterr()
    if case.patch is not None:
        case.patch(monkeypatch)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == case.code, err
    assert "Traceback" not in err and "Traceback" not in out
    text = err if case.code != 0 or not out.strip() or not case.quiet else out
    if case.code == 0 and not case.quiet:
        text = err  # the log line under test comes first
    lines = [line for line in text.splitlines() if line.strip()]
    if case.code == 0 and not case.quiet:
        assert any(case.first.lower() in line.lower() for line in lines), text
    else:
        assert lines and case.first.lower() in lines[0].lower(), text
    for path, data in before.items():
        if path.name in case.changes:
            continue
        assert path.exists() and path.read_bytes() == data, f"{path.name} changed"
    assert not [p for p in work.rglob("*") if ".part-" in p.name]
    assert list(spool.iterdir()) == []
    if case.code != 0:
        new = {p for p in work.rglob("*") if p.is_file() and p.name not in case.writes} - set(before)
        assert not new, f"a refused run wrote {sorted(p.name for p in new)}"
    if case.check is not None:
        case.check(work, out, err)


# --- cases that need a real process or a small file system ------------------------------------------------------

def test_row12_sigterm_mid_run_leaves_nothing(tmp_path, green_model):
    """SIGTERM is handled like Ctrl-C: exit 143, no .part output, no temporary spool folder."""
    image = np.random.default_rng(0).integers(0, 255, (3, 2500, 2500), dtype=np.uint8)
    path = write_raster(tmp_path / "big.tif", image, T2M, UTM)
    spool = tmp_path / "tmp"
    spool.mkdir()
    (tmp_path / "mask.tif").write_bytes(b"old mask")
    env = {**os.environ, "TMPDIR": str(spool)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "extract", str(path), "--model", str(green_model),
                             "--output", str(tmp_path / "f.gpkg"), "--mask", str(tmp_path / "mask.tif"),
                             "--overwrite", "-q"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".mask.part-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[0].startswith("terminated (SIGTERM)")
    assert "Traceback" not in err
    assert (tmp_path / "mask.tif").read_bytes() == b"old mask"
    assert not list(tmp_path.glob(".*part*")) and not (tmp_path / "f.gpkg").exists()
    assert not list(spool.glob("cropland-*"))  # (onnxruntime keeps a small .ses file of its own there)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root and a kernel that allows it), else skipped with the reason."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("the disk-full case mounts a small tmpfs, which needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("where", ["output-folder", "temp-folder"], ids=["row05-disk-full-output",
                                                                        "row05-disk-full-temp"])
def test_row05_disk_full(where, small_tmpfs, tmp_path, green_model, capsys, monkeypatch):
    """A full disk gives one ``cannot write ...: no space left on device`` line, exit 2, the old file kept."""
    image = np.random.default_rng(1).integers(0, 255, (3, 1500, 1500), dtype=np.uint8)
    path = write_raster(tmp_path / "noise.tif", image, T2M, UTM)
    out = small_tmpfs if where == "output-folder" else tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "fields.gpkg").write_bytes(b"yesterday's fields")
    spool = tmp_path / "tmp" if where == "output-folder" else small_tmpfs
    spool.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    extra = ["--probability", str(out / "prob.tif")] if where == "output-folder" else ["--min-area", "1"]
    code = main(["extract", str(path), "--model", str(green_model), "--output", str(out / "fields.gpkg"),
                 "--overwrite", "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: cannot write") and "no space left on device" in first, err
    if where == "temp-folder":
        assert "temporary folder" in first
    assert "Traceback" not in err
    assert (out / "fields.gpkg").read_bytes() == b"yesterday's fields"
    assert sorted(p.name for p in out.iterdir()) == ["fields.gpkg"]
    assert list(spool.iterdir()) == []


def test_row02_linear_rescales_of_the_shipped_sample_agree():
    """Issue 12 item 4 / issue 14 row 2: the shipped NAIP sample (a 512 px corner, to stay fast) as uint8, 12-bit
    uint16, float 0-1, int16 reflectance x 10000 and 16-bit int32 gives the same cropland ratio (within 0.01)
    and field count through model v1 (value-range normalisation); each run says which range it chose."""
    import rasterio
    from rasterio.windows import Window

    from engine.api import ExtractOptions, extract, load_model

    sample = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    with rasterio.open(sample) as ds:
        raw = ds.read(window=Window(0, 0, 512, 512)).astype(np.float64)
        profile = {**ds.profile, "width": 512, "height": 512, "transform": ds.window_transform(Window(0, 0, 512, 512))}
    model = load_model(REPO / "resources" / "models" / "v1" / "ensemble.json", ExtractOptions(device="cpu"))
    folder = Path(tempfile.mkdtemp(prefix="row02-"))
    results = {}
    try:
        for name, dtype, scale, want in [("uint8", "uint8", 1, "uint8 data type"),
                                         ("uint16_12bit", "uint16", 4095 / 255, "0..4095"),
                                         ("float_0_1", "float32", 1 / 255, "0..1,"),
                                         ("int16_x10000", "int16", 10000 / 255, "0..10000"),
                                         ("int32_16bit", "int32", 65535 / 255, "0..65535")]:
            data = raw * scale
            data = data if dtype.startswith("float") else np.rint(data)
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **{**profile, "dtype": dtype, "predictor": 1}) as ds:
                ds.write(data.astype(dtype))
            logs: list[str] = []
            # The sample as it is read (5 m, not resampled to the models' 2 m) and fields as connected regions,
            # for every type; the defaults (resampled, split) are tested on three copies below.
            options = ExtractOptions(device="cpu", split="none", resample="off")
            results[name] = extract(path, model, options=options, log=logs.append, keep_fields=False)
            assert want in results[name].normalization
            assert any(want in line for line in logs)
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    base = results["uint8"]
    assert 0.3 < base.cropland_ratio < 0.95  # the sample is mostly cropland: the models see it as such
    for name, r in results.items():
        assert abs(r.cropland_ratio - base.cropland_ratio) <= 0.01, (name, r.cropland_ratio, base.cropland_ratio)
        assert abs(r.field_count - base.field_count) <= max(1, base.field_count // 50), (name, r.field_count)
        assert r.valid_pixels == base.valid_pixels


def test_row02_linear_rescales_give_the_same_fields_through_the_default_model():
    """Issue 12 item 4 with the shipped default (v2: percentile stretch, boundary split) and default options: the
    sample's uint8, 12-bit, float 0-1 and int16 x 10000 copies give the same ratio (within 0.01) and the same
    fields (count within 2 %, total field area within 1 %)."""
    import rasterio
    from rasterio.windows import Window

    from engine.api import ExtractOptions, extract, load_model

    sample = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    with rasterio.open(sample) as ds:
        raw = ds.read(window=Window(0, 0, 512, 512)).astype(np.float64)
        profile = {**ds.profile, "width": 512, "height": 512, "transform": ds.window_transform(Window(0, 0, 512, 512))}
    model = load_model(None, ExtractOptions(device="cpu"))
    assert model.channels == ["extent", "boundary"]
    folder = Path(tempfile.mkdtemp(prefix="row02v2-"))
    results = {}
    try:
        for name, dtype, scale in [("uint8", "uint8", 1), ("uint16_12bit", "uint16", 4095 / 255),
                                   ("float_0_1", "float32", 1 / 255), ("int16_x10000", "int16", 10000 / 255)]:
            data = raw * scale
            data = data if dtype.startswith("float") else np.rint(data)
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **{**profile, "dtype": dtype, "predictor": 1}) as ds:
                ds.write(data.astype(dtype))
            results[name] = extract(path, model, options=ExtractOptions(device="cpu"), keep_fields=True)
            assert "percentile" in results[name].normalization
            assert results[name].split["method"] == "boundary"
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    base = results["uint8"]
    assert 0.3 < base.cropland_ratio < 0.95 and base.field_count > 5
    base_area = sum(f.area_m2 for f in base.fields)
    for name, r in results.items():
        assert abs(r.cropland_ratio - base.cropland_ratio) <= 0.01, (name, r.cropland_ratio, base.cropland_ratio)
        assert abs(r.field_count - base.field_count) <= max(1, base.field_count // 50), (name, r.field_count)
        assert abs(sum(f.area_m2 for f in r.fields) - base_area) <= 0.01 * base_area, name


def _matched_area_share(a, b, iou: float = 0.9) -> float:
    """Share of the area of ``a``'s fields that have a field in ``b`` overlapping them with IoU >= ``iou``."""
    import shapely

    mine, theirs = [f.geometry for f in a.fields], [f.geometry for f in b.fields]
    tree = shapely.STRtree(theirs)
    matched = 0.0
    for g in mine:
        best = max((g.intersection(theirs[j]).area / g.union(theirs[j]).area
                    for j in tree.query(g, predicate="intersects")), default=0.0)
        matched += g.area if best >= iou else 0.0
    return matched / sum(g.area for g in mine)


@pytest.mark.slow
def test_row02_rescales_give_the_same_fields_through_the_resampled_read():
    """Issue 12 item 4 through the resampled read: with model v1 (2 m) the 5 m sample is read resampled to 2 m (a warped
    VRT, bilinear) and split (image edges). The warp runs in float32, so the uint8 copy is not rounded to whole
    values after interpolation where the 12-bit and float copies keep their precision (177 fields against 181 and
    179 before): the float 0-1 copy gives exactly the uint8 fields; the 12-bit copy, itself rounded to 1/4095 steps,
    the same ratio within 0.01, the field count within 2 % and 99 % of the field area in fields matched with IoU >=
    0.9."""
    import rasterio
    from rasterio.windows import Window

    from engine.api import ExtractOptions, extract, load_model

    sample = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    with rasterio.open(sample) as ds:
        raw = ds.read(window=Window(0, 0, 512, 512)).astype(np.float64)
        profile = {**ds.profile, "width": 512, "height": 512, "transform": ds.window_transform(Window(0, 0, 512, 512))}
    model = load_model(REPO / "resources" / "models" / "v1" / "ensemble.json", ExtractOptions(device="cpu"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="row02-default-") as tmp:
        for name, dtype, scale in [("uint8", "uint8", 1), ("uint16_12bit", "uint16", 4095 / 255),
                                   ("float_0_1", "float32", 1 / 255)]:
            data = raw * scale
            path = Path(tmp) / f"{name}.tif"
            with rasterio.open(path, "w", **{**profile, "dtype": dtype, "predictor": 1}) as ds:
                ds.write((data if dtype.startswith("float") else np.rint(data)).astype(dtype))
            results[name] = extract(path, model, options=ExtractOptions(device="cpu"))  # the defaults
    base, twelve, unit = results["uint8"], results["uint16_12bit"], results["float_0_1"]
    assert base.resampling["resampled"] and base.split["method"] == "image"  # what the defaults chose
    assert base.field_count > 100  # split fields, not a few regions
    assert unit.cropland_ratio == base.cropland_ratio and unit.field_count == base.field_count
    assert _matched_area_share(base, unit, iou=1.0) == 1.0 and _matched_area_share(unit, base, iou=1.0) == 1.0
    assert abs(twelve.cropland_ratio - base.cropland_ratio) <= 0.01
    assert abs(twelve.field_count - base.field_count) <= base.field_count // 50
    assert _matched_area_share(base, twelve) >= 0.99 and _matched_area_share(twelve, base) >= 0.99


def test_v1_model_metadata_defaults_to_input_scale():
    """Shipped v1 models carry no 'normalization' key: they keep today's meaning (raw / input_scale)."""
    import onnx

    from engine.metadata import METADATA_KEY, ModelMetadata

    member = REPO / "resources" / "models" / "v1" / "unet_mobilenet_v2.onnx"
    props = {p.key: p.value for p in onnx.load(str(member), load_external_data=False).metadata_props}
    assert "normalization" not in json.loads(props[METADATA_KEY])
    meta = ModelMetadata.from_onnx_props(props, str(member))
    assert meta.normalization == "input_scale" and meta.input_scale == 255


def test_training_reads_rasters_through_the_engine_value_range(tmp_path):
    """Training with --input-scale auto maps a 12-bit raster exactly as the engine does (0..1 by 0..4095)."""
    from training.data import read_image

    image, _ = field_scene(H, W)
    twelve = write_raster(tmp_path / "t.tif", np.rint(image * (4095 / 255)).astype(np.uint16), T2M, UTM)
    eight = write_raster(tmp_path / "e.tif", image, T2M, UTM)
    auto, _, _ = read_image(twelve, None, None)
    legacy, _, _ = read_image(eight, None, 255.0)
    assert np.abs(auto - legacy).max() < 0.5 / 255

