"""v2 targets and losses on small synthetic arrays: boundary band, rasterising, splits, resampling, stretch, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.datasets.scene import (
    IGNORE,
    Scene,
    boundary_from_instances,
    distance_target,
    rasterise_fields,
    resample,
    split_by_position,
    targets_from_instances,
    unit_stretch,
)
from training.multihead import MultiHeadNet, split_heads
from training.multihead_losses import MultiHeadLoss, tversky_loss


def two_fields(h: int = 20, w: int = 30) -> np.ndarray:
    """Two fields sharing the edge between columns 14 and 15, rows 5-14, columns 5-24."""
    inst = np.zeros((h, w), np.int32)
    inst[5:15, 5:15] = 1
    inst[5:15, 15:25] = 2
    return inst


def test_boundary_band_straddles_every_outline_two_pixels_wide():
    band = boundary_from_instances(two_fields())
    row = band[10]
    # outer left edge (4|5), shared edge (14|15), outer right edge (24|25): one pixel on each side
    assert np.flatnonzero(row).tolist() == [4, 5, 14, 15, 24, 25]
    col = band[:, 10]
    assert np.flatnonzero(col).tolist() == [4, 5, 14, 15]
    assert band[0].sum() == 0 and band[:, 0].sum() == 0  # the raster edge is not an outline


def test_a_wider_band_grows_on_both_sides():
    row = boundary_from_instances(two_fields(), width=4)[10]
    assert np.flatnonzero(row).tolist() == [3, 4, 5, 6, 13, 14, 15, 16, 23, 24, 25, 26]


def test_field_at_the_raster_edge_has_no_band_there():
    inst = np.zeros((10, 10), np.int32)
    inst[:, :6] = 1
    band = boundary_from_instances(inst)
    assert np.flatnonzero(band[5]).tolist() == [5, 6]
    assert band[0, :5].sum() == 0


def test_targets_from_instances_mark_invalid_pixels_ignored():
    valid = np.ones((20, 30), bool)
    valid[:, :3] = False
    extent, boundary = targets_from_instances(two_fields(), valid)
    assert (extent[:, :3] == IGNORE).all() and (boundary[:, :3] == IGNORE).all()
    assert int((extent == 1).sum()) == 200


def test_rasterise_uses_pixel_centre_vertices():
    from shapely.geometry import box

    inst = rasterise_fields([box(1.6, 1.6, 5.4, 5.4), box(4.6, 4.6, 7.4, 7.4)], (10, 10))
    assert int((inst == 1).sum()) == 16 - 1  # pixels 2..5 squared, one taken by the later polygon
    assert int((inst == 2).sum()) == 9  # later polygons overwrite earlier ones (labelme)
    assert inst[5, 5] == 2 and inst[2, 2] == 1 and inst[1, 1] == 0


def test_distance_target_is_zero_on_edges_and_grows_inside():
    inst = two_fields()
    extent, boundary = targets_from_instances(inst)
    d = distance_target(extent, boundary, clip_px=2)
    assert d[boundary == 1].max() == 0 and d[extent == 0].max() == 0
    assert d[10, 10] == 1.0 and 0 < d[6, 10] < 1


def scene_of(inst: np.ndarray, gsd: float = 1.0) -> Scene:
    extent, boundary = targets_from_instances(inst)
    img = np.random.default_rng(0).random((3, *inst.shape), np.float32)
    return Scene("s", "synthetic", "train", img, extent, boundary, gsd, inst, space="synthetic:s")


def test_split_by_position_shares_no_pixel():
    s = scene_of(two_fields(64, 100))
    train, val = split_by_position(s, "cols", 64, "after")
    assert train.shape == (64, 64) and val.shape == (64, 36)
    assert train.bounds[2] <= val.bounds[0]  # train ends where validation starts
    assert val.split == "val" and train.split == "train"
    np.testing.assert_array_equal(val.extent, s.extent[:, 64:])
    t2, v2 = split_by_position(s, "rows", 40, "before")
    assert v2.shape == (40, 100) and t2 is None  # a part under 32 px is dropped


def test_resample_derives_a_thin_band_at_the_new_gsd():
    inst = np.zeros((64, 64), np.int32)
    inst[8:40, 8:32] = 1
    inst[8:40, 32:56] = 2
    half = resample(scene_of(inst), 2.0)
    assert half.shape == (32, 32) and half.gsd_m == 2.0
    row = half.boundary[12]
    assert np.flatnonzero(row).tolist() == [3, 4, 15, 16, 27, 28]  # 2 px at 2 m, not 4
    assert half.transform.a == 2.0


def test_unit_stretch_undoes_any_affine_scaling():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(3, 50, 60)).astype(np.float32)  # like GF-2's standardised floats
    a = unit_stretch(raw)
    b = unit_stretch(raw * np.float32(37.0) + np.float32(900.0))  # like 12-bit DN of the same scene
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.min() == 0.0 and a.max() == 1.0
    assert 0.015 < float(np.mean(a == 0)) < 0.025  # values up to the 2nd percentile map to 0


def test_tversky_is_small_for_a_perfect_edge_map_and_large_for_none():
    t = torch.zeros(1, 8, 8, dtype=torch.int64)
    t[0, 3] = 1
    good = torch.stack([(1 - t.float()) * 20 - 10, t.float() * 20 - 10], 1)
    assert float(tversky_loss(good, t)) < 0.01
    assert float(tversky_loss(-good, t)) > 0.9


def test_boundary_loss_is_masked_for_sets_without_edge_labels():
    torch.manual_seed(0)
    scores = torch.randn(2, 4, 16, 16, requires_grad=True)
    extent = torch.randint(0, 2, (2, 16, 16))
    no_edges = {"extent": extent, "boundary": torch.full((2, 16, 16), IGNORE)}
    loss, parts = MultiHeadLoss()(scores, no_edges)
    loss.backward()
    assert "boundary_ce" not in parts
    assert float(scores.grad[:, 2:4].abs().sum()) == 0.0  # the boundary head learns nothing from blocks
    assert float(scores.grad[:, 0:2].abs().sum()) > 0
    scores.grad = None
    edges = {"extent": extent, "boundary": torch.randint(0, 2, (2, 16, 16))}
    loss, parts = MultiHeadLoss()(scores, edges)
    loss.backward()
    assert {"boundary_ce", "boundary_tversky"} <= set(parts)
    assert float(scores.grad[:, 2:4].abs().sum()) > 0


@pytest.mark.parametrize("distance", [False, True])
def test_multihead_net_gives_a_registry_model_the_heads(distance):
    net = MultiHeadNet("unet", 3, distance=distance, width=4)
    out = net(torch.zeros(1, 3, 32, 32))
    heads = split_heads(out, distance)
    assert heads["extent"].shape == (1, 2, 32, 32) and heads["boundary"].shape == (1, 2, 32, 32)
    assert ("distance" in heads) == distance
