"""One huge raster on a Dask cluster, in row bands, with the same result as a run in one process.

The client plans bands of rows (:func:`plan_bands`); each band is one task running the *band plan*
(:func:`band_plan`) on a worker. A band task opens the raster itself and, through the pipeline's own pass 1
(:class:`engine.stages.Infer` with ``rows_from`` and ``whole_batches``), infers exactly the tiles of the whole
raster's grid (anchored at the raster's corner, not the band's) that blend into the rows it needs, in the very
batches a single run forms (a few tiles of a batch shared with the next band are inferred twice), and blends them
in the same order, so its probabilities are bit for bit those of a single run. Around its own
rows it takes ``2 x opening radius`` rows of context (:mod:`engine.mask_stream`) so that its opened mask is exact
too, and, when touching fields are split (:mod:`engine.split`), the split's halo beyond them, so that the split's
links on its rows are those of a single run (:func:`context_rows`); seams are placed just below a tile row's
overlap, where one tile row alone covers the context, so that each seam costs one tile row inferred twice (see
:func:`plan_bands`). A raster resampled to the model's resolution (:mod:`engine.resample`) is banded on its own
rows, each band inferring the model grid's rows under them (:func:`plan_resampled_bands`).

The band writes its rows of the mask and probability to part rasters beside the outputs, vectorises its rows and
returns the fields that lie wholly inside it (through the minimum-area and hole filters, with area and perimeter,
as map-coordinate WKB) plus the *open* fields that touch its top or bottom row, as exact pixel-coordinate rings with
the labels of the pixels on those rows (and, with a split, whether the split links its last row to the next band's
first). The client joins open fields whose pixels meet across a seam (4-connected, and linked by the split when
there is one, as the vectoriser joins strips), merges them with the engine's stitcher
(:func:`engine.vectorize.merge_fragments`, or GEOS's union where the split cut two of them apart in one band),
filters them, and writes one GeoPackage, one mask and one probability raster. The rasters are assembled from the
parts in band order as the bands come in (the mask only when no filter can change it); when a filter dropped a
field or filled a hole, the changes are burnt into the mask (read through a VRT of the parts) as the single run's
third pass does.

The result equals the single run's: mask and probability rasters equal value for value, the same fields with the
same outlines and ids, the same split summary, areas equal to rounding (sums taken in another order, ~1e-15
relative).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .areas import area_model
from .context import Callbacks, RunContext, Tiling, prepare
from .errors import ClusterError, InputError
from .fields import spool_columns
from .mask_stream import MaskStream
from .masks import NODATA as MASK_NODATA
from .masks import encode
from .options import ExtractOptions, OutputPaths
from .plans import Plan
from .resample import ResamplePlan
from .result import ExtractionResult
from .runtime import StageTimer
from .split import SplitParams, SplitStrip, cue_name, field_stage
from .stages import PROB_NODATA, PROB_SCALE_U8, BurnChanges, Infer, RequireValid, ResampledInfer, WriteFields
from .stages import Band as Rows
from .tiling import TileGrid
from .vectorize import (
    Field,
    StripVectorizer,
    _UnionFind,
    filter_field,
    merge_fragments,
    simplify_fields,
    union_fragments,
)
from .workers import distributed_module, local_threads, worker_model


@dataclass(frozen=True)
class Band:
    """One band task: it finishes rows ``row0 .. row1`` (exclusive); it needs the thresholded mask of rows
    ``need0 .. need1`` (its rows and the context of the opening and the split) and so infers tile rows
    ``tile_row0 .. tile_row1`` (inclusive) of the inference grid, handing on that grid's rows from ``infer_from``
    (None = ``need0``; a resampled run infers on the model's grid, :func:`plan_resampled_bands`)."""

    index: int
    row0: int
    row1: int
    need0: int
    need1: int
    tile_row0: int
    tile_row1: int
    infer_from: int | None = None


def context_rows(opening_px: int, split: SplitParams | None) -> int:
    """Rows of context a band needs on each side of its rows for an exact result: the opening's ``2 x opening_px``
    and, when fields are split, the split's halo (:attr:`engine.split.SplitParams.halo`) on the opened mask. (Not
    the rows the split's field labels look at, ``label_context``: a band's labels stop at its own rows, see
    :class:`engine.split.FieldSplitter`'s ``label_seams``.)"""
    return 2 * opening_px + (split.halo if split is not None else 0)


def _tile_rows(origins: list[int], tile: int, a: int, b: int) -> tuple[int, int]:
    """The first and last tile rows (of a grid with tile rows at ``origins``) that touch rows ``a .. b``."""
    first = min(i for i, o in enumerate(origins) if o + tile > a)
    last = max(i for i, o in enumerate(origins) if o <= b - 1)
    return first, last


def plan_bands(grid: TileGrid, opening_px: int, band_rows: int, halo: int = 0) -> list[Band]:
    """Row bands of about ``band_rows`` rows over ``grid``'s raster; each needs ``r = 2 x opening_px + halo`` rows
    of context on each side (``halo``: the split's, see :func:`context_rows`).

    A seam is placed ``overlap + r`` rows below the top of a tile row, when that lies above the next tile row:
    the rows on both sides that the two bands need are then covered by that tile row alone, which both bands
    infer; elsewhere (large overlap or context) it sits at the top of a tile row. Whatever the seams, each band
    infers every tile row that touches a row it needs, from the first that does, so its blended rows are exact.
    """
    origins, h, t = grid.row_origins, grid.height, grid.tile
    r2 = 2 * opening_px + halo
    offset = grid.overlap + r2 if grid.overlap + 2 * r2 <= grid.stride else 0
    every = max(1, round(band_rows / grid.stride))
    seams = [origins[k] + offset for k in range(every, len(origins), every) if 0 < origins[k] + offset < h]
    edges = [0, *seams, h]
    bands = []
    for k in range(len(edges) - 1):
        row0, row1 = edges[k], edges[k + 1]
        need0, need1 = max(row0 - r2, 0), min(row1 + r2, h)
        bands.append(Band(k, row0, row1, need0, need1, *_tile_rows(origins, t, need0, need1)))
    return bands


def plan_resampled_bands(grid: TileGrid, plan: ResamplePlan, height: int, context: int, band_rows: int
                         ) -> list[Band]:
    """Row bands of about ``band_rows`` rows of a resampled raster (``height`` rows on its own grid; ``grid``:
    the tiles on the model's grid, :mod:`engine.resample`); ``context``: rows of context on each side
    (:func:`context_rows`).

    The bands are rows of the raster's own grid, where the mask, the split and the fields are made. A band reads
    its probabilities back from the model grid in the whole run's strips (``STRIP_ROWS`` rows from the top) that
    overlap the rows it needs, so it needs the model grid's rows under those strips, with a margin for the
    bilinear kernel GDAL widens when it reduces (and for the source window it pads), exact; it infers the model
    grid's tile rows that touch them. Seams lie at the tops of the model grid's tile rows.
    """
    from .runtime import STRIP_ROWS

    factor = plan.model_m / plan.native_m  # a model pixel in native pixels, as engine.resample plans the grid
    origins, t = grid.row_origins, grid.tile
    every = max(1, round(band_rows / (grid.stride * factor)))
    seams = sorted({round(origins[k] * factor) for k in range(every, len(origins), every)} - {0})
    edges = [0, *[r for r in seams if r < height], height]
    margin = math.ceil(4 * max(1.0, 1.0 / factor)) + 8  # model rows
    bands = []
    for k in range(len(edges) - 1):
        row0, row1 = edges[k], edges[k + 1]
        need0, need1 = max(row0 - context, 0), min(row1 + context, height)
        s0, s1 = need0 // STRIP_ROWS * STRIP_ROWS, min(-(-need1 // STRIP_ROWS) * STRIP_ROWS, height)
        m0 = max(math.floor(s0 / factor) - margin, 0)
        m1 = min(math.ceil(s1 / factor) + margin, grid.height)
        bands.append(Band(k, row0, row1, need0, need1, *_tile_rows(origins, t, m0, m1), infer_from=m0))
    return bands


def default_band_rows(grid: TileGrid, workers: int, scale: float = 1.0) -> int:
    """Band height for ``workers`` workers: whole tile rows, about two bands per worker (each seam infers one tile
    row twice, so fewer, taller bands waste less; two per worker leave room to balance them). ``scale``: rows of
    the raster per row of ``grid`` (a resampled run's model grid)."""
    tile_rows = len(grid.row_origins)
    return round(grid.stride * scale * max(1, math.ceil(tile_rows / (2 * max(workers, 1)))))


@dataclass(frozen=True)
class Settings:
    """What the client resolves once for every band (:func:`engine.context.prepare`) and what to write."""

    tiling: Tiling
    threshold: float
    stretch: object  # engine.normalize.Stretch or None
    filtered: bool  # --min-area / --max-hole on (with known areas)
    quantized: bool  # field means from the uint8 probability, as the single run's filtered plan reads them
    mask: bool  # write mask parts (the mask is asked for, or the filters may change it)
    probability: bool
    split: SplitParams | None = None  # how touching fields are split (None: not at all)
    resample: ResamplePlan | None = None  # the model-grid detour (None: none)

    @classmethod
    def of(cls, ctx: RunContext, outputs: OutputPaths) -> Settings:
        """The settings of the run ``ctx`` (from :func:`engine.context.prepare`) writing ``outputs``."""
        return cls(ctx.tiling, ctx.threshold, ctx.stretch, ctx.filtered,
                   quantized=ctx.filtered and outputs.probability is None,
                   mask=outputs.mask is not None or ctx.filtered, probability=outputs.probability is not None,
                   split=ctx.split, resample=ctx.resample)


@dataclass
class BandResult:
    """What a band task returns (plain data, pickled back to the client)."""

    index: int
    valid_pixels: int = 0
    cropland_pixels: int = 0
    valid_area: float = 0.0
    cropland_area: float = 0.0
    # FieldSpool.add_many's arguments (engine.fields.spool_columns) for the fields wholly inside the band
    records: list = field(default_factory=list)
    held: list = field(default_factory=list)  # when simplifying: (wkb pixel polygon, prob_sum, pixels, edge_sum, n)
    changes: list = field(default_factory=list)  # (wkb pixel polygon, 0 = dropped | 1 = filled)
    # (points (n, 2) int32 closed rings, sizes, prob_sum, pixels, edge_sum or None, edge_pixels)
    open_fields: list = field(default_factory=list)
    top_labels: np.ndarray | None = None  # (width,) int32: 1 + index in open_fields of the field on row0, 0 = none
    bottom_labels: np.ndarray | None = None  # the same on row1 - 1
    bottom_down: np.ndarray | None = None  # split only: (width,) bool, row1 - 1 linked to row1 (the next band)
    traced: int = 0  # split only: fields traced wholly inside the band (before the filters)
    cut_pixels: int = 0  # split only: pixels of the band's rows cut by the split
    regions: int = 0  # split only: 4-connected cropland regions of the band's rows
    top_regions: np.ndarray | None = None  # split only: (width,) int32 region id on row0, 0 = none
    bottom_regions: np.ndarray | None = None  # the same on row1 - 1
    parts: dict = field(default_factory=dict)  # kind -> path of its part raster
    seconds: dict = field(default_factory=dict)
    device: str = ""


# ---- a band, on a worker -----------------------------------------------------------------------------------------


def run_band(path: str, model, options: ExtractOptions, settings: Settings, band: Band, work_dir: str,
             progress=None) -> BandResult:
    """Worker task: the band plan (:func:`band_plan`) over one band; see the module docstring.

    Part rasters go to ``work_dir`` (shared with the client) under names fixed by the band, written under
    temporary names first, so a task run again after its worker died writes the same files.
    """
    import tempfile

    from .aoi import restrict
    from .pipeline import open_source
    from .runtime import bounded_gdal_cache, gdal_cache_bytes

    if not Path(work_dir).is_dir():
        import socket

        raise ClusterError(f"The band folder {work_dir} made by the client is not visible on the worker "
                           f"{socket.gethostname()}: the input and outputs must be on storage shared by the client "
                           "and every worker (docs/SCALE.md).")
    ens = worker_model(model, options)
    ens.batch_size = settings.tiling.batch_size
    with restrict(open_source(Path(path), ens, options), options.aoi) as source, \
            bounded_gdal_cache(gdal_cache_bytes(source, settings.tiling.tile)), \
            tempfile.TemporaryDirectory(prefix="cropland-band-") as tmp:  # the model-grid spool of a resampled run
        area = area_model(source.crs, source.transform, source.height, options.pixel_size_m)
        ctx = RunContext(source, ens, options, settings.tiling, area, StageTimer(), Callbacks.of(progress=progress),
                         workdir=Path(tmp), threshold=settings.threshold, stretch=settings.stretch,
                         split=settings.split, resample=settings.resample)
        sink = BandSink(ctx, settings, band, Path(work_dir))
        band_plan(ctx, sink).run(ctx)
        return sink.result


def band_plan(ctx: RunContext, sink: BandSink) -> Plan:
    """The plan of one band: pass 1 over the tile rows the band needs, in the whole run's batches, into ``sink``
    (counts, part rasters, opening, split, fields), through the model's grid when the run is resampled; then the
    band's fields, filtered and measured."""
    b = sink.band
    tile_rows = range(b.tile_row0, b.tile_row1 + 1)
    if ctx.resample is not None:
        infer = ResampledInfer([sink], tile_rows, rows_from=b.infer_from, whole_batches=True,
                               native_rows=(b.need0, b.need1))
    else:
        infer = Infer([sink], tile_rows, rows_from=b.need0 if b.infer_from is None else b.infer_from,
                      whole_batches=True)
    return Plan("band", [infer, FinishBand(sink)])


class BandSink:
    """Row sink of a band's pass 1 (:class:`engine.stages.Infer` hands on rows from ``band.need0``): counts the
    valid pixels of the band's own rows and writes their probability part, thresholds and opens the rows it needs
    (the opening's context included), splits touching fields on the opened rows the split needs (its halo
    included), then, on the band's own rows, counts cropland, writes the mask part and vectorises.
    :meth:`finish` filters and measures the fields wholly inside the band and labels the open ones.

    The split sees exactly what the single run's split sees: the cue channel (the boundary output or the image's
    edges) beside the probability, read as the single run's filtered plan reads them back from its temporary
    rasters (uint8, or float32 with nodata -1) when the filters are on."""

    def __init__(self, ctx: RunContext, settings: Settings, band: Band, work: Path):
        self.ctx, self.s, self.band, self.work = ctx, settings, band, work
        self.source, self.counter, self.timer = ctx.source, ctx.counter, ctx.timer
        self.vec = StripVectorizer(ctx.source.width)
        self.fields: list[Field] = []  # in raster coordinates
        self.result = BandResult(band.index)
        self.cue = cue_name(settings.split)
        self._stack = contextlib.ExitStack()
        self.writers = {kind: self._stack.enter_context(self._part_writer(kind))
                        for kind in ("mask", "probability") if getattr(settings, kind)}
        halo = settings.split.halo if settings.split is not None else 0
        # opened rows the split needs (exact: they lie 2 x opening_px inside need0 .. need1 or on the raster's edge)
        self.split_rows = (max(band.row0 - halo, 0), min(band.row1 + halo, ctx.source.height))
        self.regions = _Regions() if settings.split is not None else None
        # the split labels the band's own rows by their links alone (the rows around them are not traced here)
        x0 = self.split_rows[0]
        self.split = field_stage(settings.split, self._own_rows, timer=ctx.timer,
                                 label_seams=(band.row0 - x0, band.row1 - x0))
        self.stream = MaskStream(ctx.options.opening_px, self._opened)

    def __call__(self, rows: Rows) -> None:
        b, s = self.band, self.s
        if rows.row0 >= b.need1:
            return
        n = min(rows.prob.shape[0], b.need1 - rows.row0)
        prob, valid, mask = rows.prob[:n], rows.valid[:n], rows.mask[:n]
        c, d = max(rows.row0, b.row0), min(rows.row0 + n, b.row1)
        if c < d:
            own = slice(c - rows.row0, d - rows.row0)
            self.counter.add(c, valid[own])
            if "probability" in self.writers:
                with self.timer("write_raster"):
                    self.writers["probability"].write(c - b.row0, np.where(valid[own], prob[own], PROB_NODATA)
                                                      .astype(np.float32))
        if s.quantized:  # the single run's filtered plan reads the fields' means from a uint8 copy
            prob = _u8(prob, valid)
        elif s.filtered:  # ... or from the float32 probability raster, nodata -1
            prob = np.where(valid, prob, np.float32(PROB_NODATA))
        if self.cue is not None:
            cue = rows.extras[self.cue][:n]
            prob = np.stack([prob, _u8(np.nan_to_num(cue), valid) if s.filtered else cue], axis=-1)
        self.stream.push(rows.row0 - b.need0, mask.astype(np.uint8), valid, prob)

    def close(self) -> None:
        """After the last rows: the opening's and the split's last strips, the last fields, the part rasters
        closed."""
        self.stream.close()
        with self.timer("vectorize"):
            self.split.close()
        self._take(self.vec.fields())
        for writer in self.writers.values():
            writer.close()
        self._stack.close()

    @contextlib.contextmanager
    def _part_writer(self, kind: str):
        """A RowWriter onto this band's part raster of ``kind``, moved to its fixed name once complete."""
        import rasterio
        from affine import Affine

        from .outputs import part_path
        from .writers import RowWriter, raster_profile

        b = self.band
        final = self.work / f"{kind}-{b.index:05d}.tif"
        part = part_path(final)
        profile = raster_profile(self.source)
        profile.update(height=b.row1 - b.row0, transform=self.source.transform * Affine.translation(0, b.row0))
        dtype, nodata = ("uint8", MASK_NODATA) if kind == "mask" else ("float32", PROB_NODATA)
        try:
            with rasterio.open(part, "w", **profile, dtype=dtype, nodata=nodata) as ds:
                yield RowWriter(ds)
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        self.result.parts[kind] = str(final)

    def _opened(self, rel0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None) -> None:
        """Sink of the opening: strips of the opened mask; hands on to the split (or straight to the band's own
        rows without one) those the split needs."""
        x0, x1 = self.split_rows
        r0 = rel0 + self.band.need0
        a, z = max(r0, x0), min(r0 + mask.shape[0], x1)
        if a >= z:
            return
        sl = slice(a - r0, z - r0)
        self.split(a - x0, mask[sl], valid[sl], prob[sl] if prob is not None else None)

    def _own_rows(self, rel0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None,
                  split: SplitStrip | None = None) -> None:
        """Sink of the split: strips of the opened mask (with their links); keeps those of this band's own rows."""
        b = self.band
        r0 = rel0 + self.split_rows[0]
        a, z = max(r0, b.row0), min(r0 + mask.shape[0], b.row1)
        if a >= z:
            return
        sl = slice(a - r0, z - r0)
        mask, valid, prob = mask[sl], valid[sl], prob[sl] if prob is not None else None
        if split is not None:
            split = split.rows(sl.start, sl.stop)
            self.result.cut_pixels += int(split.cut.sum())
            if z == b.row1:
                self.result.bottom_down = split.down[-1].copy()
        self.counter.add_cropland(a, mask.astype(bool))
        if "mask" in self.writers:
            with self.timer("write_raster"):
                self.writers["mask"].write(a - b.row0, encode(mask, valid))
        with self.timer("vectorize"):
            if self.regions is not None:
                self.regions.add(mask)
            self.vec.add(a - b.row0, mask, prob, split)
            self._take(self.vec.pop_finished())

    def _take(self, fields: list[Field]) -> None:
        import shapely

        shift = self.band.row0
        for f in fields:
            poly = shapely.transform(f.polygon, lambda xy: xy + np.array([0.0, shift])) if shift else f.polygon
            self.fields.append(Field(poly, f.prob_sum, f.pixels, f.edge_sum, f.edge_pixels))

    def finish(self) -> None:
        """Filter and measure the fields wholly inside the band; label the open ones on the band's edge rows."""
        import shapely

        b, h, r, opts = self.band, self.source.height, self.result, self.ctx.options
        closed, open_ = [], []
        for f in self.fields:
            _, y0, _, y1 = f.polygon.bounds
            (open_ if (b.row0 > 0 and y0 == b.row0) or (b.row1 < h and y1 == b.row1) else closed).append(f)
        r.traced = len(closed)
        hole_has_nodata = _HoleChecker(r.parts["mask"], b.row0) if self.s.filtered else None
        with self.timer("vectorize"), contextlib.closing(hole_has_nodata or _HoleChecker(None, 0)):
            kept_fields = []
            for f in closed:
                kept, change = filter_field(f, self.ctx.area, opts.min_area_m2, opts.max_hole_m2, hole_has_nodata)
                r.changes.extend((shapely.to_wkb(g), v) for g, v in change)
                if kept is None:
                    continue
                if opts.simplify_m > 0:
                    r.held.append((shapely.to_wkb(kept.polygon), kept.prob_sum, kept.pixels, kept.edge_sum,
                                   kept.edge_pixels))
                else:
                    kept_fields.append(kept)
            if kept_fields:
                r.records.append(spool_columns(kept_fields, self.ctx.area, self.source.transform))
            for f in open_:
                rings = [f.polygon.exterior, *f.polygon.interiors]
                points = np.concatenate([np.asarray(x.coords) for x in rings]).astype(np.int32)
                sizes = np.array([len(x.coords) for x in rings], dtype=np.int32)
                r.open_fields.append((points, sizes, f.prob_sum, f.pixels, f.edge_sum, f.edge_pixels))
            polys = [f.polygon for f in open_]
            if b.row0 > 0:
                r.top_labels = _row_labels(polys, b.row0, self.source.width)
            if b.row1 < h:
                r.bottom_labels = _row_labels(polys, b.row1 - 1, self.source.width)
        if self.regions is not None:
            r.regions, r.top_regions, r.bottom_regions = self.regions.result()
        c = self.counter
        r.valid_pixels, r.cropland_pixels, r.valid_area, r.cropland_area = \
            c.valid_pixels, c.cropland_pixels, c.valid_area, c.cropland_area
        r.seconds = dict(self.timer.seconds)
        r.device = self.ctx.ensemble.device


def _u8(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``prob`` (0..1) as the single run's filtered plan reads it back from a uint8 raster (p x 254, 255 where
    not valid, divided by 254 again)."""
    return np.where(valid, np.rint(prob * PROB_SCALE_U8), MASK_NODATA).astype(np.uint8) \
        .astype(np.float32) / np.float32(PROB_SCALE_U8)


class _Regions:
    """The 4-connected cropland regions of a band's rows, fed strip by strip (what :class:`engine.split.
    RegionCounter` counts in a single run), with the regions' ids on the band's first and last rows, so that the
    client can join regions across seams."""

    def __init__(self) -> None:
        self._uf = _UnionFind()
        self._ids: set[int] = set()
        self._first: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._next = 1

    def add(self, mask: np.ndarray) -> None:
        """The next strip: bool/uint8 (h, w), nonzero = cropland."""
        import cv2

        n, labels = cv2.connectedComponents((np.asarray(mask) > 0).astype(np.uint8), connectivity=4,
                                            ltype=cv2.CV_32S)
        ids = np.where(labels > 0, labels + (self._next - 1), 0)
        self._ids.update(range(self._next, self._next + n - 1))
        self._next += max(n - 1, 0)
        if self._first is None:
            self._first = ids[0].copy()
        if self._last is not None:
            touching = (self._last > 0) & (ids[0] > 0)
            for a, c in set(zip(self._last[touching].tolist(), ids[0][touching].tolist(), strict=True)):
                self._uf.union(a, c)
        self._last = ids[-1].copy()

    def result(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """(regions, region ids of the first row, of the last row); ids are the regions' roots."""
        roots = {self._uf.find(i) for i in self._ids}

        def resolve(row):
            return None if row is None else np.array([self._uf.find(v) if v else 0 for v in row.tolist()],
                                                     dtype=np.int64)

        return len(roots), resolve(self._first), resolve(self._last)


@dataclass
class FinishBand:
    """The band plan's last stage: :meth:`BandSink.finish`."""

    sink: BandSink

    def run(self, ctx: RunContext) -> None:
        self.sink.finish()


def _row_labels(polys: list, row: int, width: int) -> np.ndarray:
    """(width,) int32: 1 + the index of the polygon covering each pixel of raster row ``row``, 0 = none."""
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    hits = [(shapely.clip_by_rect(p, -1, row - 1, width + 1, row + 2), k + 1) for k, p in enumerate(polys)
            if p.bounds[1] <= row < p.bounds[3]]
    hits = [(g, v) for g, v in hits if not g.is_empty]
    if not hits:
        return np.zeros(width, np.int32)
    return rasterize(hits, out_shape=(1, width), transform=Affine.translation(0, row), fill=0, dtype="int32")[0]


class _HoleChecker:
    """``hole_has_nodata(hole_px) -> bool`` over a mask raster (255 = nodata) whose first row is raster row
    ``row0`` (a band's part or the VRT of all parts), as engine.pipeline checks holes against its raw mask (the
    opened mask has its nodata in the same places). Opened on first use; :meth:`close` when done."""

    def __init__(self, mask_path, row0: int):
        self.path, self.row0, self._ds = mask_path, row0, None

    def __call__(self, hole) -> bool:
        import rasterio
        from affine import Affine
        from rasterio.features import rasterize
        from rasterio.windows import Window as RioWindow

        if self._ds is None:
            self._ds = rasterio.open(self.path)
        x0, y0, x1, y1 = (int(v) for v in hole.bounds)
        raw = self._ds.read(1, window=RioWindow(x0, y0 - self.row0, x1 - x0, y1 - y0))
        inside = rasterize([(hole, 1)], out_shape=raw.shape, transform=Affine.translation(x0, y0), fill=0,
                           dtype="uint8") > 0
        return bool((raw[inside] == MASK_NODATA).any())

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()


# ---- the client: plan, submit, stitch, write ---------------------------------------------------------------------


def _write_vrt(path: Path, parts: list[tuple[str, int, int]], source, dtype: str, nodata: float) -> Path:
    """A GDAL VRT mosaic of band part rasters ``(path, row0, rows)`` on ``source``'s grid (written by hand:
    rasterio has no BuildVRT, and this is a dozen lines of GDAL's documented VRT format)."""
    gdal_type = {"uint8": "Byte", "float32": "Float32"}[dtype]
    w = source.width
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(p)}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{n}"/><DstRect xOff="0" yOff="{r0}" xSize="{w}" '
        f'ySize="{n}"/></SimpleSource>' for p, r0, n in parts)
    srs = f"<SRS>{escape(source.crs.to_wkt())}</SRS>" if source.crs else ""
    gt = ", ".join(repr(v) for v in source.transform.to_gdal())
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{source.height}">{srs}<GeoTransform>{gt}'
                    f'</GeoTransform><VRTRasterBand dataType="{gdal_type}" band="1"><NoDataValue>{nodata!r}'
                    f'</NoDataValue>{sources}</VRTRasterBand></VRTDataset>', encoding="utf-8")
    return path


class _Assembler:
    """Writes one output raster (a GeoTIFF made as the pipeline makes its outputs) from the bands' part rasters,
    appended in band order, strip by strip; while bands are still running when it can (the probability always,
    the mask when no filter can change it), so that little of it is left for the end."""

    def __init__(self, path: Path, source, dtype: str, nodata: float):
        import rasterio

        from .writers import RowWriter, raster_profile

        self.width = source.width
        self._ds = rasterio.open(path, "w", **raster_profile(source), dtype=dtype, nodata=nodata)
        self._writer = RowWriter(self._ds)

    def append(self, part: str, row0: int) -> None:
        """Copy the part raster ``part`` (whose first row is raster row ``row0``) in."""
        import rasterio
        from rasterio.windows import Window as RioWindow

        from .runtime import iter_strips

        with rasterio.open(part) as src:
            for r, n in iter_strips(src.height, 1024):
                self._writer.write(row0 + r, src.read(1, window=RioWindow(0, r, self.width, n)))

    def close(self) -> None:
        """Write what is buffered and close the file (safe to call twice)."""
        if self._ds.closed:
            return
        try:
            self._writer.close()
        finally:
            self._ds.close()


def _open_groups(results: list[BandResult]) -> list[list[tuple]]:
    """Open fields of consecutive bands grouped where their pixels meet across a seam (4-connected, as the
    vectoriser joins strips; when fields are split, only where the split links the two rows): one list of
    ``(band index, points, sizes, prob_sum, pixels, edge_sum, edge_pixels)`` per whole field, top band first."""
    uf = _UnionFind()
    ids: dict[tuple[int, int], int] = {}
    for r in results:
        for k in range(len(r.open_fields)):
            ids[(r.index, k)] = len(ids)
    for upper, lower in itertools.pairwise(results):
        if upper.bottom_labels is None or lower.top_labels is None:
            continue
        both = (upper.bottom_labels > 0) & (lower.top_labels > 0)
        if upper.bottom_down is not None:
            both &= upper.bottom_down
        for a, c in set(zip(upper.bottom_labels[both].tolist(), lower.top_labels[both].tolist(), strict=True)):
            uf.union(ids[(upper.index, a - 1)], ids[(lower.index, c - 1)])
    groups: dict[int, list[tuple]] = {}
    for r in results:
        for k, frag in enumerate(r.open_fields):
            groups.setdefault(uf.find(ids[(r.index, k)]), []).append((r.index, *frag))
    return list(groups.values())


def _regions(results: list[BandResult]) -> int:
    """The 4-connected cropland regions of the whole raster from the bands' counts and their regions on the rows
    either side of each seam."""
    uf, ids = _UnionFind(), {}
    joined = 0
    for upper, lower in itertools.pairwise(results):
        both = (upper.bottom_regions > 0) & (lower.top_regions > 0)
        for a, c in set(zip(upper.bottom_regions[both].tolist(), lower.top_regions[both].tolist(), strict=True)):
            x = uf.find(ids.setdefault((upper.index, a), len(ids)))
            y = uf.find(ids.setdefault((lower.index, c), len(ids)))
            if x != y:
                uf.union(x, y)
                joined += 1
    return sum(r.regions for r in results) - joined


def _merge_group(group: list[tuple], seams: tuple[float, ...], split: bool):
    """One field's open fragments (from :func:`_open_groups`) -> its pixel-space polygon, as the single run's
    vectoriser merges fragments (:meth:`engine.vectorize.StripVectorizer.pop_finished`): GEOS's union when fields
    are split and two fragments come from one band (cut apart there, they may touch along any edge), else the
    seam stitcher."""
    from .vectorize import _polygon

    if len(group) == 1:
        return _polygon(group[0][1], group[0][2])
    fragments = [(g[1], g[2]) for g in group]
    if split and len({g[0] for g in group}) < len(group):
        return union_fragments(fragments)
    return merge_fragments(fragments, seams)


def _finish(ctx: RunContext, bands: list[Band], results: list[BandResult], settings: Settings, work: Path,
            parts: dict, assemblers: dict) -> None:
    """Client side, once every band is in: sum the counts, stitch, filter and spool the open fields (simplify all
    when asked), and write the mask and probability from the bands' parts, burning in the filters' changes as
    the single run's filtered plan does (:class:`engine.stages.BurnChanges`, over the opened mask: no opening)."""
    import shapely

    source, opts, area = ctx.source, ctx.options, ctx.area
    for r in results:
        ctx.counter.valid_pixels += r.valid_pixels
        ctx.counter.cropland_pixels += r.cropland_pixels
        ctx.counter.valid_area += r.valid_area
        ctx.counter.cropland_area += r.cropland_area
    RequireValid().run(ctx)
    # the filters look into holes for nodata, and burn their changes, over the whole opened mask
    mask_vrt = _write_vrt(work / "mask.vrt", [(r.parts["mask"], b.row0, b.row1 - b.row0)
                                              for b, r in zip(bands, results, strict=True)],
                          source, "uint8", MASK_NODATA) if settings.filtered else None
    ctx.changes = [(shapely.from_wkb(g), v) for r in results for g, v in r.changes]
    held = [Field(shapely.from_wkb(g), *rest) for r in results for g, *rest in r.held]
    seams = tuple(float(b.row0) for b in bands[1:])
    hole_has_nodata = _HoleChecker(mask_vrt, 0) if settings.filtered else None
    split = settings.split is not None
    groups = _open_groups(results)
    with ctx.timer("stitch"), contextlib.closing(hole_has_nodata or _HoleChecker(None, 0)):
        kept_fields = []
        for group in groups:
            poly = _merge_group(group, seams, split)
            edge = None if group[0][5] is None else sum(g[5] for g in group)
            whole = Field(poly, sum(g[3] for g in group), sum(g[4] for g in group), edge, sum(g[6] for g in group))
            kept, change = filter_field(whole, area, opts.min_area_m2, opts.max_hole_m2, hole_has_nodata)
            ctx.changes.extend(change)
            if kept is None:
                continue
            (held if opts.simplify_m > 0 else kept_fields).append(kept)
        if kept_fields:
            ctx.spool.add_many(*spool_columns(kept_fields, area, source.transform))
        if held:
            tolerance_px = opts.simplify_m / (area.pixel_size_m or 1.0)
            polys = simplify_fields([f.polygon for f in held], tolerance_px, source.width, source.height)
            ctx.spool.add_many(*spool_columns(held, area, source.transform, polys))
    if split:  # what engine.stages.split_summary reports for a single run
        traced, regions = sum(r.traced for r in results) + len(groups), _regions(results)
        ctx.split_info.update(cut_pixels=sum(r.cut_pixels for r in results), regions=regions, fields_traced=traced,
                              fields_added_by_split=traced - regions)
    with ctx.timer("assemble_rasters"):
        for assembler in assemblers.values():  # filled as the bands came in
            assembler.close()
        if ctx.changes:
            BurnChanges(mask_vrt, parts.get("mask")).run(
                dataclasses.replace(ctx, options=dataclasses.replace(opts, opening_px=0)))
        elif "mask" in parts and "mask" not in assemblers:
            mask = _Assembler(parts["mask"], source, "uint8", MASK_NODATA)
            try:
                for b, r in zip(bands, results, strict=True):
                    mask.append(r.parts["mask"], b.row0)
            finally:
                mask.close()


def extract_bands(client, input_path: str | Path, model=None, outputs: OutputPaths | None = None,
                  options: ExtractOptions | None = None, band_rows: int | None = None, keep_fields: bool = False,
                  show_bar: bool = False, log=None, task=run_band) -> ExtractionResult:
    """Extract cropland from one raster on a Dask cluster, in row bands; the same outputs as
    :func:`engine.api.extract` in one process (see the module docstring).

    Args:
        client: a ``distributed.Client``; input_path, model: paths the workers (and this client) can open.
        outputs: files to write, on storage the workers share with the client: the bands' part rasters go to a
            folder beside the first raster or vector output (else the system's temporary folder, which only a
            local cluster shares), deleted at the end.
        band_rows: rows per band (rounded to whole tile rows); None = :func:`default_band_rows` for the workers
            connected now (give it when workers are still joining, e.g. a SLURM cluster scaling up).
        keep_fields: keep every field (with geometry) in the result.
        task: the worker function (tests wrap :func:`run_band`).

    Returns:
        :class:`ExtractionResult` as from a single run; ``stage_seconds`` sums the bands' stages (worker time)
        and adds the client's (``stitch``, ``assemble_rasters``, ``write_vector``).

    Raises:
        InputError, ModelError, OutputError (before any task starts); ClusterError when a band's worker died
        more often than Dask allows.
    """
    import tempfile

    from tqdm import tqdm

    from .aoi import restrict
    from .ensemble import load_ensemble
    from .outputs import check_outputs, commit, discard, make_folders, part_path, remove_folders
    from .pipeline import _result, open_source
    from .report import write_report

    distributed = distributed_module()
    if band_rows is not None and band_rows < 1:
        raise InputError(f"band rows must be at least 1, got {band_rows}.")
    start = time.perf_counter()
    options = local_threads(client, options or ExtractOptions())
    outputs = outputs or OutputPaths()
    input_path = Path(input_path)
    check_outputs(outputs, [input_path])
    model = str(model) if model is not None else None
    ens = load_ensemble(model, dataclasses.replace(options, threads=1), log)
    with restrict(open_source(input_path, ens, options), options.aoi, log) as source:  # the AOI's window
        ctx = prepare(source, ens, options, Callbacks.of(log=log))
        settings = Settings.of(ctx, outputs)
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        context = context_rows(options.opening_px, ctx.split)
        if ctx.resample is not None:  # inference on the model's grid, bands of the raster's own rows
            grid = ctx.tiling.grid(ctx.resample.height, ctx.resample.width)
            scale = source.height / ctx.resample.height
            bands = plan_resampled_bands(grid, ctx.resample, source.height, context,
                                         band_rows or default_band_rows(grid, workers, scale))
        else:
            grid = ctx.tiling.grid(source.height, source.width)
            bands = plan_bands(grid, options.opening_px, band_rows or default_band_rows(grid, workers),
                               context - 2 * options.opening_px)
        ctx.callbacks.log(f"{input_path.name}: {source.width} x {source.height} px in {len(bands)} band(s) of up "
                          f"to {max(b.row1 - b.row0 for b in bands)} rows on {workers} worker(s).")
        parts = {kind: part_path(path) for kind, path in outputs.items() if kind != "report"}
        created = make_folders(outputs)
        anchor = next((path for kind, path in outputs.items() if kind != "report"), None)
        work = (anchor.parent if anchor else Path(tempfile.gettempdir())) / \
            f".{input_path.stem}.bands-{uuid.uuid4().hex[:12]}"
        futures: list = []
        device = ens.device
        assemblers: dict[str, _Assembler] = {}
        try:
            work.mkdir()
            if "probability" in parts:
                assemblers["probability"] = _Assembler(parts["probability"], source, "float32", PROB_NODATA)
            if "mask" in parts and not settings.filtered:  # without filters the bands' masks are final
                assemblers["mask"] = _Assembler(parts["mask"], source, "uint8", MASK_NODATA)
            appended = 0
            futures = [client.submit(task, str(input_path), model, options, settings, band, str(work),
                                     key=f"band-{band.index}-{work.name}", pure=False) for band in bands]
            order = {f.key: k for k, f in enumerate(futures)}
            results: list = [None] * len(bands)
            with tempfile.TemporaryDirectory(prefix="cropland-") as tmp, \
                    tqdm(total=len(bands), unit="band", disable=not show_bar, file=sys.stderr, leave=False) as bar:
                ctx.begin(Path(tmp))
                try:
                    for future in distributed.as_completed(futures):
                        k = order[future.key]
                        try:
                            r = future.result()
                        except distributed.KilledWorker as exc:
                            raise ClusterError(f"{input_path.name}: the worker running band {k} (rows "
                                               f"{bands[k].row0}-{bands[k].row1}) died too often ({exc}).") from None
                        for columns in r.records:
                            ctx.spool.add_many(*columns)
                        r.records = []
                        device = r.device or device
                        for name, seconds in r.seconds.items():
                            ctx.timer.seconds[name] = ctx.timer.seconds.get(name, 0.0) + seconds
                        results[k] = r
                        with ctx.timer("assemble_rasters"):
                            while appended < len(bands) and results[appended] is not None:
                                for kind, assembler in assemblers.items():
                                    assembler.append(results[appended].parts[kind], bands[appended].row0)
                                appended += 1
                        bar.update(1)
                    _finish(ctx, bands, results, settings, work, parts, assemblers)
                    WriteFields(parts.get("vector"), keep_fields).run(ctx)
                finally:
                    ctx.close()
            for kind, part in parts.items():
                commit(part, getattr(outputs, kind))
        except BaseException:
            client.cancel(futures)
            for assembler in assemblers.values():
                assembler.close()
            for part in parts.values():
                discard(part)
            shutil.rmtree(work, ignore_errors=True)  # before the folders it lies in
            remove_folders(created)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    result = _result(ctx, outputs, start)
    result.device = f"{device}; Dask, {workers} worker(s), {len(bands)} bands"
    if outputs.report is not None:
        write_report(outputs.report, [result])
    ctx.callbacks.log("Stages (bands summed): " + ", ".join(f"{k} {v:.2f} s" for k, v in ctx.timer.seconds.items())
                      + f"; total {result.seconds:.2f} s.")
    return result
