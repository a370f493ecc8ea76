"""Turning raw pixel values into model input, as the model's metadata says.

``x = (v' / input_scale - mean) / std``, where ``v'`` is the raw value mapped onto the model's range
``0..input_scale``. The mapping is decided **once per raster** (never per tile, so every tile of a raster is
treated alike) by :func:`value_range`, from, in this order:

1. the data type: uint8 is ``0..255``;
2. a declared range: GDAL's ``NBITS`` (e.g. 12-bit data in uint16 is ``0..4095``);
3. robust statistics of a sample spread over the whole raster: the 0.1 and 99.9th percentiles of all selected
   bands together, snapped to the conventional full range they fit (``0..1`` reflectance, 8, 10, 12, 14 or 16-bit,
   ``0..10000`` scaled reflectance); values in none of them are stretched between those percentiles.

All bands share one mapping, so colours keep their balance: a linear rescale of an image (12-bit, float 0-1,
int16 x 10000...) gives the model the same input as the original. ``--stretch percentile`` instead stretches each
band between its own 2 and 98th percentiles (for odd data), ``--stretch none`` uses raw values.

Training reads its rasters through the same :func:`value_range` and :func:`unit_values` (models whose
metadata says ``"normalization": "value_range"``); models without that key (v1) divide raw values by
``input_scale`` and data in another range is mapped onto ``0..input_scale`` first. Invalid pixels are set to 0
(the training mean).

Why not GDAL's ``STATISTICS_MAXIMUM``: it is the largest value present, not a range, and one stray pixel (a
65535 fill value not declared as nodata) would darken the whole raster; the sampled percentiles ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .metadata import ModelMetadata
from .options import STRETCHES

# Full ranges imagery is commonly stored in: reflectance 0-1, 8/10/12-bit, scaled reflectance (x 10000), 14/16-bit.
CONVENTIONAL_MAXIMA = (1.0, 255.0, 1023.0, 4095.0, 10000.0, 16383.0, 65535.0)
# A sample's 99.9th percentile may exceed its range's maximum by this much (rounding, resampling overshoot); 0-1
# reflectance also has bright clouds up to about 1.5.
RANGE_SLACK = 1.02
REFLECTANCE_SLACK = 1.5
NORMALIZATIONS = ("input_scale", "value_range")


@dataclass(frozen=True)
class ValueRange:
    """The raw values a raster's full range spans: ``low`` maps to 0 and ``high`` to 1; ``how`` says why."""

    low: float
    high: float
    how: str


def value_range(dtype: str, sample: np.ndarray, nbits: int | None = None) -> ValueRange:
    """Decide a raster's value range once (see the module docstring).

    Args:
        dtype: numpy dtype name of the raster's values (``"uint8"``, ``"uint16"``, ``"float32"``...).
        sample: (B, N) or (N,) valid raw values spread over the whole raster (any float dtype).
        nbits: GDAL's declared ``NBITS`` of integer data, if any.

    Returns:
        A :class:`ValueRange`.

    Raises:
        InputError: the sample holds no value (the raster is all nodata).
    """
    if dtype == "uint8":
        return ValueRange(0.0, 255.0, "uint8 data type: 0..255")
    if nbits and np.issubdtype(np.dtype(dtype), np.integer) and 1 < nbits < 32:
        return ValueRange(0.0, float(2**nbits - 1), f"declared NBITS={nbits}: 0..{2**nbits - 1}")
    values = np.asarray(sample, np.float64).ravel()
    if values.size == 0:
        raise InputError("no valid pixel found; the raster is entirely nodata.")
    lo, hi = (float(v) for v in np.percentile(values, [0.1, 99.9]))
    is_float = np.issubdtype(np.dtype(dtype), np.floating)
    for top in CONVENTIONAL_MAXIMA:
        if top == 1.0 and not is_float:
            continue
        slack = REFLECTANCE_SLACK if top == 1.0 else RANGE_SLACK
        if hi <= top * slack and lo >= -0.05 * top:
            return ValueRange(0.0, top, f"{dtype} values up to {hi:.4g} (99.9th percentile of a sample): "
                                        f"0..{top:g}")
    if hi <= lo:
        hi = lo + 1.0
    return ValueRange(lo, hi, f"{dtype} values in no usual range: stretched between their 0.1 and 99.9th "
                              f"percentiles {lo:.4g}..{hi:.4g}")


def unit_values(raw: np.ndarray, rng: ValueRange) -> np.ndarray:
    """Raw values -> float32 on 0..1 (clipped) by ``rng``; what training feeds ``value_range`` models."""
    out = (np.asarray(raw, np.float32) - np.float32(rng.low)) / np.float32(max(rng.high - rng.low, 1e-12))
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch: raw ``low[b]`` -> 0 and ``high[b]`` -> ``scale``, clipped; ``how`` says why."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    scale: float
    how: str = ""

    @property
    def identity(self) -> bool:
        """True when the stretch changes nothing (the data already spans the model's range)."""
        return all(lo == 0 for lo in self.low) and all(hi == self.scale for hi in self.high)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(..., B, h, w) float32 raw -> the same shape float32 on 0..scale."""
        lo = np.asarray(self.low, np.float32)[:, None, None]
        hi = np.asarray(self.high, np.float32)[:, None, None]
        out = (values - lo) / np.maximum(hi - lo, 1e-6) * np.float32(self.scale)
        return np.clip(out, 0, self.scale, out=out)


def choose_stretch(sample: np.ndarray, meta: ModelMetadata, mode: str, source) -> Stretch | None:
    """Decide, once per raster, how raw values map onto the model's range ``0..input_scale``.

    Args:
        sample: (B, N) float32 valid raw values of the selected bands (see :func:`engine.io.sample_values`).
        meta: the model's metadata (``input_scale``, ``normalization``).
        mode: ``"auto"`` (the stretch the model's metadata names in ``stretch``, v2 models; else the raster's
            value range, see :func:`value_range`), ``"percentile"`` (each band's 2-98 %) or ``"none"`` (raw
            values).
        source: the raster (its ``name``, ``dtype`` and, for files, declared ``nbits``), or just a name.

    Returns:
        A :class:`Stretch` (``identity`` when nothing changes; ``how`` says what was decided), or None for
        ``"none"``.

    Raises:
        InputError: no valid pixel in the sample (the raster is all nodata), or an unknown mode.
    """
    name = getattr(source, "name", str(source))
    if mode not in STRETCHES:
        raise InputError(f"stretch must be one of {', '.join(STRETCHES)}, got {mode!r}.")
    if mode == "none":
        return None
    if sample.shape[1] == 0:
        raise InputError(f"{name}: no valid pixel found; the raster is entirely nodata.")
    scale = float(meta.input_scale)
    bands = sample.shape[0]
    if mode == "auto" and meta.stretch in ("percentile", "none"):
        mode = meta.stretch  # the stretch the model was trained with (v2 metadata's "stretch")
        if mode == "none":
            return None
        how = ("each band's 2nd to 98th percentile mapped onto the model's range, as the model was trained (its "
               "metadata's stretch)")
    else:
        how = "each band stretched between its 2 and 98th percentiles (--stretch percentile)"
    if mode == "percentile":
        lo, hi = np.percentile(sample, [2, 98], axis=1)
        hi = np.where(hi > lo, hi, lo + 1)
        return Stretch(tuple(float(v) for v in lo), tuple(float(v) for v in hi), scale, how)
    dtype = getattr(source, "dtype", str(sample.dtype))
    rng = value_range(dtype, sample, getattr(source, "nbits", None))
    return Stretch((rng.low,) * bands, (rng.high,) * bands, scale,
                   f"value range {rng.how}, mapped onto the model's 0..{scale:g}")


def normalize(values: np.ndarray, valid: np.ndarray, meta: ModelMetadata, stretch: Stretch | None) -> np.ndarray:
    """Raw (..., B, h, w) float32 values -> model input of the same shape; invalid pixels (valid False) -> 0.

    ``valid`` is (..., h, w) bool. Returns a new float32 array.
    """
    x = stretch.apply(values) if stretch is not None and not stretch.identity else values
    mean = np.asarray(meta.mean, np.float64)[:, None, None]
    std = np.asarray(meta.std, np.float64)[:, None, None]
    scale = (1.0 / (meta.input_scale * std)).astype(np.float32)  # (x / s - mean) / std in two passes
    shift = (mean / std).astype(np.float32)
    x = np.multiply(x, scale, dtype=np.float32)
    x -= shift
    x *= np.expand_dims(valid, -3)
    return x
