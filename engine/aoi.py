"""Restricting a run to an area of interest (AOI): a polygon or an extent in the raster's coordinates.

The AOI becomes a window (the raster's pixels that its bounds cover) and a validity mask (pixels whose centre
lies inside the polygon): pixels outside are nodata for the whole pipeline, so the valid area, the cropland area
and ratio, the fields (cut at the AOI's edge) and the mask/probability rasters (the window's grid) all cover the
AOI only. Kept apart from the reader so that the readers stay unaware of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError
from .io import RasterSource


def parse_aoi(aoi: Any):
    """A shapely (Multi)Polygon from ``aoi``: a shapely geometry, WKT text or ``(xmin, ymin, xmax, ymax)``.

    Raises:
        InputError: not a polygon, empty, or invalid beyond what ``make_valid`` repairs.
    """
    import shapely

    if isinstance(aoi, (tuple, list)) and len(aoi) == 4:
        xmin, ymin, xmax, ymax = (float(v) for v in aoi)
        if not (xmin < xmax and ymin < ymax):
            raise InputError(f"The extent {tuple(aoi)} is empty: give (xmin, ymin, xmax, ymax) with min < max.",
                             param="aoi")
        return shapely.box(xmin, ymin, xmax, ymax)
    geometry = aoi
    if isinstance(aoi, str):
        try:
            geometry = shapely.from_wkt(aoi)
        except Exception as exc:  # shapely raises GEOSException for bad WKT
            raise InputError(f"The area of interest is not valid WKT ({exc}).", param="aoi") from exc
    if not isinstance(geometry, shapely.Geometry):
        raise InputError(f"The area of interest must be a polygon, WKT or (xmin, ymin, xmax, ymax); got {aoi!r}.",
                         param="aoi")
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    polygons = shapely.get_parts(geometry)
    polygons = [g for g in polygons if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons or shapely.union_all(polygons).is_empty:
        raise InputError("The area of interest holds no polygon (points or lines cannot bound an area).", param="aoi")
    return shapely.union_all(polygons)


class AoiSource(RasterSource):
    """``base`` seen through an AOI: its window covering the AOI, with pixels outside the AOI invalid.

    Attributes are those of :class:`engine.io.RasterSource`; ``transform`` is the window's, ``row0``/``col0``
    its offset in ``base``, ``geometry`` the AOI in map coordinates.
    """

    def __init__(self, base: RasterSource, aoi: Any):
        from affine import Affine

        self.base = base
        self.geometry = parse_aoi(aoi)
        inverse = ~base.transform
        xmin, ymin, xmax, ymax = self.geometry.bounds
        cols, rows = zip(*(inverse * (x, y) for x in (xmin, xmax) for y in (ymin, ymax)), strict=True)
        c0, c1 = max(0, math.floor(min(cols))), min(base.width, math.ceil(max(cols)))
        r0, r1 = max(0, math.floor(min(rows))), min(base.height, math.ceil(max(rows)))
        if c1 <= c0 or r1 <= r0:
            raise InputError(
                f"The area of interest (bounds {xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) does not overlap "
                f"{base.name}. Check that it is given in the raster's coordinate reference system.", param="aoi"
            )
        self.row0, self.col0 = r0, c0
        self.width, self.height = c1 - c0, r1 - r0
        self.transform = base.transform * Affine.translation(c0, r0)
        self.name, self.count, self.crs = base.name, base.count, base.crs
        self.bands, self.dtype = base.bands, base.dtype
        self.nodata = getattr(base, "nodata", None)

    def read_inside(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        from affine import Affine
        from rasterio.features import geometry_mask

        values, valid = self.base.read_inside(row + self.row0, col + self.col0, height, width)
        inside = geometry_mask([self.geometry], out_shape=(height, width), invert=True,
                               transform=self.transform * Affine.translation(col, row))
        return values, valid & inside

    def select_bands(self, bands: list[int]) -> None:
        self.base.select_bands(bands)
        self.bands = self.base.bands

    def close(self) -> None:
        self.base.close()

    def describe(self) -> str:
        """One log line: the window and the AOI's share of it."""
        return (f"Area of interest: columns {self.col0}-{self.col0 + self.width}, rows {self.row0}-"
                f"{self.row0 + self.height} of {self.base.width} x {self.base.height} px; pixels outside it count "
                "as nodata.")


def restrict(source: RasterSource, aoi: Any, log=None) -> RasterSource:
    """``source`` restricted to ``aoi`` (see :class:`AoiSource`); ``source`` itself when ``aoi`` is None.

    On an error the source is closed before :class:`InputError` propagates.
    """
    if aoi is None:
        return source
    try:
        restricted = AoiSource(source, aoi)
    except InputError:
        source.close()
        raise
    if log is not None:
        log(restricted.describe())
    return restricted
