"""The extraction, end to end: open the input, build the run context, run the plan, commit the outputs.

Memory does not grow with the raster's height: every pass streams bands of rows (see :mod:`engine.plans` for the
passes of each plan and :mod:`engine.stages` for the stages). This module only does what surrounds a plan: the
input's bands checked against the model, the outputs written under temporary names and moved into place only when
everything succeeded (and removed, with any folder made for them, when anything failed or the run was cancelled),
the temporary folder, the result, the report and the log of stage times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .aoi import restrict
from .areas import area_model
from .context import Callbacks, RunContext, prepare
from .ensemble import Ensemble, load_ensemble
from .errors import InputError
from .io import ArraySource, FileSource, open_input
from .options import ExtractOptions, OutputPaths
from .outputs import check_outputs, commit, discard, make_folders, part_path, remove_folders, write_errors
from .plans import Targets, mask_to_fields, plan_for
from .report import write_report
from .result import ExtractionResult, FieldRecord
from .runtime import StageTimer, bounded_gdal_cache, gdal_cache_bytes


def open_source(path, ens: Ensemble, options: ExtractOptions) -> FileSource:
    """Open the raster ``path`` (a file, URL or GDAL virtual path) with the bands the model reads
    (``options.bands`` or the model's ``input_bands``); see :func:`engine.io.open_input`.

    Raises:
        InputError (``param="bands"``): the file cannot be read, or its bands do not fit the model.
    """
    return open_input(path, ens.meta, ens.name, options.bands)


def run_file(path: Path, model, outputs: OutputPaths, options: ExtractOptions, progress=None, is_cancelled=None,
             log=None, keep_fields: bool = True, show_bar: bool = False) -> ExtractionResult:
    """Run the pipeline on one raster file; see :func:`engine.api.extract`."""
    start = time.perf_counter()
    check_outputs(outputs, [path])
    callbacks = Callbacks.of(progress, is_cancelled, log, show_bar)
    ens = load_ensemble(model, options, log)
    with restrict(open_source(path, ens, options), options.aoi, log) as source, write_errors(outputs), \
            bounded_gdal_cache(gdal_cache_bytes(source, options.tile_size or ens.tile_size)):
        result, _ = _extract(prepare(source, ens, options, callbacks), outputs, keep_fields, False, start)
    return result


def run_array(array, model, transform, crs, nodata, valid_mask, outputs: OutputPaths, options: ExtractOptions,
              progress=None, is_cancelled=None, log=None):
    """Run the pipeline on an in-memory array; see :func:`engine.api.extract_array`."""
    start = time.perf_counter()
    check_outputs(outputs)
    callbacks = Callbacks.of(progress, is_cancelled, log)
    ens = load_ensemble(model, options, log)
    source = ArraySource(array, None, transform, crs, nodata, valid_mask)
    bands = options.bands or ens.meta.input_bands
    if source.count < max(bands) or len(bands) != ens.meta.n_bands:
        raise InputError(f"The array has {source.count} band(s); the model {ens.name} needs {ens.meta.n_bands} "
                         f"read from band(s) {','.join(map(str, bands))}.", param="bands")
    source.select_bands(bands)
    source = restrict(source, options.aoi, log)
    with bounded_gdal_cache(), write_errors(outputs):
        result, (prob, mask) = _extract(prepare(source, ens, options, callbacks), outputs, True, True, start)
    return result, prob, mask


def _extract(ctx: RunContext, outputs: OutputPaths, keep_fields: bool, arrays: bool, start: float):
    """Run the plan ``ctx`` needs, writing ``outputs`` atomically; returns (result, (probability, mask) arrays
    read back when ``arrays``, else (None, None))."""
    parts = {kind: part_path(path) for kind, path in outputs.items() if kind != "report"}
    created = make_folders(outputs)
    read_back = (None, None)
    try:
        with tempfile.TemporaryDirectory(prefix="cropland-") as tmp:
            ctx.begin(Path(tmp))
            # The arrays come back through rasters as the files do, so the two paths cannot drift apart.
            targets = Targets(parts.get("probability", Path(tmp) / "probability.tif" if arrays else None),
                              parts.get("mask", Path(tmp) / "mask.tif" if arrays else None),
                              parts.get("vector"), keep_fields)
            try:
                plan_for(ctx, targets).run(ctx)
            finally:
                ctx.close()
            if arrays:
                read_back = _read_arrays(targets)
            for kind, part in parts.items():
                commit(part, getattr(outputs, kind))
    except BaseException:
        for part in parts.values():
            discard(part)
        remove_folders(created)
        raise
    result = _result(ctx, outputs, start)
    if outputs.report is not None:
        write_report(outputs.report, [result])
    ctx.callbacks.log("Stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in ctx.timer.seconds.items())
                      + f"; total {result.seconds:.2f} s.")
    ctx.callbacks.progress(1.0, "done")
    return result, read_back


def _read_arrays(targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    """(probability float32 with NaN at nodata, mask uint8 1/0/255) read back from the run's rasters."""
    import rasterio

    with rasterio.open(targets.probability) as ds:
        prob = ds.read(1)
    prob[prob < 0] = np.nan
    with rasterio.open(targets.mask) as ds:
        return prob, ds.read(1)


def _result(ctx: RunContext, outputs: OutputPaths, start: float) -> ExtractionResult:
    stats = ctx.counter.result(ctx.source.crs, ctx.source.name)
    ens = ctx.ensemble
    result = ExtractionResult(
        input=ctx.source.name, crs=stats.crs, pixel_size_m=stats.pixel_size_m, area_method=stats.area_method,
        valid_area_m2=stats.valid_area_m2, cropland_area_m2=stats.cropland_area_m2,
        cropland_ratio=stats.cropland_ratio, field_count=ctx.field_count, valid_pixels=stats.valid_pixels,
        cropland_pixels=stats.cropland_pixels, fields=ctx.records,
        models=ens.model_names, device=ens.device, stage_seconds=dict(ctx.timer.seconds),
        stage_cpu_seconds=dict(ctx.timer.cpu_seconds),
        normalization=ctx.values_note,
        outputs={kind: str(path) for kind, path in outputs.items()}, split=dict(ctx.split_info),
        resampling=dict(ctx.resample_info),
    )
    result.seconds = time.perf_counter() - start
    info = ctx.split_info
    if "regions" in info:
        ctx.callbacks.log(f"Split: {info['regions']} connected cropland region(s) -> {info['fields_traced']} "
                          f"field(s) ({info['cut_pixels']} px cut, grown back).")
    return result


def fields_from_mask(mask_path: str | Path, pixel_size_m: float | None = None, min_area_m2: float = 0.0,
                     max_hole_m2: float = 0.0, opening_px: int = 0, simplify_m: float = 0.0,
                     log=None) -> list[FieldRecord]:
    """Vectorise a mask raster (1 = cropland; 255 = nodata) into field records, streamed strip by strip.

    The same stages the extraction runs after inference, for masks made elsewhere (labels, other tools). Areas in
    m² follow the raster's CRS (``pixel_size_m`` for rasters without one). Returns records in map coordinates.
    """
    options = ExtractOptions(min_area_m2=min_area_m2, max_hole_m2=max_hole_m2, opening_px=opening_px,
                             simplify_m=simplify_m, pixel_size_m=pixel_size_m)
    with bounded_gdal_cache(), FileSource(mask_path) as source, tempfile.TemporaryDirectory() as tmp:
        area = area_model(source.crs, source.transform, source.height, pixel_size_m, log, Path(mask_path).name)
        ctx = RunContext(source, None, options, None, area, StageTimer(), Callbacks.of(log=log)).begin(Path(tmp))
        try:
            mask_to_fields(ctx, Targets(), Path(mask_path)).run(ctx)
        finally:
            ctx.close()
        return ctx.records
