"""One labelled scene of a training set, and what every reader shares: value stretch, targets, splits, resampling.

A :class:`Scene` holds a whole image in memory with its targets on the same pixel grid:

- ``image``: (3, H, W) float32 red, green, blue on about 0..1, produced by :func:`unit_stretch` (the engine's own
  2-98 % per-band percentile stretch, :func:`engine.normalize.choose_stretch` with mode ``"percentile"``, computed
  once per scene), so 8-bit, 16-bit and standardised-float sources reach the model alike.
- ``extent``: (H, W) uint8, 1 = inside a field (cropland), 0 = other, :data:`IGNORE` = not labelled.
- ``boundary``: (H, W) uint8, 1 = on a field outline (a thin band), 0 = not, :data:`IGNORE` = unknown (sets without
  field edges, e.g. the contest's block labels, are all IGNORE: the boundary loss skips them).
- ``instances``: (H, W) int32 field ids (0 = none) when the set has individual fields, else ``None``.

Targets from polygons are rasterised with :func:`rasterise_fields`; the boundary band and the distance target are
derived from the instance map by :func:`boundary_from_instances` and :func:`distance_target`, after any resampling,
so the band is as thin at the training GSD as at the native one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from affine import Affine

IGNORE = 255
#: Width (px, at the grid the targets are drawn on) of the boundary band straddling every field outline.
BOUNDARY_PX = 2


@dataclass
class Scene:
    """One training or validation scene (see the module docstring for the arrays' meaning).

    Attributes:
        name: unique within its data set, e.g. ``"S0_mosaic"`` or ``"patch_22512_S_401_687"``.
        dataset: catalogue name of its set.
        split: ``"train"`` or ``"val"``.
        gsd_m: pixel size in metres.
        has_boundary: whether ``boundary`` holds real labels (False: all IGNORE).
        transform: affine pixel -> coordinates of ``space`` (map units for georeferenced sets, pixels of the
            source raster otherwise); crops and resampling keep it right, so footprints can be compared.
        space: the coordinate space of ``transform``: a CRS (e.g. ``"EPSG:32755"``) or, without one, the source
            raster's name; scenes in different spaces never share ground.
        raw: (3, H, W) the source values before :func:`unit_stretch`, in the source's dtype (what a user's raster
            holds; ``bench.model_card`` feeds them to the engine), or None (e.g. after :func:`resample`).
    """

    name: str
    dataset: str
    split: str
    image: np.ndarray
    extent: np.ndarray
    boundary: np.ndarray
    gsd_m: float
    instances: np.ndarray | None = None
    has_boundary: bool = True
    transform: Affine = field(default_factory=Affine.identity)
    space: str = ""
    raw: np.ndarray | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min x, min y, max x, max y) of the scene's footprint in ``space``."""
        h, w = self.shape
        xs, ys = zip(*(self.transform * (c, r) for c in (0, w) for r in (0, h)), strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.extent.shape

    def crop(self, rows: slice, cols: slice, name: str | None = None, split: str | None = None) -> Scene:
        """A copy of the window ``rows`` x ``cols`` (no pixel outside it kept)."""
        inst = None if self.instances is None else self.instances[rows, cols].copy()
        raw = None if self.raw is None else self.raw[:, rows, cols].copy()
        r0, c0 = rows.start or 0, cols.start or 0
        return replace(self, name=name or self.name, split=split or self.split,
                       image=self.image[:, rows, cols].copy(), extent=self.extent[rows, cols].copy(),
                       boundary=self.boundary[rows, cols].copy(), instances=inst, raw=raw,
                       transform=self.transform * Affine.translation(c0, r0))


def unit_stretch(raw: np.ndarray, valid: np.ndarray | None = None, sample_px: int = 1_000_000) -> np.ndarray:
    """(3, H, W) raw values of any range -> (3, H, W) float32 on 0..1 with the engine's percentile stretch.

    The 2nd and 98th percentiles of each band's valid pixels (at most ``sample_px`` of them, a regular sample)
    map to 0 and 1, clipped: :func:`engine.normalize.choose_stretch` in mode ``"percentile"``, the same function
    the engine applies to a whole raster, so training and inference see the same values. Invalid pixels are 0.
    """
    from engine.metadata import ModelMetadata
    from engine.normalize import choose_stretch

    raw = np.asarray(raw, np.float32)
    if valid is None:
        valid = np.ones(raw.shape[1:], bool)
    flat = raw[:, valid]
    step = max(1, flat.shape[1] // sample_px)
    meta = ModelMetadata(name="stretch", architecture="-", input_bands=list(range(1, raw.shape[0] + 1)),
                         input_scale=1.0, mean=[0.0] * raw.shape[0], std=[1.0] * raw.shape[0])
    stretch = choose_stretch(flat[:, ::step], meta, "percentile", "scene")
    out = stretch.apply(raw)
    out[:, ~valid] = 0
    return out


def rasterise_fields(polygons: list, shape: tuple[int, int], transform=None) -> np.ndarray:
    """Draw fields as an instance map: (H, W) int32, k = the k-th polygon (1-based), 0 = none.

    ``polygons``: shapely (Multi)Polygons in map coordinates of ``transform`` (an affine), or, without one, in
    pixel coordinates where (x, y) is the centre of column x, row y (the labelme / VIA convention). Later polygons
    overwrite earlier ones (the labelme convention). A pixel belongs to a polygon when its centre lies inside
    (``rasterio.features.rasterize``, all_touched=False).
    """
    from rasterio.features import rasterize

    if transform is None:
        transform = Affine.translation(-0.5, -0.5)  # pixel centre (x, y) <-> vertex (x, y)
    shapes = [(geom, k) for k, geom in enumerate(polygons, start=1) if geom is not None and not geom.is_empty]
    if not shapes:
        return np.zeros(shape, np.int32)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32", all_touched=False)


def boundary_from_instances(instances: np.ndarray, width: int = BOUNDARY_PX) -> np.ndarray:
    """(H, W) uint8 band of ``width`` px (an even number; odd widths round down, minimum 2) straddling every change
    of instance id (field/field and field/other).

    A pixel is on the band when another id lies within ``width // 2`` px of it (a square window), so a 2 px band
    puts one pixel on each side of an outline, like the GF-2 set's own boundary masks. The raster's edge is not an
    outline.
    """
    radius = max(1, width // 2)
    ids = instances.astype(np.float32)  # exact below 2**24 ids; cv2 morphology needs float or uint
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    hi = cv2.dilate(ids, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(ids, kernel, borderType=cv2.BORDER_REPLICATE)
    return (hi != lo).astype(np.uint8)


def distance_target(extent: np.ndarray, boundary: np.ndarray, clip_px: float = 8.0) -> np.ndarray:
    """(H, W) float32 in 0..1: distance (px) of a field pixel to the nearest boundary or non-field pixel, divided
    by ``clip_px`` and clipped at 1; 0 outside fields. IGNORE pixels of ``extent`` count as non-field."""
    interior = ((extent == 1) & (boundary != 1)).astype(np.uint8)
    dist = cv2.distanceTransform(interior, cv2.DIST_L2, 3)
    return np.minimum(dist / np.float32(clip_px), 1.0).astype(np.float32)


def targets_from_instances(instances: np.ndarray, valid: np.ndarray | None = None,
                           width: int = BOUNDARY_PX) -> tuple[np.ndarray, np.ndarray]:
    """Instance map -> (extent, boundary) uint8 targets; pixels where ``valid`` is False are IGNORE in both."""
    extent = (instances > 0).astype(np.uint8)
    boundary = boundary_from_instances(instances, width)
    if valid is not None:
        extent[~valid] = IGNORE
        boundary[~valid] = IGNORE
    return extent, boundary


def resample(scene: Scene, gsd_m: float, width: int = BOUNDARY_PX) -> Scene:
    """The scene on a grid of ``gsd_m`` metres: image by area averaging (bilinear when enlarging), instance map or
    extent/boundary by nearest neighbour; with instances the extent and boundary band are derived again at the new
    GSD (a ``width`` px band there)."""
    factor = scene.gsd_m / gsd_m
    if abs(factor - 1) < 1e-6:
        return scene
    h, w = scene.shape
    size = (max(round(w * factor), 1), max(round(h * factor), 1))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = np.stack([cv2.resize(b, size, interpolation=interp) for b in scene.image])

    def nearest(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST)

    extent = nearest(scene.extent)
    if scene.instances is not None:
        instances = nearest(scene.instances.astype(np.float32)).astype(np.int32)
        ext, boundary = targets_from_instances(instances, extent != IGNORE, width)
        extent = ext
    else:
        instances = None
        boundary = nearest(scene.boundary)
    transform = scene.transform * Affine.scale(w / size[0], h / size[1])
    return replace(scene, image=image, extent=extent, boundary=boundary, instances=instances, gsd_m=gsd_m, raw=None,
                   transform=transform)


def split_by_position(scene: Scene, axis: str, cut: int, val_side: str) -> tuple[Scene | None, Scene | None]:
    """Cut a scene at pixel ``cut`` along ``axis`` (``"rows"`` or ``"cols"``) into (train, val).

    ``val_side`` ``"after"`` makes pixels >= ``cut`` validation, ``"before"`` pixels < ``cut``. The parts share
    no pixel; a part narrower than 32 px is dropped (None).
    """
    h, w = scene.shape
    n = h if axis == "rows" else w
    cut = min(max(cut, 0), n)
    first, second = slice(0, cut), slice(cut, n)
    parts = []
    for sl in (first, second):
        if sl.stop - sl.start < 32:
            parts.append(None)
            continue
        rows, cols = (sl, slice(0, w)) if axis == "rows" else (slice(0, h), sl)
        parts.append(scene.crop(rows, cols))
    train, val = (parts[0], parts[1]) if val_side == "after" else (parts[1], parts[0])
    if train is not None:
        train.split = "train"
    if val is not None:
        val.split, val.name = "val", val.name + "_val"
    return train, val
