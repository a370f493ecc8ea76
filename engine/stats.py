"""Cropland statistics of a mask raster, or of polygons over a raster's grid (the original study's first table),
read strip by strip; and polygons read from any vector file. Areas follow :mod:`engine.areas`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import masks
from .areas import AreaCounter, MaskStatistics, area_model
from .errors import InputError
from .runtime import iter_strips

LogFn = Callable[[str], None]


def _open(path: Path):
    import rasterio
    from rasterio.errors import RasterioIOError

    if not Path(path).exists():
        raise InputError(f"Raster not found: {path}")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"Cannot open {path} as a raster ({exc}).") from exc


def mask_file_statistics(path: str | Path, pixel_size_m: float | None = None, band: int = 1,
                         log: LogFn | None = None) -> MaskStatistics:
    """Cropland statistics of a mask raster, read in strips (memory does not grow with its size).

    Args:
        path: raster with 1 = cropland and 0 = other in ``band``; nodata (the file's nodata value, internal
            masks, or 255 in our own masks) is not counted. In a 0/255 mask 255 is cropland (see :mod:`engine.masks`).
        pixel_size_m: pixel size in metres for rasters with no CRS.

    Raises:
        InputError: missing/unreadable file, missing band, or values other than 0/1 (/255) in valid pixels.
    """
    path = Path(path)
    with _open(path) as ds:
        if not 1 <= band <= ds.count:
            raise InputError(f"{path} has {ds.count} band(s); band {band} does not exist.")
        model = area_model(ds.crs, ds.transform, ds.height, pixel_size_m, log, path.name)
        counter = AreaCounter(model)
        from rasterio.windows import Window

        found: set[int] = set()
        for row0, n in iter_strips(ds.height):
            win = Window(0, row0, ds.width, n)
            values = ds.read(band, window=win)
            valid = ds.read_masks(band, window=win) > 0
            found.update(int(v) for v in np.unique(values[valid]))
            counter.add(row0, valid, masks.decode(values, valid))
        if masks.check_values(found):
            raise InputError(
                f"{path} is not a cropland mask: band {band} holds values {sorted(found)[:10]}; expected 0 = other "
                "and 1 = cropland (or 0/255), with nodata marked by the file's nodata value."
            )
        return counter.result(ds.crs, str(path))


def read_polygons(vector_path: str | Path, target_crs=None) -> list:
    """Polygons of a vector file as shapely geometries in ``target_crs`` (rasterio CRS or None = as stored).

    Raises:
        InputError: missing/unreadable file or no polygon geometries.
    """
    import pyogrio.raw
    import shapely

    vector_path = Path(vector_path)
    if not vector_path.exists():
        raise InputError(f"Vector file not found: {vector_path}")
    try:
        meta, _, geometry, _ = pyogrio.raw.read(vector_path, read_geometry=True, columns=[])
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise InputError(f"Cannot read {vector_path} as a vector layer ({exc}).") from exc
    geoms = [g for g in shapely.from_wkb(geometry) if g is not None and not g.is_empty]
    polys = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if geoms and not polys:
        raise InputError(f"{vector_path} holds {geoms[0].geom_type} geometries; polygons are needed.")
    src_crs = meta.get("crs")
    if target_crs is not None and src_crs:
        from pyproj import CRS as PROJ_CRS
        from pyproj import Transformer

        src, dst = PROJ_CRS.from_user_input(src_crs), PROJ_CRS.from_user_input(target_crs.to_wkt())
        if src != dst:
            tr = Transformer.from_crs(src, dst, always_xy=True)
            polys = [shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
                     for g in polys]
    return polys


def polygon_statistics(vector_path: str | Path, raster_path: str | Path, pixel_size_m: float | None = None,
                       log: LogFn | None = None) -> MaskStatistics:
    """Cropland statistics of polygons over a raster's grid: polygons are rasterised (pixel centres inside) on the
    raster's grid, strip by strip, and counted over the raster's valid pixels.

    Args:
        vector_path: polygon layer (any OGR format); reprojected to the raster's CRS when both have one.
        raster_path: the raster whose extent, grid and nodata define the area.
        pixel_size_m: pixel size in metres for rasters with no CRS.
    """
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with _open(Path(raster_path)) as ds:
        polys = read_polygons(vector_path, ds.crs)
        model = area_model(ds.crs, ds.transform, ds.height, pixel_size_m, log, Path(raster_path).name)
        counter = AreaCounter(model)
        for row0, n in iter_strips(ds.height):
            win = Window(0, row0, ds.width, n)
            valid = ds.dataset_mask(window=win) > 0
            inside = rasterize(((p, 1) for p in polys), out_shape=(n, ds.width),
                               transform=window_transform(win, ds.transform), fill=0, dtype="uint8") > 0 \
                if polys else np.zeros((n, ds.width), bool)
            counter.add(row0, valid, inside)
        return counter.result(ds.crs, str(vector_path))
