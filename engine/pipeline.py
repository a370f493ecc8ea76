"""The extraction pipeline, streamed so that memory does not grow with the raster's size.

Pass 1, over tile rows: read windows -> normalise -> batched inference -> ensemble fusion -> seamless blending; each
finished band of rows is thresholded and written to two temporary GeoTIFFs (the fused probability and the raw
0/1/255 mask) while the valid area is counted. Reading the next batch overlaps inference of the current one.
Pass 2, over strips of the raw mask: morphological opening -> 4-connected components -> polygons, merged across
strips -> minimum area and hole filling on whole fields.
Pass 3, over strips: the final fields are burnt into the final mask, which gives the cropland pixel count and
area (and the ``--mask`` file). Then polygons are optionally simplified and written, with their attributes.
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
from .normalize import choose_stretch
from .options import ExtractOptions, OutputPaths
from .outputs import check_outputs, commit, discard, make_folders, part_path, remove_folders
from .report import write_report
from .result import ExtractionResult, FieldRecord
from .stats import AreaCounter, AreaModel, area_model, crs_label, iter_strips
from .tiling import TileGrid
from .vectorize import Field, StripVectorizer, filter_fields, simplify_fields, to_map
from .writers import RowWriter, raster_profile, write_fields

PROB_NODATA = -1.0
# Without --probability, the probability is kept only for each field's mean: as uint8 (p x 254, 255 = nodata),
# a quarter of the float32 bytes to compress and write, at most 0.002 off.
PROB_SCALE_U8 = 254
MASK_NODATA = 255
STRIP_ROWS = 1024
GDAL_CACHE_BYTES = 256 * 2**20


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


@contextmanager
def bounded_gdal_cache():
    """Cap GDAL's raster block cache at :data:`GDAL_CACHE_BYTES` for the duration of a run.

    GDAL's default cache is 5 % of the machine's RAM; streaming a large raster fills it, so the process's memory
    grows with the raster up to that size (1.2 GB on a 24 GB machine, 3.2 GB on a 64 GB one) instead of staying flat.
    A ``GDAL_CACHEMAX`` set in the environment is respected. The previous limit is restored afterwards.
    """
    if os.environ.get("GDAL_CACHEMAX"):
        yield
        return
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # rasterio passes an integer to GDALSetCacheMax64 (bytes)
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
    with bounded_gdal_cache(), _open_file(Path(path), ens, options) as source:
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
            prob_path = parts.get("probability", Path(tmp) / "probability.tif")
            quantized = "probability" not in parts and not want_arrays
            raw_path = Path(tmp) / "raw_mask.tif"
            counter = _pass_infer(source, ens, opts, tile, overlap, threshold, stretch, area, prob_path, raw_path,
                                  timer, progress, is_cancelled, show_bar, quantized)
            if counter.valid_pixels == 0:
                raise InputError(f"{source.name}: every pixel is nodata; there is nothing to classify.")
            has_nodata = counter.valid_pixels < source.width * source.height
            ens.release_memory()
            release_heap()
            fields = _pass_vectorize(source, opts, area, raw_path, prob_path, has_nodata, timer, progress,
                                     is_cancelled)
            release_heap()
            mask_path = parts.get("mask", Path(tmp) / "mask.tif" if want_arrays else None)
            with timer("write_raster"):
                _pass_final_mask(source, fields, raw_path, mask_path, counter)
            progress(0.97, "writing fields")
            records = _records(fields, opts, area, source)
            if "vector" in parts:
                with timer("write_vector"):
                    write_fields(parts["vector"], records, source.crs)
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
        cropland_ratio=stats.cropland_ratio, field_count=len(records), valid_pixels=stats.valid_pixels,
        cropland_pixels=stats.cropland_pixels, fields=records if keep_fields else [],
        models=ens.model_names, device=ens.device, stage_seconds=dict(timer.seconds),
        outputs={kind: str(path) for kind, path in outputs.items()},
    )
    result.seconds = time.perf_counter() - start
    if outputs.report is not None:
        write_report(outputs.report, [result])
    log("Stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in timer.seconds.items()) + f"; total {result.seconds:.2f} s.")
    progress(1.0, "done")
    return result, arrays[0], arrays[1]


def _pass_infer(source, ens, opts, tile, overlap, threshold, stretch, area: AreaModel, prob_path, raw_path,
                timer: StageTimer, progress, is_cancelled, show_bar: bool, quantized: bool = False) -> AreaCounter:
    """Pass 1: infer every tile, blend, write probability and raw mask rows; returns the valid-area counter.

    The probability raster is float32 (nodata -1), or uint8 (p x 254, nodata 255) when ``quantized``.
    """
    import rasterio
    from tqdm import tqdm

    grid = TileGrid(source.height, source.width, tile, overlap)
    counter = AreaCounter(area)
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

    prob_kind = ("uint8", MASK_NODATA) if quantized else ("float32", PROB_NODATA)
    with rasterio.open(prob_path, "w", **prof, dtype=prob_kind[0], nodata=prob_kind[1]) as prob_ds, \
            rasterio.open(raw_path, "w", **prof, dtype="uint8", nodata=MASK_NODATA) as raw_ds, \
            ThreadPoolExecutor(1) as pool, \
            tqdm(total=len(tiles), unit="tile", disable=not show_bar, file=sys.stderr, leave=False) as bar:
        prob_writer, raw_writer = RowWriter(prob_ds), RowWriter(raw_ds)

        def emit(row0: int, prob: np.ndarray, valid: np.ndarray) -> None:
            with timer("write_raster"):
                if quantized:
                    prob_writer.write(row0, np.where(valid, np.rint(prob * PROB_SCALE_U8), MASK_NODATA)
                                      .astype(np.uint8))
                else:
                    prob_writer.write(row0, np.where(valid, prob, PROB_NODATA).astype(np.float32))
                raw_writer.write(row0, np.where(valid, prob > threshold, MASK_NODATA).astype(np.uint8))
                counter.add(row0, valid)

        blender = StripBlender(grid, emit)
        future = pool.submit(read_batch, batches[0])
        done = 0
        for k in range(len(batches)):
            if is_cancelled():
                raise Cancelled("Cancelled; no output was written.")
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
        with timer("write_raster"):
            prob_writer.close()
            raw_writer.close()
    return counter


def fields_from_mask(mask_path: str | Path, pixel_size_m: float | None = None, min_area_m2: float = 0.0,
                     max_hole_m2: float = 0.0, opening_px: int = 0, simplify_m: float = 0.0,
                     log=None) -> list[FieldRecord]:
    """Vectorise a mask raster (1 = cropland; 255 = nodata) into field records, streamed strip by strip.

    The same stage the extraction runs after inference, for masks made elsewhere (labels, other tools). Areas in
    m² follow the raster's CRS (``pixel_size_m`` for rasters without one). Returns records in map coordinates.
    """
    options = ExtractOptions(min_area_m2=min_area_m2, max_hole_m2=max_hole_m2, opening_px=opening_px,
                             simplify_m=simplify_m, pixel_size_m=pixel_size_m)
    with bounded_gdal_cache(), FileSource(mask_path) as source:
        area = area_model(source.crs, source.transform, source.height, pixel_size_m, log, Path(mask_path).name)
        fields = _pass_vectorize(source, options, area, Path(mask_path), None, True, StageTimer(), _noop,
                                 lambda: False)
        return _records(fields, options, area, source)


def _pass_vectorize(source, opts, area: AreaModel, raw_path, prob_path, has_nodata: bool, timer, progress,
                    is_cancelled) -> list[Field]:
    """Pass 2: opening, components and polygons strip by strip, then whole-field filters.

    ``raw_path``: mask raster, 1 = cropland, 255 = nodata; ``prob_path``: probability raster (float32, or
    uint8 = p x 254) or None;
    ``has_nodata``: whether the mask may hold nodata (then holes are only filled when they hold none).
    """
    import cv2
    import rasterio
    from rasterio.features import rasterize
    from rasterio.windows import Window as RioWindow

    radius = opts.opening_px
    halo = 2 * radius
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1)) if radius else None
    vec = StripVectorizer(source.width)
    h, w = source.height, source.width
    with rasterio.open(raw_path) as raw_ds, \
            (rasterio.open(prob_path) if prob_path else contextlib.nullcontext()) as prob_ds:
        strips = list(iter_strips(h, STRIP_ROWS))
        for s, (row0, n) in enumerate(strips):
            if is_cancelled():
                raise Cancelled("Cancelled; no output was written.")
            with timer("read"):
                a, b = max(row0 - halo, 0), min(row0 + n + halo, h)
                raw = raw_ds.read(1, window=RioWindow(0, a, w, b - a))
                prob = prob_ds.read(1, window=RioWindow(0, row0, w, n)) if prob_ds is not None else None
                if prob is not None and prob.dtype == np.uint8:
                    prob = prob.astype(np.float32) / np.float32(PROB_SCALE_U8)
            with timer("vectorize"):
                mask = (raw == 1).astype(np.uint8)
                if kernel is not None:
                    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
                vec.add(row0, mask[row0 - a:row0 - a + n], prob)
            progress(0.85 + 0.1 * (s + 1) / len(strips), "vectorising")


        def hole_has_nodata(hole) -> bool:
            if not has_nodata:
                return False
            x0, y0, x1, y1 = (int(v) for v in hole.bounds)
            raw = raw_ds.read(1, window=RioWindow(x0, y0, x1 - x0, y1 - y0))
            from affine import Affine

            inside = rasterize([(hole, 1)], out_shape=raw.shape, transform=Affine.translation(x0, y0), fill=0,
                               dtype="uint8") > 0
            return bool((raw[inside] == MASK_NODATA).any())

        with timer("vectorize"):
            fields = filter_fields(vec.fields(), area, opts.min_area_m2, opts.max_hole_m2, hole_has_nodata)
    return fields


def _pass_final_mask(source, fields: list[Field], raw_path: Path, mask_path: Path | None,
                     counter: AreaCounter) -> None:
    """Pass 3: burn the final fields into the mask strip by strip, counting cropland pixels and area."""
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.features import rasterize
    from rasterio.windows import Window as RioWindow

    polys = np.array([f.polygon for f in fields], dtype=object)
    tree = shapely.STRtree(polys) if len(polys) else None
    h, w = source.height, source.width
    out = rasterio.open(mask_path, "w", **raster_profile(source), dtype="uint8", nodata=MASK_NODATA) \
        if mask_path is not None else None
    try:
        writer = RowWriter(out) if out is not None else None
        with rasterio.open(raw_path) as raw_ds:
            for row0, n in iter_strips(h, STRIP_ROWS):
                valid = raw_ds.read(1, window=RioWindow(0, row0, w, n)) != MASK_NODATA
                hits = tree.query(shapely.box(0, row0, w, row0 + n)) if tree is not None else []
                # GDAL's scanline fill visits every edge on every row: clip big fields to the strip first, or a
                # field spanning the raster costs O(rows x its vertices).
                parts = shapely.clip_by_rect(polys[hits], -1, row0 - 1, w + 1, row0 + n + 1) if len(hits) else []
                shapes = [(g, 1) for g in parts if not g.is_empty]
                burnt = rasterize(shapes, out_shape=(n, w), transform=Affine.translation(0, row0), fill=0,
                                  dtype="uint8") if shapes else np.zeros((n, w), np.uint8)
                crop = burnt.astype(bool) & valid
                counter.add_cropland(row0, crop)
                if writer is not None:
                    writer.write(row0, np.where(valid, crop, MASK_NODATA).astype(np.uint8))
        if writer is not None:
            writer.close()
    finally:
        if out is not None:
            out.close()


def _records(fields: list[Field], opts: ExtractOptions, area: AreaModel, source) -> list[FieldRecord]:
    """Output geometries (simplified when asked) in map coordinates, with their attributes."""
    polys = [f.polygon for f in fields]
    if opts.simplify_m > 0:
        tolerance_px = opts.simplify_m / (area.pixel_size_m or 1.0)
        polys = simplify_fields(polys, tolerance_px, source.width, source.height)
    records = []
    for k, (f, poly) in enumerate(zip(fields, polys, strict=True), start=1):
        geom = to_map(poly, source.transform)
        a, p = area.polygon_area_perimeter(geom)
        records.append(FieldRecord(k, geom, a, p, f.mean_probability))
    return records
