"""Cropland mask -> field polygons, strip by strip, without seams.

Each strip of rows is labelled into 4-connected components (OpenCV) and each component is traced by GDAL's
polygonize (``rasterio.features.shapes``), which gives exact pixel-edge outlines with holes. All geometry is kept
in *pixel* coordinates (integers, exact), so fragments of one field cut by a strip boundary share identical edges:
they are found by comparing the labels on both sides of the seam (union-find). To merge them, their edges along the
seam rows get a vertex at every pixel corner, which makes the fragments an exactly noded coverage, and GEOS's
coverage union joins them (on a 256 Mpx mosaic whose one field spans the raster with thousands of holes, a general
``union_all`` took about 45 of the 61 s of vectorising); the collinear seam vertices are dropped afterwards.
4-connectivity keeps two fields that only touch at a corner (across a one-pixel diagonal road) apart.

Then, on whole fields: drop those under the minimum area, fill holes under the maximum hole area (never holes
that hold nodata), optionally simplify as one coverage (fields plus the land between them, GEOS
``coverage_simplify``) so that neighbours never overlap, and move to map coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .stats import AreaModel


@dataclass
class Field:
    """One field in pixel coordinates: ``polygon`` (shapely), ``prob_sum``/``pixels`` of its component."""

    polygon: object
    prob_sum: float
    pixels: int

    @property
    def mean_probability(self) -> float:
        """Mean fused probability over the component's pixels."""
        return self.prob_sum / self.pixels if self.pixels else 0.0


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p.get(root, root) != root:
            root = p[root]
        while p.get(a, a) != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _densify_seams(ring_xy: np.ndarray, seam_ys: tuple[float, ...]) -> np.ndarray:
    """Closed ring (n, 2) of integer pixel corners -> the same ring with a vertex at every integer x along its
    horizontal edges that lie on one of the ``seam_ys`` rows."""
    a, b = ring_xy[:-1], ring_xy[1:]
    on = (a[:, 1] == b[:, 1]) & np.isin(a[:, 1], seam_ys)
    if not on.any():
        return ring_xy
    dx = b[:, 0] - a[:, 0]
    n = np.where(on, np.maximum(np.abs(dx), 1), 1).astype(np.int64)
    seg = np.repeat(np.arange(len(a)), n)
    t = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    x = a[seg, 0] + np.where(on[seg], t * np.sign(dx)[seg], 0)
    out = np.column_stack((x, a[seg, 1]))
    return np.vstack((out, out[:1]))


def _drop_collinear(ring_xy: np.ndarray) -> np.ndarray:
    """Closed ring of axis-parallel edges -> the same ring without vertices in the middle of a straight run."""
    pts = ring_xy[:-1]
    if len(pts) <= 4:
        return ring_xy
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    straight = ((prev[:, 0] == pts[:, 0]) & (pts[:, 0] == nxt[:, 0])) | \
               ((prev[:, 1] == pts[:, 1]) & (pts[:, 1] == nxt[:, 1]))
    kept = pts[~straight]
    return np.vstack((kept, kept[:1]))


def _map_rings(poly, fn):
    """Apply ``fn(ring_xy) -> ring_xy`` to every ring of a shapely Polygon."""
    import shapely

    shell = fn(np.asarray(poly.exterior.coords))
    holes = [fn(np.asarray(r.coords)) for r in poly.interiors]
    return shapely.Polygon(shell, holes)


def merge_fragments(polygons: list, seam_ys: tuple[float, ...]):
    """Union of pixel-space polygons that meet only along the horizontal ``seam_ys`` rows (one field cut into
    strips) -> one shapely Polygon (the largest part, should the union ever not be connected)."""
    import shapely

    dense = [_map_rings(p, lambda xy: _densify_seams(xy, seam_ys)) for p in polygons]
    merged = shapely.coverage_union_all(dense)
    if merged.geom_type == "MultiPolygon":
        merged = max(merged.geoms, key=lambda g: g.area)
    return _map_rings(merged, _drop_collinear)


class StripVectorizer:
    """Feed consecutive strips of a mask with :meth:`add`, then call :meth:`fields`."""

    def __init__(self, width: int):
        self.width = width
        self._fragments: dict[int, Field] = {}
        self._seams: list[float] = []
        self._uf = _UnionFind()
        self._next_id = 1
        self._last_row: np.ndarray | None = None
        self._next_row0 = 0

    def add(self, row0: int, mask: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Add rows ``row0 .. row0 + h`` of the mask: bool/uint8 (h, width), nonzero = cropland.

        ``prob`` (h, width) float32 (NaN allowed outside the mask) feeds each field's mean probability.
        Strips must come in order, without gaps.
        """
        import cv2
        import shapely
        from affine import Affine
        from rasterio.features import shapes

        if row0 != self._next_row0:
            raise ValueError(f"strips must be consecutive: expected row {self._next_row0}, got {row0}")
        h = mask.shape[0]
        if row0 > 0:
            self._seams.append(float(row0))
        self._next_row0 = row0 + h
        binary = (np.asarray(mask) > 0).astype(np.uint8)
        n, labels = cv2.connectedComponents(binary, connectivity=4, ltype=cv2.CV_32S)
        counts = np.bincount(labels.ravel(), minlength=n)
        sums = (np.bincount(labels.ravel(), weights=np.nan_to_num(prob, nan=0.0).ravel(), minlength=n)
                if prob is not None else np.zeros(n))
        offset = self._next_id - 1
        if n > 1:
            for geom, value in shapes(labels, mask=binary.astype(bool), connectivity=4,
                                      transform=Affine.translation(0, row0)):
                label = int(value)
                gid = offset + label
                poly = shapely.geometry.shape(geom)
                frag = self._fragments.get(gid)
                if frag is None:
                    self._fragments[gid] = Field(poly, float(sums[label]), int(counts[label]))
                else:  # cannot happen for 4-connected components, kept for safety
                    frag.polygon = shapely.union(frag.polygon, poly)
        if self._last_row is not None and n > 1:
            above, below = self._last_row, labels[0]
            touching = (above > 0) & (below > 0)
            for a, b in set(zip(above[touching].tolist(), (below[touching] + offset).tolist(), strict=True)):
                self._uf.union(a, b)
        last = labels[-1].copy()
        last[last > 0] += offset
        self._last_row = last
        self._next_id += max(n - 1, 0)

    def fields(self) -> list[Field]:
        """Whole fields, fragments merged across strip seams, ordered top-to-bottom, left-to-right."""
        groups: dict[int, list[int]] = {}
        seams = tuple(self._seams)
        for gid in self._fragments:
            groups.setdefault(self._uf.find(gid), []).append(gid)
        out = []
        for members in groups.values():
            frags = [self._fragments[g] for g in members]
            poly = frags[0].polygon if len(frags) == 1 else merge_fragments([f.polygon for f in frags], seams)
            out.append(Field(poly, sum(f.prob_sum for f in frags), sum(f.pixels for f in frags)))
        out.sort(key=lambda f: (f.polygon.bounds[1], f.polygon.bounds[0]))
        return out


def to_map(geom, transform):
    """Pixel-coordinate shapely geometry -> map coordinates through the affine ``transform``."""
    import shapely

    t = transform

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack((t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f))

    return shapely.transform(geom, apply)


def pixel_area_factor(model: AreaModel) -> float | None:
    """m² per pixel-space unit² for projected / pixel_size models (None for geodesic or unknown)."""
    return model.pixel_area_m2 if model.method in ("projected", "pixel_size") else None


def field_area_m2(poly_px, model: AreaModel) -> float | None:
    """Area in m² of a pixel-space polygon (geodesic for geographic CRSs); None when unknown."""
    factor = pixel_area_factor(model)
    if factor is not None:
        return poly_px.area * factor
    return model.polygon_area_perimeter(to_map(poly_px, model.transform))[0]


def filter_fields(fields: list[Field], model: AreaModel, min_area_m2: float, max_hole_m2: float,
                  has_nodata_in: Callable[[object], bool] | None = None) -> list[Field]:
    """Drop fields under ``min_area_m2`` and fill holes under ``max_hole_m2`` (m²).

    Areas in m² need a known :class:`AreaModel`; when areas are unknown (no CRS, no pixel size) both thresholds
    are ignored. ``has_nodata_in(ring_polygon_px) -> bool`` tells whether a hole holds nodata; such holes are kept.
    """
    import shapely

    if not model.known or (min_area_m2 <= 0 and max_hole_m2 <= 0):
        return fields
    kept = []
    for f in fields:
        poly = f.polygon
        if max_hole_m2 > 0 and poly.interiors:
            keep_rings = []
            for ring in poly.interiors:
                hole = shapely.Polygon(ring)
                small = field_area_m2(hole, model) < max_hole_m2
                if not small or (has_nodata_in is not None and has_nodata_in(hole)):
                    keep_rings.append(ring)
            if len(keep_rings) != len(poly.interiors):
                poly = shapely.Polygon(poly.exterior, keep_rings)
        if min_area_m2 > 0 and field_area_m2(shapely.Polygon(poly.exterior), model) < min_area_m2:
            continue
        kept.append(Field(poly, f.prob_sum, f.pixels))
    return kept


def simplify_fields(polygons: list, tolerance_px: float, width: int, height: int) -> list:
    """Simplify pixel-space polygons by ``tolerance_px`` as one coverage, never creating invalid geometry or
    overlaps between neighbours.

    The fields and the land between them (raster box minus the fields) form a coverage that GEOS simplifies with
    shared edges simplified once. Any result that is invalid, empty or overlaps a neighbour is replaced by its
    unsimplified polygon.

    Returns:
        list of shapely Polygons, in the order given.
    """
    import shapely

    if tolerance_px <= 0 or not polygons:
        return list(polygons)
    gaps = shapely.difference(shapely.box(0, 0, width, height), shapely.union_all(polygons))
    parts = list(getattr(gaps, "geoms", [gaps])) if not gaps.is_empty else []
    coverage = np.array(list(polygons) + [p for p in parts if p.geom_type == "Polygon"], dtype=object)
    simplified = shapely.coverage_simplify(coverage, tolerance_px, simplify_boundary=False)[:len(polygons)]
    out = [s if s.geom_type == "Polygon" and s.is_valid and not s.is_empty else p
           for s, p in zip(simplified, polygons, strict=True)]
    while True:  # originals never overlap, so restoring both sides of each overlap converges
        tree = shapely.STRtree(out)
        left, right = tree.query(out, predicate="intersects")
        pairs = [(i, j) for i, j in zip(left.tolist(), right.tolist(), strict=True)
                 if i < j and shapely.relate_pattern(out[i], out[j], "T********")]
        if not pairs:
            return out
        for i, j in pairs:
            out[i], out[j] = polygons[i], polygons[j]
