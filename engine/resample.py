"""Reading a raster at the model's resolution and mapping the prediction back to the raster's own grid.

A model is trained at one ground sampling distance (``resolution_m`` in its metadata) and accepts rasters within
``resolution_range_m`` (default: half to twice it). With ``--resample auto``, a raster outside that range is read
through a GDAL warped VRT (:class:`rasterio.vrt.WarpedVRT`) onto a grid of the same extent and CRS at the model's
pixel size (:func:`target_resolution`: ``resolution_m``, or the nearest end of a ``resolution_range_m`` the model
declares, e.g. 30 m Landsat read at 10 m, not 2 m, by a model trained across 1-10 m): windowed reads, resampled on
the fly (bilinear when the model's grid is finer, average when it is coarser), never a whole-raster copy. Inference
and blending run on that grid; the blended probabilities (and any other output channels) go, row band by row band,
into a temporary uint8 GeoTIFF (p x 254), which a second warped VRT reads back onto the raster's own grid
(bilinear), strip by strip. From there on everything (threshold, opening, split, fields, counts) runs on the native
grid, so the mask and probability outputs are on the raster's grid, polygons are traced on its pixels in its CRS,
and areas are its pixels' areas: the detour changes what the model sees, not how anything is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import FileSource

RESAMPLES = ("auto", "off")
PROB_SCALE = 254
NODATA = 255


@dataclass
class ResamplePlan:
    """The model-grid detour of one raster.

    Attributes:
        native_m, model_m: pixel sizes in metres of the raster and of the grid the model reads it on
            (:func:`target_resolution`).
        width, height, transform: the model grid (same extent and CRS as the raster).
        method: GDAL resampling used to read the raster onto the model grid (``"bilinear"`` or ``"average"``).
    """

    native_m: float
    model_m: float
    width: int
    height: int
    transform: object
    method: str

    def describe(self) -> dict:
        """JSON-ready record for the report."""
        return {"resampled": True, "native_m": round(self.native_m, 4), "model_m": self.model_m,
                "model_grid": [self.width, self.height], "read": self.method, "back": "bilinear"}


def _declared_range(meta) -> list[float] | None:
    """The ``resolution_range_m`` the model's metadata declares (a field, or a key of ``extra``), or None."""
    return getattr(meta, "resolution_range_m", None) or meta.extra.get("resolution_range_m")


def accepted_range(meta) -> tuple[float, float] | None:
    """(min, max) pixel size in metres the model accepts; None when it states no resolution."""
    if not meta.resolution_m:
        return None
    declared = _declared_range(meta)
    if declared:
        return float(declared[0]), float(declared[1])
    return meta.resolution_m / 2.0, meta.resolution_m * 2.0


def target_resolution(meta, pixel_size_m: float) -> float:
    """Pixel size (m) a raster of ``pixel_size_m`` m outside the model's accepted range is read at.

    A model that declares ``resolution_range_m`` was trained across that range (scale augmentation, sets of
    several GSDs), so the raster goes to the nearest end of it: as little detail lost or made up as the model
    allows. A model that declares only ``resolution_m`` (v1) is read at ``resolution_m``.
    """
    declared = _declared_range(meta)
    if not declared:
        return float(meta.resolution_m)
    return min(max(float(pixel_size_m), float(declared[0])), float(declared[1]))


def plan_resample(source, pixel_size_m: float | None, meta, mode: str) -> ResamplePlan | None:
    """The detour for ``source`` (a :class:`FileSource` with a CRS), or None when the raster's pixel size
    ``pixel_size_m`` is within the model's accepted range, unknown, or ``mode`` is ``"off"``."""
    from affine import Affine

    accepted = accepted_range(meta)
    if mode == "off" or accepted is None or not pixel_size_m or source.crs is None:
        return None
    if accepted[0] <= pixel_size_m <= accepted[1]:
        return None
    target = target_resolution(meta, pixel_size_m)
    factor = target / pixel_size_m  # model pixel in native pixels
    width = max(1, math.ceil(source.width / factor - 1e-9))
    height = max(1, math.ceil(source.height / factor - 1e-9))
    transform = source.transform * Affine.scale(factor, factor)
    return ResamplePlan(pixel_size_m, target, width, height, transform,
                        "bilinear" if factor < 1 else "average")


def decide(source, pixel_size_m: float | None, ensemble, mode: str, log: Callable[[str], None]
           ) -> tuple[ResamplePlan | None, dict]:
    """Whether (and how) ``source`` is read resampled to ``ensemble``'s resolution; logs the decision.

    Returns (the plan or None, the report's resampling record)."""
    meta = ensemble.meta
    res, accepted = meta.resolution_m, accepted_range(meta)
    info = {"resampled": False, "native_m": round(pixel_size_m, 4) if pixel_size_m else None, "model_m": res,
            "accepted_m": list(accepted) if accepted else None, "mode": mode}
    outside = accepted is not None and pixel_size_m and not accepted[0] <= pixel_size_m <= accepted[1]
    if not outside:
        return None, info
    what = (f"{Path(source.name).name} is {pixel_size_m:.3g} m/px, outside the {accepted[0]:g}-{accepted[1]:g} "
            f"m/px the model {ensemble.name} accepts (trained at {res:g} m/px)")
    plan = plan_resample(source, pixel_size_m, meta, mode) if isinstance(source, FileSource) else None
    if plan is None:
        why = ("--resample off" if mode == "off" else
               "the raster has no CRS to resample in" if source.crs is None else "in-memory arrays are not resampled")
        log(f"Note: {what}; not resampled ({why}), so accuracy may be lower.")
        return None, info
    log(f"Resampling: {what}; read resampled ({plan.method}) to {plan.model_m:g} m/px ({plan.width} x "
        f"{plan.height} px), "
        "predicted there, and the prediction mapped back (bilinear) to the raster's own grid, where the mask, "
        "fields and areas are made (--resample off to disable).")
    return plan, {**info, **plan.describe(), "mode": mode}


class WarpedSource(FileSource):
    """``source``'s raster read through a warped VRT onto ``plan``'s grid (same bands, CRS, nodata)."""

    def __init__(self, source: FileSource, plan: ResamplePlan):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.name = source.name
        # warped and delivered as float32 whatever the raster's type: a uint8 raster warped as uint8 would be
        # rounded to whole values after interpolation, and its 12-bit or float copies would not
        self._ds = WarpedVRT(source._ds, crs=source.crs, transform=plan.transform, width=plan.width,
                             height=plan.height, resampling=Resampling[plan.method], dtype="float32")
        self.width, self.height, self.count = plan.width, plan.height, source.count
        self.transform, self.crs = plan.transform, source.crs
        self.bands, self.dtype, self.nodata = list(source.bands), source.dtype, source.nodata


class ModelGridSpool:
    """Rows of blended channels on the model grid -> a temporary uint8 GeoTIFF (p x 254, 255 = nodata), read
    back onto the native grid by :meth:`native_strips`. ``first_row``: the first model-grid row :meth:`emit` gets
    (a row band of a Dask run spools only the rows it needs; the rest stays nodata)."""

    def __init__(self, path: Path, plan: ResamplePlan, crs, channels: int, first_row: int = 0):
        import rasterio

        from .writers import RowWriter, raster_profile

        class _Grid:
            width, height, transform = plan.width, plan.height, plan.transform

        grid = _Grid()
        grid.crs = crs
        profile = {**raster_profile(grid), "count": channels}
        self.path, self.channels = Path(path), channels
        self._ds = rasterio.open(self.path, "w", **profile, dtype="uint8", nodata=NODATA)
        self._writers = [_BandWriter(self._ds, b + 1, lambda ds: RowWriter(ds, first_row=first_row))
                         for b in range(channels)]

    def emit(self, row0: int, probs: np.ndarray, valid: np.ndarray) -> None:
        """Blender sink: ``probs`` (h, w) or (h, w, channels) float32, ``valid`` (h, w) bool."""
        planes = probs[..., None] if probs.ndim == 2 else probs
        for b, writer in enumerate(self._writers):
            q = np.where(valid, np.rint(np.nan_to_num(planes[..., b]) * PROB_SCALE), NODATA).astype(np.uint8)
            writer.write(row0, q)

    def close(self) -> None:
        """Finish writing (call before :meth:`native_strips`)."""
        for writer in self._writers:
            writer.close()
        self._ds.close()

    def native_strips(self, native: FileSource, rows: int, start: int = 0, stop: int | None = None
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(row0, probs float32 (n, w) or (n, w, channels), valid bool (n, w)) on ``native``'s grid, ``rows``
        rows at a time: the model-grid channels resampled back (bilinear), valid where the native raster is
        valid and the model grid had data. Only the strips (of ``rows`` rows from the top) that overlap rows
        ``start .. stop`` (default: all)."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.windows import Window as RioWindow

        with rasterio.open(self.path) as ds, WarpedVRT(ds, crs=native.crs, transform=native.transform,
                                                       width=native.width, height=native.height,
                                                       resampling=Resampling.bilinear, nodata=NODATA) as vrt:
            stop = native.height if stop is None else stop
            for row0 in range(start // rows * rows, stop, rows):
                n = min(rows, native.height - row0)
                q = vrt.read(window=RioWindow(0, row0, native.width, n))
                valid = native.read_inside(row0, 0, n, native.width)[1] & np.all(q != NODATA, axis=0)
                probs = np.moveaxis(q.astype(np.float32) / np.float32(PROB_SCALE), 0, -1)
                probs[~valid] = np.nan
                yield row0, probs[..., 0] if self.channels == 1 else probs, valid


class _BandWriter:
    """A :class:`engine.writers.RowWriter` onto one band of a multi-band dataset."""

    def __init__(self, ds, band: int, row_writer: Callable):
        self._band = band
        outer = self

        class _OneBand:
            def write(self, data, _band, window):
                ds.write(data, outer._band, window=window)

        self._writer = row_writer(_OneBand())

    def write(self, row0: int, rows: np.ndarray) -> None:
        self._writer.write(row0, rows)

    def close(self) -> None:
        self._writer.close()
