"""Writing rasters row band by row band, and field polygons with their attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .outputs import vector_driver

BLOCK = 256


def raster_profile(source) -> dict:
    """GeoTIFF creation options on the source's grid (tiled 256 x 256, deflate); dtype/nodata are added by callers."""
    return {
        "driver": "GTiff", "width": source.width, "height": source.height, "count": 1,
        "crs": source.crs, "transform": source.transform, "tiled": True, "blockxsize": BLOCK,
        "blockysize": BLOCK, "compress": "deflate", "zlevel": 1, "BIGTIFF": "IF_SAFER",
    }


class RowWriter:
    """Writes consecutive row bands to band 1 of an open dataset, buffering so that every write covers whole
    rows of blocks (a compressed tile is then written exactly once). ``first_row``: the first row written (rows
    above it are left unwritten)."""

    def __init__(self, dataset, block_rows: int = BLOCK, first_row: int = 0):
        self.ds = dataset
        self.block_rows = block_rows
        self._rows: list[np.ndarray] = []
        self._row0 = first_row
        self._buffered = 0

    def write(self, row0: int, rows: np.ndarray) -> None:
        """Append (h, width) rows starting at raster row ``row0`` (must follow the previous rows)."""
        if row0 != self._row0 + self._buffered:
            raise ValueError(f"rows must be consecutive: expected {self._row0 + self._buffered}, got {row0}")
        self._rows.append(rows)
        self._buffered += rows.shape[0]
        full = (self._buffered // self.block_rows) * self.block_rows
        if full:
            self._flush(full)

    def _flush(self, n: int) -> None:
        from rasterio.windows import Window

        data = np.concatenate(self._rows, axis=0) if len(self._rows) > 1 else self._rows[0]
        self.ds.write(data[:n], 1, window=Window(0, self._row0, data.shape[1], n))
        rest = data[n:]
        self._rows = [rest] if rest.shape[0] else []
        self._row0 += n
        self._buffered -= n

    def close(self) -> None:
        """Write what is left."""
        if self._buffered:
            self._flush(self._buffered)


class FieldWriter:
    """Writes fields as polygons with attributes, a chunk at a time (:meth:`write`, one append each).

    Attributes: id (int), area_m2, area_ha, perimeter_m (``perim_m`` in Shapefiles, whose names are limited to 10
    characters), mean_prob (float; areas NULL when unknown) and, with ``boundary``, edge_conf (mean boundary
    probability along the outline). The driver follows the extension (GeoPackage,
    GeoJSON, Shapefile, FlatGeobuf); the layer is named after the file. GDAL's GeoJSON driver reorders features
    when appending, so GeoJSON is written in one piece, holding every chunk until :meth:`close`.
    """

    def __init__(self, path: Path, crs, boundary: bool = False):
        self.path = Path(path)
        self.crs = crs
        self.boundary = boundary  # write edge_conf (the mean boundary probability of the outline)
        self.driver = vector_driver(self.path)
        self._held: list = []  # GeoJSON's chunks until close
        self._written = 0

    def write(self, ids: np.ndarray, wkbs, attributes: np.ndarray) -> None:
        """Write one chunk of fields: int64 (n,) ids, their WKB polygons (map coordinates) and float64 (n, 4)
        area_m2, perimeter_m, mean_probability, mean_boundary (NaN = unknown: NULL)."""
        if not len(ids):
            return
        chunk = (np.asarray(ids, np.int64), np.array(wkbs, dtype=object), np.asarray(attributes, np.float64))
        if self.driver == "GeoJSON":
            self._held.append(chunk)
        else:
            self._write(*chunk)

    def close(self) -> None:
        """Write what is held (an empty layer when there was no field at all)."""
        if self._held:
            self._write(*(np.concatenate(parts) for parts in zip(*self._held, strict=True)))
            self._held = []
        elif not self._written:
            self._write(np.zeros(0, np.int64), np.array([], dtype=object), np.zeros((0, 4)))

    def _write(self, ids: np.ndarray, geometry: np.ndarray, attributes: np.ndarray) -> None:
        import pyogrio.raw

        area, perimeter_m, prob, edge = attributes.T if len(attributes) else np.zeros((4, 0))
        perimeter = "perim_m" if self.driver == "ESRI Shapefile" else "perimeter_m"
        fields = ["id", "area_m2", "area_ha", perimeter, "mean_prob"]
        data = [ids, area, area / 10_000.0, perimeter_m, np.round(prob, 6)]
        if self.boundary:
            fields.append("edge_conf")
            data.append(np.round(edge, 6))
        layer = self.path.stem.lstrip(".").split(".part-")[0]
        gpkg = self.driver == "GPKG"
        pyogrio.raw.write(
            str(self.path), geometry, data, fields, geometry_type="Polygon",
            crs=self.crs.to_wkt() if self.crs else None, driver=self.driver, layer=layer if gpkg else None,
            dataset_options={"VERSION": "1.2"} if gpkg and not self._written else None,  # QGIS 3.22: not 1.4
            append=self._written > 0,
        )
        self._written += len(ids)
