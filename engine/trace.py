"""Outlines of every labelled region of a strip, in pixel-edge coordinates, in a few array operations.

GDAL's polygonize (``rasterio.features.shapes``) traces the same outlines, but hands every vertex to Python as a
tuple inside a GeoJSON dict; with the thousands of fields a boundary split finds per strip, that conversion cost
more than the tracing. Here OpenCV traces all regions at once (``findContours`` in ``RETR_FLOODFILL`` mode on the
int32 labels, which follows each region of equal label) and the rest is numpy.

Exact pixel edges from pixel-centre contours: the labels are upscaled 2x (nearest), so that every pixel is a 2 x 2
block. A region's border pixels then sit on the upscaled block's first or last row/column, and the pixel corner
each one marks is ``(X + 1) // 2`` (the left/top edge for an even coordinate, the right/bottom edge for an odd
one). Diagonal steps of the contour (at concave corners) map both ends to the same corner, and duplicates are
dropped, so the rings come out as the exact, axis-parallel pixel outlines GDAL draws.

OpenCV follows regions 8-connected, fields are 4-connected: where a region's pixels touch only at a corner, a ring
may pass through that corner twice (a pinch), and one label may give several outer rings. Such labels are
returned as ``redo`` for the caller to trace with GDAL (rare: tests/engine/test_engine_trace.py).

Rings are handled as concatenated arrays (points, vertices per ring); the helpers for them at the end
(:func:`ring_index`, :func:`next_in_ring`, :func:`twice_area`, :func:`drop_collinear`) serve the vectoriser's seam
stitcher too.

The 2x labels take 16 bytes per pixel of the strip; a strip wider than :data:`MAX_BYTES` allows (32,768 px at 256
rows) is left to GDAL whole (:func:`traceable`), so that memory does not jump on very wide rasters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_BYTES = 128 << 20  # the 2x labels of one strip at most


def traceable(labels: np.ndarray) -> bool:
    """Whether :func:`trace_labels` takes this (h, w) label image within :data:`MAX_BYTES`."""
    return labels.size * 16 <= MAX_BYTES


@dataclass
class Traced:
    """Rings of the labels of a strip, ordered by label, each label's shell first.

    Attributes:
        points: int32 (n, 2) x, y pixel corners (column, row within the strip) of the open rings, concatenated.
        sizes: int64 (r,) vertices per ring.
        ring_label: int32 (r,) the label each ring outlines.
        rings_per_label: int64 (k,) rings of each label traced here (shell first, then its holes).
        labels: int32 (k,) the labels traced here, ascending.
        redo: int32 (j,) labels to trace another way (a pinched ring or several outer rings).
        redo_boxes: int64 (j, 4) x0, y0, x1, y1 (exclusive) pixel box of each of them.
    """

    points: np.ndarray
    sizes: np.ndarray
    ring_label: np.ndarray
    rings_per_label: np.ndarray
    labels: np.ndarray
    redo: np.ndarray
    redo_boxes: np.ndarray


def trace_labels(labels: np.ndarray, counts: np.ndarray | None = None) -> Traced:
    """Outline every region of an int32 (h, w) label image (0 = nothing, labels > 0 each a 4-connected region).

    ``counts``: pixels per label (``np.bincount(labels.ravel())``), computed when not given: a label whose rings
    do not enclose exactly its pixels (OpenCV joins background regions that touch at a corner and may then leave
    out a hole) is traced again by the caller.

    Returns:
        :class:`Traced`: each label's outer ring (shell) and the rings of its holes, as open rings of pixel
        corners without collinear vertices; shells run clockwise on screen (negative shoelace area with y down).
    """
    import cv2

    h, w = labels.shape
    empty = Traced(np.zeros((0, 2), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64),
                   np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 4), np.int64))
    if not labels.any():
        return empty
    up = cv2.resize(np.ascontiguousarray(labels, dtype=np.int32), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_FLOODFILL, cv2.CHAIN_APPROX_SIMPLE)
    sizes = np.fromiter((len(c) for c in contours), np.int64, len(contours))
    pts = np.concatenate(contours).reshape(-1, 2)
    first = np.cumsum(sizes) - sizes
    # a contour runs over its region's own border pixels: its first point names the label
    lab = up[pts[first, 1], pts[first, 0]]
    del up
    keep_ring = lab > 0
    rid = np.repeat(np.arange(len(sizes)), sizes)
    keep = keep_ring[rid]
    pts, rid = (pts[keep] + 1) >> 1, rid[keep]
    old = np.flatnonzero(keep_ring)
    sizes, lab = sizes[old], lab[old]
    rid = np.searchsorted(old, rid)
    pts, sizes = drop_collinear(*_drop_repeats(pts, rid, sizes))
    rid = ring_index(sizes)[0]
    area2 = twice_area(pts, sizes)
    shell = area2 < 0
    # labels with one shell and no ring through a vertex twice are done; the rest go back to the caller
    shells = np.bincount(lab, weights=shell, minlength=int(lab.max()) + 1)
    pinched = _pinched_rings(pts, rid, len(sizes), w)
    bad = np.zeros(len(shells), bool)
    bad[lab[pinched]] = True
    bad[lab[sizes < 4]] = True  # (never seen: a pixel outline has at least 4 corners)
    bad |= shells != 1
    if counts is None:
        counts = np.bincount(labels.reshape(-1))
    enclosed = np.bincount(lab, weights=-area2, minlength=len(shells)) / 2  # shells negative, holes positive
    bad |= enclosed != np.pad(counts, (0, max(len(shells) - len(counts), 0)))[:len(shells)]
    bad[0] = False
    order = np.lexsort((~shell, lab))
    order = order[~bad[lab[order]]]
    start = np.cumsum(sizes) - sizes
    n = sizes[order]
    ring_pts = np.arange(int(n.sum())) + np.repeat(start[order] - (np.cumsum(n) - n), n)
    out_labels, per_label = np.unique(lab[order], return_counts=True)
    present = np.zeros(len(shells), bool)
    present[lab] = True
    missed = np.flatnonzero(counts[1:] > 0) + 1
    missed = missed[(missed >= len(present)) | ~present[np.minimum(missed, len(present) - 1)]]  # (never seen)
    redo = np.concatenate([np.flatnonzero(bad & present), missed]).astype(np.int32)
    boxes = np.zeros((len(redo), 4), np.int64)
    for k, label in enumerate(redo.tolist()):  # a few per strip
        if label < len(present) and present[label]:
            corners = pts[lab[rid] == label]  # pixel corners: the box's far edges are exclusive
        else:
            ys, xs = np.nonzero(labels == label)
            corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]])
        boxes[k] = (*corners.min(axis=0), *corners.max(axis=0))
    return Traced(pts[ring_pts].astype(np.int32), sizes[order], lab[order].astype(np.int32),
                  per_label.astype(np.int64), out_labels.astype(np.int32), redo, boxes)


def _drop_repeats(pts: np.ndarray, rid: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop every vertex equal to the one before it in its (cyclic) ring: (points, sizes)."""
    first = np.cumsum(sizes) - sizes
    prev = np.arange(len(pts)) - 1
    prev[first] = first + sizes - 1
    keep = (pts != pts[prev]).any(axis=1)
    keep[first[sizes == 1]] = True
    return pts[keep], np.bincount(rid[keep], minlength=len(sizes))


def _pinched_rings(pts: np.ndarray, rid: np.ndarray, rings: int, width: int) -> np.ndarray:
    """Ids of the rings that pass through one vertex more than once."""
    key = (rid.astype(np.int64) * (width + 1) + pts[:, 0]) * (1 << 31) + pts[:, 1]
    key.sort()
    dup = key[1:][key[1:] == key[:-1]]
    return np.unique(dup // ((width + 1) * (1 << 31)))


def ring_index(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ring sizes (R,) -> (ring id per vertex (sum,), position of the first vertex of each ring (R,))."""
    first = np.cumsum(sizes) - sizes
    return np.repeat(np.arange(len(sizes)), sizes), first


def next_in_ring(sizes: np.ndarray) -> np.ndarray:
    """Index of the next vertex of the same (open, cyclic) ring, for every vertex of concatenated rings."""
    nxt = np.arange(int(sizes.sum())) + 1
    last = np.cumsum(sizes) - 1
    nxt[last] = last - sizes + 1
    return nxt


def twice_area(points: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Twice the signed (shoelace) area of each open cyclic ring of concatenated ``points`` (sum(sizes), 2)."""
    nxt = next_in_ring(sizes)
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    cross = x * y[nxt] - x[nxt] * y  # exact: pixel corners are small integers
    del x, y, nxt
    return np.bincount(ring_index(sizes)[0], weights=cross, minlength=len(sizes))


def drop_collinear(points: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open cyclic rings of axis-parallel edges -> the same without vertices in the middle of a straight run."""
    nxt = next_in_ring(sizes)
    prev = np.empty_like(nxt)
    prev[nxt] = np.arange(len(nxt))
    p, q = points[prev], points[nxt]
    straight = ((p[:, 0] == points[:, 0]) & (points[:, 0] == q[:, 0])) | \
               ((p[:, 1] == points[:, 1]) & (points[:, 1] == q[:, 1]))
    return points[~straight], np.bincount(ring_index(sizes)[0][~straight], minlength=len(sizes))
