"""Options of one extraction run and the paths it writes.

One dataclass for the run's settings (:class:`ExtractOptions`) and one for its outputs (:class:`OutputPaths`), shared
by the CLI, the library API and the QGIS plugin. ``None`` means "take it from the model's metadata".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import PARAM, InputError

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "onnx", "torch")
FUSIONS = ("mean", "vote")
STRETCHES = ("auto", "none", "percentile")
# Tiles larger than this hold gigabytes per tile (8192² x 3 bands x 4 bytes is 0.8 GB before the network's own
# activations); the QGIS dialog has the same limit.
MAX_TILE = 8192


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_number(name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, param: str | None = None) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite number within the given bounds (closed unless
    ``low_open``/``high_open``); the message starts with ``name``, where :data:`engine.errors.PARAM` stands for
    the setting ``param`` (shown as ``--tile-size`` on the command line, ``TILE_SIZE`` in QGIS)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        want = " and ".join(x for x in (lo, hi) if x) or "finite"
        raise InputError(f"{name} must be a number {want}, got {value!r}.", param=param)
SPLITS = ("auto", "boundary", "image", "extent", "none")
RESAMPLES = ("auto", "off")


@dataclass
class ExtractOptions:
    """Settings of one run.

    Attributes:
        bands: 1-based raster band numbers fed to the model, in model-channel order; ``None`` = the model's
            ``input_bands``.
        tile_size, overlap: tiling in pixels; ``None`` = the model's metadata; at most :data:`MAX_TILE`, and a
            tile larger than the raster is shrunk to it (:func:`engine.tiling.fit_tile`).
        batch_size: tiles per inference call; ``None`` = automatic (smaller on CPU, halved on GPU out-of-memory).
        device: ``"auto"`` (CUDA when usable, else CPU), ``"cpu"`` or ``"cuda"``.
        backend: ``"auto"`` (by model file type), ``"onnx"`` or ``"torch"``.
        fp16: run PyTorch checkpoints in half precision (autocast) on CUDA; ``None`` = on CUDA, never on CPU.
            ONNX models always run in the precision they were exported with (the log says so when this is True).
        threshold: cropland probability threshold; ``None`` = the model's (ensemble's) default.
        fusion: override the ensemble's fusion, ``"mean"`` (weighted mean of probabilities) or ``"vote"``.
        tta: test-time augmentation over flips and 90° rotations (8 views).
        min_area_m2: fields smaller than this (m²) are dropped.
        max_hole_m2: holes smaller than this (m²) inside a field are filled.
        simplify_m: polygon simplification tolerance in metres (0 = exact pixel outlines).
        opening_px: radius (px) of the square morphological opening that removes specks, thin spurs and
            slivers narrower than 2 * radius + 1 px while keeping rectangular field corners; 0 = off.
        pixel_size_m: pixel size in metres, only for rasters without a CRS (e.g. the contest tiles: 2).
        stretch: ``"auto"`` (the raster's value range, decided once by :func:`engine.normalize.value_range`
            and mapped onto the model's range, all bands alike), ``"none"`` (raw values) or ``"percentile"``
            (each band between its 2 and 98th percentiles).
        threads: CPU threads for inference; ``None`` = all cores; more than the cores are capped at their number
            (:meth:`cpu_threads`), so a typo cannot exhaust the machine's thread limit.
        split: how touching fields are split (:mod:`engine.split`): ``"auto"`` (on the model's boundary output
            when it has one, else ``"image"``), ``"boundary"``, ``"image"`` (edges of the image and valleys of the
            extent probability), ``"extent"`` (valleys of the extent probability only) or ``"none"`` (a field is
            a 4-connected cropland region, as before).
        resample: ``"auto"``: a raster whose pixel size lies outside the model's accepted range is read
            resampled to the model's resolution and the prediction mapped back (:mod:`engine.resample`);
            ``"off"``: never.
        aoi: area of interest in the raster's coordinates: a shapely polygon, WKT, or an extent
            ``(xmin, ymin, xmax, ymax)``; only pixels inside it are classified and counted (see
            :mod:`engine.aoi`). ``None`` = the whole raster.
    """

    bands: list[int] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    backend: str = "auto"
    fp16: bool | None = None
    threshold: float | None = None
    fusion: str | None = None
    tta: bool = False
    min_area_m2: float = 0.0
    max_hole_m2: float = 0.0
    simplify_m: float = 0.0
    opening_px: int = 1
    pixel_size_m: float | None = None
    stretch: str = "auto"
    threads: int | None = None
    split: str = "auto"
    resample: str = "auto"
    aoi: Any = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` for a value that cannot work, naming the option."""
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}.")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}.")
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}.")
        if self.bands is not None and (not self.bands or any(int(b) < 1 for b in self.bands)):
            raise InputError(f"bands must be 1-based band numbers such as 1,2,3; got {self.bands}.")
        if self.tile_size is not None:
            check_number(f"{PARAM} (px)", self.tile_size, 32, MAX_TILE, param="tile_size")
        if self.overlap is not None:
            check_number(f"{PARAM} (px)", self.overlap, 0, param="overlap")
        if self.tile_size is not None and self.overlap is not None and self.overlap * 2 > self.tile_size:
            raise InputError(f"overlap {self.overlap} must be at most half the tile size {self.tile_size}.")
        if self.batch_size is not None:
            check_number(PARAM, self.batch_size, 1, param="batch_size")
        if self.threshold is not None:
            check_number(PARAM, self.threshold, 0.0, 1.0, low_open=True, high_open=True, param="threshold")
        for name, unit in (("min_area_m2", "m²"), ("max_hole_m2", "m²"), ("simplify_m", "m")):
            check_number(f"{PARAM} ({unit})", getattr(self, name), 0.0, param=name)
        check_number(f"{PARAM} (px)", self.opening_px, 0, param="opening_px")
        if self.pixel_size_m is not None:
            check_number(f"{PARAM} (m)", self.pixel_size_m, 0.0, low_open=True, param="pixel_size_m")
        if self.stretch not in STRETCHES:
            raise InputError(f"stretch must be one of {', '.join(STRETCHES)}, got {self.stretch!r}.")
        if self.threads is not None:
            check_number(PARAM, self.threads, 1, param="threads")
        if self.split not in SPLITS:
            raise InputError(f"{PARAM} must be one of {', '.join(SPLITS)}, got {self.split!r}.", param="split")
        if self.resample not in RESAMPLES:
            raise InputError(f"{PARAM} must be one of {', '.join(RESAMPLES)}, got {self.resample!r}.",
                             param="resample")
        if self.aoi is not None:
            from .aoi import parse_aoi

            parse_aoi(self.aoi)

    def cpu_threads(self, log=None) -> int:
        """Inference threads: ``threads`` capped at the cores this process may use (all of them when unset);
        ``log`` is told when the request was capped."""
        cores = cpu_cores()
        if self.threads is None:
            return cores
        if self.threads > cores:
            if log is not None:
                log(f"Threads {self.threads} capped at {cores}, the CPU cores this process may use.")
            return cores
        return int(self.threads)

@dataclass
class OutputPaths:
    """Files one run writes; each may be ``None``.

    Attributes:
        vector: field polygons; GeoPackage by default, GeoJSON / Shapefile by extension.
        mask: uint8 GeoTIFF, 1 = cropland, 0 = other, 255 = nodata.
        probability: float32 GeoTIFF of the fused cropland probability (nodata = -1).
        report: JSON report (one row per input).
        overwrite: replace existing files; without it an existing output is refused before any work.
    """

    vector: Path | None = None
    mask: Path | None = None
    probability: Path | None = None
    report: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "overwrite" and value is not None:
                setattr(self, f.name, Path(value))

    def items(self) -> list[tuple[str, Path]]:
        """(kind, path) pairs of the outputs that are set."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)
                if f.name != "overwrite" and getattr(self, f.name) is not None]
