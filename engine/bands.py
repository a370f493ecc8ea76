"""One huge raster on a Dask cluster, in row bands, with the same result as a run in one process.

The client plans bands of rows (:func:`plan_bands`); each band is one task running the *band plan*
(:func:`band_plan`) on a worker. A band task opens the raster itself and, through the pipeline's own pass 1
(:class:`engine.stages.Infer` with ``rows_from`` and ``whole_batches``), infers exactly the tiles of the whole
raster's grid (anchored at the raster's corner, not the band's) that blend into the rows it needs, in the very
batches a single run forms (a few tiles of a batch shared with the next band are inferred twice), and blends them
in the same order, so its probabilities are bit for bit those of a single run. Around its own
rows it takes ``2 x opening radius`` rows of context (:mod:`engine.mask_stream`) so that its opened mask is exact
too; seams are placed just below a tile row's overlap, where one tile row alone covers the halo, so that each seam
costs one tile row inferred twice (see :func:`plan_bands`).

The band writes its rows of the mask and probability to part rasters beside the outputs, vectorises its rows and
returns the fields that lie wholly inside it (through the minimum-area and hole filters, with area and perimeter,
as map-coordinate WKB) plus the *open* fields that touch its top or bottom row, as exact pixel-coordinate rings with
the labels of the pixels on those rows. The client joins open fields whose pixels meet across a seam (4-connected,
as the vectoriser joins strips), merges them with the engine's stitcher (:func:`engine.vectorize.merge_fragments`),
filters them, and writes one GeoPackage, one mask and one probability raster. The rasters are assembled from the
parts in band order as the bands come in (the mask only when no filter can change it); when a filter dropped a
field or filled a hole, the changes are burnt into the mask (read through a VRT of the parts) as the single run's
third pass does.

The result equals the single run's: mask and probability rasters equal value for value, the same fields with the
same outlines, areas equal to rounding (sums taken in another order, ~1e-15 relative).
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
from .mask_stream import MaskStream
from .masks import NODATA as MASK_NODATA
from .masks import encode
from .options import ExtractOptions, OutputPaths
from .plans import Plan
from .result import ExtractionResult
from .runtime import StageTimer
from .stages import PROB_NODATA, PROB_SCALE_U8, BurnChanges, Infer, RequireValid, WriteFields
from .stages import Band as Rows
from .tiling import TileGrid
from .vectorize import Field, StripVectorizer, _UnionFind, filter_field, merge_fragments, simplify_fields, to_map
from .workers import distributed_module, local_threads, worker_model


@dataclass(frozen=True)
class Band:
    """One band task: it finishes rows ``row0 .. row1`` (exclusive); it needs the thresholded mask of rows
    ``need0 .. need1`` (its rows and the opening's context) and so infers tile rows ``tile_row0 .. tile_row1``
    (inclusive) of the raster's grid."""

    index: int
    row0: int
    row1: int
    need0: int
    need1: int
    tile_row0: int
    tile_row1: int


def plan_bands(grid: TileGrid, opening_px: int, band_rows: int) -> list[Band]:
    """Row bands of about ``band_rows`` rows over ``grid``'s raster.

    A seam is placed ``overlap + 2 x opening_px`` rows below the top of a tile row, when that lies above the next
    tile row: the rows on both sides that the two bands need (the opening's ``2 x opening_px`` each way) are then
    covered by that tile row alone, which both bands infer; elsewhere (large overlap or opening) it sits at the top
    of a tile row. Whatever the seams, each band infers every tile row that touches a row it needs, from the first
    that does, so its blended rows are exact.
    """
    origins, h, t = grid.row_origins, grid.height, grid.tile
    r2 = 2 * opening_px
    offset = grid.overlap + r2 if grid.overlap + 2 * r2 <= grid.stride else 0
    every = max(1, round(band_rows / grid.stride))
    seams = [origins[k] + offset for k in range(every, len(origins), every) if 0 < origins[k] + offset < h]
    edges = [0, *seams, h]
    bands = []
    for k in range(len(edges) - 1):
        row0, row1 = edges[k], edges[k + 1]
        need0, need1 = max(row0 - r2, 0), min(row1 + r2, h)
        first = min(i for i, o in enumerate(origins) if o + t > need0)  # the first tile row that touches need0
        last = max(i for i, o in enumerate(origins) if o <= need1 - 1)
        bands.append(Band(k, row0, row1, need0, need1, first, last))
    return bands


def default_band_rows(grid: TileGrid, workers: int) -> int:
    """Band height for ``workers`` workers: whole tile rows, about two bands per worker (each seam infers one tile
    row twice, so fewer, taller bands waste less; two per worker leave room to balance them)."""
    tile_rows = len(grid.row_origins)
    return grid.stride * max(1, math.ceil(tile_rows / (2 * max(workers, 1))))


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

    @classmethod
    def of(cls, ctx: RunContext, outputs: OutputPaths) -> Settings:
        """The settings of the run ``ctx`` (from :func:`engine.context.prepare`) writing ``outputs``."""
        return cls(ctx.tiling, ctx.threshold, ctx.stretch, ctx.filtered,
                   quantized=ctx.filtered and outputs.probability is None,
                   mask=outputs.mask is not None or ctx.filtered, probability=outputs.probability is not None)


@dataclass
class BandResult:
    """What a band task returns (plain data, pickled back to the client)."""

    index: int
    valid_pixels: int = 0
    cropland_pixels: int = 0
    valid_area: float = 0.0
    cropland_area: float = 0.0
    records: list = field(default_factory=list)  # (wkb map geometry, area_m2, perimeter_m, mean_prob, row, col)
    held: list = field(default_factory=list)  # when simplifying: (wkb pixel polygon, prob_sum, pixels)
    changes: list = field(default_factory=list)  # (wkb pixel polygon, 0 = dropped | 1 = filled)
    open_fields: list = field(default_factory=list)  # (points (n, 2) int32 closed rings, sizes, prob_sum, pixels)
    top_labels: np.ndarray | None = None  # (width,) int32: 1 + index in open_fields of the field on row0, 0 = none
    bottom_labels: np.ndarray | None = None  # the same on row1 - 1
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
            bounded_gdal_cache(gdal_cache_bytes(source, settings.tiling.tile)):
        area = area_model(source.crs, source.transform, source.height, options.pixel_size_m)
        ctx = RunContext(source, ens, options, settings.tiling, area, StageTimer(), Callbacks.of(progress=progress),
                         threshold=settings.threshold, stretch=settings.stretch)
        sink = BandSink(ctx, settings, band, Path(work_dir))
        band_plan(ctx, sink).run(ctx)
        return sink.result


def band_plan(ctx: RunContext, sink: BandSink) -> Plan:
    """The plan of one band: pass 1 over the tile rows the band needs, in the whole run's batches, into ``sink``
    (counts, part rasters, opening, fields); then the band's fields, filtered and measured."""
    b = sink.band
    infer = Infer([sink], range(b.tile_row0, b.tile_row1 + 1), rows_from=b.need0, whole_batches=True)
    return Plan("band", [infer, FinishBand(sink)])


class BandSink:
    """Row sink of a band's pass 1 (:class:`engine.stages.Infer` hands on rows from ``band.need0``): counts the
    valid pixels of the band's own rows and writes their probability part, thresholds and opens the rows it needs
    (the opening's context included), then, on the band's own rows, counts cropland, writes the mask part and
    vectorises. :meth:`finish` filters and measures the fields wholly inside the band and labels the open ones."""

    def __init__(self, ctx: RunContext, settings: Settings, band: Band, work: Path):
        self.ctx, self.s, self.band, self.work = ctx, settings, band, work
        self.source, self.counter, self.timer = ctx.source, ctx.counter, ctx.timer
        self.vec = StripVectorizer(ctx.source.width)
        self.fields: list[Field] = []  # in raster coordinates
        self.result = BandResult(band.index)
        self._stack = contextlib.ExitStack()
        self.writers = {kind: self._stack.enter_context(self._part_writer(kind))
                        for kind in ("mask", "probability") if getattr(settings, kind)}
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
            prob = np.where(valid, np.rint(prob * PROB_SCALE_U8), MASK_NODATA).astype(np.uint8) \
                .astype(np.float32) / np.float32(PROB_SCALE_U8)
        self.stream.push(rows.row0 - b.need0, mask.astype(np.uint8), valid, prob)

    def close(self) -> None:
        """After the last rows: the opening's last strips, the last fields, the part rasters closed."""
        self.stream.close()
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
        """Sink of the opening: strips of the opened mask; keeps those of this band's own rows."""
        b = self.band
        r0 = rel0 + b.need0
        a, z = max(r0, b.row0), min(r0 + mask.shape[0], b.row1)
        if a >= z:
            return
        sl = slice(a - r0, z - r0)
        mask, valid, prob = mask[sl], valid[sl], prob[sl] if prob is not None else None
        self.counter.add_cropland(a, mask.astype(bool))
        if "mask" in self.writers:
            with self.timer("write_raster"):
                self.writers["mask"].write(a - b.row0, encode(mask, valid))
        with self.timer("vectorize"):
            self.vec.add(a - b.row0, mask, prob)
            self._take(self.vec.pop_finished())

    def _take(self, fields: list[Field]) -> None:
        import shapely

        shift = self.band.row0
        for f in fields:
            poly = shapely.transform(f.polygon, lambda xy: xy + np.array([0.0, shift])) if shift else f.polygon
            self.fields.append(Field(poly, f.prob_sum, f.pixels))

    def finish(self) -> None:
        """Filter and measure the fields wholly inside the band; label the open ones on the band's edge rows."""
        import shapely

        b, h, r, opts = self.band, self.source.height, self.result, self.ctx.options
        closed, open_ = [], []
        for f in self.fields:
            _, y0, _, y1 = f.polygon.bounds
            (open_ if (b.row0 > 0 and y0 == b.row0) or (b.row1 < h and y1 == b.row1) else closed).append(f)
        hole_has_nodata = _HoleChecker(r.parts["mask"], b.row0) if self.s.filtered else None
        with self.timer("vectorize"), contextlib.closing(hole_has_nodata or _HoleChecker(None, 0)):
            for f in closed:
                kept, change = filter_field(f, self.ctx.area, opts.min_area_m2, opts.max_hole_m2, hole_has_nodata)
                r.changes.extend((shapely.to_wkb(g), v) for g, v in change)
                if kept is None:
                    continue
                if opts.simplify_m > 0:
                    r.held.append((shapely.to_wkb(kept.polygon), kept.prob_sum, kept.pixels))
                else:
                    geom, *rest = _spool_args(kept, kept.polygon, self.ctx.area, self.source.transform)
                    r.records.append((shapely.to_wkb(geom), *rest))
            for f in open_:
                rings = [f.polygon.exterior, *f.polygon.interiors]
                points = np.concatenate([np.asarray(x.coords) for x in rings]).astype(np.int32)
                sizes = np.array([len(x.coords) for x in rings], dtype=np.int32)
                r.open_fields.append((points, sizes, f.prob_sum, f.pixels))
            polys = [f.polygon for f in open_]
            if b.row0 > 0:
                r.top_labels = _row_labels(polys, b.row0, self.source.width)
            if b.row1 < h:
                r.bottom_labels = _row_labels(polys, b.row1 - 1, self.source.width)
        c = self.counter
        r.valid_pixels, r.cropland_pixels, r.valid_area, r.cropland_area = \
            c.valid_pixels, c.cropland_pixels, c.valid_area, c.cropland_area
        r.seconds = dict(self.timer.seconds)
        r.device = self.ctx.ensemble.device


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
    vectoriser joins strips): one list of ``(points, sizes, prob_sum, pixels)`` per whole field, top band first."""
    uf = _UnionFind()
    ids: dict[tuple[int, int], int] = {}
    for r in results:
        for k in range(len(r.open_fields)):
            ids[(r.index, k)] = len(ids)
    for upper, lower in itertools.pairwise(results):
        if upper.bottom_labels is None or lower.top_labels is None:
            continue
        both = (upper.bottom_labels > 0) & (lower.top_labels > 0)
        for a, c in set(zip(upper.bottom_labels[both].tolist(), lower.top_labels[both].tolist(), strict=True)):
            uf.union(ids[(upper.index, a - 1)], ids[(lower.index, c - 1)])
    groups: dict[int, list[tuple]] = {}
    for r in results:
        for k, frag in enumerate(r.open_fields):
            groups.setdefault(uf.find(ids[(r.index, k)]), []).append(frag)
    return list(groups.values())


def _finish(ctx: RunContext, bands: list[Band], results: list[BandResult], settings: Settings, work: Path,
            parts: dict, assemblers: dict) -> None:
    """Client side, once every band is in: sum the counts, stitch, filter and spool the open fields (simplify all
    when asked), and write the mask and probability from the bands' parts, burning in the filters' changes as
    the single run's filtered plan does (:class:`engine.stages.BurnChanges`, over the opened mask: no opening)."""
    import shapely

    from .vectorize import _polygon

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
    held = [Field(shapely.from_wkb(g), ps, px) for r in results for g, ps, px in r.held]
    seams = tuple(float(b.row0) for b in bands[1:])
    hole_has_nodata = _HoleChecker(mask_vrt, 0) if settings.filtered else None
    with ctx.timer("stitch"), contextlib.closing(hole_has_nodata or _HoleChecker(None, 0)):
        for group in _open_groups(results):
            poly = (_polygon(group[0][0], group[0][1]) if len(group) == 1
                    else merge_fragments([(points, sizes) for points, sizes, _, _ in group], seams))
            whole = Field(poly, sum(g[2] for g in group), sum(g[3] for g in group))
            kept, change = filter_field(whole, area, opts.min_area_m2, opts.max_hole_m2, hole_has_nodata)
            ctx.changes.extend(change)
            if kept is None:
                continue
            if opts.simplify_m > 0:
                held.append(kept)
            else:
                ctx.spool.add(*_spool_args(kept, kept.polygon, area, source.transform))
        if held:
            tolerance_px = opts.simplify_m / (area.pixel_size_m or 1.0)
            polys = simplify_fields([f.polygon for f in held], tolerance_px, source.width, source.height)
            for f, poly in zip(held, polys, strict=True):
                ctx.spool.add(*_spool_args(f, poly, area, source.transform))
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


def _spool_args(f: Field, poly_px, area, transform) -> tuple:
    geom = to_map(poly_px, transform)
    a, p = area.polygon_area_perimeter(geom)
    x0, y0 = f.polygon.bounds[:2]
    return geom, a, p, f.mean_probability, y0, x0


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

    import shapely
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
    if options.split != "none" or options.resample != "off":
        # band tasks run pass 1 and the fields without engine.split / engine.resample (not wired into bands yet)
        if log is not None:
            log("Note: row bands neither split touching fields nor resample yet: --split none and --resample off "
                "are used; run without bands for split fields.")
        options = dataclasses.replace(options, split="none", resample="off")
    outputs = outputs or OutputPaths()
    input_path = Path(input_path)
    check_outputs(outputs, [input_path])
    model = str(model) if model is not None else None
    ens = load_ensemble(model, dataclasses.replace(options, threads=1), log)
    with restrict(open_source(input_path, ens, options), options.aoi, log) as source:  # the AOI's window
        ctx = prepare(source, ens, options, Callbacks.of(log=log))
        settings = Settings.of(ctx, outputs)
        grid = ctx.tiling.grid(source.height, source.width)
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        bands = plan_bands(grid, options.opening_px, band_rows or default_band_rows(grid, workers))
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
                        for rec in r.records:
                            ctx.spool.add(shapely.from_wkb(rec[0]), *rec[1:])
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
