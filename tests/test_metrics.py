"""engine.metrics: hand-checkable cases and properties computed from the data itself."""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import (
    boundary_f1,
    boundary_map,
    confusion,
    label_instances,
    metrics_from_counts,
    object_metrics,
    pixel_metrics,
)


def test_confusion_and_pixel_metrics_by_hand():
    pred = np.array([[1, 1, 0, 0],
                     [1, 1, 0, 0]])
    ref = np.array([[1, 0, 0, 0],
                    [1, 1, 1, 0]])
    assert confusion(pred, ref) == {"tp": 3, "fp": 1, "fn": 1, "tn": 3}
    m = pixel_metrics(pred, ref)
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["ratio_pred"] == pytest.approx(4 / 8) and m["ratio_ref"] == pytest.approx(4 / 8)
    assert m["ratio_error"] == pytest.approx(0.0)
    assert m["iou_other"] == pytest.approx(3 / 5)


def test_valid_mask_excludes_pixels():
    pred = np.array([[1, 1, 0, 0]])
    ref = np.array([[1, 0, 0, 1]])
    valid = np.array([[True, False, True, False]])
    assert confusion(pred, ref, valid) == {"tp": 1, "fp": 0, "fn": 0, "tn": 1}
    assert pixel_metrics(pred, ref, valid)["iou"] == 1.0


def test_empty_masks_are_perfect_not_nan():
    z = np.zeros((5, 5), np.uint8)
    m = pixel_metrics(z, z)
    assert m["iou"] == 1.0 and m["f1"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    one = z.copy()
    one[2, 2] = 1
    miss = pixel_metrics(z, one)  # nothing predicted, one pixel to find
    assert miss["iou"] == 0.0 and miss["recall"] == 0.0 and miss["precision"] == 0.0


def test_pixel_metrics_match_definitions_on_random_data():
    rng = np.random.default_rng(1)
    pred = rng.random((64, 80)) > 0.4
    ref = rng.random((64, 80)) > 0.5
    valid = rng.random((64, 80)) > 0.1
    m = pixel_metrics(pred, ref, valid)
    p, r = pred[valid], ref[valid]
    inter, union = np.sum(p & r), np.sum(p | r)
    assert m["iou"] == pytest.approx(inter / union)
    assert m["f1"] == pytest.approx(2 * inter / (p.sum() + r.sum()))
    assert m["precision"] == pytest.approx(inter / p.sum())
    assert m["recall"] == pytest.approx(inter / r.sum())
    assert m["accuracy"] == pytest.approx(np.mean(p == r))
    # F1 = 2 IoU / (1 + IoU) holds for any pair of masks
    assert m["f1"] == pytest.approx(2 * m["iou"] / (1 + m["iou"]))
    # pooled counts over two halves give the same metrics as the whole
    top = confusion(pred[:32], ref[:32], valid[:32])
    bottom = confusion(pred[32:], ref[32:], valid[32:])
    pooled = metrics_from_counts({k: top[k] + bottom[k] for k in top})
    assert pooled["iou"] == pytest.approx(m["iou"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((3, 3)), np.zeros((3, 4)))


def test_boundary_map_marks_both_sides_of_an_edge_but_not_the_border():
    mask = np.zeros((6, 6), np.uint8)
    mask[:, 3:] = 1
    b = boundary_map(mask)
    assert b[:, 2].all() and b[:, 3].all()
    assert b.sum() == 12
    assert not boundary_map(np.ones((6, 6))).any()


def test_boundary_f1_tolerance():
    ref = np.zeros((40, 40), np.uint8)
    ref[:, 20:] = 1
    assert boundary_f1(ref, ref)["f1"] == 1.0
    shifted = np.zeros_like(ref)
    shifted[:, 23:] = 1  # edge moved by 3 px
    assert boundary_f1(shifted, ref, tolerance_px=3)["f1"] == 1.0
    tight = boundary_f1(shifted, ref, tolerance_px=1)
    assert tight["f1"] == 0.0
    # a 2 px shift with tolerance 2: the boundary pixels of each side lie within 2..3 px
    two = np.zeros_like(ref)
    two[:, 22:] = 1
    r = boundary_f1(two, ref, tolerance_px=2)
    # computed from the definition: boundary columns {21,22} vs {19,20}; distances |21-20|=1, |22-20|=2 -> both ok
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert boundary_f1(np.zeros_like(ref), ref)["f1"] == 0.0


def test_boundary_f1_against_brute_force():
    rng = np.random.default_rng(3)
    pred = np.zeros((30, 30), np.uint8)
    ref = np.zeros((30, 30), np.uint8)
    pred[5:20, 4:22] = 1
    ref[7:25, 6:20] = 1
    pred[rng.integers(0, 30, 20), rng.integers(0, 30, 20)] = 1
    tol = 2
    bp, br = np.argwhere(boundary_map(pred)), np.argwhere(boundary_map(ref))
    d = np.sqrt(((bp[:, None, :] - br[None, :, :]) ** 2).sum(-1))
    precision = np.mean(d.min(1) <= tol)
    recall = np.mean(d.min(0) <= tol)
    r = boundary_f1(pred, ref, tolerance_px=tol)
    assert r["precision"] == pytest.approx(precision)
    assert r["recall"] == pytest.approx(recall)
    assert r["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_object_metrics_by_hand():
    ref = np.zeros((10, 10), np.int32)
    ref[0:4, 0:4] = 1    # 16 px
    ref[6:10, 6:10] = 2  # 16 px
    ref[0:2, 7:10] = 3   # 6 px
    pred = np.zeros_like(ref)
    pred[0:4, 0:3] = 7   # IoU 12/16 = 0.75 with ref 1 -> match
    pred[6:10, 8:10] = 9  # IoU 8/16 = 0.5 with ref 2 -> match at >= 0.5
    pred[4:6, 0:2] = 4   # no overlap -> false positive
    m = object_metrics(pred, ref, 0.5)
    assert m["tp"] == 2 and m["n_pred"] == 3 and m["n_ref"] == 3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["mean_matched_iou"] == pytest.approx((0.75 + 0.5) / 2)
    assert object_metrics(pred, ref, 0.6)["tp"] == 1


def test_object_metrics_from_data_one_to_one():
    rng = np.random.default_rng(5)
    ref = label_instances(rng.random((60, 60)) > 0.45)
    ids = np.unique(ref[ref > 0])
    m_self = object_metrics(ref, ref)
    assert m_self["tp"] == len(ids) and m_self["f1"] == 1.0
    # renumbering the prediction changes nothing
    perm = np.zeros(ref.max() + 1, np.int64)
    perm[ids] = rng.permutation(ids) + 1000
    assert object_metrics(perm[ref], ref)["tp"] == len(ids)
    # merging every field into one: at most one match
    merged = (ref > 0).astype(np.int32)
    assert object_metrics(merged, ref)["tp"] <= 1


def test_label_instances_uses_4_connectivity():
    mask = np.array([[1, 0, 0],
                     [0, 1, 1],
                     [0, 0, 0]])
    inst = label_instances(mask)
    assert inst.max() == 2
    assert inst[1, 1] == inst[1, 2] != inst[0, 0]
    assert label_instances(mask, connectivity=8).max() == 1


def test_object_metrics_refuses_float_instances():
    with pytest.raises(ValueError, match="integer"):
        object_metrics(np.zeros((3, 3)), np.zeros((3, 3)))
