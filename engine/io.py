"""Reading input rasters window by window, from files (rasterio) or in-memory arrays.

A *source* gives the raster's size, georeferencing and, for any window, the selected bands' raw values and a
validity mask. Nodata values, internal/external masks, alpha bands and NaNs all count as invalid; as in GDAL's
dataset mask, a pixel is nodata when every band holds the nodata value (a dark pixel with one band at 0 stays
valid). Windows may extend beyond the raster: the missing part is filled by reflection (``np.pad(mode="reflect")``)
and marked invalid, so a raster smaller than one tile still works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PARAM, InputError


@dataclass(frozen=True)
class Window:
    """A pixel window: ``row``/``col`` of its top-left corner (may be out of bounds), ``height``/``width``."""

    row: int
    col: int
    height: int
    width: int


class RasterSource:
    """Common interface of :class:`FileSource` and :class:`ArraySource`.

    Attributes:
        name: file path or ``"<array>"``; width, height: size in pixels; count: number of bands.
        transform: affine.Affine pixel -> map coordinates; crs: rasterio CRS or None.
        bands: 1-based band numbers read, in model-channel order.
        dtype: numpy dtype name of the raw values.
    """

    name: str
    width: int
    height: int
    count: int
    transform: object
    crs: object
    bands: list[int]
    dtype: str

    def read_inside(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read an in-bounds window: (values (len(bands), h, w) float32, valid (h, w) bool)."""
        raise NotImplementedError

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read any window; parts outside the raster are reflect-padded values and marked invalid.

        Returns:
            values: float32 (len(bands), window.height, window.width), raw pixel values (not normalised).
            valid: bool (window.height, window.width), False for nodata and out-of-bounds pixels.
        """
        r0, c0 = max(window.row, 0), max(window.col, 0)
        r1 = min(window.row + window.height, self.height)
        c1 = min(window.col + window.width, self.width)
        values, valid = self.read_inside(r0, c0, r1 - r0, c1 - c0)
        pads = ((r0 - window.row, window.row + window.height - r1), (c0 - window.col, window.col + window.width - c1))
        if any(p for pair in pads for p in pair):
            values = _pad_reflect(values, pads)
            valid = np.pad(valid, pads, mode="constant", constant_values=False)
        return values, valid

    def select_bands(self, bands: list[int]) -> None:
        """Read these 1-based bands from now on; raises :class:`InputError` naming missing bands."""
        _check_bands(list(bands), self.count, self.name)
        self.bands = [int(b) for b in bands]

    def close(self) -> None:
        """Release the file handle (no-op for arrays)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pad_reflect(values: np.ndarray, pads) -> np.ndarray:
    """Reflect-pad (bands, h, w); 'edge' along an axis of length 1 where reflection is undefined."""
    pad3 = ((0, 0), *pads)
    if values.shape[1] > 1 and values.shape[2] > 1:
        return np.pad(values, pad3, mode="reflect")
    return np.pad(values, pad3, mode="edge")


class FileSource(RasterSource):
    """A raster file opened with rasterio; reads windows of the chosen bands with their validity mask."""

    def __init__(self, path: str | Path, bands: list[int] | None = None):
        """Open ``path`` and check it; ``bands`` are 1-based (``None`` = all bands).

        Raises:
            InputError: the file is missing, unreadable, not a raster, empty, or lacks a requested band.
        """
        import rasterio
        from rasterio.errors import RasterioIOError

        virtual = is_virtual(path)
        path = str(path) if virtual else Path(path)
        self.name = str(path)
        if not virtual:
            if not path.exists():
                raise InputError(f"Input raster not found: {path}")
            if path.is_dir():
                raise InputError(f"Input {path} is a folder, not a raster file.")
            if not os.access(path, os.R_OK):
                raise InputError(f"Input raster {path} is not readable (permission denied).")
        try:
            self._ds = rasterio.open(path)
        except RasterioIOError as exc:
            what = "GDAL cannot read it" if virtual else "GDAL does not recognise it or it is corrupt"
            raise InputError(f"Cannot open {path} as a raster: {what} ({gdal_cause(exc)}).") from exc
        missing = [f for f in self._ds.files[1:] if not is_virtual(f) and not Path(f).exists()]
        if missing and self._ds.driver == "VRT":
            self.close()
            raise InputError(f"{path} is a virtual raster (VRT) whose source file {missing[0]} is missing; "
                             "restore it or rebuild the VRT.")
        ds = self._ds
        if ds.count < 1 or ds.width < 1 or ds.height < 1:
            self.close()
            raise InputError(f"{path} has no raster bands (is it a vector file?).")
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self.transform, self.crs = ds.transform, ds.crs
        self.bands = list(bands) if bands else list(range(1, ds.count + 1))
        _check_bands(self.bands, ds.count, self.name)
        self.dtype = ds.dtypes[self.bands[0] - 1]
        if self.dtype in ("complex64", "complex128", "complex_int16", "complex_int32"):
            self.close()
            raise InputError(f"{path}: complex pixel values ({self.dtype}) are not imagery this tool can read.")
        self.nodata = ds.nodata

    @property
    def nbits(self) -> int | None:
        """GDAL's declared ``NBITS`` of the first selected band (e.g. 12 for 12-bit data in uint16), or None."""
        try:
            return int(self._ds.tags(self.bands[0], "IMAGE_STRUCTURE").get("NBITS", 0)) or None
        except (ValueError, TypeError):
            return None

    def read_inside(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window as RioWindow

        win = RioWindow(col, row, width, height)
        try:
            values = self._ds.read(self.bands, window=win, out_dtype="float32")
            mask = self._ds.dataset_mask(window=win)
        except RasterioIOError as exc:
            raise InputError(f"Reading {self.name} failed at rows {row}-{row + height}, "
                             f"columns {col}-{col + width}: the file may be truncated or corrupt "
                             f"({gdal_cause(exc)}).") from exc
        valid = mask > 0
        if np.issubdtype(np.dtype(self.dtype), np.floating):
            _zero_invalid(values, valid)
        return values, valid

    def close(self) -> None:
        ds = getattr(self, "_ds", None)
        if ds is not None:
            ds.close()
            self._ds = None


class ArraySource(RasterSource):
    """An in-memory (bands, H, W) array with an optional transform, CRS, nodata value and validity mask."""

    def __init__(self, array: np.ndarray, bands: list[int] | None = None, transform=None, crs=None,
                 nodata: float | None = None, valid_mask: np.ndarray | None = None):
        """Wrap ``array`` (bands, H, W) or (H, W); raises :class:`InputError` on a shape that cannot be imagery."""
        from affine import Affine
        from rasterio.crs import CRS

        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or min(array.shape) < 1:
            raise InputError(f"Input array must have shape (bands, height, width); got {array.shape}.")
        self.name = "<array>"
        self._array = array
        self.count, self.height, self.width = array.shape
        self.transform = transform if transform is not None else Affine.identity()
        self.crs = CRS.from_user_input(crs) if crs is not None else None
        self.bands = list(bands) if bands else list(range(1, self.count + 1))
        _check_bands(self.bands, self.count, self.name)
        self.dtype = str(array.dtype)
        self.nodata = nodata
        if valid_mask is not None and valid_mask.shape != (self.height, self.width):
            raise InputError(f"valid_mask has shape {valid_mask.shape}; expected {(self.height, self.width)}.")
        self._valid = valid_mask

    def read_inside(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        idx = [b - 1 for b in self.bands]
        values = self._array[idx, row:row + height, col:col + width].astype(np.float32)
        valid = np.ones((height, width), dtype=bool)
        if self._valid is not None:
            valid &= self._valid[row:row + height, col:col + width].astype(bool)
        if self.nodata is not None:
            valid &= ~np.all(values == np.float32(self.nodata), axis=0)
        _zero_invalid(values, valid)
        return values, valid


def open_input(path, meta, model_name: str, bands: list[int] | None = None) -> FileSource:
    """Open an input raster for a model and select its bands.

    Args:
        path: file path, URL or GDAL virtual path (``/vsicurl/...``).
        meta: the model's :class:`engine.metadata.ModelMetadata` (bands it takes, their names).
        model_name: for messages; bands: 1-based bands chosen by the user, or None for the model's.

    Raises:
        InputError: the raster cannot be opened, or lacks the bands the model needs (saying which to choose).
    """
    source = FileSource(path)
    chosen = bands or meta.input_bands
    names = ", ".join(meta.band_names) if meta.band_names else f"{meta.n_bands} bands"
    try:
        if len(chosen) != meta.n_bands:
            raise InputError(f"{PARAM} lists {len(chosen)} band(s) ({','.join(map(str, chosen))}) but the model "
                             f"{model_name} takes {meta.n_bands} ({names}).", param="bands")
        if source.count < max(chosen) and not bands:
            example = ",".join(str(min(i, source.count)) for i in range(1, meta.n_bands + 1))
            raise InputError(
                f"{path} has {source.count} band(s), but the model {model_name} needs {meta.n_bands} ({names}), "
                f"read from band(s) {','.join(map(str, chosen))}. Choose this raster's bands with {PARAM} "
                f"(e.g. {PARAM} {example} only if that is what they hold) or use a model made for this imagery.",
                param="bands")
        source.select_bands(chosen)
    except InputError:
        source.close()
        raise
    return source


def is_virtual(path) -> bool:
    """True for URLs (``https://...``) and GDAL virtual paths (``/vsicurl/...``, ``/vsizip/...``), which must be
    passed to GDAL as typed (``pathlib`` would fold ``//`` into ``/``)."""
    text = str(path)
    return "://" in text or text.startswith("/vsi")


def input_path(text):
    """A command-line input as the engine keeps it: a :class:`Path`, or the text itself for a URL or GDAL
    virtual path (see :func:`is_virtual`)."""
    return text if is_virtual(text) else Path(text)


def _zero_invalid(values: np.ndarray, valid: np.ndarray) -> None:
    """In place: pixels with a NaN or infinite value in any band become invalid, and every band of them 0, so
    no NaN reaches the network (one NaN spreads through a convolution to its whole tile) or the blending."""
    finite = np.isfinite(values)
    if not finite.all():
        valid &= finite.all(axis=0)
        values[~finite] = 0


def gdal_cause(exc: BaseException) -> str:
    """GDAL's own message for a rasterio error: rasterio often says only "Read or write failed. See previous
    exception traceback"; the real cause (a missing VRT source, a short file...) is in the chained exception."""
    messages = []
    seen = exc
    while seen is not None and len(messages) < 4:
        text = str(seen).strip()
        if text and "see previous exception" not in text.lower() and text not in messages:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    return "; ".join(messages) or type(exc).__name__


def _check_bands(bands: list[int], count: int, name: str) -> None:
    bad = [b for b in bands if not 1 <= int(b) <= count]
    if bad:
        raise InputError(
            f"{name} has {count} band(s) but band(s) {', '.join(map(str, bad))} were requested "
            f"(bands {', '.join(map(str, bands))}). Choose existing bands with {PARAM}, e.g. {PARAM} "
            f"{','.join(str(i) for i in range(1, min(count, len(bands)) + 1))}.", param="bands"
        )


def sample_values(source: RasterSource, max_windows: int = 16, size: int = 256) -> np.ndarray:
    """Valid raw values from up to ``max_windows`` windows spread over the raster, as (len(bands), N) float32.

    Cheap whatever the raster size (at most ``max_windows * size²`` pixels are read); used for range checks and
    percentile stretching.
    """
    n = max(1, int(np.sqrt(max_windows)))
    rows = np.linspace(0, max(source.height - size, 0), n).astype(int)
    cols = np.linspace(0, max(source.width - size, 0), n).astype(int)
    chunks = []
    for r in sorted(set(rows)):
        for c in sorted(set(cols)):
            h, w = min(size, source.height - r), min(size, source.width - c)
            values, valid = source.read_inside(int(r), int(c), h, w)
            chunks.append(values[:, valid])
    return np.concatenate(chunks, axis=1) if chunks else np.zeros((len(source.bands), 0), np.float32)
