"""The engine's library API: the same pipeline the CLI runs, for paths or in-memory arrays.

Used by ``python -m engine``, the QGIS plugin, the benchmarks and the tests::

    from engine.api import extract, ExtractOptions, OutputPaths
    result = extract("scene.tif", outputs=OutputPaths(vector="fields.gpkg"),
                     options=ExtractOptions(min_area_m2=500), progress=print_fraction, is_cancelled=stop_flag)
    print(result.cropland_area_m2, result.cropland_ratio)

Callbacks:
    progress(fraction: float in 0..1, message: str) -> None, called at least once per batch of tiles.
    is_cancelled() -> bool, polled once per batch; when it returns True the run stops, deletes its temporary
    files and raises :class:`engine.errors.Cancelled` (nothing is written).
    log(message: str) -> None, for the lines the plugin shows in its log (device, models, stage times).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .ensemble import DEFAULT_MODEL
from .errors import Cancelled, CroplandError, InputError, ModelError, OutputError
from .options import ExtractOptions, OutputPaths
from .result import ExtractionResult, FieldRecord, SceneFailure

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
LogFn = Callable[[str], None]

__all__ = [
    "DEFAULT_MODEL",
    "Cancelled",
    "CroplandError",
    "ExtractOptions",
    "ExtractionResult",
    "FieldRecord",
    "InputError",
    "ModelError",
    "OutputError",
    "OutputPaths",
    "SceneFailure",
    "extract",
    "extract_array",
    "extract_many",
    "load_model",
]


def load_model(model: str | Path | None = None, options: ExtractOptions | None = None, log: LogFn | None = None):
    """Load a model for inference.

    Args:
        model: an ``.onnx`` file, a PyTorch checkpoint (``.pt``/``.ckpt`` written by training), or an
            ``ensemble.json``; ``None`` = the shipped default ensemble (:data:`DEFAULT_MODEL`).
        options: device/backend/fp16/threads/fusion are taken from it.
        log: receives one line naming the device and the members.

    Returns:
        An :class:`engine.ensemble.Ensemble` (a single model is an ensemble of one).

    Raises:
        ModelError: missing/corrupt file, metadata missing or inconsistent, members disagreeing on bands.
        DependencyError: onnxruntime or torch missing for that backend.
    """
    from .ensemble import load_ensemble

    return load_ensemble(model, options or ExtractOptions(), log=log)


def extract(
    input_path: str | Path,
    model=None,
    outputs: OutputPaths | None = None,
    options: ExtractOptions | None = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    log: LogFn | None = None,
    keep_fields: bool = True,
    show_bar: bool = False,
    client=None,
    band_rows: int | None = None,
) -> ExtractionResult:
    """Extract cropland from one raster file and write the requested outputs.

    Args:
        input_path: any raster GDAL opens (GeoTIFF, COG, VRT, JPEG2000...), a URL or a GDAL virtual path.
        model: path (see :func:`load_model`), an already loaded ensemble, or ``None`` for the default.
        outputs: files to write; all are checked before any work and written atomically at the end.
        options: run settings; ``None`` = defaults.
        progress, is_cancelled, log: see the module docstring.
        keep_fields: keep every :class:`FieldRecord` (with geometry) in the result.
        show_bar: show a tqdm progress bar over tiles on stderr (the CLI does); over bands with a ``client``.
        client: a ``dask.distributed.Client``: the raster is split into row bands of about ``band_rows`` rows
            run as tasks on its cluster, with the same result (see :mod:`engine.bands`); ``model`` must then be
            a path (or None), and the input and outputs on storage the workers share. ``progress`` and
            ``is_cancelled`` are not called then (Ctrl-C cancels the tasks).

    Returns:
        :class:`ExtractionResult` with areas in m², the ratio and the field count.

    Raises:
        InputError, ModelError, OutputError, Cancelled (all :class:`CroplandError`).
    """
    from .io import input_path as input_path_of

    if client is not None:
        from .bands import extract_bands

        return extract_bands(client, input_path_of(input_path), model, outputs, options, band_rows=band_rows,
                             keep_fields=keep_fields, show_bar=show_bar, log=log)
    from .pipeline import run_file

    return run_file(input_path_of(input_path), model, outputs or OutputPaths(), options or ExtractOptions(),
                    progress=progress, is_cancelled=is_cancelled, log=log, keep_fields=keep_fields,
                    show_bar=show_bar)


def extract_array(
    array: np.ndarray,
    model=None,
    transform=None,
    crs=None,
    nodata: float | None = None,
    valid_mask: np.ndarray | None = None,
    outputs: OutputPaths | None = None,
    options: ExtractOptions | None = None,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    log: LogFn | None = None,
) -> tuple[ExtractionResult, np.ndarray, np.ndarray]:
    """Run the same pipeline on an in-memory image.

    Args:
        array: (bands, H, W) raw pixel values (any numeric dtype), bands in raster order (``options.bands``
            selects from them, 1-based, as for files).
        transform: affine.Affine of the array (``None`` = unit pixels, then ``options.pixel_size_m`` gives areas).
        crs: anything rasterio.crs.CRS accepts, or ``None``.
        nodata: value marking nodata in every band; valid_mask: (H, W) bool, True = valid. Both optional.

    Returns:
        (result, probability float32 (H, W) in 0..1 with NaN at nodata, mask uint8 (H, W) 1/0/255).
    """
    from .pipeline import run_array

    return run_array(array, model, transform, crs, nodata, valid_mask, outputs or OutputPaths(),
                     options or ExtractOptions(), progress=progress, is_cancelled=is_cancelled, log=log)


def extract_many(
    inputs: list[str | Path],
    model=None,
    outputs: list[OutputPaths] | None = None,
    options: ExtractOptions | None = None,
    client=None,
    show_bar: bool = False,
    log: LogFn | None = None,
) -> list[ExtractionResult | SceneFailure]:
    """Extract cropland from many rasters; one that fails does not stop the others.

    Args:
        inputs: raster files; outputs: one :class:`OutputPaths` per input (or None: statistics only). Every
            output is checked before the first input runs.
        model: a model path (or None for the default); with a ``client``, a path the workers can open.
        client: a ``dask.distributed.Client``: one task per input on its cluster, the outputs written by the
            workers (see :mod:`engine.cluster`); None = one after another in this process.
        show_bar: a tqdm bar over inputs (tasks) on stderr.

    Returns:
        one :class:`ExtractionResult` (without field geometries) or :class:`SceneFailure` per input, in input order.
    """
    if client is not None:
        from .cluster import extract_scenes

        return extract_scenes(client, inputs, model, outputs, options, show_bar=show_bar)
    from tqdm import tqdm

    from .outputs import check_outputs

    options = options or ExtractOptions()
    outputs = list(outputs) if outputs is not None else [OutputPaths() for _ in inputs]
    for out in outputs:
        check_outputs(out, [Path(p) for p in inputs])
    ensemble = load_model(model, options, log)
    results: list[ExtractionResult | SceneFailure] = []
    for path, out in tqdm(list(zip(inputs, outputs, strict=True)), unit="scene", disable=not show_bar, leave=False):
        try:
            results.append(extract(path, ensemble, out, options, log=log, keep_fields=False))
        except (InputError, OutputError) as exc:
            results.append(SceneFailure(str(path), str(exc)))
    return results
