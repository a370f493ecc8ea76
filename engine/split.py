"""Splitting touching fields: a cropland mask cut along field edges, then grown back, streamed strip by strip.

A connected cropland region often holds several fields that touch along a track or a change of crop. The split
turns the region into fields that tile it exactly (a coverage: no gap, no overlap, the sum of the field areas is
the cropland area), in three steps:

1. **Cut.** A cropland pixel is *cut* where a field edge runs through it:

   * ``boundary`` (models with a ``boundary`` output): where the boundary probability exceeds
     ``boundary_threshold``;
   * ``extent`` (any model): where the pixel lies in a narrow valley of the extent probability, i.e. where the
     probability's morphological closing over a ``(2 r + 1)²`` square (``valley_px = r``) exceeds it by more than
     ``valley_depth`` (a black top-hat): two fields joined by a thin, less certain neck separate, a uniformly
     certain field does not;
   * ``image`` (the default for models without a boundary output): the ``extent`` cut, and also where the image
     itself has an edge: the gradient magnitude of the Gaussian-smoothed (σ = ``edge_sigma`` px) bands, on the
     model's 0..1 value scale, strongest band, above ``edge_gradient`` (:func:`image_edges`, computed per tile
     and blended like a model output). The v1 models were trained for extent only and barely mark the tracks
     and crop changes between fields (a dip of ~0.05 in the shipped sample); the image shows them.

2. **Seeds.** The uncut cropland, opened with a ``(2 s + 1)²`` square (``seed_opening_px = s``) so that slivers
   and bridges narrower than 2 s + 1 px between two fields (thin necks) do not join them.
3. **Grow back.** Every cropland pixel that is not a seed joins the seed at the smallest 4-connected distance
   through cropland, up to ``grow_px`` steps (a seeded watershed on the distance, which is an exact breadth-first
   flood): it links to its neighbour one step nearer, the first of up, left, right, down (fixed order, so the
   result does not depend on labels or strip layout). Cropland beyond ``grow_px`` from every seed (a narrow
   strip of pure edge) stays a field of its own, except a pixel with no such neighbour (where the fronts of two
   seeds meet just past ``grow_px``), which joins its neighbour reached at ``grow_px`` like a grown pixel rather
   than become a field of one pixel.

The result is expressed as *links* between 4-neighbouring cropland pixels (two seeds that touch, a grown pixel
and its parent, two unreached pixels that touch): a field is a connected component of the link graph, and
:class:`engine.vectorize.StripVectorizer` traces each component as one polygon, so a field boundary between two
cropland pixels is an edge that both polygons share. Every step looks at most ``halo`` rows away, so
:class:`FieldSplitter` streams: it holds ``halo`` rows of context on each side of the strip it hands on and gives
exactly the links a whole-raster computation would, whatever the strip height (tests/engine/test_engine_split.py).

Written with OpenCV morphology rather than scikit-image's watershed, which needs the whole region (so the whole
raster) in memory and has no bounded, label-free formulation that could stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .mask_stream import HaloRows

SPLITS = ("auto", "boundary", "image", "extent", "none")
_FAR = np.uint8(255)  # distance of cropland no seed reaches within grow_px (<= 254) steps, and of non-cropland
# Parent direction codes of a grown pixel: which neighbour is one step nearer a seed.
UP, LEFT, RIGHT, DOWN = 1, 2, 3, 4


@dataclass
class SplitParams:
    """How fields are split (pixels of the model's grid).

    Attributes:
        method: ``"boundary"``, ``"image"`` or ``"extent"`` (see the module docstring).
        boundary_threshold: boundary probability above which a cropland pixel is cut (``boundary``).
        valley_px: radius r of the closing that finds valleys narrower than 2 r + 1 px (``extent``, ``image``).
        valley_depth: how far (0..1) the probability must dip below its closing to cut (``extent``, ``image``).
        edge_sigma: Gaussian smoothing (px) of the image before its gradient (``image``).
        edge_gradient: gradient magnitude (model value range 0..1 per px) above which the image has an edge.
        seed_opening_px: radius of the opening of the seeds (0 = none).
        grow_px: how far (4-connected steps) a cut pixel may be from a seed to join it.
        label_rows: rows beyond a strip on each side (at least ``grow_px + 1``) whose links label the strip's
            fields (:func:`field_labels`): pieces of a field joined there come to the vectoriser as one.
    """

    method: str = "image"
    boundary_threshold: float = 0.5
    valley_px: int = 3
    valley_depth: float = 0.12
    edge_sigma: float = 1.0
    edge_gradient: float = 0.035
    seed_opening_px: int = 3
    grow_px: int = 12
    label_rows: int = 16

    @property
    def uses_image(self) -> bool:
        """Whether the split needs the :func:`image_edges` channel."""
        return self.method == "image"

    @property
    def context(self) -> int:
        """Rows of context each output row needs for its seeds (cut + opening)."""
        cut = 2 * self.valley_px if self.method in ("extent", "image") else 0
        return cut + 2 * self.seed_opening_px

    @property
    def halo(self) -> int:
        """Rows of context a strip needs on each side for exact links: a pixel's seeds look ``context`` rows
        away, its distance ``grow_px`` more (one more for a pixel left alone past it), its parent one more, and the
        links down (and the outline flags) of
        the strip's last (first) row need the parent of the row below (above) it."""
        return self.context + self.grow_px + 3

    @property
    def label_context(self) -> int:
        """Rows beyond a strip whose links label it (chains of parents reach ``grow_px`` rows away)."""
        return max(self.label_rows, self.grow_px + 1)


def resolve_split(split: str, has_boundary: bool) -> SplitParams | None:
    """``--split`` value and whether the model has a boundary output -> the parameters, or None for no split.

    ``auto``: the boundary output when the model has one, else ``image``.
    Raises ValueError for ``boundary`` without a boundary output (the caller turns it into an InputError).
    """
    if split == "none":
        return None
    if split == "boundary" and not has_boundary:
        raise ValueError("--split boundary needs a model with a 'boundary' output; this model has only 'extent' "
                         "(use --split auto, image or extent).")
    if split == "auto":
        split = "boundary" if has_boundary else "image"
    return SplitParams(method=split)


def cue_name(params: SplitParams | None) -> str | None:
    """The extra per-pixel channel the split cuts on: ``"boundary"`` (the model's output), ``"image_edges"``
    (:func:`image_edges`), or None (``extent`` split, or no split)."""
    if params is None or params.method == "extent":
        return None
    return "boundary" if params.method == "boundary" else "image_edges"


def image_edges(scaled: np.ndarray, params: SplitParams) -> np.ndarray:
    """Edge cue of image tiles for the ``image`` split.

    Args:
        scaled: float32 (N, B, T, T) pixel values on the model's 0..1 scale (before its mean/std).

    Returns:
        float32 (N, T, T) in 0..1: the strongest band's gradient magnitude after Gaussian smoothing, divided by
        twice ``params.edge_gradient`` and clipped, so 0.5 is the edge threshold.
    """
    import cv2

    out = np.zeros((scaled.shape[0], *scaled.shape[2:]), np.float32)
    for n in range(scaled.shape[0]):
        for band in scaled[n]:
            smooth = cv2.GaussianBlur(np.ascontiguousarray(band, dtype=np.float32), (0, 0), params.edge_sigma)
            gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
            np.maximum(out[n], cv2.magnitude(gx, gy) / np.float32(8), out=out[n])  # Sobel's 3x3 sums weigh 8
    return np.clip(out / np.float32(2 * params.edge_gradient), 0, 1)


@dataclass
class SplitStrip:
    """What the split adds to a strip of the mask (all (h, w), rows ``row0 ..`` of the raster).

    Attributes:
        right: bool, pixel (y, x) and (y, x + 1) belong to one field (both cropland).
        down: bool, pixel (y, x) and (y + 1, x) belong to one field; the last row's refer to the next strip.
        edge: bool, cropland pixel on its field's outline (a 4-neighbour outside the field, raster edge excepted).
        boundary: float32 boundary probability, or None when the model has no boundary output.
        cut: bool, cropland pixel cut by the split (counted for the report), or None.
        labels: int32, equal labels > 0 = one field (the links' components over the strip and
            ``params.label_context`` rows on each side; a field's pieces joined only farther away get several
            labels), 0 off the mask; None: the vectoriser labels the links itself.
    """

    right: np.ndarray
    down: np.ndarray
    edge: np.ndarray
    boundary: np.ndarray | None
    cut: np.ndarray | None = None
    labels: np.ndarray | None = None

    def rows(self, a: int, b: int) -> SplitStrip:
        """The same for rows ``a .. b`` of the strip (0 = its first row)."""
        return SplitStrip(self.right[a:b], self.down[a:b], self.edge[a:b],
                          None if self.boundary is None else self.boundary[a:b],
                          None if self.cut is None else self.cut[a:b],
                          None if self.labels is None else self.labels[a:b])


def split_links(mask: np.ndarray, prob: np.ndarray, cue: np.ndarray | None, params: SplitParams
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Links of a window of rows (see the module docstring).

    Args:
        mask: uint8 (h, w), 1 = cropland.
        prob: float32 (h, w) extent probability (NaN where invalid).
        cue: float32 (h, w) boundary probability (``boundary``) or :func:`image_edges` (``image``); None for
            ``extent``.

    Returns:
        (right bool (h, w), down bool (h, w) with the last row False, edge bool (h, w), cut bool (h, w));
        exact for rows at least ``params.halo - 1`` rows from a window edge that is not the raster's.
    """
    m, cut, dist, parent = _grow(mask, prob, cue, params)
    right, down, edge = _links(m, dist, parent)
    return right, down, edge, cut


def _grow(mask: np.ndarray, prob: np.ndarray, cue: np.ndarray | None, params: SplitParams
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut, seeds and growth of a window of rows: (cropland bool (h, w), cut bool (h, w), distance to the nearest
    seed uint8 (h, w) (0 on seeds, ``_FAR`` where not reached or not cropland), parent direction uint8 (h, w)
    (0 = none))."""
    import cv2

    m = mask.astype(bool)
    h, w = m.shape
    # Probabilities are read on the uint8 grid of the temporary rasters (p x 254), so that a run that reads them
    # back (with --min-area / --max-hole) splits exactly as one that takes them straight from inference.
    if params.method in ("boundary", "image"):
        if cue is None:
            raise ValueError(f"the {params.method} split needs its second channel")
        threshold = params.boundary_threshold if params.method == "boundary" else 0.5
        cut = m & _above(cue, threshold)
    else:
        cut = np.zeros_like(m)
    if params.method in ("extent", "image"):
        r = params.valley_px
        p = _quantize(prob)
        closed = cv2.morphologyEx(p, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1,) * 2))
        np.subtract(closed, p, out=closed)
        del p
        cut |= m & (closed > params.valley_depth)
        del closed
    seeds = (m & ~cut).view(np.uint8)
    if params.seed_opening_px:
        s = params.seed_opening_px
        seeds = cv2.morphologyEx(seeds, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * s + 1,) * 2))
    if not 0 < params.grow_px < int(_FAR) - 1:
        raise ValueError(f"grow_px must be 1..{int(_FAR) - 2}, got {params.grow_px}")
    # A pixel reached at step s is still free after steps 0 .. s - 1, so its distance is the number of steps it
    # stayed free: summed with OpenCV's saturating add (a few ms a step) rather than written per step.
    free = cv2.subtract(m.view(np.uint8), seeds)  # cropland not reached yet
    dist = free.copy()
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    front = seeds
    for _ in range(params.grow_px):
        grown = cv2.bitwise_and(cv2.dilate(front, cross), free)
        if not cv2.countNonZero(grown):
            break
        free = cv2.subtract(free, grown)
        cv2.add(dist, free, dst=dist)
        front = grown
    del front, seeds
    np.putmask(dist, free.view(bool) | ~m, _FAR)  # never reached, and not cropland
    del free
    # a pixel left alone where the fronts of two seeds meet just past grow_px steps (no unreached 4-neighbour)
    # joins a neighbour reached at grow_px rather than becoming a field of one pixel
    lost = m & (dist == _FAR)
    alone = lost.copy()
    alone[1:] &= ~lost[:-1]
    alone[:-1] &= ~lost[1:]
    alone[:, 1:] &= ~lost[:, :-1]
    alone[:, :-1] &= ~lost[:, 1:]
    if alone.any():
        edge = (dist == params.grow_px).view(np.uint8)
        reached = cv2.dilate(edge, cross).view(bool)
        np.putmask(dist, alone & reached, np.uint8(params.grow_px + 1))
    del lost, alone
    # neighbours' distances (the far value outside the window: no parent there)
    nearer = dist - np.uint8(1)  # (wraps on seeds and far pixels, which are never grown)
    grown = m & (dist > 0) & (dist < _FAR)
    parent = np.zeros((h, w), np.uint8)
    # (code, rows/cols of the pixel, of its neighbour) for each direction; last written wins: UP first
    for code, here, there in ((DOWN, np.s_[:-1, :], np.s_[1:, :]), (RIGHT, np.s_[:, :-1], np.s_[:, 1:]),
                              (LEFT, np.s_[:, 1:], np.s_[:, :-1]), (UP, np.s_[1:, :], np.s_[:-1, :])):
        np.putmask(parent[here], grown[here] & (dist[there] == nearer[here]), code)
    return m, cut, dist, parent


def _links(m: np.ndarray, dist: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of :func:`_grow`'s output -> (right, down, edge) bool (h, w) as :func:`split_links` returns them."""
    seed = dist == 0
    lost = m & (dist == _FAR)
    h, w = m.shape
    right = np.zeros((h, w), bool)
    right[:, :-1] = m[:, :-1] & m[:, 1:] & (
        (seed[:, :-1] & seed[:, 1:]) | (lost[:, :-1] & lost[:, 1:])
        | (parent[:, :-1] == RIGHT) | (parent[:, 1:] == LEFT))
    down = np.zeros((h, w), bool)
    down[:-1] = m[:-1] & m[1:] & (
        (seed[:-1] & seed[1:]) | (lost[:-1] & lost[1:]) | (parent[:-1] == DOWN) | (parent[1:] == UP))
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= ~right[:, :-1]
    edge[:, :-1] |= ~right[:, :-1]
    edge[1:] |= ~down[:-1]
    edge[:-1] |= ~down[:-1]
    edge &= m
    return right, down, edge


def field_labels(m: np.ndarray, dist: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Connected components of the links (see the module docstring) within rows of :func:`_grow`'s output.

    A field is a component of seeds (adjacent seeds are linked) or of unreached cropland (likewise; it never
    touches a seed: it would be 1 step from it), plus every grown pixel whose chain of parents ends there, so the
    components are labelled on the pixel grid (OpenCV) and handed down the chains in order of distance. A grown
    pixel whose parent lies outside the rows starts a label of its own (handed down its chain), so that the
    labels are the components of the links *within* the rows given: pieces joined only outside them get several
    labels (:class:`FieldSplitter` with ``label_seams``).

    Returns:
        int32 (h, w): equal labels > 0 = one field (linked within the rows given), 0 off the mask.
    """
    import cv2

    w = m.shape[1]
    roots = (dist == 0) | (m & (dist == _FAR))
    n, labels = cv2.connectedComponents(roots.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    del roots
    flat = labels.reshape(-1)
    idx = np.flatnonzero(m & (dist > 0) & (dist < _FAR))
    if len(idx):
        d = dist.reshape(-1)[idx]
        order = np.argsort(d, kind="stable")
        idx, d = idx[order], d[order]
        step = np.array([0, -w, -1, 1, w], np.int64)[parent.reshape(-1)[idx]]
        src = idx + step
        outside = (src < 0) | (src >= flat.size)  # parent above the first row or below the last
        if outside.any():
            flat[idx[outside]] = n + np.arange(np.count_nonzero(outside), dtype=np.int32)
            src[outside] = idx[outside]  # keeps its own label below
        bounds = np.searchsorted(d, np.arange(1, int(d[-1]) + 2))
        for k in range(len(bounds) - 1):
            lo, hi = bounds[k], bounds[k + 1]
            if lo < hi:
                flat[idx[lo:hi]] = flat[src[lo:hi]]
    return labels


def _above(p: np.ndarray, threshold: float) -> np.ndarray:
    """bool: ``_quantize(p) > threshold`` (NaN: False), without the division: the rounded p x 254 is at least the
    first step of the 1/254 grid above the threshold."""
    grid = np.arange(255, dtype=np.float32) / np.float32(254)
    first = int(np.searchsorted(grid, np.float32(threshold), side="right"))
    q = np.multiply(p, np.float32(254), dtype=np.float32)
    np.rint(q, out=q)
    return q >= first


def _quantize(p: np.ndarray) -> np.ndarray:
    q = np.array(p, dtype=np.float32)  # a copy
    q[np.isnan(q)] = 0.0
    np.multiply(q, np.float32(254), out=q)
    np.rint(q, out=q)
    q /= np.float32(254)
    return q


class FieldSplitter(HaloRows):
    """Sink for :class:`engine.mask_stream.MaskStream`: strips of the opened mask -> the same strips with their
    :class:`SplitStrip`, handed to ``sink(row0, mask, valid, prob, split)``, exactly as :func:`split_links` on the
    whole raster would give them.

    ``prob`` arrives as float32 (n, w) extent probability, or (n, w, 2): the extent and the cut's cue (the
    boundary probability, or :func:`image_edges`); the sink gets the extent (n, w). Holds ``params.halo +
    params.label_context`` rows on each side.

    ``label_seams``: rows (numbered as the rows pushed) at which strips end and across which the strips' labels
    never look: a band of a Dask run (:mod:`engine.bands`) labels its own rows by the links within them only, as
    it traces only those (a field's pieces joined in the next band are joined by the client, across the seam).
    """

    def __init__(self, params: SplitParams, sink: Callable, strip_rows: int = 256, timer=None,
                 label_seams: tuple[int, ...] = ()):
        from contextlib import nullcontext

        super().__init__(params.halo + params.label_context, strip_rows)
        self.timer = timer or (lambda _name: nullcontext())
        self.params = params
        self.sink = sink
        self.cut_pixels = 0
        self.label_seams = tuple(sorted(label_seams))
        self._counter = RegionCounter()

    @property
    def regions(self) -> int:
        """4-connected cropland regions handed on so far (the fields there would be without the split)."""
        return self._counter.regions

    def __call__(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None) -> None:
        self.push(row0, mask, valid, np.zeros(mask.shape, np.float32) if prob is None else prob)

    def _hand_on(self, n: int) -> None:
        """Strips end at the label seams."""
        nxt = next((r for r in self.label_seams if r > self._done), None)
        super()._hand_on(n if nxt is None else min(n, nxt - self._done))

    def _strip(self, row0: int, n: int, a: int, b: int) -> None:
        mask = self._rows(a, b, 1)
        probs = self._rows(a, b, 3)
        extent = probs[..., 0] if probs.ndim == 3 else probs
        cue = probs[..., 1] if probs.ndim == 3 and probs.shape[2] > 1 else None
        boundary = cue if self.params.method == "boundary" else None
        i, h = row0 - a, mask.shape[0]
        with self.timer("split"):
            m, cut, dist, parent = _grow(mask, extent, cue, self.params)
            strip_cut = cut[i:i + n].copy()
            self.cut_pixels += int(np.count_nonzero(strip_cut))
            del cut
            # links (and outline flags) of the strip's rows need the rows next to it; labels the wider rows
            lo, hi = max(i - 1, 0), min(i + n + 1, h)
            right, down, edge = (x[i - lo:i - lo + n] for x in _links(m[lo:hi], dist[lo:hi], parent[lo:hi]))
            e = self.params.label_context
            lo, hi = max(i - e, 0), min(i + n + e, h)
            for seam in self.label_seams:  # (strips never cross one)
                if seam <= row0:
                    lo = max(lo, seam - a)
                elif seam >= row0 + n:
                    hi = min(hi, seam - a)
            labels = field_labels(m[lo:hi], dist[lo:hi], parent[lo:hi])[i - lo:i - lo + n]
            del m, dist, parent
            self._counter.add(mask[i:i + n])
        strip = SplitStrip(right, down, edge, None if boundary is None else _quantize(boundary[i:i + n]), strip_cut,
                           labels)
        self.sink(row0, mask[i:i + n], self._rows(row0, row0 + n, 2), extent[i:i + n], strip)


class RegionCounter:
    """Counts the 4-connected cropland regions of a mask fed strip by strip (what ``--split none`` would make
    fields of), holding only the last row's region ids."""

    def __init__(self) -> None:
        self.regions = 0
        self._last: np.ndarray | None = None
        self._next = 1

    def add(self, mask: np.ndarray) -> None:
        """Add the next strip: uint8/bool (h, w), nonzero = cropland."""
        import cv2

        from .vectorize import _UnionFind

        n, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        self.regions += n - 1
        offset = np.int64(self._next - 1)  # region ids run on across strips; only the edge rows need them
        top, last = (np.where(labels[r] > 0, labels[r] + offset, 0) for r in (0, -1))
        self._next += max(n - 1, 0)
        if self._last is not None:
            touching = (self._last > 0) & (top > 0)
            uf = _UnionFind()
            for a, b in set(zip(self._last[touching].tolist(), top[touching].tolist(), strict=True)):
                if uf.find(a) != uf.find(b):
                    uf.union(a, b)
                    self.regions -= 1
            if uf.parent:
                values, inverse = np.unique(last, return_inverse=True)
                last = np.array([uf.find(v) if v else 0 for v in values.tolist()], dtype=last.dtype)[inverse]
        self._last = last.copy()


class ExtentOnly:
    """Sink between :class:`engine.mask_stream.MaskStream` and a field builder when fields are not split: hands on
    the extent channel of the probability only, and counts nothing."""

    cut_pixels = 0
    regions = None

    def __init__(self, sink: Callable):
        self.sink = sink

    def __call__(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None) -> None:
        self.sink(row0, mask, valid, prob[..., 0] if prob is not None and prob.ndim == 3 else prob)

    def close(self) -> None:
        """Nothing is held."""


def field_stage(params: SplitParams | None, sink: Callable, strip_rows: int = 256, timer=None,
                label_seams: tuple[int, ...] = ()):
    """The stage between the opened mask and the field builder ``sink``: a :class:`FieldSplitter` for ``params``
    (its time under ``timer("split")`` when given; ``label_seams``: see there), or :class:`ExtentOnly` when there
    is no split. Call ``.close()`` on it after the mask stream's."""
    return ExtentOnly(sink) if params is None else FieldSplitter(params, sink, strip_rows, timer, label_seams)
