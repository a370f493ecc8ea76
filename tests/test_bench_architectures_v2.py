"""bench.architectures_v2 (every registry architecture as a v2 model, one recipe on the catalogue) runs end to end
on a tiny synthetic set in the NAIP format (the one tests/test_v2_chain.py trains on), resumes, fuses and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_v2_chain import FIELDS, TILE, make_naip_like

REPO = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "CROPLAND_BENCH_RUNS": str(tmp_path / "bench"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "bench.architectures_v2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_recipe_shares_are_read_from_the_v2_recipe():
    from bench.architectures_v2 import RECIPE_SH, recipe_shares

    shares = recipe_shares()
    line = next(x for x in RECIPE_SH.read_text().splitlines() if x.startswith("SHARES="))
    assert set(shares) == {"naip", "nsw", "gf2", "contest", "denmark"}
    assert all(f"{k}={v:g}" in line for k, v in shares.items())


def test_vote_fusion_is_the_majority_and_mean_the_mean():
    from bench.architectures_v2 import fuse_maps

    p = [np.array([[0.9, 0.2, 0.6]], np.float32), np.array([[0.8, 0.4, 0.1]], np.float32),
         np.array([[0.1, 0.7, 0.3]], np.float32)]
    maps = [[{"extent": a, "boundary": 1 - a}] for a in p]
    vote = fuse_maps(maps, "vote")[0]
    np.testing.assert_allclose(vote["extent"], [[2 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    assert ((vote["extent"] >= 0.5) == [[True, False, False]]).all()
    np.testing.assert_allclose(vote["boundary"], [[1 / 3, 2 / 3, 2 / 3]], atol=1e-6)
    np.testing.assert_allclose(fuse_maps(maps, "mean")[0]["extent"], np.mean(p, axis=0), atol=1e-6)


@pytest.mark.slow
def test_architectures_v2_runs_resumes_fuses_and_reports(tmp_path):
    """Four rows (one without ONNX export), 2 steps each, 2 jobs; the v2 recipe's fused row; a rerun trains
    nothing; the report renders; --estimate times a smoke run."""
    data = tmp_path / "data"
    make_naip_like(data)
    out = tmp_path / "arch_v2.json"
    rows = ["unet", "smp:Unet:mobilenet_v2", "smp:Linknet:mobilenet_v2", "smp:PSPNet:mobilenet_v2"]
    common = ["--datasets", "naip", "--data-root", str(data), "--width", "4", "--crop", "64", "--batch-size", "2",
              "--steps", "2", "--eval-tile", "64", "--eval-overlap", "16", "--jobs", "2", "--no-speed",
              "--out", str(out)]
    _run(tmp_path, "--rows", *rows, *common)
    result = json.loads(out.read_text())
    models = result["models"]
    fused = "v2 recipe's three members (mean)"
    assert set(models) == {"all field (trivial)", *rows, fused} and result["failures"] == []
    assert result["recipe"]["set_shares"]["naip"] == 2.0 and result["recipe"]["steps"] == 2

    field_share = sum((x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in FIELDS) / TILE**2
    trivial = models["all field (trivial)"]["metrics"]["naip"]
    assert trivial["iou"] == pytest.approx(field_share, abs=1e-4)  # the validation tile's field share
    assert trivial["ratio_error"] == pytest.approx(1 - field_share, abs=1e-4)
    for name in rows:
        m = models[name]
        naip = m["metrics"]["naip"]
        assert {"iou", "ratio_error", "boundary_f1", "object_f1", "baseline_iou"} <= set(naip)
        assert 0 <= naip["iou"] <= 1 and m["mean"]["iou"] == pytest.approx(naip["iou"])
        assert m["parameters"] > 0 and m["train_seconds"] > 0 and m["eval_seconds"] > 0
        assert (tmp_path / "arch_v2_work" / "maps" / f"{name.replace(':', '_')}.npz").is_file()
    for name in rows[:3]:
        m = models[name]
        assert m["backend"] == "onnx" and m["onnx_bytes"] == Path(m["onnx"]).stat().st_size
    psp = models["smp:PSPNet:mobilenet_v2"]
    assert psp["onnx"] is None and psp["backend"] == "torch" and "adaptive_avg_pool2d" in psp["onnx_error"]
    assert models[fused]["parameters"] == sum(models[m]["parameters"] for m in rows[:3])
    assert models[fused]["onnx_bytes"] == sum(models[m]["onnx_bytes"] for m in rows[:3])
    assert 0 <= models[fused]["mean"]["iou"] <= 1

    again = _run(tmp_path, "--rows", *rows, *common)
    assert "resuming" in again and "training 2 steps" not in again  # every row kept, nothing retrained
    report = _run(tmp_path, "--report", str(out))
    assert report.startswith("## Architectures on the v2 data") and "| unet | 0." in report
    assert "smp:PSPNet:mobilenet_v2 (no ONNX: PyTorch)" in report and f"| {fused} |" in report
    assert "| naip |" in report and "python -m bench.architectures_v2 --rows unet" in report
    assert "- `unet`: model v2" in report and "adaptive_avg_pool2d" in report

    est = _run(tmp_path, "--rows", "unet", *common, "--estimate")
    assert "Estimate on idle cores" in est
    smoke = json.loads((tmp_path / "arch_v2_estimate.json").read_text())
    wall, cpu = smoke["smoke"][0]["step"]
    assert wall > 0 and cpu > 0 and smoke["estimate"]["idle"]["total_s"] > smoke["estimate"]["idle"]["load_s"]
