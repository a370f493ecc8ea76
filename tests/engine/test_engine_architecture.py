"""The engine's structure: dependencies point one way, errors carry their setting as data, plans are stages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from helpers import REPO, field_scene, write_raster
from rasterio.crs import CRS

from engine.areas import area_model
from engine.context import Callbacks, RunContext, Tiling
from engine.errors import InputError, OutputError
from engine.io import ArraySource
from engine.options import ExtractOptions, OutputPaths
from engine.plans import PLANS, Targets, plan_for
from engine.runtime import StageTimer
from engine.stages import Infer

OUTSIDE = ("training", "plugin", "qgis", "bench")


def engine_imports() -> dict[str, set[str]]:
    """engine module -> engine modules it imports (at the top or inside functions), plus outside packages."""
    graph = {}
    for f in sorted((REPO / "engine").glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else ["__init__"])
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add("EXT:" + node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                deps.update("EXT:" + a.name.split(".")[0] for a in node.names)
        graph[f.stem] = deps
    return graph


def test_engine_imports_nothing_of_training_plugin_or_qgis():
    graph = engine_imports()
    bad = {mod: sorted(d for d in deps if d.startswith("EXT:") and d[4:] in OUTSIDE) for mod, deps in graph.items()}
    assert {mod: deps for mod, deps in bad.items() if deps} == {}


def test_engine_modules_import_each_other_without_cycles():
    graph = {mod: {d for d in deps if not d.startswith("EXT:")} for mod, deps in engine_imports().items()}
    assert "api" not in graph["pipeline"] and "pipeline" in graph["api"]
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, mod, dep])}"
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])


def test_loading_the_engine_leaves_training_unimported():
    code = ("import sys, engine.api, engine.pipeline, engine.cli; from engine.api import load_model; load_model(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_backend_is_registered_by_training_on_first_use():
    from engine import backends

    backend = backends.get_backend("torch")
    assert backend.load.__module__ == "training.backend" and ".pt" in backend.suffixes
    with pytest.raises(Exception, match="No inference backend named 'tflite'"):
        backends.get_backend("tflite")


def test_errors_carry_their_setting_for_each_front_end(tmp_path, green_model):
    from engine.api import extract

    scene = write_raster(tmp_path / "scene.tif", field_scene(60, 80)[0], Affine(2, 0, 0, 0, -2, 0),
                         CRS.from_epsg(32633))
    with pytest.raises(InputError) as info:
        extract(scene, green_model, options=ExtractOptions(bands=[1, 2]))
    err = info.value
    assert err.param == "bands"
    assert "--bands lists 2 band(s)" in str(err)
    assert err.message_for("BANDS").startswith("BANDS lists 2 band(s)") and "--" not in err.message_for("BANDS")
    (tmp_path / "out.gpkg").write_text("kept")
    with pytest.raises(OutputError) as info:
        extract(scene, green_model, OutputPaths(vector=tmp_path / "out.gpkg"))
    assert info.value.param == "overwrite" and "(--overwrite)" in str(info.value)


class TileMeanEnsemble:
    """A stand-in ensemble whose 'probability' is each tile's mean first band / 255: blending then depends on
    which tiles cover a row, so a band of tile rows run alone shows whether its halo is right."""

    fusion, threshold, device, batch_size = "mean", 0.5, "cpu", 3

    def predict(self, raw, valid, stretch=None, tta=False):
        means = raw[:, 0].reshape(len(raw), -1).mean(axis=1) / 255.0
        return np.broadcast_to(means[:, None, None], raw.shape[:1] + raw.shape[2:]).astype(np.float32)

    def release_memory(self):
        pass


class Rows:
    def __init__(self):
        self.rows = {}

    def __call__(self, band):
        self.rows[band.row0] = band.prob.copy()

    def close(self):
        pass


def test_a_band_of_tile_rows_hands_on_exactly_the_rows_of_a_whole_run():
    image, _ = field_scene(150, 90, seed=3)
    source = ArraySource(image.astype(np.float32))
    tiling = Tiling(tile=32, overlap=8, batch_size=3)
    grid = tiling.grid(source.height, source.width)
    assert len(grid.row_origins) >= 6

    def run(tile_rows):
        ctx = RunContext(source, TileMeanEnsemble(), ExtractOptions(), tiling,
                         area_model(None, Affine.identity(), source.height), StageTimer(), Callbacks())
        sink = Rows()
        Infer([sink], tile_rows).run(ctx)
        return sink.rows

    whole = run(None)
    bands = {**run(range(0, 2)), **run(range(2, 5)), **run(range(5, len(grid.row_origins)))}
    assert sorted(bands) == sorted(whole)
    for row0, prob in whole.items():
        np.testing.assert_array_equal(bands[row0], prob)
    middle = run(range(2, 5))
    assert min(middle) == grid.row_origins[2] and max(middle) == grid.row_origins[4]


def test_plans_are_named_and_chosen_by_the_options(tmp_path):
    source = ArraySource(np.zeros((3, 40, 40), np.float32))
    utm = area_model(CRS.from_epsg(32633), Affine(2, 0, 0, 0, -2, 0), 40)
    names = {}
    for opts in (ExtractOptions(), ExtractOptions(min_area_m2=10.0), ExtractOptions(max_hole_m2=5.0)):
        ctx = RunContext(source, TileMeanEnsemble(), opts, Tiling(32, 8, 2), utm, StageTimer(), Callbacks())
        ctx.begin(tmp_path)
        try:
            names[(opts.min_area_m2, opts.max_hole_m2)] = plan_for(ctx, Targets()).name
        finally:
            ctx.close()
    assert names == {(0.0, 0.0): "one-pass", (10.0, 0.0): "filtered", (0.0, 5.0): "filtered"}
    assert set(PLANS) == {"one-pass", "filtered"}
    assert Path(tmp_path).exists()
