"""The result of one extraction: statistics, fields and what ran, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldRecord:
    """One extracted field.

    Attributes:
        id: 1-based field number, stable within one run.
        geometry: shapely Polygon in the raster's CRS (pixel coordinates when the raster has no CRS).
        area_m2, perimeter_m: in square metres / metres (geodesic for geographic CRSs).
        mean_probability: mean fused cropland probability of the field's pixels, 0..1.
        mean_boundary: mean boundary probability along the field's outline (its pixels next to another field or
            to non-cropland), 0..1; None when the model has no boundary output.
    """

    id: int
    geometry: Any
    area_m2: float | None
    perimeter_m: float | None
    mean_probability: float
    mean_boundary: float | None = None

    @property
    def area_ha(self) -> float | None:
        """Area in hectares (None when areas are unknown)."""
        return None if self.area_m2 is None else self.area_m2 / 10_000.0

    @classmethod
    def of(cls, id_: int, geometry, area_m2: float, perimeter_m: float, mean_probability: float,
           mean_boundary: float) -> FieldRecord:
        """A record from plain floats, NaN meaning unknown (as the spool and the vector writer hold them)."""
        return cls(id_, geometry, None if area_m2 != area_m2 else area_m2,
                   None if perimeter_m != perimeter_m else perimeter_m, mean_probability,
                   None if mean_boundary != mean_boundary else mean_boundary)


@dataclass
class ExtractionResult:
    """Statistics and provenance of one input processed.

    Attributes:
        input: path of the raster (or ``"<array>"``).
        crs: the raster CRS as ``"EPSG:nnnn"`` or WKT; ``None`` for rasters without one.
        pixel_size_m: pixel size in metres (mean over the raster for geographic CRSs).
        area_method: ``"projected"``, ``"geodesic"`` or ``"pixel_size"`` (user-stated size, no CRS).
        valid_area_m2: area of pixels that are not nodata.
        cropland_area_m2: area of cropland pixels of the final mask.
        cropland_ratio: cropland pixels / valid pixels of the final mask (0..1).
        field_count: number of field polygons.
        fields: the fields themselves (may be empty when not kept in memory).
        models: names of the models that ran; device: what they ran on, e.g. ``"cpu (onnxruntime)"``.
        seconds: wall time of the run; stage_seconds: wall time per stage; stage_cpu_seconds: the process's CPU
            time (user + system, all threads) per stage.
        outputs: kind -> path of files written.
        normalization: how raw values were mapped onto the model's range (decided once for the raster).
        split: how fields were split: ``{"method": "boundary" | "extent" | "none", "cut_pixels", "regions"
            (4-connected cropland regions), "fields_traced" (fields before the area filters),
            "fields_added_by_split"}``.
        resampling: whether the raster was read resampled to the model's resolution: ``{"resampled", "native_m",
            "model_m", "accepted_m", "mode", and when resampled "model_grid", "read", "back"}``.
    """

    input: str
    crs: str | None
    pixel_size_m: float | None
    area_method: str
    valid_area_m2: float | None
    cropland_area_m2: float | None
    cropland_ratio: float
    field_count: int
    valid_pixels: int = 0
    cropland_pixels: int = 0
    fields: list[FieldRecord] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    device: str = ""
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    normalization: str = ""
    split: dict[str, Any] = field(default_factory=dict)
    resampling: dict[str, Any] = field(default_factory=dict)

    @property
    def valid_area_ha(self) -> float | None:
        """Valid area in hectares (None when areas are unknown)."""
        return _ha(self.valid_area_m2)

    @property
    def cropland_area_ha(self) -> float | None:
        """Cropland area in hectares (None when areas are unknown)."""
        return _ha(self.cropland_area_m2)

    def to_report(self) -> dict[str, Any]:
        """One JSON-ready report row (no geometries)."""
        return {
            "input": self.input,
            "crs": self.crs,
            "pixel_size_m": self.pixel_size_m,
            "area_method": self.area_method,
            "valid_pixels": self.valid_pixels,
            "cropland_pixels": self.cropland_pixels,
            "valid_area_m2": _round(self.valid_area_m2, 3),
            "valid_area_ha": _round(self.valid_area_ha, 5),
            "cropland_area_m2": _round(self.cropland_area_m2, 3),
            "cropland_area_ha": _round(self.cropland_area_ha, 5),
            "cropland_ratio": round(self.cropland_ratio, 6),
            "field_count": self.field_count,
            "models": self.models,
            "device": self.device,
            "normalization": self.normalization,
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "outputs": self.outputs,
            "split": self.split,
            "resampling": self.resampling,
        }

    def summary(self) -> str:
        """The one-line summary the CLI prints."""
        if self.cropland_area_m2 is None:
            area = (f"cropland area unknown (no CRS; give --pixel-size), "
                    f"{self.cropland_pixels} of {self.valid_pixels} px")
        else:
            area = f"cropland {self.cropland_area_ha:,.2f} ha of {self.valid_area_ha:,.2f} ha valid"
        return (f"{self.input}: {area} (ratio {self.cropland_ratio:.4f}), {self.field_count} fields, "
                f"{self.seconds:.1f} s on {self.device}")


@dataclass
class SceneFailure:
    """An input whose run failed (in a batch that goes on without it): its path and the error, written for the user."""

    input: str
    error: str

    def to_report(self) -> dict:
        """One JSON-ready report row."""
        return {"input": self.input, "error": self.error}

    def summary(self) -> str:
        """The one-line summary the CLI prints."""
        return f"{self.input}: FAILED: {self.error}"


def _ha(m2: float | None) -> float | None:
    return None if m2 is None else m2 / 10_000.0


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
