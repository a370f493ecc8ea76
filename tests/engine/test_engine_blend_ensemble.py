"""Tiling, blending weights, ensemble fusion, test-time augmentation and out-of-memory batch halving."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from helpers import field_scene, green_threshold_onnx

from engine.api import extract_array, load_model
from engine.blend import StripBlender, hann_ramp, tile_weights
from engine.ensemble import dihedral, undihedral
from engine.errors import ModelError
from engine.options import ExtractOptions
from engine.tiling import TileGrid, axis_origins


def test_grid_covers_raster():
    for length in (1, 63, 64, 65, 500, 1000):
        origins = axis_origins(length, 64, 16)
        assert origins[0] == 0 and origins[-1] + 64 >= length
        assert all(b - a == 48 for a, b in itertools.pairwise(origins))


def test_ramps_are_complementary():
    for n in (1, 4, 16, 33, 64):
        r = hann_ramp(n)
        np.testing.assert_allclose(r + r[::-1], 1.0)
        assert (np.diff(r) >= 0).all()
    w = tile_weights(64, 16, top=False, bottom=True, left=False, right=True)
    assert w[0, 0] == 1.0 and w[63, 63] == 0.0  # no taper at the raster edge; none at the border with neighbours


def test_blender_is_a_partition_of_unity():
    """Blending a constant probability gives exactly that constant everywhere, rows emitted once each."""
    grid = TileGrid(150, 170, 64, 16)
    rows: dict[int, np.ndarray] = {}

    def emit(row0, prob, valid):
        assert row0 not in rows
        rows[row0] = prob

    blender = StripBlender(grid, emit)
    last = len(grid.col_origins) - 1
    for i, j, _, _ in grid.tiles():
        blender.add(i, j, np.full((64, 64), 0.7, np.float32), np.ones((64, 64), bool))
        if j == last:
            blender.finish_row(i)
    out = np.concatenate([rows[k] for k in sorted(rows)])
    assert out.shape == (150, 170)
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)


def test_dihedral_views_invert():
    x = np.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    for k in range(8):
        np.testing.assert_array_equal(undihedral(dihedral(x, k), k), x)
    assert len({dihedral(x, k).tobytes() for k in range(8)}) == 8


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    green = green_threshold_onnx(d / "green.onnx")
    blur = green_threshold_onnx(d / "blur.onnx", kernel=5)
    return d, green, blur


def test_mean_and_vote_fusion(two_models):
    d, green, blur = two_models
    image, _truth = field_scene()
    spec = {"name": "pair", "fusion": "mean", "threshold": 0.5,
            "members": [{"path": "green.onnx", "weight": 1.0}, {"path": "blur.onnx", "weight": 3.0}]}
    (d / "mean.json").write_text(json.dumps(spec))
    (d / "vote.json").write_text(json.dumps({**spec, "fusion": "vote"}))
    opts = ExtractOptions(opening_px=0, tile_size=64, overlap=16)
    _, p_green, _ = extract_array(image, green, options=opts)
    _, p_blur, _ = extract_array(image, blur, options=opts)
    _, p_mean, _ = extract_array(image, d / "mean.json", options=opts)
    np.testing.assert_allclose(p_mean, (p_green + 3 * p_blur) / 4, atol=1e-5)
    _, p_vote, m_vote = extract_array(image, d / "vote.json", options=opts)
    expected = ((p_green > 0.5) * 1.0 + (p_blur > 0.5) * 3.0) / 4
    np.testing.assert_allclose(p_vote, expected, atol=1e-5)
    np.testing.assert_array_equal(m_vote, (expected > 0.5).astype(np.uint8))


def test_tta_on_a_symmetric_model_changes_nothing(two_models):
    _, green, _ = two_models
    image, _ = field_scene()
    opts = ExtractOptions(opening_px=0)
    _, plain, _ = extract_array(image, green, options=opts)
    _, tta, _ = extract_array(image, green, options=ExtractOptions(opening_px=0, tta=True))
    np.testing.assert_allclose(plain, tta, atol=1e-5)


def test_out_of_memory_halves_the_batch(two_models):
    _, green, _ = two_models
    ens = load_model(green, ExtractOptions())
    member = ens.members[0]
    real = member.__class__.__call__
    sizes: list[int] = []

    class Picky(member.__class__):
        def __call__(self, x):
            sizes.append(len(x))
            if len(x) > 3:
                raise RuntimeError("CUDA error: out of memory (simulated)")
            return real(self, x)

    member.__class__ = Picky
    ens.batch_size = 16
    out = ens._run_batched(member, np.zeros((10, 3, 64, 64), np.float32))
    assert out.shape == (10, 64, 64)
    assert sizes[:3] == [10, 5, 2] and ens.batch_size == 2


def test_bad_ensemble_files(two_models, tmp_path):
    d, _, _ = two_models
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(bad)
    bad.write_text(json.dumps({"members": [{"path": str(d / "missing.onnx")}]}))
    with pytest.raises(ModelError, match="not found"):
        load_model(bad)
    bad.write_text(json.dumps({"members": [{"path": str(d / "green.onnx"), "weight": 0}]}))
    with pytest.raises(ModelError, match="weight"):
        load_model(bad)
    four = green_threshold_onnx(tmp_path / "four.onnx", bands=4)
    bad.write_text(json.dumps({"members": [{"path": str(d / "green.onnx")}, {"path": str(four)}]}))
    with pytest.raises(ModelError, match="disagree"):
        load_model(bad)


def test_release_memory_keeps_the_members_usable(two_models):
    _, green, _ = two_models
    ens = load_model(green, ExtractOptions(device="cpu"))
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.float32)
    valid = np.ones((2, 64, 64), bool)
    before = ens.predict(x, valid)
    ens.release_memory()
    np.testing.assert_array_equal(ens.predict(x, valid), before)
