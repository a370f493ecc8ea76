"""The extraction pipeline, streamed so that memory does not grow with the raster's height.

Pass 1, over tile rows: read windows -> normalise -> batched inference -> ensemble fusion -> seamless blending
(reading the next batch overlaps inference of the current one). Each finished band of rows is thresholded, the
valid area counted, and, by default, streamed on at once (:mod:`engine.mask_stream`): morphological opening ->
cropland count and ``--mask`` rows -> 4-connected components -> polygons merged across strips; each field, as
soon as no later row can touch it, goes to a temporary spool file, so only the fields still open are held.
With ``--min-area`` or ``--max-hole`` the mask (and probability) rows go to temporary rasters instead, and
pass 2 streams them back through the same stages with the filters on (a dropped field or a filled hole changes
mask rows that, in one pass, would already be counted and written); pass 3, only when a field was dropped or a
hole filled, burns those changes into the opened mask, recounting and rewriting it. Then the spooled fields are
numbered top-to-bottom and written in chunks.
All outputs are written under temporary names and moved into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .blend import StripBlender
from .ensemble import Ensemble, load_ensemble
from .errors import Cancelled, InputError
from .io import ArraySource, FileSource, RasterSource, Window, sample_values
from .mask_stream import MASK_NODATA, STRIP_ROWS, FieldBuilder, MaskStream
from .normalize import choose_stretch
from .options import ExtractOptions, OutputPaths
from .outputs import check_outputs, commit, discard, make_folders, part_path, remove_folders
from .report import write_report
from .result import ExtractionResult, FieldRecord
from .spool import FieldSpool
from .stats import AreaCounter, AreaModel, area_model, crs_label, iter_strips
from .tiling import TileGrid
from .writers import FieldWriter, RowWriter, raster_profile

PROB_NODATA = -1.0
# Without --probability, the probability is kept only for each field's mean: as uint8 (p x 254, 255 = nodata),
# a quarter of the float32 bytes to compress and write, at most 0.002 off.
PROB_SCALE_U8 = 254
GDAL_CACHE_MIN, GDAL_CACHE_MAX = 32 * 2**20, 256 * 2**20


def _noop(*_args) -> None:
    pass


class StageTimer:
    """Wall time per stage; nested stages are exclusive (an inner stage's time is not counted in the outer)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        self._stack.append([name, 0.0])
        try:
            yield
        finally:
            _, inner = self._stack.pop()
            spent = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - inner
            if self._stack:
                self._stack[-1][1] += spent


def gdal_cache_bytes(source: RasterSource, tile: int) -> int:
    """Bytes of GDAL block cache a run needs: three rows of tiles of the source's selected bands (the rows being
    read while the last is still cached), within :data:`GDAL_CACHE_MIN`..:data:`GDAL_CACHE_MAX`."""
    row = source.width * tile * len(source.bands) * np.dtype(source.dtype).itemsize
    return int(min(max(3 * row, GDAL_CACHE_MIN), GDAL_CACHE_MAX))


@contextmanager
def bounded_gdal_cache(nbytes: int = GDAL_CACHE_MIN):
    """Cap GDAL's raster block cache at ``nbytes`` for the duration of a run.

    GDAL's default cache is 5 % of the machine's RAM; streaming a large raster fills it, so the process's memory
    grows with the raster up to that size (1.2 GB on a 24 GB machine, 3.2 GB on a 64 GB one) instead of staying
    flat. Every pass reads and writes in order, so a cache larger than one band of rows buys nothing.
    A ``GDAL_CACHEMAX`` set in the environment is respected. The previous limit is restored afterwards.
    """
    if os.environ.get("GDAL_CACHEMAX"):
        yield
        return
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=int(nbytes)):  # rasterio passes an integer to GDALSetCacheMax64 (bytes)
        yield


def release_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc only; elsewhere nothing happens).

    GDAL's polygonize and GEOS allocate millions of small blocks; glibc keeps them after they are freed, so
    without this each pass's high-water mark would stack on the last one's.
    """
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def default_batch_size(tile: int, on_gpu: bool) -> int:
    """Tiles per inference call: about 4 x 512² on CPU and 32 x 512² on GPU."""
    per = (512 / tile) ** 2
    return max(1, round((32 if on_gpu else 4) * per))


def _open_file(path: Path, ens: Ensemble, options: ExtractOptions) -> FileSource:
    source = FileSource(path)
    bands = options.bands or ens.meta.input_bands
    names = ", ".join(ens.meta.band_names) if ens.meta.band_names else f"{ens.meta.n_bands} bands"
    if len(bands) != ens.meta.n_bands:
        source.close()
        raise InputError(f"--bands lists {len(bands)} band(s) ({','.join(map(str, bands))}) but the model "
                         f"{ens.name} takes {ens.meta.n_bands} ({names}).")
    if source.count < max(bands) and not options.bands:
        source.close()
        raise InputError(
            f"{path} has {source.count} band(s), but the model {ens.name} needs {ens.meta.n_bands} ({names}), "
            f"read from band(s) {','.join(map(str, bands))}. Choose this raster's bands with --bands "
            f"(e.g. --bands {','.join(str(min(i, source.count)) for i in range(1, ens.meta.n_bands + 1))} "
            "only if that is what they hold) or use a model made for this imagery."
        )
    try:
        source.select_bands(bands)
    except InputError:
        source.close()
        raise
    return source


def run_file(path: Path, model, outputs: OutputPaths, options: ExtractOptions, progress=None, is_cancelled=None,
             log=None, keep_fields: bool = True, show_bar: bool = False) -> ExtractionResult:
    """Run the pipeline on one raster file; see :func:`engine.api.extract`."""
    from .api import DEFAULT_MODEL

    start = time.perf_counter()
    check_outputs(outputs, [path])
    ens = load_ensemble(model if model is not None else DEFAULT_MODEL, options, log)
    with _open_file(Path(path), ens, options) as source, \
            bounded_gdal_cache(gdal_cache_bytes(source, options.tile_size or ens.tile_size)):
        result, _, _ = _run(source, ens, outputs, options, progress, is_cancelled, log, keep_fields, show_bar,
                            start, want_arrays=False)
    return result


def run_array(array, model, transform, crs, nodata, valid_mask, outputs: OutputPaths, options: ExtractOptions,
              progress=None, is_cancelled=None, log=None):
    """Run the pipeline on an in-memory array; see :func:`engine.api.extract_array`."""
    from .api import DEFAULT_MODEL

    start = time.perf_counter()
    check_outputs(outputs)
    ens = load_ensemble(model if model is not None else DEFAULT_MODEL, options, log)
    source = ArraySource(array, None, transform, crs, nodata, valid_mask)
    bands = options.bands or ens.meta.input_bands
    if source.count < max(bands) or len(bands) != ens.meta.n_bands:
        raise InputError(f"The array has {source.count} band(s); the model {ens.name} needs {ens.meta.n_bands} "
                         f"read from band(s) {','.join(map(str, bands))}.")
    source.select_bands(bands)
    with bounded_gdal_cache():
        return _run(source, ens, outputs, options, progress, is_cancelled, log, True, False, start, want_arrays=True)


def _check_cancel(is_cancelled) -> None:
    if is_cancelled():
        raise Cancelled("Cancelled; no output was written.")


def _any_valid(source: RasterSource) -> bool:
    for row0, n in iter_strips(source.height, STRIP_ROWS):
        if source.read_inside(row0, 0, n, source.width)[1].any():
            return True
    return False


def _run(source: RasterSource, ens: Ensemble, outputs: OutputPaths, opts: ExtractOptions, progress, is_cancelled,
         log, keep_fields: bool, show_bar: bool, start: float, want_arrays: bool):
    progress = progress or _noop
    is_cancelled = is_cancelled or (lambda: False)
    log = log or _noop
    timer = StageTimer()
    tile = opts.tile_size or ens.tile_size
    multiple = max(int(m.meta.extra.get("size_multiple", 1) or 1) for m in ens.members)
    if tile % multiple:
        rounded = -(-tile // multiple) * multiple
        log(f"Tile size {tile} px rounded up to {rounded} px: the model needs a multiple of {multiple} px.")
        tile = rounded
    overlap = opts.overlap if opts.overlap is not None else min(ens.overlap, tile // 2)
    if overlap * 2 > tile:
        raise InputError(f"overlap {overlap} px must be at most half the tile size {tile} px.")
    threshold = opts.threshold if opts.threshold is not None else ens.threshold
    on_gpu = any(getattr(m, "device", "cpu") == "cuda" for m in ens.members)
    ens.batch_size = opts.batch_size or default_batch_size(tile, on_gpu)
    area = area_model(source.crs, source.transform, source.height, opts.pixel_size_m, log, Path(source.name).name)

    with timer("read"):
        sample = sample_values(source)
        if sample.shape[1] == 0 and not _any_valid(source):
            raise InputError(f"{source.name}: every pixel is nodata; there is nothing to classify.")
    stretch = choose_stretch(sample, ens.meta, opts.stretch, source.name) if sample.shape[1] else None
    if stretch is not None:
        log(f"{Path(source.name).name}: values ({source.dtype}, 2-98 % = {stretch.low}..{stretch.high}) do not match "
            f"the model's range 0..{ens.meta.input_scale:g}; stretched per band onto it (--stretch none to disable).")
    res = ens.meta.resolution_m
    if res and area.pixel_size_m and not 0.5 <= area.pixel_size_m / res <= 2.0:
        log(f"Note: the model was trained at {res:g} m/px and this raster is {area.pixel_size_m:.3g} m/px; "
            "accuracy may be lower.")
    log(f"Input {source.name}: {source.width} x {source.height} px, bands {source.bands}, {source.dtype}, "
        f"CRS {crs_label(source.crs) or 'none'}; tiles {tile} px, overlap {overlap} px, batch {ens.batch_size}, "
        f"threshold {threshold:g}, fusion {ens.fusion}{', TTA x8' if opts.tta else ''}; device {ens.device}.")

    parts = {kind: part_path(path) for kind, path in outputs.items() if kind != "report"}
    created = make_folders(outputs)
    try:
        with tempfile.TemporaryDirectory(prefix="cropland-") as tmp:
            # Without filters the mask is final as inference makes it: fields, counts and the --mask file come
            # out of pass 1 directly. The filters need a second look at the whole field first, so then the mask
            # (and the probability, for the fields' means) go through temporary rasters.
            filtered = area.known and (opts.min_area_m2 > 0 or opts.max_hole_m2 > 0)
            prob_path = parts.get("probability", Path(tmp) / "probability.tif" if filtered or want_arrays else None)
            quantized = "probability" not in parts and not want_arrays
            raw_path = Path(tmp) / "raw_mask.tif" if filtered else None
            mask_path = parts.get("mask", Path(tmp) / "mask.tif" if want_arrays else None)
            spool = FieldSpool(tmp)
            try:
                with _mask_writer(source, None if filtered else mask_path) as mask_writer:
                    counter = AreaCounter(area)
                    builder = None if filtered else FieldBuilder(source.width, source.height, source.transform,
                                                                 area, opts, spool, counter, mask_writer,
                                                                 timer=timer)
                    _pass_infer(source, ens, opts, tile, overlap, threshold, stretch, counter, prob_path, raw_path,
                                builder, timer, progress, is_cancelled, show_bar, quantized)
                    if counter.valid_pixels == 0:
                        raise InputError(f"{source.name}: every pixel is nodata; there is nothing to classify.")
                    ens.release_memory()  # before the last (and largest) fields are merged
                    release_heap()
                    _check_cancel(is_cancelled)
                    if builder is not None:
                        builder.finish()
                if filtered:
                    has_nodata = counter.valid_pixels < source.width * source.height
                    _filtered_passes(source, opts, area, raw_path, prob_path, has_nodata, mask_path, counter,
                                     spool, timer, progress, is_cancelled)
                _check_cancel(is_cancelled)
                progress(0.97, "writing fields")
                with timer("write_vector"):
                    records = _write_records(spool, parts.get("vector"), source.crs, keep_fields)
                field_count = len(spool)
            finally:
                spool.close()
            arrays = (None, None)
            if want_arrays:
                import rasterio

                with rasterio.open(prob_path) as ds:
                    prob = ds.read(1)
                prob[prob < 0] = np.nan
                with rasterio.open(mask_path) as ds:
                    arrays = (prob, ds.read(1))
            for kind, part in parts.items():
                commit(part, getattr(outputs, kind))
    except BaseException:
        for part in parts.values():
            discard(part)
        remove_folders(created)
        raise

    stats = counter.result(source.crs, source.name)
    result = ExtractionResult(
        input=source.name, crs=stats.crs, pixel_size_m=stats.pixel_size_m, area_method=stats.area_method,
        valid_area_m2=stats.valid_area_m2, cropland_area_m2=stats.cropland_area_m2,
        cropland_ratio=stats.cropland_ratio, field_count=field_count, valid_pixels=stats.valid_pixels,
        cropland_pixels=stats.cropland_pixels, fields=records,
        models=ens.model_names, device=ens.device, stage_seconds=dict(timer.seconds),
        outputs={kind: str(path) for kind, path in outputs.items()},
    )
    result.seconds = time.perf_counter() - start
    if outputs.report is not None:
        write_report(outputs.report, [result])
    log("Stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in timer.seconds.items()) + f"; total {result.seconds:.2f} s.")
    progress(1.0, "done")
    return result, arrays[0], arrays[1]


def _pass_infer(source, ens, opts, tile, overlap, threshold, stretch, counter: AreaCounter, prob_path, raw_path,
                builder: FieldBuilder | None, timer: StageTimer, progress, is_cancelled, show_bar: bool,
                quantized: bool = False) -> None:
    """Pass 1: infer every tile and blend; each finished band of rows is counted into ``counter`` (valid area),
    written to ``prob_path`` and ``raw_path`` (the thresholded 0/1/255 mask) when those are given, and streamed
    through the opening into ``builder`` when given.

    The probability raster is float32 (nodata -1), or uint8 (p x 254, nodata 255) when ``quantized``.
    """
    import rasterio
    from tqdm import tqdm

    grid = TileGrid(source.height, source.width, tile, overlap)
    prof = raster_profile(source)
    tiles = list(grid.tiles())
    batches = [tiles[i:i + ens.batch_size] for i in range(0, len(tiles), ens.batch_size)]
    last_col = len(grid.col_origins) - 1

    def read_batch(batch):
        t0 = time.perf_counter()
        reads = [source.read(Window(r, c, tile, tile)) for _, _, r, c in batch]
        raw = np.stack([v for v, _ in reads])
        valid = np.stack([m for _, m in reads])
        return raw, valid, time.perf_counter() - t0

    def optional_raster(path, dtype, nodata):
        return rasterio.open(path, "w", **prof, dtype=dtype, nodata=nodata) if path else contextlib.nullcontext()

    prob_kind = ("uint8", MASK_NODATA) if quantized else ("float32", PROB_NODATA)
    stream = MaskStream(opts.opening_px, builder) if builder is not None else None
    with optional_raster(prob_path, *prob_kind) as prob_ds, optional_raster(raw_path, "uint8", MASK_NODATA) as raw_ds, \
            ThreadPoolExecutor(1) as pool, \
            tqdm(total=len(tiles), unit="tile", disable=not show_bar, file=sys.stderr, leave=False) as bar:
        prob_writer = RowWriter(prob_ds) if prob_ds is not None else None
        raw_writer = RowWriter(raw_ds) if raw_ds is not None else None

        def emit(row0: int, prob: np.ndarray, valid: np.ndarray) -> None:
            counter.add(row0, valid)
            mask = (prob > threshold) & valid
            if prob_writer is not None:
                with timer("write_raster"):
                    prob_writer.write(row0, np.where(valid, np.rint(prob * PROB_SCALE_U8), MASK_NODATA)
                                      .astype(np.uint8) if quantized else
                                      np.where(valid, prob, PROB_NODATA).astype(np.float32))
            if raw_writer is not None:
                with timer("write_raster"):
                    raw_writer.write(row0, np.where(valid, mask, MASK_NODATA).astype(np.uint8))
            if stream is not None:
                stream.push(row0, mask.astype(np.uint8), valid, prob)

        blender = StripBlender(grid, emit)
        future = pool.submit(read_batch, batches[0])
        done = 0
        for k in range(len(batches)):
            _check_cancel(is_cancelled)
            with timer("read"):
                raw, valid, _ = future.result()
            if k + 1 < len(batches):
                future = pool.submit(read_batch, batches[k + 1])
            with timer("inference"):
                prob = ens.predict(raw, valid, stretch, opts.tta)
            with timer("blend"):
                for (i, j, _, _), p, v in zip(batches[k], prob, valid, strict=True):
                    blender.add(i, j, p, v)
                    if j == last_col:
                        blender.finish_row(i)
            done += len(batches[k])
            bar.update(len(batches[k]))
            progress(0.85 * done / len(tiles), f"tile {done}/{len(tiles)}")
        for writer in (prob_writer, raw_writer):
            if writer is not None:
                with timer("write_raster"):
                    writer.close()
        if stream is not None:
            stream.close()


def fields_from_mask(mask_path: str | Path, pixel_size_m: float | None = None, min_area_m2: float = 0.0,
                     max_hole_m2: float = 0.0, opening_px: int = 0, simplify_m: float = 0.0,
                     log=None) -> list[FieldRecord]:
    """Vectorise a mask raster (1 = cropland; 255 = nodata) into field records, streamed strip by strip.

    The same stage the extraction runs after inference, for masks made elsewhere (labels, other tools). Areas in
    m² follow the raster's CRS (``pixel_size_m`` for rasters without one). Returns records in map coordinates.
    """
    options = ExtractOptions(min_area_m2=min_area_m2, max_hole_m2=max_hole_m2, opening_px=opening_px,
                             simplify_m=simplify_m, pixel_size_m=pixel_size_m)
    with bounded_gdal_cache(), FileSource(mask_path) as source, tempfile.TemporaryDirectory() as tmp:
        area = area_model(source.crs, source.transform, source.height, pixel_size_m, log, Path(mask_path).name)
        spool = FieldSpool(tmp)
        try:
            _pass_vectorize(source, options, area, Path(mask_path), None, True, spool, None, None, StageTimer(),
                            _noop, lambda: False)
            return _write_records(spool, None, source.crs, keep=True)
        finally:
            spool.close()


def _filtered_passes(source, opts, area: AreaModel, raw_path: Path, prob_path: Path, has_nodata: bool,
                     mask_path: Path | None, counter: AreaCounter, spool: FieldSpool, timer, progress,
                     is_cancelled) -> None:
    """Passes 2 and 3, when the filters are on: fields into ``spool``, cropland into ``counter``, the final
    mask into ``mask_path``, from the temporary rasters of pass 1.

    Pass 2 counts the cropland of the opened mask and writes it as the final mask; only when a field was
    dropped or a hole filled does pass 3 recount and rewrite it with those changes burnt in.
    """
    with _mask_writer(source, mask_path) as writer:
        changes = _pass_vectorize(source, opts, area, raw_path, prob_path, has_nodata, spool, counter, writer,
                                  timer, progress, is_cancelled)
    release_heap()
    if changes:
        counter.reset_cropland()
        with timer("write_raster"), _mask_writer(source, mask_path) as writer:
            _pass_final_mask(source, opts, changes, raw_path, counter, writer, is_cancelled)


@contextmanager
def _mask_writer(source, mask_path: Path | None):
    """A :class:`RowWriter` onto a new uint8 mask GeoTIFF (1/0/255), or None when no mask is wanted."""
    if mask_path is None:
        yield None
        return
    import rasterio

    with rasterio.open(mask_path, "w", **raster_profile(source), dtype="uint8", nodata=MASK_NODATA) as out:
        writer = RowWriter(out)
        yield writer
        writer.close()


def _raw_strips(raw_ds, prob_ds=None):
    """Strips of a raw mask raster (1 = cropland, 255 = nodata) -> (row0, mask uint8 0/1, valid bool, prob
    float32 or None)."""
    from rasterio.windows import Window as RioWindow

    w = raw_ds.width
    for row0, n in iter_strips(raw_ds.height, STRIP_ROWS):
        raw = raw_ds.read(1, window=RioWindow(0, row0, w, n))
        prob = prob_ds.read(1, window=RioWindow(0, row0, w, n)) if prob_ds is not None else None
        if prob is not None and prob.dtype == np.uint8:
            prob = prob.astype(np.float32) / np.float32(PROB_SCALE_U8)
        yield row0, (raw == 1).astype(np.uint8), raw != MASK_NODATA, prob


def _pass_vectorize(source, opts, area: AreaModel, raw_path, prob_path, has_nodata: bool, spool: FieldSpool,
                    counter: AreaCounter | None, mask_writer: RowWriter | None, timer, progress,
                    is_cancelled) -> list:
    """Pass 2: the raw mask raster read back strip by strip through :class:`MaskStream` into a
    :class:`FieldBuilder` (fields into ``spool``, cropland into ``counter`` and ``mask_writer`` when given).

    ``raw_path``: mask raster, 1 = cropland, 255 = nodata; ``prob_path``: probability raster (float32, or
    uint8 = p x 254) or None; ``has_nodata``: whether the mask may hold nodata (then holes are only filled when
    they hold none).

    Returns:
        the changes the filters made, ``(polygon_px, 0 = dropped | 1 = filled)``, for :func:`_pass_final_mask`.
    """
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize
    from rasterio.windows import Window as RioWindow

    with rasterio.open(raw_path) as raw_ds, \
            (rasterio.open(prob_path) if prob_path else contextlib.nullcontext()) as prob_ds:

        def hole_has_nodata(hole) -> bool:
            x0, y0, x1, y1 = (int(v) for v in hole.bounds)
            raw = raw_ds.read(1, window=RioWindow(x0, y0, x1 - x0, y1 - y0))
            inside = rasterize([(hole, 1)], out_shape=raw.shape, transform=Affine.translation(x0, y0), fill=0,
                               dtype="uint8") > 0
            return bool((raw[inside] == MASK_NODATA).any())

        builder = FieldBuilder(source.width, source.height, source.transform, area, opts, spool, counter,
                               mask_writer, hole_has_nodata if has_nodata else None, timer)
        stream = MaskStream(opts.opening_px, builder)
        n = -(-source.height // STRIP_ROWS)
        strips = _raw_strips(raw_ds, prob_ds)
        for s in range(n):
            _check_cancel(is_cancelled)
            with timer("read"):
                row0, mask, valid, prob = next(strips)
            stream.push(row0, mask, valid, prob)
            progress(0.85 + 0.1 * (s + 1) / n, "vectorising")
        stream.close()
        return builder.finish()


def _pass_final_mask(source, opts, changes: list, raw_path: Path, counter: AreaCounter,
                     writer: RowWriter | None, is_cancelled) -> None:
    """Pass 3: the opened mask again, with the filters' changes burnt in (dropped fields 0, then filled holes
    1), counting cropland pixels and area and writing the final mask when ``writer`` is given."""
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    changes = sorted(changes, key=lambda c: c[1])  # drops first: a filled hole wins over a dropped island in it
    polys = np.array([c[0] for c in changes], dtype=object)
    values = np.array([c[1] for c in changes], dtype=np.uint8)
    tree = shapely.STRtree(polys)
    w = source.width

    def burn(row0: int, mask: np.ndarray, valid: np.ndarray, _prob) -> None:
        n = mask.shape[0]
        hits = np.sort(tree.query(shapely.box(0, row0, w, row0 + n)))
        if len(hits):
            # GDAL's scanline fill visits every edge on every row: clip to the strip first, or a shape
            # spanning the raster costs O(rows x its vertices).
            parts = shapely.clip_by_rect(polys[hits], -1, row0 - 1, w + 1, row0 + n + 1)
            shapes = [(g, int(v)) for g, v in zip(parts, values[hits], strict=True) if not g.is_empty]
            if shapes:
                burnt = rasterize(shapes, out_shape=(n, w), transform=Affine.translation(0, row0), fill=255,
                                  dtype="uint8")
                mask = np.where(burnt == 255, mask, burnt)
        crop = mask.astype(bool) & valid
        counter.add_cropland(row0, crop)
        if writer is not None:
            writer.write(row0, np.where(valid, crop, MASK_NODATA).astype(np.uint8))

    stream = MaskStream(opts.opening_px, burn)
    with rasterio.open(raw_path) as raw_ds:
        for row0, mask, valid, _ in _raw_strips(raw_ds):
            _check_cancel(is_cancelled)
            stream.push(row0, mask, valid)
        stream.close()


def _write_records(spool: FieldSpool, vector_path: Path | None, crs, keep: bool) -> list[FieldRecord]:
    """Number the spooled fields top-to-bottom, left-to-right, and write them to ``vector_path`` (when given).

    Returns the records when ``keep``, else an empty list (then at most one chunk of them is in memory).
    """
    if vector_path is None and not keep:
        return []
    writer = FieldWriter(vector_path, crs) if vector_path is not None else None
    kept = []
    for k, (geom, a, p, prob) in enumerate(spool.records(), start=1):
        record = FieldRecord(k, geom, a, p, prob)
        if writer is not None:
            writer.add(record)
        if keep:
            kept.append(record)
    if writer is not None:
        writer.close()
    return kept
