"""Tracing labelled regions (engine.trace): the very outlines GDAL's polygonize draws, or the label handed back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely
from rasterio.features import shapes

from engine.trace import trace_labels


def _gdal(labels: np.ndarray) -> dict[int, list]:
    """label -> its polygons as GDAL's 4-connected polygonize traces them."""
    out: dict[int, list] = {}
    for geom, value in shapes(labels, mask=labels > 0, connectivity=4):
        out.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    return out


def _polygons(tr) -> dict[int, object]:
    rings = shapely.linearrings(tr.points.astype(np.float64), indices=np.repeat(np.arange(len(tr.sizes)), tr.sizes))
    made = shapely.polygons(rings, indices=np.repeat(np.arange(len(tr.labels)), tr.rings_per_label))
    return dict(zip(tr.labels.tolist(), made.tolist(), strict=True))


def _check(labels: np.ndarray) -> tuple[int, int]:
    """Every label is traced exactly as GDAL traces it, or handed back with a box that holds all its pixels;
    returns (traced, handed back)."""
    ref, tr = _gdal(labels), trace_labels(labels)
    got = _polygons(tr)
    assert set(got) | set(tr.redo.tolist()) == set(ref)
    assert not set(got) & set(tr.redo.tolist())
    for label, poly in got.items():
        assert len(ref[label]) == 1 and poly.is_valid
        assert poly.equals(ref[label][0]) and poly.area == ref[label][0].area
        assert not poly.exterior.is_ccw  # shells: negative shoelace area with x, y as given (y down: clockwise)
    for label, (x0, y0, x1, y1) in zip(tr.redo.tolist(), tr.redo_boxes.tolist(), strict=True):
        ys, xs = np.nonzero(labels == label)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    return len(got), len(tr.redo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voronoi_fields_with_pepper_are_traced_as_gdal_traces_them(seed):
    rng = np.random.default_rng(seed)
    h, w = 120, 150
    pts = rng.uniform((0, 0), (h, w), size=(40, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.argmin((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2, axis=-1).astype(np.int32)
    labels += 1
    labels[rng.random((h, w)) < 0.03] = 0  # holes and notches
    labels[rng.random(41)[labels] < 0.2] = 0  # some cells not cropland
    # 4-connected pieces of one cell become labels of their own (as the vectoriser's labels are)
    out = np.zeros_like(labels)
    for value in np.unique(labels[labels > 0]):
        _, comp = cv2.connectedComponents((labels == value).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        out[comp > 0] = comp[comp > 0] + out.max()
    traced, _ = _check(out)
    assert traced > 20


def test_speckle_with_pinches_and_holes_touching_at_corners():
    """A speckled mask: hundreds of holes, many touching each other or the outline at a corner only, where
    OpenCV's regions (8-connected) differ from GDAL's; whatever it cannot trace exactly is handed back."""
    rng = np.random.default_rng(7)
    mask = (rng.random((120, 90)) < 0.8).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask, connectivity=4, ltype=cv2.CV_32S)
    traced, redo = _check(labels)
    assert traced > 0 and redo > 0


def test_a_label_in_two_pieces_and_a_pinched_ring_are_handed_back():
    labels = np.zeros((8, 10), np.int32)
    labels[1:3, 1:3] = 5
    labels[5:7, 6:9] = 5  # label 5 in two pieces
    labels[1:3, 5:7] = 7
    labels[3:5, 7:9] = 7  # label 7: two blocks touching at one corner only
    labels[6, 1:4] = 9  # an ordinary field
    tr = trace_labels(labels)
    assert tr.labels.tolist() == [9] and sorted(tr.redo.tolist()) == [5, 7]
    _check(labels)


def test_nothing_to_trace():
    tr = trace_labels(np.zeros((4, 5), np.int32))
    assert len(tr.labels) == len(tr.redo) == len(tr.points) == 0
