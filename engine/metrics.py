"""Accuracy metrics for binary cropland masks and field instances (numpy, OpenCV and SciPy only).

Shared by the training package (validation, cross-validation) and the engine's ``evaluate`` command.

Conventions:
    * ``pred`` and ``ref`` are (H, W) arrays; any nonzero value (or True) counts as cropland.
    * ``valid`` is an optional (H, W) bool array; pixels where it is False are left out of every count.
    * A ratio whose denominator is zero (e.g. precision with no predicted pixel) is 1.0 when its numerator's
      counterpart is also empty (nothing to find and nothing found), else 0.0, so no metric is ever NaN.
    * Object metrics follow Fields of The World: a reference field counts as found when one predicted field
      overlaps it with IoU >= ``iou_threshold`` (one-to-one matching).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "boundary_f1",
    "boundary_map",
    "confusion",
    "label_instances",
    "metrics_from_counts",
    "object_metrics",
    "pixel_metrics",
]


def _binary(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {a.shape}")
    return a.astype(bool, copy=False) if a.dtype == bool else a != 0


def _check(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None):
    p, r = _binary(pred, "pred"), _binary(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and ref {r.shape} differ in shape")
    v = None
    if valid is not None:
        v = np.asarray(valid, bool)
        if v.shape != p.shape:
            raise ValueError(f"valid {v.shape} and pred {p.shape} differ in shape")
    return p, r, v


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / float(den) if den else (empty if num == 0 else 0.0)


def confusion(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict[str, int]:
    """Pixel confusion counts of cropland (positive) vs other.

    Args:
        pred, ref: (H, W) masks, nonzero = cropland. valid: (H, W) bool or ``None``.

    Returns:
        dict with int ``tp``, ``fp``, ``fn``, ``tn`` (pixels).
    """
    p, r, v = _check(pred, ref, valid)
    if v is not None:
        p, r = p[v], r[v]
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    tn = int(p.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def metrics_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """Pixel metrics from confusion counts (sum counts over rasters first for pooled, "micro" metrics).

    Returns:
        dict of floats: ``iou`` (cropland IoU = tp / (tp + fp + fn)), ``f1`` (= Dice), ``precision``,
        ``recall``, ``accuracy``, ``ratio_pred`` / ``ratio_ref`` (cropland share of valid pixels),
        ``ratio_error`` (ratio_pred - ratio_ref), ``iou_other`` (background IoU), ``miou`` (mean of both
        IoUs), and ``pixels`` (valid pixel count).
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("tp", "fp", "fn", "tn"))
    n = tp + fp + fn + tn
    precision = _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0)
    recall = _ratio(tp, tp + fn)
    iou_other = _ratio(tn, tn + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    return {
        "iou": iou,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": precision,
        "recall": recall,
        "accuracy": _ratio(tp + tn, n),
        "ratio_pred": _ratio(tp + fp, n, 0.0),
        "ratio_ref": _ratio(tp + fn, n, 0.0),
        "ratio_error": _ratio(tp + fp, n, 0.0) - _ratio(tp + fn, n, 0.0),
        "iou_other": iou_other,
        "miou": (iou + iou_other) / 2,
        "pixels": float(n),
    }


def pixel_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Cropland IoU, F1 (Dice), precision, recall, accuracy and area ratios of one mask pair.

    Args and returns: see :func:`confusion` and :func:`metrics_from_counts`; the counts are included too.
    """
    counts = confusion(pred, ref, valid)
    out = metrics_from_counts(counts)
    out.update({k: float(v) for k, v in counts.items()})
    return out


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of the mask that have a 4-neighbour outside it, plus the same for its complement.

    The image border is not a boundary (the edge is replicated). Both sides of an edge are marked, so the
    boundary of a class change is two pixels wide; ``tolerance_px`` in :func:`boundary_f1` is measured from
    it.
    """
    import cv2

    m = _binary(mask, "mask").astype(np.uint8)
    k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    eroded = cv2.erode(m, k, borderType=cv2.BORDER_REPLICATE)
    dilated = cv2.dilate(m, k, borderType=cv2.BORDER_REPLICATE)
    return dilated != eroded


def boundary_f1(pred: np.ndarray, ref: np.ndarray, tolerance_px: float = 2,
                valid: np.ndarray | None = None) -> dict[str, float]:
    """Boundary precision, recall and F1 with a distance tolerance (Csurka et al. 2013's BF score).

    A predicted boundary pixel is correct when a reference boundary pixel lies within ``tolerance_px``
    (Euclidean, pixels) of it; recall likewise the other way. Boundary pixels outside ``valid`` are ignored.

    Returns:
        dict of floats ``precision``, ``recall``, ``f1`` and the boundary pixel counts ``pred_px``,
        ``ref_px``.
    """
    from scipy import ndimage

    p, r, v = _check(pred, ref, valid)
    bp, br = boundary_map(p), boundary_map(r)
    if v is not None:
        bp, br = bp & v, br & v
    n_p, n_r = int(bp.sum()), int(br.sum())
    if n_p == 0 or n_r == 0:
        precision = 1.0 if n_p == 0 and n_r == 0 else (0.0 if n_p else 1.0)
        recall = 1.0 if n_r == 0 else 0.0
    else:
        dist_to_ref = ndimage.distance_transform_edt(~br)
        dist_to_pred = ndimage.distance_transform_edt(~bp)
        precision = float(np.mean(dist_to_ref[bp] <= tolerance_px))
        recall = float(np.mean(dist_to_pred[br] <= tolerance_px))
    f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "pred_px": float(n_p), "ref_px": float(n_r)}


def label_instances(mask: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """Connected components of a binary mask: (H, W) int32, 0 = background, 1..n = fields."""
    import cv2

    m = _binary(mask, "mask").astype(np.uint8)
    _, labels = cv2.connectedComponents(m, connectivity=connectivity, ltype=cv2.CV_32S)
    return labels


def object_metrics(pred_instances: np.ndarray, ref_instances: np.ndarray, iou_threshold: float = 0.5,
                   valid: np.ndarray | None = None) -> dict[str, float]:
    """Field-level precision, recall and F1 (Fields of The World style).

    Args:
        pred_instances, ref_instances: (H, W) integer label images, 0 = no field, k > 0 = field k (ids need
        not
            be consecutive). Build them from masks with :func:`label_instances`.
        iou_threshold: a predicted and a reference field match when their IoU >= this. Matching is one-to-one,
            greedy by decreasing IoU (for thresholds > 0.5 every match is unique anyway).
        valid: (H, W) bool; pixels outside are dropped before areas and overlaps are counted.

    Returns:
        dict of floats ``precision`` (matched / predicted fields), ``recall`` (matched / reference fields),
        ``f1``, ``tp``, ``n_pred``, ``n_ref``, ``mean_matched_iou``.
    """
    p = np.asarray(pred_instances)
    r = np.asarray(ref_instances)
    if p.shape != r.shape or p.ndim != 2:
        raise ValueError(f"instance images must be 2-D and of one shape, got {p.shape} and {r.shape}")
    if not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(r.dtype, np.integer)):
        raise ValueError("instance images must have an integer dtype (0 = background, k = field id)")
    p = p.astype(np.int64).ravel()
    r = r.astype(np.int64).ravel()
    if valid is not None:
        keep = np.asarray(valid, bool).ravel()
        p, r = p[keep], r[keep]
    pred_ids, pred_area = np.unique(p[p > 0], return_counts=True)
    ref_ids, ref_area = np.unique(r[r > 0], return_counts=True)
    n_pred, n_ref = len(pred_ids), len(ref_ids)
    tp, matched_ious = 0, []
    both = (p > 0) & (r > 0)
    if n_pred and n_ref and both.any():
        pi = np.searchsorted(pred_ids, p[both])
        ri = np.searchsorted(ref_ids, r[both])
        pair, inter = np.unique(pi * n_ref + ri, return_counts=True)
        a, b = pair // n_ref, pair % n_ref
        iou = inter / (pred_area[a] + ref_area[b] - inter)
        order = np.argsort(-iou, kind="stable")
        used_p, used_r = set(), set()
        for k in order:
            if iou[k] < iou_threshold:
                break
            if a[k] in used_p or b[k] in used_r:
                continue
            used_p.add(a[k])
            used_r.add(b[k])
            matched_ious.append(float(iou[k]))
        tp = len(matched_ious)
    precision = _ratio(tp, n_pred, 1.0 if n_ref == 0 else 0.0)
    recall = _ratio(tp, n_ref)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall, 0.0),
        "tp": float(tp),
        "n_pred": float(n_pred),
        "n_ref": float(n_ref),
        "mean_matched_iou": float(np.mean(matched_ious)) if matched_ious else 0.0,
    }
