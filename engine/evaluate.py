"""``python -m engine evaluate``: a prediction against a reference, each a mask raster or a polygon layer.

The first raster given (the prediction's, else the reference's) sets the grid; a raster on another grid is
resampled onto it (nearest neighbour) and polygons are rasterised onto it (pixel centres inside), each polygon as
its own field so that touching reference parcels stay separate objects. Two polygon layers are rasterised onto a
grid over the union of their extents in the reference's CRS, with cells of ``cell_size`` map units (by default
the longer side / 2048). The fields of a *mask* are its 4-connected components, so fields that touch in a mask
count as one object. Metrics come from :mod:`engine.metrics`:
pixel IoU/F1/precision/recall/accuracy, boundary F1 within a tolerance, the ratio error, and object-level
precision/recall/F1 of fields matched at IoU >= 0.5 (as Fields of The World reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import masks
from . import metrics as m
from .areas import area_model
from .errors import PARAM, InputError


@dataclass
class Grid:
    """Target grid: shape (height, width), affine transform, CRS (or None)."""

    height: int
    width: int
    transform: object
    crs: object


@dataclass
class Layer:
    """A mask on the grid: ``mask`` bool (H, W), ``valid`` bool (H, W), ``instances`` int32 (H, W)."""

    mask: np.ndarray
    valid: np.ndarray
    instances: np.ndarray


def _is_raster(path: Path) -> bool:
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.exists():
        raise InputError(f"File not found: {path}")
    if path.suffix.lower() in (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml"):
        return False
    try:
        with rasterio.open(path):
            return True
    except RasterioIOError:
        return False


def _read_mask_raster(path: Path, grid: Grid | None, grid_name: str = "") -> tuple[Grid, Layer]:
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(path) as ds:
        values = ds.read(1)
        valid = ds.read_masks(1) > 0
        own = Grid(ds.height, ds.width, ds.transform, ds.crs)
    found = set(np.unique(values[valid]).tolist())
    if masks.check_values(found):
        raise InputError(f"{path} is not a cropland mask: it holds values {sorted(found)[:10]}; expected 0/1 "
                         "(or 0/255) with nodata marked as the file's nodata value.")
    mask = masks.decode(values, valid)
    if grid is not None and (grid.crs is None or own.crs is None) and (grid.height, grid.width) == \
            (own.height, own.width) and ((grid.crs is None and own.crs is None) or grid.transform == own.transform):
        # Without a CRS on both, rasters of the same shape are compared pixel for pixel (their grids say
        # nothing about where they are); one with and one without a CRS only when the grids match exactly.
        grid = None
    elif grid is not None and (grid.crs is None) != (own.crs is None):
        with_crs, without = (grid_name, path) if own.crs is None else (path, grid_name)
        raise InputError(f"{without} has no CRS and its grid differs from {with_crs}'s, so they cannot be "
                         "aligned; assign it the right CRS (e.g. gdal_edit.py -a_srs) or give rasters on the same "
                         "pixel grid.")
    elif grid is not None and grid.crs is None and own.crs is None:
        raise InputError(f"{path} and {grid_name} have no CRS and different sizes ({own.width} x {own.height} "
                         f"vs {grid.width} x {grid.height} px); without a CRS only rasters of the same size can be "
                         "compared, pixel for pixel.")
    if grid is not None and (grid.height, grid.width, grid.transform) != (own.height, own.width, own.transform):
        out = np.zeros((2, grid.height, grid.width), np.uint8)
        for k, band in enumerate((mask, valid)):
            reproject(band.astype(np.uint8), out[k], src_transform=own.transform, src_crs=own.crs,
                      dst_transform=grid.transform, dst_crs=grid.crs or own.crs, resampling=Resampling.nearest)
        mask, valid = out[0] > 0, out[1] > 0
    target = grid or own
    return target, Layer(mask & valid, valid, m.label_instances(mask & valid))


DEFAULT_CELLS = 2048


def _polygon_grid(pred_path: Path, ref_path: Path, cell_size: float | None) -> tuple[Grid, list, list]:
    """Grid over both layers' extent in the reference's CRS; the two layers' polygons in that CRS."""
    import math

    import pyogrio
    import shapely
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from .stats import read_polygons

    if cell_size is not None and cell_size <= 0:
        raise InputError(f"{PARAM} must be positive, got {cell_size}.", param="cell_size")
    try:
        wkt = pyogrio.read_info(ref_path).get("crs")
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise InputError(f"Cannot read {ref_path} as a vector layer ({exc}).") from exc
    crs = CRS.from_user_input(wkt) if wkt else None
    ref_polys, pred_polys = read_polygons(ref_path, crs), read_polygons(pred_path, crs)
    if not ref_polys and not pred_polys:
        raise InputError(f"{pred_path} and {ref_path} hold no polygons: there is nothing to compare.")
    x0, y0, x1, y1 = shapely.total_bounds(np.array(ref_polys + pred_polys, dtype=object))
    cell = cell_size or max(x1 - x0, y1 - y0) / DEFAULT_CELLS
    width, height = max(1, math.ceil((x1 - x0) / cell)), max(1, math.ceil((y1 - y0) / cell))
    if width * height > 20_000 ** 2:
        raise InputError(f"A {cell:g}-unit grid over the layers' extent would be {width} x {height} px; "
                         f"give a larger {PARAM}.", param="cell_size")
    return Grid(height, width, from_origin(x0, y1, cell, cell), crs), pred_polys, ref_polys


def _read_polygons(path: Path, grid: Grid) -> Layer:
    from .stats import read_polygons

    return _polygon_layer(read_polygons(path, grid.crs), grid)


def _polygon_layer(polys: list, grid: Grid) -> Layer:
    """Polygons in the grid's CRS -> a layer on the grid, each polygon its own instance."""
    from rasterio.features import rasterize

    inst = rasterize(((p, k) for k, p in enumerate(polys, start=1)), out_shape=(grid.height, grid.width),
                     transform=grid.transform, fill=0, dtype="int32") if polys else \
        np.zeros((grid.height, grid.width), np.int32)
    return Layer(inst > 0, np.ones_like(inst, bool), inst)


def evaluate(prediction: str | Path, reference: str | Path, pixel_size_m: float | None = None,
             tolerance_px: int = 2, iou_threshold: float = 0.5, cell_size: float | None = None) -> dict:
    """Compare a prediction with a reference.

    Args:
        prediction, reference: mask rasters (1 = cropland, 0 = other; 0/255 accepted) or polygon layers.
        pixel_size_m: pixel size in metres for rasters without a CRS (for the areas).
        tolerance_px: boundary F1 tolerance in pixels; iou_threshold: object matching threshold.
        cell_size: grid cell in map units when both are polygon layers (default: longer side / 2048).

    Returns:
        dict: iou, f1, precision, recall, accuracy, ratio_pred, ratio_ref, ratio_error, boundary_precision,
        boundary_recall, boundary_f1, object_precision, object_recall, object_f1, fields_pred, fields_ref,
        matched_fields, pred_area_m2, ref_area_m2 (None when unknown), valid_pixels, tolerance_px, iou_threshold.

    Raises:
        InputError: missing or unreadable files, non-mask rasters, empty polygon layers.
    """
    from .options import check_number

    check_number(f"{PARAM} (px)", tolerance_px, 0, param="tolerance_px")
    check_number(PARAM, iou_threshold, 0.0, 1.0, low_open=True, param="iou_threshold")
    if cell_size is not None:
        check_number(PARAM, cell_size, 0.0, low_open=True, param="cell_size")
    if pixel_size_m is not None:
        check_number(f"{PARAM} (m)", pixel_size_m, 0.0, low_open=True, param="pixel_size_m")
    pred_path, ref_path = Path(prediction), Path(reference)
    pred_raster, ref_raster = _is_raster(pred_path), _is_raster(ref_path)
    if not pred_raster and not ref_raster:
        grid, pred_polys, ref_polys = _polygon_grid(pred_path, ref_path, cell_size)
        pred, ref = _polygon_layer(pred_polys, grid), _polygon_layer(ref_polys, grid)
    elif pred_raster:
        grid, pred = _read_mask_raster(pred_path, None)
        ref = _read_mask_raster(ref_path, grid, str(pred_path))[1] if ref_raster else _read_polygons(ref_path, grid)
    else:
        grid, ref = _read_mask_raster(ref_path, None)
        pred = _read_polygons(pred_path, grid)
    valid = pred.valid & ref.valid
    if not valid.any():
        raise InputError(f"{pred_path} and {ref_path} do not overlap: no pixel is valid in both, so there is "
                         "nothing to compare (check that both cover the same area, in CRSs that say where).")
    pix = m.pixel_metrics(pred.mask, ref.mask, valid)
    bnd = m.boundary_f1(pred.mask, ref.mask, tolerance_px, valid)
    obj = m.object_metrics(pred.instances, ref.instances, iou_threshold, valid)
    model = area_model(grid.crs, grid.transform, grid.height, pixel_size_m)

    def area(mask: np.ndarray) -> float | None:
        if not model.known:
            return None
        return float((mask & valid).sum(axis=1) @ model.row_pixel_areas(0, grid.height))

    return {
        "prediction": str(pred_path), "reference": str(ref_path),
        "iou": pix["iou"], "f1": pix["f1"], "precision": pix["precision"], "recall": pix["recall"],
        "accuracy": pix["accuracy"], "ratio_pred": pix["ratio_pred"], "ratio_ref": pix["ratio_ref"],
        "ratio_error": pix["ratio_error"],
        "boundary_precision": bnd["precision"], "boundary_recall": bnd["recall"], "boundary_f1": bnd["f1"],
        "object_precision": obj["precision"], "object_recall": obj["recall"], "object_f1": obj["f1"],
        "fields_pred": int(obj["n_pred"]), "fields_ref": int(obj["n_ref"]), "matched_fields": int(obj["tp"]),
        "pred_area_m2": area(pred.mask), "ref_area_m2": area(ref.mask), "valid_pixels": int(valid.sum()),
        "tolerance_px": tolerance_px, "iou_threshold": iou_threshold,
    }


def format_table(metrics: dict) -> str:
    """The metrics as a readable two-column table."""
    rows = [
        ("cropland IoU", metrics["iou"]), ("F1 (Dice)", metrics["f1"]), ("precision", metrics["precision"]),
        ("recall", metrics["recall"]), ("pixel accuracy", metrics["accuracy"]),
        (f"boundary F1 (±{metrics['tolerance_px']} px)", metrics["boundary_f1"]),
        ("cropland ratio, predicted", metrics["ratio_pred"]), ("cropland ratio, reference", metrics["ratio_ref"]),
        ("ratio error", metrics["ratio_error"]),
        (f"object precision (IoU ≥ {metrics['iou_threshold']})", metrics["object_precision"]),
        ("object recall", metrics["object_recall"]), ("object F1", metrics["object_f1"]),
    ]
    lines = [f"{name:<34} {value:>8.4f}" for name, value in rows]
    lines.append(f"{'fields predicted / reference / matched':<34} "
                 f"{metrics['fields_pred']} / {metrics['fields_ref']} / {metrics['matched_fields']}")
    if metrics["pred_area_m2"] is not None:
        lines.append(f"{'cropland area pred / ref (ha)':<34} "
                     f"{metrics['pred_area_m2'] / 1e4:,.2f} / {metrics['ref_area_m2'] / 1e4:,.2f}")
    return "\n".join(lines)
