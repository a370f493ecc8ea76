"""Cropland mask -> field polygons, strip by strip, without seams.

Each strip of rows is labelled into 4-connected components (OpenCV) and every component is traced at once
(:func:`engine.trace.trace_labels`: OpenCV's contours on the labels, exact pixel-edge outlines with holes; GDAL's
polygonize for the few it cannot take). A field none of whose pixels lie on the strip's first or last row is
complete there, and all of these become polygons in one GEOS call. All geometry is kept in *pixel* coordinates
(integers, exact), so fragments of one field cut by a strip boundary share identical edges: they are found by
comparing the labels on both sides of the seam (union-find), and a field is handed over as soon as none of its
pixels lie on the last row added, so only the fields still open are held. Fragments are merged by
cancelling the unit edges they share along the seams and joining what is left into rings (:func:`stitch_fragments`:
array work, exact; why not GEOS's coverage union: ``python -m bench.vectorize --seams``, docs/BENCHMARKS.md §6).
4-connectivity keeps two fields that only touch at a corner (across a one-pixel diagonal road) apart.

Then, on whole fields: drop those under the minimum area, fill holes under the maximum hole area (never holes
that hold nodata), optionally simplify as one coverage (fields plus the land between them, GEOS
``coverage_simplify``) so that neighbours never overlap, and move to map coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .areas import AreaModel
from .trace import drop_collinear, next_in_ring, ring_index, trace_labels, traceable, twice_area


@dataclass
class Field:
    """One field in pixel coordinates: ``polygon`` (shapely), ``prob_sum``/``pixels`` of its component, and when
    the model has a boundary output, ``edge_sum``/``edge_pixels``: its boundary probability summed over the
    pixels of its outline (``edge_sum`` None without a boundary output)."""

    polygon: object
    prob_sum: float
    pixels: int
    edge_sum: float | None = None
    edge_pixels: int = 0

    @property
    def mean_probability(self) -> float:
        """Mean fused probability over the component's pixels."""
        return self.prob_sum / self.pixels if self.pixels else 0.0

    @property
    def mean_boundary(self) -> float | None:
        """Mean boundary probability over the pixels of the field's outline (None without a boundary output)."""
        if self.edge_sum is None:
            return None
        return self.edge_sum / self.edge_pixels if self.edge_pixels else 0.0


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


def _split_seam_edges(points: np.ndarray, sizes: np.ndarray, seam_ys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open cyclic rings (concatenated ``points``, ``sizes``) -> the same rings with every horizontal edge that
    lies on one of the ``seam_ys`` rows split into unit edges, and per vertex whether the edge leaving it lies on
    a seam. Fragments of one field then share their seam edges exactly (an exactly noded coverage)."""
    rid = ring_index(sizes)[0]
    a, b = points, points[next_in_ring(sizes)]
    on = (a[:, 1] == b[:, 1]) & np.isin(a[:, 1], np.asarray(list(seam_ys), dtype=np.int64))
    dx = b[:, 0] - a[:, 0]
    n = np.where(on, np.abs(dx), 1).astype(np.int64)
    t = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    out = np.repeat(a, n, axis=0)
    out[:, 0] += t * np.repeat(np.where(on, np.sign(dx), 0), n)
    return out, np.bincount(np.repeat(rid, n), minlength=len(sizes)), np.repeat(on, n)


def _unit_edges(points: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open cyclic rings of axis-parallel edges between integer points -> the same rings with every edge cut
    into edges of length 1."""
    a, b = points.astype(np.int64), points[next_in_ring(sizes)].astype(np.int64)
    d = b - a
    n = np.maximum(np.abs(d).sum(axis=1), 1)
    t = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    out = np.repeat(a, n, axis=0)
    out += t[:, None] * np.repeat(np.sign(d), n, axis=0)
    return out, np.bincount(np.repeat(ring_index(sizes)[0], n), minlength=len(sizes))


def _open_rings(points: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed rings (each ending on its first vertex), concatenated -> the same as open cyclic rings."""
    keep = np.ones(len(points), bool)
    keep[np.cumsum(sizes) - 1] = False
    return points[keep], sizes - 1


def _duplicated(keys: np.ndarray, times: int | None = None) -> np.ndarray:
    """Bool per key: it occurs more than once (or exactly ``times`` times)."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return (counts > 1 if times is None else counts == times)[inverse]


def stitch_fragments(fragments: list[list[np.ndarray]], seam_ys) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`stitch_many` for one field."""
    return stitch_many([fragments], seam_ys)[0]


def stitch_many(fields: list[list[tuple[np.ndarray, np.ndarray]]],
                seam_ys) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Merge the fragments of each of many fields, fragments that meet only along horizontal seam rows, into the
    field's rings; all fields at once (array work over all of their vertices).

    ``fields``: per field, its fragments, each (points (n, 2) int32, sizes (R,)) of its closed rings in pixel
    coordinates, concatenated, shell first. All rings are turned so that the field lies on their left (shells
    with positive shoelace area). Horizontal edges on a seam row are split into unit edges; a unit edge found
    twice in one field (the upper fragment's bottom and the lower one's top) is interior, and both copies go.
    The rest is cut into runs at those gaps and at every vertex that rings of the field share, and the runs are
    joined end to start into rings; where two runs leave one vertex (the field's pixels touching at a corner),
    the right turn joins the field there, so that what it encloses is a hole touching the shell at a point
    (valid) rather than a ring touching itself. All of it is array work except the walk over runs, whose number
    is that of seam crossings and shared corners; memory stays at a few arrays the size of the outlines (GEOS's
    coverage union of the same fragments needed ~200 bytes per vertex and fifteen times the time).

    Returns:
        per field, (points (n, 2) int32, ring sizes (R,)) of open rings, shell first; None for a field of one
        fragment, or whose rings are not one shell with holes (11 of 521 fields stitched on 4 strips of the 64 Mpx
        contest mosaic with model v2's split; the caller then merges those with GEOS).
    """
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(fields)
    todo = [k for k, frags in enumerate(fields) if len(frags) > 1]
    if not todo:
        return out
    frags = [f for k in todo for f in fields[k]]
    ring_field = np.repeat(np.arange(len(todo)), [sum(len(s) for _, s in fields[k]) for k in todo])
    shell = np.concatenate([np.arange(len(s)) == 0 for _, s in frags])
    closed = np.concatenate([s for _, s in frags]).astype(np.int64)
    pts = np.concatenate([p for p, _ in frags])
    # open rings (no closing vertex), turned where needed
    sizes = closed - 1
    rid, first = ring_index(sizes)
    j = np.arange(int(sizes.sum())) - first[rid]
    src_first = np.cumsum(closed) - closed
    flip = (twice_area(pts[src_first[rid] + j], sizes) > 0) != shell
    pts = pts[src_first[rid] + np.where(flip[rid], sizes[rid] - 1 - j, j)]
    pts, sizes, on = _split_seam_edges(pts, sizes, seam_ys)
    rid, nxt = ring_index(sizes)[0], next_in_ring(sizes)
    wide = pts.astype(np.int64)
    field = ring_field[rid]
    # one integer per (field, x, y): vertices and seam edges are compared within a field only
    span_x, span_y = int(wide[:, 0].max()) + 2, int(wide[:, 1].max()) + 2
    if len(todo) * span_x * span_y >= 1 << 62:  # (never: rasters are not that large)
        return [stitch_many([fields[k]], seam_ys)[0] if k in todo else None for k in range(len(fields))]
    split = _duplicated((field * span_y + wide[:, 1]) * span_x + wide[:, 0])
    cancelled = np.zeros(len(pts), bool)
    idx = np.flatnonzero(on)
    seam_key = (field[idx] * span_y + wide[idx, 1]) * span_x + np.minimum(wide[idx, 0], wide[nxt[idx], 0])
    cancelled[idx[_duplicated(seam_key, 2)]] = True
    del wide
    prev = np.empty_like(nxt)
    prev[nxt] = np.arange(len(nxt))
    begin = ~cancelled & (cancelled[prev] | split)
    cut = np.bincount(rid, weights=begin, minlength=len(sizes)) > 0
    _, first = ring_index(sizes)

    out_idx, out_sizes, out_field = [np.flatnonzero(~cut[rid])], [sizes[~cut]], [ring_field[~cut]]  # uncut rings
    cut_rings = np.flatnonzero(cut)
    if len(cut_rings):
        # runs of the cut rings: rotate each to start at a begin, then split at begins and drop cancelled edges
        begins = np.flatnonzero(begin)
        ring_first_begin = begins[np.unique(rid[begins], return_index=True)[1]]
        csz = sizes[cut_rings]
        crid, cfirst = ring_index(csz)
        jj = np.arange(int(csz.sum())) - cfirst[crid]
        r_of = cut_rings[crid]
        order = first[r_of] + (ring_first_begin[crid] - first[r_of] + jj) % sizes[r_of]
        keep = ~cancelled[order]
        label = np.cumsum(begin[order])
        kept = order[keep]
        bounds = np.flatnonzero(np.diff(label[keep])) + 1
        run_first = np.concatenate(([0], bounds))
        run_last = np.concatenate((bounds, [len(kept)])) - 1
        e0, e1 = kept[run_first], kept[run_last]
        start_xy, end_xy = pts[e0], pts[nxt[e1]]
        d_out, d_in = pts[nxt[e0]] - pts[e0], pts[nxt[e1]] - pts[e1]
        run_field = field[e0].tolist()
        starts: dict[tuple[int, int, int], list[int]] = {}
        for k, (x, y) in enumerate(start_xy.tolist()):
            starts.setdefault((run_field[k], x, y), []).append(k)
        used = np.zeros(len(e0), bool)
        end_list, din_list, dout_list = end_xy.tolist(), d_in.tolist(), d_out.tolist()
        for r0 in range(len(e0)):
            if used[r0]:
                continue
            used[r0] = True
            chain, cur = [r0], r0
            while True:
                options = [k for k in starts[(run_field[cur], *end_list[cur])] if k == r0 or not used[k]]
                if len(options) > 1:
                    (ix, iy) = din_list[cur]
                    options.sort(key=lambda k: ix * dout_list[k][1] - iy * dout_list[k][0])
                cur = options[0]
                if cur == r0:
                    break
                used[cur] = True
                chain.append(cur)
            out_idx.append(np.concatenate([kept[run_first[k]:run_last[k] + 1] for k in chain]))
            out_sizes.append([len(out_idx[-1])])
            out_field.append([run_field[r0]])
    ring_sizes = np.concatenate(out_sizes).astype(np.int64)
    ring_of_field = np.concatenate(out_field).astype(np.int64)
    ring_pts = pts[np.concatenate(out_idx)]
    area = twice_area(ring_pts, ring_sizes)
    # per field: its shell (the one ring of positive area) first, then its holes
    order = np.lexsort((area <= 0, ring_of_field))
    starts_at = np.cumsum(ring_sizes) - ring_sizes
    shells = np.bincount(ring_of_field, weights=area > 0, minlength=len(todo))
    rings_per = np.bincount(ring_of_field, minlength=len(todo))
    ring_end = np.cumsum(rings_per)
    for f, k in enumerate(todo):
        if shells[f] != 1:
            continue
        rings = order[ring_end[f] - rings_per[f]:ring_end[f]]
        take = np.concatenate([np.arange(starts_at[r], starts_at[r] + ring_sizes[r]) for r in rings])
        out[k] = (ring_pts[take], ring_sizes[rings])
    return out


def _polygon(points: np.ndarray, sizes: np.ndarray):
    """Rings (shell first), open or closed, concatenated -> shapely Polygon (shapely closes open rings)."""
    import shapely

    rings = shapely.linearrings(points.astype(np.float64), indices=ring_index(sizes)[0])
    return shapely.polygons(rings[0], holes=rings[1:] if len(rings) > 1 else None)


def _polygons(rings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Many :func:`_polygon` calls in one: per polygon (points, sizes) of its rings, shell first -> an object
    array of shapely Polygons (one GEOS call for all, not two per polygon)."""

    points = np.concatenate([p for p, _ in rings]).astype(np.float64)
    sizes = np.concatenate([s for _, s in rings])
    return _polygons_from(points, sizes, np.array([len(s) for _, s in rings]))


def _polygons_from(points: np.ndarray, sizes: np.ndarray, rings_per_polygon: np.ndarray) -> np.ndarray:
    """float64 (n, 2) vertices of rings of ``sizes`` vertices each, ``rings_per_polygon`` rings (shell first) a
    polygon -> object array of shapely Polygons."""
    import shapely

    made = shapely.linearrings(points, indices=ring_index(sizes)[0])
    return shapely.polygons(made, indices=np.repeat(np.arange(len(rings_per_polygon)), rings_per_polygon))


def merge_fragments(fragments: list[tuple[np.ndarray, np.ndarray]], seam_ys: tuple[float, ...]):
    """Union of pixel-space polygons (each (points, sizes) of its closed integer rings, shell first) that meet
    only along the horizontal ``seam_ys`` rows (one field cut into strips) -> one shapely Polygon."""

    if len(fragments) == 1:
        return _polygon(*drop_collinear(*_open_rings(*fragments[0])))
    stitched = stitch_fragments(fragments, seam_ys)
    if stitched is not None:
        return _polygon(*drop_collinear(*stitched))
    return _merge_geos(fragments, seam_ys)


def _merge_geos(fragments: list[tuple[np.ndarray, np.ndarray]], seam_ys: tuple[float, ...]):
    """:func:`merge_fragments` by GEOS's coverage union (on unit seam edges), when the stitcher gives up."""
    import shapely

    dense = [_polygon(*_split_seam_edges(*_open_rings(points, sizes), seam_ys)[:2]) for points, sizes in fragments]
    merged = shapely.coverage_union_all(dense)
    if merged.geom_type == "MultiPolygon":  # the largest part, should the union not be connected
        merged = max(merged.geoms, key=lambda g: g.area)
    rings = [np.asarray(r.coords) for r in (merged.exterior, *merged.interiors)]
    return _polygon(*drop_collinear(*_open_rings(np.concatenate(rings), np.array([len(r) for r in rings]))))


def union_fragments(fragments: list[tuple[np.ndarray, np.ndarray]]):
    """Union of pixel-space polygons (each (points, sizes) of its closed integer rings, shell first) that touch
    along any edges -> one shapely Polygon (the largest part, should they not be connected). Used by the Dask
    client (:mod:`engine.bands`) for a field whose fragments one band returned apart."""
    import shapely

    merged = shapely.union_all([_polygon(points, sizes) for points, sizes in fragments])
    if merged.geom_type == "MultiPolygon":
        merged = max(merged.geoms, key=lambda g: g.area)
    rings = [np.asarray(r.coords) for r in (merged.exterior, *merged.interiors)]
    return _polygon(*drop_collinear(*_open_rings(np.concatenate(rings), np.array([len(r) for r in rings]))))


@dataclass
class _Fragment:
    points: np.ndarray  # closed integer rings (n, 2) int32, shell first, concatenated
    sizes: np.ndarray  # vertices per ring
    prob_sum: float
    pixels: int
    edge_sum: float | None = None
    edge_pixels: int = 0
    strip: int = 0  # index of the strip it was traced in
    label: int = 0  # id of its label in that strip (pieces of one label in one strip never share an edge)


class StripVectorizer:
    """Feed consecutive strips of a mask with :meth:`add`; take the fields that are complete with
    :meth:`pop_finished` after each strip (so that only fields still open at the last row are held), and the
    rest with :meth:`fields` at the end.

    Given the links of a split (:class:`engine.split.SplitStrip`), a field is a connected component of the links
    instead of the mask: where two cropland pixels are not linked, their fields' polygons share that edge.
    """

    def __init__(self, width: int):
        self.width = width
        self._fragments: dict[int, _Fragment] = {}
        self._seams: list[float] = []
        self._uf = _UnionFind()
        self._next_id = 1
        self._last_row: np.ndarray | None = None
        self._last_down: np.ndarray | None = None  # links of the last row to the next strip (split only)
        self._split = False  # whether any strip came with a split's links
        self.geos_unions = 0  # fields merged by GEOS's union (split fields whose pieces may touch in a strip)
        self._next_row0 = 0
        self._done: list[Field] = []  # fields completed within one strip, not taken yet

    @property
    def held_vertices(self) -> int:
        """Vertices of the fragments held now (fields not yet finished)."""
        return sum(len(f.points) for f in self._fragments.values())

    def add(self, row0: int, mask: np.ndarray, prob: np.ndarray | None = None, split=None) -> None:
        """Add rows ``row0 .. row0 + h`` of the mask: bool/uint8 (h, width), nonzero = cropland.

        ``prob`` (h, width) float32 (NaN allowed outside the mask) feeds each field's mean probability.
        ``split``: the :class:`engine.split.SplitStrip` of these rows, or None (fields = 4-connected regions).
        Strips must come in order, without gaps.
        """
        import cv2
        from affine import Affine
        from rasterio.features import shapes

        if row0 != self._next_row0:
            raise ValueError(f"strips must be consecutive: expected row {self._next_row0}, got {row0}")
        h = mask.shape[0]
        if row0 > 0:
            self._seams.append(float(row0))
        self._next_row0 = row0 + h
        binary = (np.asarray(mask) > 0).astype(np.uint8)
        if split is None:
            n, labels = cv2.connectedComponents(binary, connectivity=4, ltype=cv2.CV_32S)
        elif split.labels is not None:
            self._split = True
            labels = split.labels
            n = int(labels.max()) + 1 if labels.size else 1
        else:
            self._split = True
            n, labels = _link_components(binary, split.right, split.down)
        # label 0 (off the mask) takes the NaNs of invalid pixels; labels > 0 are on the mask, where prob is finite
        flat = labels.reshape(-1)
        counts = np.bincount(flat, minlength=n)
        sums = (np.bincount(flat, weights=prob.reshape(-1), minlength=n) if prob is not None else np.zeros(n))
        if not np.isfinite(sums[1:]).all():  # NaN on the mask (not from the engine's own stages)
            sums = np.bincount(flat, weights=np.nan_to_num(prob.reshape(-1), nan=0.0), minlength=n)
        edge_sums = edge_counts = None
        if split is not None and split.boundary is not None:
            on_edge = np.flatnonzero(split.edge)  # (cropland pixels only)
            edge_counts = np.bincount(flat[on_edge], minlength=n)
            edge_sums = np.bincount(flat[on_edge], weights=split.boundary.reshape(-1)[on_edge], minlength=n)
        # a field none of whose pixels lie on the strip's first or last row is complete (a 4-connected piece
        # of one label, as labels never join across the rows around the strip without crossing those rows)
        inner = np.ones(n, bool)
        inner[labels[0]] = inner[labels[-1]] = False
        offset = self._next_id - 1
        self._next_id += max(n - 1, 0)
        if n > 1 and not traceable(labels):  # a very wide strip: GDAL's polygonize, every field a fragment
            for geom, value in shapes(labels, mask=labels > 0, connectivity=4, transform=Affine.translation(0, row0)):
                self._add_fragment(offset, int(value), *_rings_of(geom), sums, counts, edge_sums, edge_counts)
        elif n > 1:
            traced = trace_labels(labels, counts)
            # fields complete in this strip: polygons in one GEOS call
            done = inner[traced.labels]
            ring_done = np.repeat(done, traced.rings_per_label)
            pts = traced.points.astype(np.float64)
            pts[:, 1] += row0
            if done.any():
                self._done.extend(_complete_fields(pts[np.repeat(ring_done, traced.sizes)], traced.sizes[ring_done],
                                                   traced.rings_per_label[done], traced.labels[done], sums, counts,
                                                   edge_sums, edge_counts))
            # the others, as fragments to join across the seams
            keep = ~ring_done
            closed, closed_sizes = _close_rings(pts[np.repeat(keep, traced.sizes)].astype(np.int32),
                                                traced.sizes[keep])
            ends = np.cumsum(traced.rings_per_label[~done])
            vertex_ends = np.cumsum(closed_sizes)
            lo = 0
            for label, end in zip(traced.labels[~done].tolist(), ends.tolist(), strict=True):
                a = vertex_ends[lo - 1] if lo else 0
                self._add_fragment(offset, label, closed[a:vertex_ends[end - 1]], closed_sizes[lo:end], sums, counts,
                                   edge_sums, edge_counts)
                lo = end
            # labels OpenCV could not trace as 4-connected regions: GDAL's polygonize on their box
            for label, (x0, y0, x1, y1) in zip(traced.redo.tolist(), traced.redo_boxes.tolist(), strict=True):
                piece = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
                for geom, _ in shapes(piece, mask=piece.astype(bool), connectivity=4,
                                      transform=Affine.translation(x0, y0 + row0)):
                    self._add_fragment(offset, label, *_rings_of(geom), sums, counts, edge_sums, edge_counts)
        if self._last_row is not None and n > 1:
            above, below = self._last_row, labels[0]
            touching = (above > 0) & (below > 0)
            if self._last_down is not None:
                touching &= self._last_down
            for a, b in set(zip(above[touching].tolist(), (below[touching] + offset).tolist(), strict=True)):
                self._uf.union(a, b)
        last = labels[-1].copy()
        last[last > 0] += offset
        if split is not None:
            last[~split.down[-1]] = 0  # a field not linked to the next row is finished
            self._last_down = split.down[-1].copy()
        self._last_row = last

    def _add_fragment(self, offset: int, label: int, points: np.ndarray, sizes: np.ndarray, sums, counts, edge_sums,
                      edge_counts) -> None:
        """One traced piece of ``label`` of the strip just added: closed integer rings, shell first."""
        gid = offset + label
        if gid in self._fragments:  # a label of a split strip in several pieces: one field, joined
            extra, self._next_id = self._next_id, self._next_id + 1
            self._uf.union(gid, extra)
            self._fragments[extra] = _Fragment(points, sizes, 0.0, 0, None if edge_sums is None else 0.0,
                                               strip=len(self._seams), label=gid)
            return
        frag = _Fragment(points, sizes, float(sums[label]), int(counts[label]), strip=len(self._seams), label=gid)
        if edge_sums is not None:
            frag.edge_sum, frag.edge_pixels = float(edge_sums[label]), int(edge_counts[label])
        self._fragments[gid] = frag

    def pop_finished(self, everything: bool = False) -> list[Field]:
        """Fields none of whose pixels lie on the last row added (they cannot grow any more), merged across
        seams and forgotten by the vectorizer; with ``everything``, all fields held (call after the last strip).
        Ordered top-to-bottom, left-to-right."""
        out, self._done = self._done, []
        open_roots = set()
        if not everything and self._last_row is not None:
            open_roots = {self._uf.find(int(g)) for g in np.unique(self._last_row) if g > 0}
        groups: dict[int, list[int]] = {}
        for gid in self._fragments:
            root = self._uf.find(gid)
            if root not in open_roots:
                groups.setdefault(root, []).append(gid)
        seams = tuple(self._seams)
        single, stitch = [], []
        for members in groups.values():
            frags = [self._fragments.pop(g) for g in members]
            for g in members:
                self._uf.parent.pop(g, None)
            if len(frags) == 1:
                poly = None  # made below, with every other field of one fragment, in one call
                single.append((len(out), frags[0]))
            elif not self._split or len({(f.strip, f.label) for f in frags}) == len({f.strip for f in frags}):
                poly = None  # stitched below, with every other such field, in one call
                stitch.append((len(out), frags))
            else:
                # split fields only (without a split, fragments of one strip touch others only along seams, as a
                # U whose arms join below does; so do pieces of one label): two labels of one strip, joined by
                # links elsewhere, may touch along any edge (they were cut apart, and grown back into one field
                # elsewhere), not only along seams. GEOS's coverage union (on unit edges) merges them strip by
                # strip, and the seam stitcher the strips. The strip's labels join what the rows around it join
                # (engine.split.field_labels), so this is rare.
                self.geos_unions += 1
                poly = merge_fragments(_union_within_strips(frags), seams)
            edge = None if frags[0].edge_sum is None else sum(f.edge_sum for f in frags)
            out.append(Field(poly, sum(f.prob_sum for f in frags), sum(f.pixels for f in frags), edge,
                             sum(f.edge_pixels for f in frags)))
        if single:
            for (i, _), poly in zip(single, _polygons([(f.points, f.sizes) for _, f in single]), strict=True):
                out[i].polygon = poly
        if stitch:
            fragments = [[(f.points, f.sizes) for f in frags] for _, frags in stitch]
            stitched = stitch_many(fragments, seams)
            done = [(i, rings) for (i, _), rings in zip(stitch, stitched, strict=True) if rings is not None]
            for (i, _), frags, rings in zip(stitch, fragments, stitched, strict=True):
                if rings is None:
                    out[i].polygon = _merge_geos(frags, seams)
            if done:
                points, sizes = drop_collinear(np.concatenate([p for _, (p, _) in done]),
                                                      np.concatenate([z for _, (_, z) in done]))
                made = _polygons_from(points.astype(np.float64), sizes, np.array([len(z) for _, (_, z) in done]))
                for (i, _), poly in zip(done, made.tolist(), strict=True):
                    out[i].polygon = poly
        if out:
            import shapely

            bounds = shapely.bounds(np.array([f.polygon for f in out], dtype=object))
            out = [out[i] for i in np.lexsort((bounds[:, 0], bounds[:, 1]))]
        return out

    def fields(self) -> list[Field]:
        """Every field not taken yet by :meth:`pop_finished`, fragments merged across strip seams, ordered
        top-to-bottom, left-to-right."""
        return self.pop_finished(everything=True)


def _complete_fields(points: np.ndarray, sizes: np.ndarray, rings_per_field: np.ndarray, labels: np.ndarray,
                     sums: np.ndarray, counts: np.ndarray, edge_sums: np.ndarray | None,
                     edge_counts: np.ndarray | None) -> list[Field]:
    """Fields traced whole within one strip -> :class:`Field` objects, their polygons made in one GEOS call.

    ``points``: float64 (n, 2) vertices of their rings, field by field, shell first; ``sizes``: vertices per ring;
    ``rings_per_field`` and ``labels``: per field; ``sums``/``counts`` (and the edge ones, or None) per label of
    the strip."""
    made = _polygons_from(points, sizes, rings_per_field)
    if edge_sums is None:
        return [Field(poly, s, c) for poly, s, c in zip(made.tolist(), sums[labels].tolist(),
                                                        counts[labels].tolist(), strict=True)]
    return [Field(poly, s, c, e, ec) for poly, s, c, e, ec in zip(
        made.tolist(), sums[labels].tolist(), counts[labels].tolist(), edge_sums[labels].tolist(),
        edge_counts[labels].astype(np.int64).tolist(), strict=True)]


def _rings_of(geom: dict) -> tuple[np.ndarray, np.ndarray]:
    """A GeoJSON polygon from GDAL's polygonize (integer pixel corners) -> (points int32 (n, 2) of its closed rings,
    shell first, concatenated; vertices per ring int32)."""
    rings = geom["coordinates"]
    return (np.array([xy for r in rings for xy in r], dtype=np.float64).astype(np.int32),
            np.array([len(r) for r in rings], dtype=np.int32))


def _close_rings(points: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open rings (concatenated ``points``, ``sizes``) -> the same rings closed (each ending on its first vertex)."""
    first = np.cumsum(sizes) - sizes
    out = sizes + 1
    at = np.arange(int(out.sum())) - np.repeat(np.cumsum(out) - out, out)  # 0 .. size within each ring
    at[at == np.repeat(sizes, out)] = 0
    return points[at + np.repeat(first, out)], out


def _union_within_strips(frags: list[_Fragment]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fragments of one field -> (points, sizes) of closed rings, shell first, per polygon, where the fragments
    of each strip that has several labels are replaced by the parts of their union (which then meet the rest
    only along seams, as :func:`stitch_fragments` needs)."""
    import shapely

    by_strip: dict[int, list[_Fragment]] = {}
    for f in frags:
        by_strip.setdefault(f.strip, []).append(f)
    out = []
    for group in by_strip.values():
        if len({f.label for f in group}) == 1:
            out.extend((f.points, f.sizes) for f in group)
            continue
        # every edge cut into unit edges: pieces of one strip then share their edges exactly (a noded coverage),
        # which GEOS's coverage union merges in linear time, unlike its overlay union
        merged = shapely.coverage_union_all([_polygon(*_unit_edges(*_open_rings(f.points, f.sizes))) for f in group])
        for part in getattr(merged, "geoms", [merged]):
            rings = [np.asarray(r.coords) for r in (part.exterior, *part.interiors)]
            out.append((np.concatenate(rings).astype(np.int32), np.array([len(r) for r in rings], np.int32)))
    return out


def _link_components(binary: np.ndarray, right: np.ndarray, down: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the link graph of a strip: (number of labels incl. 0, int32 (h, w) labels, 0 off
    the mask). Pixels sit at even positions of a (2h, 2w) image, links between them at odd ones, so OpenCV's
    4-connected labelling (hundreds of Mpx/s) does the work instead of a Python union-find."""
    import cv2

    h, w = binary.shape
    big = np.zeros((2 * h, 2 * w), np.uint8)
    big[0::2, 0::2] = binary
    big[0::2, 1::2] = right
    big[1:-1:2, 0::2] = down[:-1]
    n, labels = cv2.connectedComponents(big, connectivity=4, ltype=cv2.CV_32S)
    labels = np.ascontiguousarray(labels[0::2, 0::2])
    labels[binary == 0] = 0
    return n, labels


def order_keys(polys_px: np.ndarray) -> np.ndarray:
    """Where pixel-space fields come in the output's top-to-bottom, left-to-right order: object array (n,) of
    polygons -> float64 (n, 3): top row, left edge of the box, left edge of the first pixel on the top row. The
    last tells apart fields whose boxes share their top-left corner (an L-shaped field around another), which no
    two fields' first pixels can do."""
    import shapely

    coords, which = shapely.get_coordinates(shapely.get_exterior_ring(polys_px), return_index=True)
    out = np.empty((len(polys_px), 3), np.float64)
    if not len(polys_px):
        return out
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])  # rings are never empty, come in order
    out[:, 0] = np.minimum.reduceat(coords[:, 1], starts)
    out[:, 1] = np.minimum.reduceat(coords[:, 0], starts)
    on_top = coords[:, 1] == out[which, 0]
    out[:, 2] = np.minimum.reduceat(np.where(on_top, coords[:, 0], np.inf), starts)
    return out


def to_map(geom, transform):
    """Pixel-coordinate shapely geometry (or object array of them) -> the same in map coordinates through the
    affine ``transform``."""
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


def filter_field(field: Field, model: AreaModel, min_area_m2: float, max_hole_m2: float,
                 has_nodata_in: Callable[[object], bool] | None = None) -> tuple[Field | None, list]:
    """Drop a field under ``min_area_m2`` and fill its holes under ``max_hole_m2`` (m²).

    Areas in m² need a known :class:`AreaModel`; when areas are unknown (no CRS, no pixel size) both thresholds
    are ignored. ``has_nodata_in(ring_polygon_px) -> bool`` tells whether a hole holds nodata; such holes are kept.

    Returns:
        (the field, or None when dropped; the changes to burn into the mask: ``(polygon_px, 0)`` for a dropped
        field, ``(hole_px, 1)`` for each hole filled in a kept field).
    """
    import shapely

    if not model.known or (min_area_m2 <= 0 and max_hole_m2 <= 0):
        return field, []
    poly, filled = field.polygon, []
    if max_hole_m2 > 0 and poly.interiors:
        keep_rings = []
        for ring in poly.interiors:
            hole = shapely.Polygon(ring)
            if field_area_m2(hole, model) < max_hole_m2 and not (has_nodata_in is not None and has_nodata_in(hole)):
                filled.append((hole, 1))
            else:
                keep_rings.append(ring)
        if filled:
            poly = shapely.Polygon(poly.exterior, keep_rings)
    if min_area_m2 > 0 and field_area_m2(shapely.Polygon(poly.exterior), model) < min_area_m2:
        return None, [(field.polygon, 0)]
    return Field(poly, field.prob_sum, field.pixels, field.edge_sum, field.edge_pixels), filled


def simplify_fields(polygons: list, tolerance_px: float, width: int, height: int) -> list:
    """Simplify pixel-space polygons by ``tolerance_px`` as one coverage, never creating invalid geometry or
    overlaps between neighbours.

    The fields and the land between them (raster box minus the fields) form a coverage that GEOS simplifies with
    shared edges simplified once. Any result that is invalid, empty or overlaps a neighbour is replaced by its
    unsimplified polygon.

    Returns:
        list of shapely Polygons, in the order given; the same whatever that order (GEOS's result depends on the
        order of the coverage, so the polygons are simplified in one canonical order: a run in row bands holds its
        fields in another order than a single run).
    """
    import shapely

    if tolerance_px <= 0 or not polygons:
        return list(polygons)
    # the same outline gives the same result whatever ring start and strip seams it was traced with
    normal = shapely.normalize(np.array(polygons, dtype=object))
    order = sorted(range(len(normal)), key=lambda k: shapely.to_wkb(normal[k]))
    simplified = _simplify_coverage(list(normal[order]), tolerance_px, width, height)
    out = [None] * len(order)
    for k, poly in zip(order, simplified, strict=True):
        out[k] = poly
    return out


def _simplify_coverage(polygons: list, tolerance_px: float, width: int, height: int) -> list:
    """:func:`simplify_fields` on normalised polygons in their canonical order."""
    import shapely

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
