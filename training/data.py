"""Training rasters: pairing images with labels, checking them, reading them whole, and sampling random crops.

Images and labels pair by file name: ``DataN.tif`` <-> ``DataN_reference.tif`` (also ``_label``, ``_labels``,
``_mask``, ``_gt``), or the same name in both folders. Everything is checked before training starts
(:func:`load_pairs`), so bad input fails in seconds with a message naming the file.

Rasters are read through the engine's reader (:class:`engine.io.FileSource`), so nodata values, internal masks,
alpha bands and NaN mark pixels invalid exactly as when the model runs. Label convention on disk is the engine's
mask rule (:mod:`engine.masks`): 0 = other, 1 = cropland; a 0/255 label (no 1 in it) reads 255 as cropland; pixels
the file marks as nodata, pixels equal to ``ignore_value`` and pixels of invalid imagery are excluded from loss and
metrics. In memory labels are uint8 with 0, 1 and :data:`IGNORE` (255). Images are float32, scaled and
standardised as the model metadata says: ``x = (raw / input_scale - mean) / std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

IGNORE = 255
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".img", ".vrt", ".jp2")
LABEL_TAGS = ("_reference", "_label", "_labels", "_mask", "_gt")


@dataclass
class Raster:
    """One training raster held in memory.

    Attributes:
        name: image file stem (e.g. ``Data1``).
        image: (bands, H, W) float32, raw values divided by ``input_scale`` (not yet standardised).
        label: (H, W) uint8 with 0 other, 1 cropland, :data:`IGNORE` excluded.
        image_path, label_path: where they came from.
        resolution_m: pixel size in metres when the raster has a projected CRS, else ``None``.
        valid: (H, W) bool, False where the image is nodata (None = all valid).
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    image_path: Path
    label_path: Path
    resolution_m: float | None = None
    valid: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.label.shape


def _rasters_in(folder: Path, role: str) -> list[Path]:
    if not folder.exists():
        raise DataError(f"{role} folder {folder} does not exist.")
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} is not a folder.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise DataError(f"{role} folder {folder} holds no raster files ({', '.join(RASTER_SUFFIXES)}).")
    return files


def _label_key(path: Path) -> str:
    stem = path.stem
    for tag in LABEL_TAGS:
        if stem.lower().endswith(tag):
            return stem[: -len(tag)]
    return stem


def pair_files(images_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair every image with its label by name; returns [(image, label)] sorted by image name.

    Images without a label are skipped (with none at all, :class:`DataError`); a label claimed by two images
    (e.g. ``a.tif`` and ``a.png``) is an error.
    """
    images = _rasters_in(Path(images_dir), "images")
    labels = _rasters_in(Path(labels_dir), "labels")
    by_key: dict[str, Path] = {}
    for lab in labels:
        key = _label_key(lab)
        if key in by_key:
            raise DataError(f"labels {by_key[key]} and {lab} both match image name {key!r}; keep one.")
        by_key[key] = lab
    pairs, seen = [], set()
    for img in images:
        lab = by_key.get(img.stem)
        if lab is None:
            continue
        if img.stem in seen:
            raise DataError(f"two images named {img.stem!r} in {images_dir}; keep one.")
        seen.add(img.stem)
        pairs.append((img, lab))
    if not pairs:
        raise DataError(
            f"no image/label pairs found: {len(images)} image(s) in {images_dir} (e.g. {images[0].name}) and "
            f"{len(labels)} label(s) in {labels_dir} (e.g. {labels[0].name}); a label must be named like its "
            f"image, optionally with one of {', '.join(LABEL_TAGS)} (Data1.tif <-> Data1_reference.tif).")
    return pairs


def read_label(path: Path, ignore_value: int | None = None) -> np.ndarray:
    """Read band 1 of a label raster as (H, W) uint8 in {0, 1, IGNORE}; raises :class:`DataError`.

    Accepted values (:mod:`engine.masks`): 0 and 1, or 0 and 255 (255 = cropland), plus ``ignore_value``; pixels the
    file marks as nodata are :data:`IGNORE`.
    """
    from engine import masks

    raw, valid = _read_whole(path, [1], "label")
    raw = raw[0]
    if ignore_value is not None:
        valid &= raw != ignore_value
    problem = masks.check_values(np.unique(raw[valid]).tolist())
    if problem:
        hint = f" (ignore value {ignore_value} excluded)" if ignore_value is not None else ""
        raise DataError(
            f"label {path}: {problem}{hint}; labels must hold 0 (other) and 1 (cropland), "
            "or 0 and 255; mark unlabelled pixels with --ignore-value.")
    label = masks.decode(raw, valid).astype(np.uint8)
    label[~valid] = IGNORE
    return label


def _read_whole(path: Path, bands: list[int] | None, role: str):
    """(values float32 (bands, H, W), valid bool (H, W)) of a whole raster, read by the engine's reader; raises
    :class:`DataError` naming ``role`` and the file."""
    from engine.errors import CroplandError
    from engine.io import FileSource

    try:
        with FileSource(path, bands) as src:
            values, valid = src.read_inside(0, 0, src.height, src.width)
    except CroplandError as exc:
        raise DataError(f"{role} {path}: cannot read ({exc}).") from exc
    return values, valid


def read_image(path: Path, bands: list[int] | None,
               input_scale: float | None) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Read ``bands`` (1-based; ``None`` = all) as (bands, H, W) float32 through the engine's reader, divided by
    ``input_scale``, or, when ``input_scale`` is None, mapped onto 0..1 by the raster's value range, decided by the
    engine's own :func:`engine.normalize.value_range` (so training and inference agree; metadata
    ``"value_range"``).

    Returns (image, valid (H, W) bool: False where the engine's reader says nodata (nodata value in every band,
    internal mask, alpha, NaN), resolution in m or ``None``). Non-finite values are set to 0.
    """
    import rasterio

    try:
        with rasterio.open(path) as ds:
            count = ds.count
            chosen = bands or list(range(1, count + 1))
            if max(chosen) > count:
                raise DataError(f"image {path} has {count} band(s); bands {chosen} were asked for (--bands).")
            dtype = ds.dtypes[chosen[0] - 1]
            try:
                nbits = int(ds.tags(chosen[0], "IMAGE_STRUCTURE").get("NBITS", 0)) or None
            except ValueError:
                nbits = None
            res = float(abs(ds.transform.a)) if ds.crs is not None and ds.crs.is_projected else None
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"image {path}: cannot read ({exc}).") from exc
    raw, valid = _read_whole(path, chosen, "image")
    raw[~np.isfinite(raw)] = 0
    if input_scale is not None:
        return raw / np.float32(input_scale), valid, res
    from engine.normalize import unit_values, value_range

    step = max(1, int(np.sqrt(valid.size / 1_000_000)))  # about a million pixels decide the range
    sample = raw[:, ::step, ::step][:, valid[::step, ::step]]
    if sample.size == 0:
        raise DataError(f"image {path}: every pixel is nodata.")
    return unit_values(raw, value_range(dtype, sample, nbits)), valid, res


def load_pairs(pairs: list[tuple[Path, Path]], bands: list[int] | None = None, input_scale: float | None = 255.0,
               ignore_value: int | None = None, min_size: int = 32) -> list[Raster]:
    """Read and check every pair; raises :class:`DataError` naming the first bad file.

    Checks: readable, same width and height, accepted label values, same band count everywhere, at least
    ``min_size`` pixels each side, and some labelled pixel.
    """
    rasters: list[Raster] = []
    for img_path, lab_path in pairs:
        image, valid, res = read_image(img_path, bands, input_scale)
        label = read_label(lab_path, ignore_value)
        if image.shape[1:] != label.shape:
            raise DataError(
                f"image {img_path} is {image.shape[2]} x {image.shape[1]} px but its label {lab_path} is "
                f"{label.shape[1]} x {label.shape[0]} px; they must cover the same pixel grid.")
        if rasters and image.shape[0] != rasters[0].image.shape[0]:
            raise DataError(f"image {img_path} has {image.shape[0]} band(s) but {rasters[0].image_path} has "
                            f"{rasters[0].image.shape[0]}; use --bands to pick the same bands everywhere.")
        if min(label.shape) < min_size:
            raise DataError(f"image {img_path} is {label.shape[1]} x {label.shape[0]} px; "
                            f"need >= {min_size} px each side.")
        label[~valid] = IGNORE
        if np.all(label == IGNORE):
            raise DataError(f"label {lab_path} has no labelled pixel (all ignored or nodata).")
        rasters.append(Raster(img_path.stem, image, label, img_path, lab_path, res, None if valid.all() else valid))
    return rasters


def channel_stats(rasters: list[Raster]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the scaled images over their labelled pixels (for the metadata)."""
    sums = None
    total = 0
    for r in rasters:
        m = r.label != IGNORE
        px = r.image[:, m].astype(np.float64)
        s = np.stack([px.sum(1), (px**2).sum(1)])
        sums = s if sums is None else sums + s
        total += px.shape[1]
    mean = sums[0] / total
    std = np.sqrt(np.maximum(sums[1] / total - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _centre_key(raster: Raster) -> tuple[float, float, str]:
    """Sort key: (x, y) of the raster's centre when it has a CRS, else (0, 0); then its name."""
    import rasterio

    try:
        with rasterio.open(raster.image_path) as ds:
            if ds.crs is not None:
                b = ds.bounds
                return (b.left + b.right) / 2, (b.top + b.bottom) / 2, raster.name
    except rasterio.errors.RasterioError:
        pass
    return 0.0, 0.0, raster.name


def spatial_groups(rasters: list[Raster], k: int) -> list[list[int]]:
    """Split raster indices into ``k`` folds for cross-validation.

    ``k == len(rasters)``: leave one raster out. Otherwise rasters are sorted by the centre of their bounds
    (x then y when georeferenced, else by name) and cut into ``k`` contiguous groups, so neighbouring rasters
    share a fold and folds are spatially separate.
    """
    n = len(rasters)
    if not 2 <= k <= n:
        raise DataError(f"--folds must lie between 2 and the number of rasters ({n}), got {k}.")
    if k == n:
        return [[i] for i in range(n)]
    keys = [_centre_key(r) for r in rasters]
    order = sorted(range(n), key=lambda i: keys[i])
    return [list(map(int, g)) for g in np.array_split(np.array(order), k)]


def split_strip(raster: Raster, fraction: float) -> tuple[Raster, Raster]:
    """Cut a raster into (train, validation) along rows: the last ``fraction`` of rows become validation.

    The two parts share no pixel, so random crops from the training part never see the validation strip.
    """
    h = raster.shape[0]
    cut = round(h * (1 - fraction))
    cut = min(max(cut, 32), h - 32)
    valid = raster.valid
    top = Raster(raster.name, raster.image[:, :cut], raster.label[:cut], raster.image_path, raster.label_path,
                 raster.resolution_m, None if valid is None else valid[:cut])
    bottom = Raster(raster.name + "_val", raster.image[:, cut:], raster.label[cut:], raster.image_path,
                    raster.label_path, raster.resolution_m, None if valid is None else valid[cut:])
    return top, bottom


def rescale(raster: Raster, factor: float) -> Raster:
    """Resample a raster by ``factor`` (0.5 halves width and height: 1 m pixels become 2 m).

    Images use area averaging when shrinking (bilinear when enlarging), labels nearest neighbour.
    """
    import cv2

    if factor == 1:
        return raster
    h, w = raster.shape
    size = (max(round(w * factor), 1), max(round(h * factor), 1))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = np.stack([cv2.resize(b, size, interpolation=interp) for b in raster.image])
    label = cv2.resize(raster.label, size, interpolation=cv2.INTER_NEAREST)
    valid = None
    if raster.valid is not None:
        valid = cv2.resize(raster.valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    res = raster.resolution_m / factor if raster.resolution_m else None
    return Raster(raster.name, image, label, raster.image_path, raster.label_path, res, valid)
