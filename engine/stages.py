"""The stages a plan (:mod:`engine.plans`) strings together, each a small object run with the
:class:`~engine.context.RunContext`.

Pass 1, :class:`Infer`, turns tiles into finished bands of rows (:class:`Band`) and hands each to its *row sinks*:
:class:`CountValid`, :class:`RasterRows` (a probability or raw mask raster) and :class:`FieldStream` (opening ->
fields). The other stages read back what pass 1 wrote (:class:`VectorizeMask`, :class:`BurnChanges`), tidy up
between passes (:class:`RequireValid`, :class:`ReleaseMemory`, :class:`FinishFields`) or write the fields
(:class:`WriteFields`).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from .blend import StripBlender
from .context import RunContext
from .errors import InputError
from .fields import FieldBuilder
from .io import Window
from .mask_stream import MaskStream
from .masks import NODATA as MASK_NODATA
from .masks import cropland, decode, encode
from .resample import ModelGridSpool, WarpedSource
from .result import FieldRecord
from .runtime import STRIP_ROWS, iter_strips, release_heap
from .split import cue_name, field_stage, image_edges
from .writers import FieldWriter, RowWriter, raster_profile

PROB_NODATA = -1.0
# A probability raster kept only for each field's mean is uint8 (p x 254, 255 = nodata): a quarter of the float32
# bytes to compress and write, at most 0.002 off.
PROB_SCALE_U8 = 254


class Stage(Protocol):
    """One step of a plan."""

    def run(self, ctx: RunContext) -> None:
        """Do the step, reading and filling ``ctx``."""


@dataclass
class Band:
    """Finished rows ``row0 .. row0 + n`` of pass 1.

    Attributes:
        prob: float32 (n, w) fused cropland probability (NaN where not valid); valid: bool (n, w);
        mask: bool (n, w) probability above the threshold, False where not valid;
        extras: further per-pixel model outputs blended alike (name -> (n, w) array), for sinks that use them.
    """

    row0: int
    prob: np.ndarray
    valid: np.ndarray
    mask: np.ndarray
    extras: dict = field(default_factory=dict)


class RowSink(Protocol):
    """Takes the bands of pass 1 in order; ``close`` after the last."""

    def __call__(self, band: Band) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------- row sinks

class CountValid:
    """Counts each band's valid pixels and their area into ``ctx.counter``."""

    def __init__(self, ctx: RunContext):
        self.counter = ctx.counter

    def __call__(self, band: Band) -> None:
        self.counter.add(band.row0, band.valid)

    def close(self) -> None:
        pass


class RasterRows:
    """Writes one raster of pass 1's rows on the source's grid: ``kind`` ``"probability"`` (float32, nodata -1),
    ``"probability_u8"`` (uint8 p x 254, nodata 255), ``"raw_mask"`` (the thresholded mask, uint8 1/0/255) or
    ``"cue_u8"`` (the split's cue, :func:`engine.split.cue_name`, uint8 p x 254)."""

    KINDS: ClassVar[dict[str, tuple[str, float]]] = {
        "probability": ("float32", PROB_NODATA), "probability_u8": ("uint8", MASK_NODATA),
        "raw_mask": ("uint8", MASK_NODATA), "cue_u8": ("uint8", MASK_NODATA)}

    def __init__(self, ctx: RunContext, path: Path, kind: str):
        import rasterio

        dtype, nodata = self.KINDS[kind]
        self.kind, self.timer, self.cue = kind, ctx.timer, cue_name(ctx.split)
        self._ds = rasterio.open(path, "w", **raster_profile(ctx.source), dtype=dtype, nodata=nodata)
        self._writer = RowWriter(self._ds)

    def __call__(self, band: Band) -> None:
        valid = band.valid
        if self.kind == "probability":
            rows = np.where(valid, band.prob, PROB_NODATA).astype(np.float32)
        elif self.kind in ("probability_u8", "cue_u8"):
            p = band.prob if self.kind == "probability_u8" else band.extras[self.cue]
            rows = np.where(valid, np.rint(np.nan_to_num(p) * PROB_SCALE_U8), MASK_NODATA).astype(np.uint8)
        else:
            rows = encode(band.mask, valid)
        with self.timer("write_raster"):
            self._writer.write(band.row0, rows)

    def close(self) -> None:
        with self.timer("write_raster"):
            self._writer.close()
            self._ds.close()


class FieldStream:
    """Pass 1's thresholded rows straight into fields: opening (:class:`MaskStream`) -> :class:`FieldBuilder`
    (cropland counted into ``ctx.counter``, final mask rows to ``mask_path`` when given, fields into
    ``ctx.spool``). :meth:`finish` after :meth:`close` takes the last fields."""

    def __init__(self, ctx: RunContext, mask_path: Path | None):
        self.mask = _mask_file(ctx, mask_path)
        writer = self.mask.__enter__()
        src = ctx.source
        self.ctx, self.cue = ctx, cue_name(ctx.split)
        self.builder = FieldBuilder(src.width, src.height, src.transform, ctx.area, ctx.options, ctx.spool,
                                    ctx.counter, writer, timer=ctx.timer)
        self.split = field_stage(ctx.split, self.builder, timer=ctx.timer)  # splits touching fields, or not
        self.stream = MaskStream(ctx.options.opening_px, self.split)

    def __call__(self, band: Band) -> None:
        prob = band.prob if self.cue is None else np.stack([band.prob, band.extras[self.cue]], axis=-1)
        self.stream.push(band.row0, band.mask.astype(np.uint8), band.valid, prob)

    def close(self) -> None:
        self.stream.close()
        with self.ctx.timer("vectorize"):
            self.split.close()

    def finish(self) -> list:
        """The last fields (simplified when asked); closes the mask file; returns the filters' changes."""
        try:
            changes = self.builder.finish()
            split_summary(self.ctx, self.split, self.builder)
            return changes
        finally:
            self.mask.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------------------- stages

@dataclass
class Infer:
    """Pass 1: every tile read (the next batch while this one is inferred), normalised, inferred, fused and
    blended; each finished band of rows, thresholded, goes to every sink in ``sinks``.

    ``tile_rows``: the tile rows of the whole raster's grid to run (None = all). A band of tile rows that does not
    start at the top also runs the tile row above it, whose blended rows are incomplete and not handed on, so the
    rows handed on are exactly those a whole run hands on for these tile rows.

    ``rows_from``: hand on rows from this raster row on (default: the first row of ``tile_rows``); the run starts
    at the first tile row that blends into it, none earlier. ``whole_batches``: infer the tiles in the very
    batches a whole run forms (the first and last may hold tiles of the neighbouring tile rows, inferred and
    dropped), so that no tile's result depends on which tiles shared its batch (a row band of a Dask run,
    :mod:`engine.bands`).
    """

    sinks: list
    tile_rows: range | None = None
    rows_from: int | None = None
    whole_batches: bool = False

    def run(self, ctx: RunContext) -> None:
        from tqdm import tqdm

        source, ens, timer, cb = ctx.source, ctx.ensemble, ctx.timer, ctx.callbacks
        tile = ctx.tiling.tile
        grid = ctx.tiling.grid(source.height, source.width)
        rows = self.tile_rows if self.tile_rows is not None else range(len(grid.row_origins))
        keep_from = self.rows_from if self.rows_from is not None else grid.row_origins[rows.start]
        first = min(i for i, o in enumerate(grid.row_origins) if o + tile > keep_from or i == rows.start)
        ncols = len(grid.col_origins)
        lo, hi, size = first * ncols, rows.stop * ncols, ens.batch_size
        every = list(grid.tiles())
        if self.whole_batches:
            batches = [every[k * size:(k + 1) * size] for k in range(lo // size, (hi - 1) // size + 1)]
        else:
            batches = [every[k:min(k + size, hi)] for k in range(lo, hi, size)]
        tiles = [t for batch in batches for t in batch]
        last_col = ncols - 1

        def read_batch(batch):
            reads = [source.read(Window(r, c, tile, tile)) for _, _, r, c in batch]
            return np.stack([v for v, _ in reads]), np.stack([m for _, m in reads])

        names = list(getattr(ens, "channels", ["extent"]))  # what predict returns per pixel
        cue = None
        if cue_name(ctx.split) == "image_edges":
            names.append("image_edges")

            def cue(scaled: np.ndarray) -> np.ndarray:
                with timer("split"):
                    return image_edges(scaled, ctx.split)

        def hand_on(row0: int, probs: np.ndarray, valid: np.ndarray) -> None:
            band = band_of(row0, probs, valid, names, ctx.threshold)
            for sink in self.sinks:
                sink(band)

        if not tiles:
            for sink in self.sinks:
                sink.close()
            return
        with ThreadPoolExecutor(1) as pool, \
                tqdm(total=len(tiles), unit="tile", disable=not cb.show_bar, file=cb.bar_file, leave=False) as bar:
            blender = StripBlender(grid, self.emit_to(ctx, rows_from(keep_from, hand_on), len(names), keep_from),
                                   len(names))
            future = pool.submit(read_batch, batches[0])
            done = 0
            for k in range(len(batches)):
                cb.check_cancel()
                with timer("read"):
                    raw, valid = future.result()
                if k + 1 < len(batches):
                    future = pool.submit(read_batch, batches[k + 1])
                with timer("inference"):
                    prob = (ens.predict(raw, valid, ctx.stretch, ctx.options.tta, cue) if cue is not None else
                            ens.predict(raw, valid, ctx.stretch, ctx.options.tta))
                with timer("blend"):
                    for (i, j, _, _), p, v in zip(batches[k], prob, valid, strict=True):
                        if first <= i < rows.stop:
                            blender.add(i, j, p, v)
                            if j == last_col:
                                blender.finish_row(i)
                done += len(batches[k])
                bar.update(len(batches[k]))
                cb.progress(0.85 * done / len(tiles), f"tile {done}/{len(tiles)}")
            self.finish_blending(ctx, hand_on)
            for sink in self.sinks:
                sink.close()

    def emit_to(self, ctx: RunContext, emit, channels: int, keep_from: int):
        """Where the blender's rows go: ``emit`` (rows from ``keep_from`` on to the sinks); a resampled run sends
        them to the model-grid spool instead."""
        return emit

    def finish_blending(self, ctx: RunContext, hand_on) -> None:
        """After the last tile (a resampled run maps its rows back to the native grid here and hands them on with
        ``hand_on(row0, probs, valid)``)."""


def rows_from(first: int, emit):
    """``emit(row0, probs, valid)`` for the rows from raster row ``first`` on only (earlier rows dropped)."""

    def clipped(row0: int, probs: np.ndarray, valid: np.ndarray) -> None:
        if row0 + probs.shape[0] <= first:
            return
        if row0 < first:
            probs, valid, row0 = probs[first - row0:], valid[first - row0:], first
        emit(row0, probs, valid)

    return clipped


def band_of(row0: int, probs: np.ndarray, valid: np.ndarray, names: list[str], threshold: float) -> Band:
    """A :class:`Band` from blended rows: ``probs`` (n, w), or (n, w, k) for the channels ``names`` (extent
    first; the others become ``extras``)."""
    prob = probs[..., 0] if probs.ndim == 3 else probs
    extras = {name: probs[..., k] for k, name in enumerate(names) if k} if probs.ndim == 3 else {}
    return Band(row0, prob, valid, cropland(prob, threshold, valid), extras)


@dataclass
class ResampledInfer(Infer):
    """Pass 1 on the model's grid (:mod:`engine.resample`): tiles read through a warped VRT at the model's
    resolution, inferred and blended there, the blended channels spooled to a temporary raster, then read back
    onto the source's grid strip by strip and handed to the sinks as :class:`Infer` would hand them.

    ``tile_rows`` and ``rows_from`` are on the model grid (the model-grid rows spooled); ``native_rows``: the rows
    ``(a, b)`` of the source's grid to hand on (None = all), read back in the whole run's strips (of
    :data:`engine.runtime.STRIP_ROWS` rows from the top): the very windows a whole run reads from the same warped
    VRT, so that nothing in GDAL's warping (source windows, chunks) can differ (a row band of a Dask run,
    :mod:`engine.bands`)."""

    native_rows: tuple[int, int] | None = None
    _native: object = None
    _spool: ModelGridSpool | None = None

    def run(self, ctx: RunContext) -> None:
        import dataclasses

        self._native = ctx.source
        with WarpedSource(ctx.source, ctx.resample) as warped:
            Infer.run(self, dataclasses.replace(ctx, source=warped))

    def emit_to(self, ctx: RunContext, emit, channels: int, keep_from: int):
        self._spool = ModelGridSpool(ctx.workdir / "model_grid.tif", ctx.resample, self._native.crs, channels,
                                     keep_from)
        return rows_from(keep_from, self._spool.emit)

    def finish_blending(self, ctx: RunContext, hand_on) -> None:
        self._spool.close()
        a, b = self.native_rows or (0, self._native.height)
        strips = self._spool.native_strips(self._native, STRIP_ROWS, a, b)
        emit = rows_from(a, hand_on)
        while True:
            ctx.callbacks.check_cancel()
            with ctx.timer("resample_back"):
                item = next(strips, None)
            if item is None:
                break
            row0, probs, valid = item
            n = min(probs.shape[0], b - row0)
            emit(row0, probs[:n], valid[:n])


class RequireValid:
    """Refuses a raster with no valid pixel (once pass 1 has counted them)."""

    def run(self, ctx: RunContext) -> None:
        if ctx.counter.valid_pixels == 0:
            raise InputError(f"{ctx.source.name}: every pixel is nodata; there is nothing to classify.")


class ReleaseMemory:
    """Frees the models' working memory and the C heap's free pages (before the largest fields are merged)."""

    def run(self, ctx: RunContext) -> None:
        if ctx.ensemble is not None:
            ctx.ensemble.release_memory()
        release_heap()


@dataclass
class FinishFields:
    """Takes the last fields of a :class:`FieldStream` of pass 1."""

    stream: FieldStream

    def run(self, ctx: RunContext) -> None:
        ctx.changes = self.stream.finish()


@dataclass
class VectorizeMask:
    """Pass 2: a raw mask raster (1 = cropland, 0 = other, 255 = nodata) read back strip by strip through the
    opening into a :class:`FieldBuilder` with the filters on: fields into ``ctx.spool``, the filters' changes into
    ``ctx.changes``; and, when ``count``, cropland into ``ctx.counter`` and the opened mask into ``mask_path``.

    ``prob_path``: the probability raster (float32, or uint8 = p x 254) for the fields' means, or None.
    ``holes_may_hold_nodata``: None = whether pass 1 counted any nodata (then a hole is filled only when it holds
    none). Fields are split as ``ctx.split`` says, on the cue raster ``cue_path`` (uint8 p x 254) when the split
    needs one.
    """

    raw_path: Path
    prob_path: Path | None = None
    mask_path: Path | None = None
    count: bool = True
    holes_may_hold_nodata: bool | None = None
    cue_path: Path | None = None

    def run(self, ctx: RunContext) -> None:
        import rasterio
        from affine import Affine
        from rasterio.features import rasterize
        from rasterio.windows import Window as RioWindow

        source, timer, cb = ctx.source, ctx.timer, ctx.callbacks
        nodata = self.holes_may_hold_nodata if self.holes_may_hold_nodata is not None else ctx.has_nodata
        with rasterio.open(self.raw_path) as raw_ds, \
                (rasterio.open(self.prob_path) if self.prob_path else contextlib.nullcontext()) as prob_ds, \
                (rasterio.open(self.cue_path) if self.cue_path else contextlib.nullcontext()) as cue_ds, \
                _mask_file(ctx, self.mask_path) as writer:

            def hole_has_nodata(hole) -> bool:
                x0, y0, x1, y1 = (int(v) for v in hole.bounds)
                raw = raw_ds.read(1, window=RioWindow(x0, y0, x1 - x0, y1 - y0))
                inside = rasterize([(hole, 1)], out_shape=raw.shape, transform=Affine.translation(x0, y0), fill=0,
                                   dtype="uint8") > 0
                return bool((raw[inside] == MASK_NODATA).any())

            builder = FieldBuilder(source.width, source.height, source.transform, ctx.area, ctx.options, ctx.spool,
                                   ctx.counter if self.count else None, writer,
                                   hole_has_nodata if nodata else None, timer)
            split = field_stage(ctx.split if self.count else None, builder, timer=timer)
            stream = MaskStream(ctx.options.opening_px, split)
            n = -(-source.height // STRIP_ROWS)
            strips = raw_strips(raw_ds, prob_ds, cue_ds)
            for s in range(n):
                cb.check_cancel()
                with timer("read"):
                    row0, mask, valid, prob = next(strips)
                stream.push(row0, mask, valid, prob)
                cb.progress(0.85 + 0.1 * (s + 1) / n, "vectorising")
            stream.close()
            split.close()
            ctx.changes = builder.finish()
            split_summary(ctx, split, builder)
        release_heap()


@dataclass
class BurnChanges:
    """Pass 3, only when the filters dropped a field or filled a hole: the opened raw mask again with those
    changes burnt in (dropped fields 0, then filled holes 1), cropland recounted into ``ctx.counter`` and the final
    mask rewritten to ``mask_path`` when given."""

    raw_path: Path
    mask_path: Path | None = None

    def run(self, ctx: RunContext) -> None:
        if not ctx.changes:
            return
        import rasterio
        import shapely
        from affine import Affine
        from rasterio.features import rasterize

        ctx.counter.reset_cropland()
        changes = sorted(ctx.changes, key=lambda c: c[1])  # drops first: a filled hole wins over a dropped island
        polys = np.array([c[0] for c in changes], dtype=object)
        values = np.array([c[1] for c in changes], dtype=np.uint8)
        tree = shapely.STRtree(polys)
        w = ctx.source.width
        with ctx.timer("write_raster"), _mask_file(ctx, self.mask_path) as writer:

            def burn(row0: int, mask: np.ndarray, valid: np.ndarray, _prob) -> None:
                n = mask.shape[0]
                hits = np.sort(tree.query(shapely.box(0, row0, w, row0 + n)))
                if len(hits):
                    # GDAL's scanline fill visits every edge on every row: clip to the strip first, or a shape
                    # spanning the raster costs O(rows x its vertices).
                    parts = shapely.clip_by_rect(polys[hits], -1, row0 - 1, w + 1, row0 + n + 1)
                    shapes = [(g, int(v)) for g, v in zip(parts, values[hits], strict=True) if not g.is_empty]
                    if shapes:
                        burnt = rasterize(shapes, out_shape=(n, w), transform=Affine.translation(0, row0),
                                          fill=255, dtype="uint8")
                        mask = np.where(burnt == 255, mask, burnt)
                crop = mask.astype(bool) & valid
                ctx.counter.add_cropland(row0, crop)
                if writer is not None:
                    writer.write(row0, encode(crop, valid))

            stream = MaskStream(ctx.options.opening_px, burn)
            with rasterio.open(self.raw_path) as raw_ds:
                for row0, mask, valid, _ in raw_strips(raw_ds):
                    ctx.callbacks.check_cancel()
                    stream.push(row0, mask, valid)
                stream.close()


@dataclass
class WriteFields:
    """Numbers the spooled fields top-to-bottom, left-to-right, writes them to ``vector_path`` (when given) and
    keeps them in ``ctx.records`` when ``keep`` (else at most one chunk of them is in memory at a time)."""

    vector_path: Path | None = None
    keep: bool = True

    def run(self, ctx: RunContext) -> None:
        import shapely

        ctx.callbacks.progress(0.97, "writing fields")
        with ctx.timer("write_vector"):
            ctx.field_count = len(ctx.spool)
            if self.vector_path is None and not self.keep:
                return
            boundary = "boundary" in getattr(ctx.ensemble, "channels", ())
            writer = (FieldWriter(self.vector_path, ctx.source.crs, boundary=boundary)
                      if self.vector_path is not None else None)
            first = 1
            for wkbs, attributes in ctx.spool.chunks():
                ids = np.arange(first, first + len(wkbs), dtype=np.int64)
                first += len(wkbs)
                if writer is not None:
                    writer.write(ids, wkbs, attributes)
                if self.keep:
                    ctx.records.extend(FieldRecord.of(k, geom, *row) for k, geom, row in zip(
                        ids.tolist(), shapely.from_wkb(wkbs).tolist(), attributes.tolist(), strict=True))
            if writer is not None:
                writer.close()


# ------------------------------------------------------------------------------------------------------ helpers

@contextmanager
def _mask_file(ctx: RunContext, mask_path: Path | None):
    """A :class:`RowWriter` onto a new uint8 mask GeoTIFF (1/0/255) on the source's grid, or None."""
    if mask_path is None:
        yield None
        return
    import rasterio

    with rasterio.open(mask_path, "w", **raster_profile(ctx.source), dtype="uint8", nodata=MASK_NODATA) as out:
        writer = RowWriter(out)
        yield writer
        writer.close()


def split_summary(ctx: RunContext, stage, builder: FieldBuilder) -> None:
    """Fill ``ctx.split_info`` from the split stage and the builder that took its fields."""
    if stage.regions is not None:
        ctx.split_info.update(cut_pixels=stage.cut_pixels, regions=stage.regions, fields_traced=builder.traced,
                              fields_added_by_split=builder.traced - stage.regions)


def raw_strips(raw_ds, prob_ds=None, cue_ds=None):
    """Strips of a raw mask raster (1 = cropland, 255 = nodata) -> (row0, mask uint8 0/1, valid bool, prob
    float32 (n, w) or None; (n, w, 2) with the split's cue when ``cue_ds`` is given)."""
    from rasterio.windows import Window as RioWindow

    w = raw_ds.width
    for row0, n in iter_strips(raw_ds.height):
        raw = raw_ds.read(1, window=RioWindow(0, row0, w, n))
        prob = prob_ds.read(1, window=RioWindow(0, row0, w, n)) if prob_ds is not None else None
        if prob is not None and prob.dtype == np.uint8:
            prob = prob.astype(np.float32) / np.float32(PROB_SCALE_U8)
        if prob is not None and cue_ds is not None:
            cue = cue_ds.read(1, window=RioWindow(0, row0, w, n)).astype(np.float32) / np.float32(PROB_SCALE_U8)
            prob = np.stack([prob, cue], axis=-1)
        valid = raw != MASK_NODATA
        yield row0, decode(raw, valid).astype(np.uint8), valid, prob

