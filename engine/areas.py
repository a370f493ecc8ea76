"""Areas in square metres, done right for every kind of raster, and the counter that adds them up strip by strip.

* Projected CRS: the pixel area is ``|det(transform)|`` in the CRS's linear unit, converted to metres.
* Geographic CRS: geodesic areas on the CRS's own ellipsoid (``pyproj.Geod``): per raster row for pixels, per
  polygon for fields.
* No CRS: only when the user states the pixel size in metres (``pixel_size_m``), area = pixel count × size²;
  otherwise areas are unknown (``None``) and only the ratio is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import PARAM, InputError

LogFn = Callable[[str], None]


@dataclass
class AreaModel:
    """How pixel and polygon areas of one raster convert to m².

    Attributes:
        method: ``"projected"``, ``"geodesic"``, ``"pixel_size"`` or ``"none"`` (no CRS, no stated pixel size).
        transform: the raster's affine transform (pixel -> map coordinates).
        pixel_area_m2: area of one pixel for the projected and pixel_size methods.
        pixel_size_m: nominal pixel edge in metres (mean for geodesic), or None.
    """

    method: str
    transform: object
    pixel_area_m2: float | None = None
    pixel_size_m: float | None = None
    unit_m: float = 1.0
    geod: object = None

    @property
    def known(self) -> bool:
        """True when areas in m² can be computed."""
        return self.method != "none"

    def row_pixel_areas(self, row0: int, n: int) -> np.ndarray:
        """float64 (n,) area in m² of one pixel of each raster row ``row0 .. row0 + n`` (NaN if unknown)."""
        if self.method == "geodesic":
            t = self.transform
            areas = np.empty(n)
            for i, r in enumerate(range(row0, row0 + n)):
                xs, ys = zip(*(t * (c, rr) for c, rr in ((0, r), (1, r), (1, r + 1), (0, r + 1))), strict=True)
                areas[i] = abs(self.geod.polygon_area_perimeter(xs, ys)[0])
            return areas
        value = self.pixel_area_m2 if self.pixel_area_m2 is not None else np.nan
        return np.full(n, value, dtype=np.float64)

    def polygon_area_perimeter(self, geom_map) -> tuple[float | None, float | None]:
        """(area m², perimeter m) of a shapely polygon in map coordinates; (None, None) when unknown."""
        if self.method == "geodesic":
            # pyproj's geometry_area_perimeter leaves holes out of the perimeter; the boundary's geodesic length
            # counts every ring, as the projected length does.
            area, _ = self.geod.geometry_area_perimeter(geom_map)
            return abs(area), float(self.geod.geometry_length(geom_map.boundary))
        if self.method == "projected":
            return geom_map.area * self.unit_m**2, geom_map.length * self.unit_m
        if self.method == "pixel_size":
            det = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
            scale = self.pixel_size_m / np.sqrt(det)
            return geom_map.area * scale**2, geom_map.length * scale
        return None, None

    def areas_perimeters(self, geoms_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`polygon_area_perimeter` of many polygons at once: object array (n,) of shapely polygons in map
        coordinates -> (area m², perimeter m) float64 (n,) each, NaN when unknown (one GEOS call each for the
        projected and pixel_size methods, polygon by polygon for geodesic ones)."""
        import shapely

        if self.method in ("projected", "pixel_size"):
            if self.method == "projected":
                scale = self.unit_m
            else:
                scale = self.pixel_size_m / np.sqrt(abs(self.transform.a * self.transform.e
                                                        - self.transform.b * self.transform.d))
            return shapely.area(geoms_map) * scale**2, shapely.length(geoms_map) * scale
        pairs = [self.polygon_area_perimeter(g) for g in geoms_map]
        return (np.array([np.nan if a is None else a for a, _ in pairs], dtype=np.float64),
                np.array([np.nan if p is None else p for _, p in pairs], dtype=np.float64))


def area_model(crs, transform, height: int, pixel_size_m: float | None = None,
               log: LogFn | None = None, name: str = "raster") -> AreaModel:
    """Choose the area method for a raster.

    Args:
        crs: rasterio CRS or None; transform: affine.Affine; height: rows (for the mean geodesic pixel size).
        pixel_size_m: user-stated pixel size in metres; used only when the raster has no CRS.
        log: told when ``pixel_size_m`` is ignored or areas are unknown.
    """
    from .options import check_number

    log = log or (lambda _: None)
    if pixel_size_m is not None:
        check_number(f"{PARAM} (m)", pixel_size_m, 0.0, low_open=True, param="pixel_size_m")
    det = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        if pixel_size_m is None:
            log(f"{name} has no CRS: areas are unknown. Give the pixel size in metres (--pixel-size) to get them.")
            return AreaModel("none", transform)
        return AreaModel("pixel_size", transform, pixel_area_m2=pixel_size_m**2, pixel_size_m=pixel_size_m)
    if pixel_size_m is not None:
        log(f"{name} has a CRS ({crs_label(crs)}); the stated pixel size {pixel_size_m} m is ignored.")
    if crs.is_geographic:
        from pyproj import CRS as PROJ_CRS

        geod = PROJ_CRS.from_user_input(crs.to_wkt()).get_geod()
        model = AreaModel("geodesic", transform, geod=geod)
        mid = model.row_pixel_areas(max(height // 2, 0), 1)[0]
        model.pixel_size_m = float(np.sqrt(mid))
        return model
    try:
        unit_m = float(crs.linear_units_factor[1])
    except Exception as exc:  # rasterio raises CRSError for CRSs without a linear unit
        raise InputError(f"{name}: cannot tell the linear unit of its CRS {crs_label(crs)} ({exc}).") from exc
    return AreaModel("projected", transform, pixel_area_m2=det * unit_m**2, pixel_size_m=float(np.sqrt(det)) * unit_m,
                     unit_m=unit_m)


def crs_label(crs) -> str | None:
    """``"EPSG:nnnn"`` when the CRS has an EPSG code, else its WKT; None for no CRS."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@dataclass
class MaskStatistics:
    """Cropland statistics of a mask.

    Attributes:
        valid_pixels, cropland_pixels: counts; valid/cropland_area_m2: areas (None when unknown);
        cropland_ratio: cropland / valid pixels; crs: "EPSG:n"/WKT/None; pixel_size_m; area_method.
    """

    valid_pixels: int
    cropland_pixels: int
    valid_area_m2: float | None
    cropland_area_m2: float | None
    cropland_ratio: float
    crs: str | None
    pixel_size_m: float | None
    area_method: str
    source: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict with areas in m² and ha."""
        d = dict(self.__dict__)
        d["valid_area_ha"] = None if self.valid_area_m2 is None else self.valid_area_m2 / 1e4
        d["cropland_area_ha"] = None if self.cropland_area_m2 is None else self.cropland_area_m2 / 1e4
        return d


class AreaCounter:
    """Accumulates valid and cropland pixel counts and areas, strip by strip."""

    def __init__(self, model: AreaModel):
        self.model = model
        self.valid_pixels = 0
        self.cropland_pixels = 0
        self.valid_area = 0.0
        self.cropland_area = 0.0

    def add(self, row0: int, valid: np.ndarray, cropland: np.ndarray | None = None) -> None:
        """Count bool (h, w) ``valid`` pixels (and ``cropland`` ones, which must be valid) of rows ``row0..``."""
        areas = self.model.row_pixel_areas(row0, valid.shape[0])
        per_row = valid.sum(axis=1)
        self.valid_pixels += int(per_row.sum())
        self.valid_area += float(per_row @ areas)
        if cropland is not None:
            per_row = (cropland & valid).sum(axis=1)
            self.cropland_pixels += int(per_row.sum())
            self.cropland_area += float(per_row @ areas)

    def add_cropland(self, row0: int, cropland: np.ndarray) -> None:
        """Count bool (h, w) ``cropland`` pixels (already restricted to valid ones) of rows ``row0 ..``."""
        per_row = cropland.sum(axis=1)
        self.cropland_pixels += int(per_row.sum())
        self.cropland_area += float(per_row @ self.model.row_pixel_areas(row0, cropland.shape[0]))

    def reset_cropland(self) -> None:
        """Forget the cropland counted so far (the valid counts stay), to count a corrected mask again."""
        self.cropland_pixels = 0
        self.cropland_area = 0.0

    def result(self, crs, source: str = "") -> MaskStatistics:
        """The statistics so far."""
        known = self.model.known
        return MaskStatistics(
            valid_pixels=self.valid_pixels,
            cropland_pixels=self.cropland_pixels,
            valid_area_m2=self.valid_area if known else None,
            cropland_area_m2=self.cropland_area if known else None,
            cropland_ratio=self.cropland_pixels / self.valid_pixels if self.valid_pixels else 0.0,
            crs=crs_label(crs),
            pixel_size_m=self.model.pixel_size_m,
            area_method=self.model.method,
            source=source,
        )
