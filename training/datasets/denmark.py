"""Danish LPIS 2016 parcels over a Sentinel-2 RGB mosaic (``denmark_lpis2016_s2``): 452 x 413 px at 10 m.

The image is uint16 reflectance-like DN (EPSG:32632); the 276 parcel polygons (shapefile, latin-1) are drawn on the
image's grid in map coordinates (pixel centre inside = inside); extent, boundary band and instances follow. LPIS
holds declared parcels only, so a few real fields are labelled background.

Validation split (spatial): image columns >= 339 (the eastern quarter, 1.13 km) are validation, columns < 339
training; parcels crossing the cut are cut with it.
"""

from __future__ import annotations

from pathlib import Path

from .scene import Scene, rasterise_fields, split_by_position, targets_from_instances, unit_stretch

NAME = "denmark"
FOLDER = "denmark_lpis2016_s2"
GSD_M = 10.0
VAL_COL = 339


def parcels(root: Path) -> list:
    """Shapely geometries of the LPIS parcels in EPSG:32632, in file order."""
    import pyogrio
    from shapely import from_wkb

    _, _, geoms, _ = pyogrio.raw.read(root / FOLDER / "marker2016_small.shp", encoding="latin1",
                                      read_geometry=True, columns=[])
    return list(from_wkb(geoms))


def read_scene(root: Path) -> Scene:
    """The whole image as one :class:`Scene`."""
    import rasterio

    with rasterio.open(root / FOLDER / "RGB_small.tif") as ds:
        raw = ds.read([1, 2, 3])
        transform, space = ds.transform, str(ds.crs)
    instances = rasterise_fields(parcels(root), raw.shape[1:], transform)
    extent, boundary = targets_from_instances(instances)
    return Scene("RGB_small", NAME, "train", unit_stretch(raw), extent, boundary, GSD_M, instances,
                 transform=transform, space=space, raw=raw)


def load(root: Path, limit: int | None = None) -> list[Scene]:
    """(train, val) parts of the image; ``limit`` is ignored (one scene)."""
    return [s for s in split_by_position(read_scene(root), "cols", VAL_COL, "after") if s is not None]
