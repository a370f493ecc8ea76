"""Options of one extraction run and the paths it writes.

One dataclass for the run's settings (:class:`ExtractOptions`) and one for its outputs (:class:`OutputPaths`), shared
by the CLI, the library API and the QGIS plugin. ``None`` means "take it from the model's metadata".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "onnx", "torch")
FUSIONS = ("mean", "vote")
STRETCHES = ("auto", "none", "percentile")


@dataclass
class ExtractOptions:
    """Settings of one run.

    Attributes:
        bands: 1-based raster band numbers fed to the model, in model-channel order; ``None`` = the model's
            ``input_bands``.
        tile_size, overlap: tiling in pixels; ``None`` = the model's metadata.
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
        stretch: ``"auto"`` (percentile-stretch the data onto the model's value range only when its range does
            not match, e.g. 16-bit reflectance for an 8-bit model), ``"none"`` or ``"percentile"`` (always).
        threads: CPU threads for inference; ``None`` = all cores.
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
        if self.tile_size is not None and self.tile_size < 32:
            raise InputError(f"tile size must be at least 32 pixels, got {self.tile_size}.")
        if self.overlap is not None and self.overlap < 0:
            raise InputError(f"overlap must be >= 0 pixels, got {self.overlap}.")
        if self.tile_size is not None and self.overlap is not None and self.overlap * 2 > self.tile_size:
            raise InputError(f"overlap {self.overlap} must be at most half the tile size {self.tile_size}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}.")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must lie strictly between 0 and 1, got {self.threshold}.")
        for name in ("min_area_m2", "max_hole_m2", "simplify_m"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.opening_px < 0:
            raise InputError(f"opening_px must be >= 0, got {self.opening_px}.")
        if self.pixel_size_m is not None and self.pixel_size_m <= 0:
            raise InputError(f"pixel size must be > 0 metres, got {self.pixel_size_m}.")
        if self.stretch not in STRETCHES:
            raise InputError(f"stretch must be one of {', '.join(STRETCHES)}, got {self.stretch!r}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}.")


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
