"""Every bad input gets one clear error line, a non-zero exit status, and writes nothing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from affine import Affine
from helpers import REPO, field_scene, green_threshold_onnx, write_raster
from rasterio.crs import CRS

from engine.cli import main

UTM = CRS.from_epsg(32633)
T2M = Affine(2, 0, 500000, 0, -2, 6000000)


@pytest.fixture
def work(tmp_path, green_model):
    image, _ = field_scene(60, 80)
    scene = write_raster(tmp_path / "scene.tif", image, T2M, UTM)
    return tmp_path, scene, green_model


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def outputs_of(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("out", ".out")))


def check_refused(capsys, folder, expect: str, *args):
    code, err = run_cli(capsys, *args, "--output", folder / "out.gpkg", "--mask", folder / "out_mask.tif",
                        "--report", folder / "out.json", "-q")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expect.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert outputs_of(folder) == []


def test_missing_file(capsys, work):
    folder, _, model = work
    check_refused(capsys, folder, "not found", "extract", folder / "nope.tif", "--model", model)


def test_corrupt_file(capsys, work):
    folder, _, model = work
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x17" * 500)
    check_refused(capsys, folder, "cannot open", "extract", folder / "corrupt.tif", "--model", model)


def test_not_a_raster(capsys, work):
    folder, _, model = work
    (folder / "notes.txt").write_text("field notes, not imagery\n")
    check_refused(capsys, folder, "cannot open", "extract", folder / "notes.txt", "--model", model)


def test_truncated_raster(capsys, work):
    folder, _, model = work
    image, _ = field_scene(300, 400)
    big = write_raster(folder / "big.tif", image, T2M, UTM)
    data = big.read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    check_refused(capsys, folder, "cut.tif", "extract", folder / "cut.tif", "--model", model)


def test_fewer_bands_than_the_model_needs(capsys, work):
    folder, _, model = work
    gray = write_raster(folder / "gray.tif", np.full((60, 80), 100, np.uint8), T2M, UTM)
    check_refused(capsys, folder, "needs 3 (red, green, blue)", "extract", gray, "--model", model)
    check_refused(capsys, folder, "band(s) 5 were requested", "extract", folder / "scene.tif", "--model", model,
                  "--bands", "1,2,5")


def test_all_nodata(capsys, work):
    folder, _, model = work
    empty = write_raster(folder / "empty.tif", np.zeros((3, 60, 80), np.uint8), T2M, UTM, nodata=0)
    check_refused(capsys, folder, "every pixel is nodata", "extract", empty, "--model", model)


def test_corrupt_model(capsys, work):
    folder, scene, _ = work
    (folder / "broken.onnx").write_bytes(b"\x08\x07garbage" * 50)
    check_refused(capsys, folder, "not a usable ONNX model", "extract", scene, "--model", folder / "broken.onnx")
    check_refused(capsys, folder, "not found", "extract", scene, "--model", folder / "missing.onnx")


def test_model_expecting_other_bands(capsys, work):
    folder, scene, _ = work
    four = green_threshold_onnx(folder / "four.onnx", bands=4)
    check_refused(capsys, folder, "needs 4", "extract", scene, "--model", four)


def test_existing_output_is_kept(capsys, work):
    folder, scene, model = work
    target = folder / "out.gpkg"
    target.write_bytes(b"precious")
    code, err = run_cli(capsys, "extract", scene, "--model", model, "--output", target, "--mask",
                        folder / "out_mask.tif", "-q")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"precious"
    assert not (folder / "out_mask.tif").exists()
    code, err = run_cli(capsys, "extract", scene, "--model", model, "--output", target, "--overwrite", "-q")
    assert code == 0, err
    assert target.read_bytes() != b"precious"


def test_unwritable_folder(capsys, work):
    folder, scene, model = work
    (folder / "a_file").write_text("x")
    code, err = run_cli(capsys, "extract", scene, "--model", model, "--output", folder / "a_file" / "out.gpkg")
    assert code == 2 and "not writable" in err


def test_bad_output_extension_and_clash(capsys, work):
    folder, scene, model = work
    code, err = run_cli(capsys, "extract", scene, "--model", model, "--output", folder / "out.xyz")
    assert code == 2 and "Unsupported vector output" in err
    code, err = run_cli(capsys, "extract", scene, "--model", model, "--mask", scene)
    assert code == 2 and "is an input" in err


def test_process_exit_status(work):
    folder, _, model = work
    proc = subprocess.run([sys.executable, "-m", "engine", "extract", str(folder / "nope.tif"), "--model",
                           str(model)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Input raster not found")
