"""Smoke tests of the benchmark scripts (``bench/``): they run end to end on a 1 Mpx mosaic with the tiny green model
and write results the report renders. Nothing here measures or asserts a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_path

REPO = Path(__file__).resolve().parent.parent


def _bench(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CROPLAND_BENCH_RUNS": str(tmp_path / "bench"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_letterbox_round_trip_restores_the_label():
    from bench.study_baseline import letterbox, unletterbox

    rng = np.random.default_rng(0)
    label = np.zeros((500, 600), np.uint8)
    label[100:300, 50:400] = 1
    image = rng.integers(0, 256, (3, 500, 600)).astype(np.uint16)
    img, lab, box = letterbox(image, label)
    assert img.shape == (3, 480, 480) and img.min() >= 0.0 and img.max() <= 1.0
    assert box == (40, 0, 400, 480) and not lab[:40].any() and not img[:, :40].any()
    back = unletterbox(lab, box, label.shape)
    assert back.shape == label.shape and np.mean(back != label) < 0.01


def test_score_of_a_perfect_mask():
    from bench.accuracy import score

    label = np.zeros((60, 80), np.uint8)
    label[10:30, 10:50] = 1
    label[40:55, 5:70] = 1
    s = score(label == 1, label)
    assert s["iou"] == s["boundary_f1"] == s["object_f1"] == 1.0 and s["ratio_error"] == 0.0


@pytest.mark.shared
@pytest.mark.slow
def test_speed_bound_backends_vectorize_and_report_run(tmp_path, green_model):
    shared_path("mathorcup2020_cropland", "train", "images")
    out = tmp_path / "bench"
    _bench(tmp_path, "speed", "--model", str(green_model), "--models", "ensemble", "--sizes", "1", "--device", "cpu",
           "--threads", "1", "--no-idle-check", "--out", str(out / "speed.json"))
    speed = json.loads((out / "speed.json").read_text())
    row = speed["rows"][0]
    assert row["ok"] and row["width"] == row["height"] == 1024 and row["peak_rss_mib"] > 0
    # one pass by default, and speed writes only the fields: no raster is written, not even a temporary one
    assert set(row["stage_seconds"]) >= {"read", "inference", "blend", "vectorize", "write_vector"}
    assert "write_raster" not in row["stage_seconds"]
    assert row["cpu_s"] > 0
    # the split's cost: each size with --split none and auto, compared
    _bench(tmp_path, "speed", "--model", str(green_model), "--models", "ensemble", "--sizes", "1", "--device", "cpu",
           "--threads", "1", "--no-idle-check", "--split", "none", "auto", "--out", str(out / "split_cost.json"))
    cost = json.loads((out / "split_cost.json").read_text())["split_cost"]
    assert [c["split"] for c in cost] == ["none", "auto"] and cost[0]["e2e_vs_first"] == 0
    assert cost[1]["method"] == "image" and cost[1]["peak_rss_mib"] > 0 and "split" in cost[1]["stage_seconds"]
    _bench(tmp_path, "bound", "--speed-json", str(out / "speed.json"), "--seconds", "0.05", "--no-idle-check",
           "--out", str(out / "bound.json"))
    assert json.loads((out / "bound.json").read_text())["versus_speed"][0]["share_of_bound"] > 0
    _bench(tmp_path, "backends", "--onnx", str(green_model), "--device", "cpu", "--threads", "1", "--seconds", "0.05",
           "--e2e-mpx", "0", "--no-idle-check", "--out", str(out / "backends.json"))
    assert json.loads((out / "backends.json").read_text())["rows"][0]["ok"]
    _bench(tmp_path, "vectorize", "--mpx", "1", "--no-idle-check", "--out", str(out / "vectorize.json"))
    assert json.loads((out / "vectorize.json").read_text())["area_agrees_0_1_percent"]
    report = _bench(tmp_path, "report", "--speed", str(out / "speed.json"), "--bound", str(out / "bound.json"),
                    "--backends", str(out / "backends.json"), "--vectorize", str(out / "vectorize.json"),
                    "--accuracy", str(out / "none.json"), "--study", str(out / "none.json")).stdout
    assert "## Speed end to end" in report and "## Vectorising" in report and "1024 × 1024" in report


@pytest.mark.shared
def test_architectures_comparison_runs_resumes_and_reports(tmp_path):
    """One tiny fit per row (1 step), scored on a held-out contest tile through the engine; a rerun resumes."""
    shared_path("mathorcup2020_cropland", "train", "images")
    out = tmp_path / "bench" / "arch.json"
    args = ("--rows", "icnet", "--holdout", "Data5", "--steps", "1", "--crop", "64", "--batch-size", "2",
            "--no-speed", "--no-fusions", "--out", str(out))
    _bench(tmp_path, "architectures", *args)
    result = json.loads(out.read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"all cropland (trivial)", "icnet"} and rows["icnet"]["raster"] == "Data5"
    assert rows["all cropland (trivial)"]["iou"] == pytest.approx(0.5534, abs=1e-3)  # Data5's cropland share
    assert 0 <= rows["icnet"]["iou"] <= 1 and 0 < rows["icnet"]["tile_agreement"] <= 1
    assert result["models"]["icnet"]["parameters"] > 0 and result["models"]["icnet"]["onnx_bytes"] > 0
    again = _bench(tmp_path, "architectures", *args).stdout
    assert "resuming" in again and "training" not in again.split("resuming")[1].split("|")[0]
    report = _bench(tmp_path, "architectures", "--report", str(out)).stdout
    assert "| icnet |" in report and "| Data5 |" in report


def test_model_card_scores_the_engine_output_against_the_reference(tmp_path):
    """bench.model_card on a synthetic NAIP-format set: the scene's source values reach the engine unchanged, a
    reference burnt back scores perfectly, and the engine's and the all-cropland rows hold the numbers recomputed
    here from the labels."""
    import rasterio
    from test_v2_chain import make_naip_like

    from bench.model_card import Pool, main, write_scene
    from engine import metrics as m
    from training.datasets import load_scenes
    from training.datasets.scene import IGNORE

    make_naip_like(tmp_path / "data")
    val = [s for s in load_scenes(["naip"], tmp_path / "data", log=lambda _m: None, keep_raw=True)
           if s.split == "val"]
    assert val and val[0].raw is not None and val[0].raw.dtype == np.uint8
    assert all(s.raw is None for s in load_scenes(["naip"], tmp_path / "data", log=lambda _m: None))  # training
    transform, pixel = write_scene(val[0], tmp_path / "scene.tif")
    with rasterio.open(tmp_path / "scene.tif") as ds:
        assert np.array_equal(ds.read(), val[0].raw) and ds.transform == transform
        assert pixel == (None if ds.crs else val[0].gsd_m)  # the PNG tiles have no CRS: pixel size stated

    perfect = Pool()
    perfect.add(val[0].instances, val[0])
    got = perfect.metrics()
    assert got["iou"] == 1.0 and got["object_f1"] == 1.0 and got["fields_pred"] == got["fields_ref"] == 4

    out = tmp_path / "card"
    model = str(REPO / "resources" / "models" / "v1" / "unet_mobilenet_v2.onnx")
    assert main(["--model", f"one={model}", "--datasets", "naip", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--pictures"]) == 0
    assert (out / "naip_one.png").stat().st_size > 1000
    doc = json.loads((out / "model_card.json").read_text())
    base, one = doc["results"]["all-cropland"]["naip"], doc["results"]["one"]["naip"]
    labelled = sum(int((s.extent != IGNORE).sum()) for s in val)
    ratio = sum(int((s.extent == 1).sum()) for s in val) / labelled
    assert base["iou"] == pytest.approx(ratio) and base["ratio_error"] == pytest.approx(1 - ratio)
    assert one["fields_ref"] == 4 * len(val) and 0 <= one["object_f1"] <= 1 and 0 <= one["iou"] <= 1
    assert one["ratio_pred"] == pytest.approx(one["ratio_error"] + ratio)
    assert m.metrics_from_counts({"tp": 1, "fp": 0, "fn": 0, "tn": 0})["iou"] == 1.0
