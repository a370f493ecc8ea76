"""Turning raw pixel values into model input, as the model's metadata says.

``x = (v' / input_scale - mean) / std`` where ``v'`` is the raw value, or, when the data's range does not match what
the model was trained on (e.g. 16-bit Sentinel-2 reflectance given to a model trained on 8-bit RGB), the value
after a per-band percentile stretch onto ``0..input_scale``. Invalid pixels are set to 0 (the training mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .metadata import ModelMetadata
from .options import STRETCHES


@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch: raw ``low[b]`` -> 0 and ``high[b]`` -> ``scale``, clipped."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    scale: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(B, h, w) float32 raw -> (B, h, w) float32 on 0..scale."""
        lo = np.asarray(self.low, np.float32)[:, None, None]
        hi = np.asarray(self.high, np.float32)[:, None, None]
        out = (values - lo) / np.maximum(hi - lo, 1e-6) * np.float32(self.scale)
        return np.clip(out, 0, self.scale, out=out)


def choose_stretch(sample: np.ndarray, meta: ModelMetadata, mode: str, name: str) -> Stretch | None:
    """Decide whether raw values need a percentile stretch.

    Args:
        sample: (B, N) float32 valid raw values of the selected bands (see :func:`engine.io.sample_values`).
        meta: the model's metadata (``input_scale`` is the raw range it was trained on).
        mode: ``"none"`` (use raw values), ``"percentile"`` (always stretch 2-98 %), or ``"auto"`` (stretch only
            when the 99th percentile lies outside 0.1-1.5 x ``input_scale``, or values are negative).
        name: raster name for the error message.

    Returns:
        A :class:`Stretch`, or None to use raw values.

    Raises:
        InputError: no valid pixel in the sample (the raster is all nodata), or an unknown mode.
    """
    if mode not in STRETCHES:
        raise InputError(f"stretch must be one of {', '.join(STRETCHES)}, got {mode!r}.")
    if mode == "none":
        return None
    if sample.shape[1] == 0:
        raise InputError(f"{name}: no valid pixel found; the raster is entirely nodata.")
    if mode == "auto":
        p99 = float(np.percentile(sample, 99))
        if 0.1 * meta.input_scale <= p99 <= 1.5 * meta.input_scale and float(sample.min()) >= 0:
            return None
    lo, hi = np.percentile(sample, [2, 98], axis=1)
    hi = np.where(hi > lo, hi, lo + 1)
    return Stretch(tuple(float(v) for v in lo), tuple(float(v) for v in hi), float(meta.input_scale))


def normalize(values: np.ndarray, valid: np.ndarray, meta: ModelMetadata, stretch: Stretch | None) -> np.ndarray:
    """Raw (..., B, h, w) float32 values -> model input of the same shape; invalid pixels (valid False) -> 0.

    ``valid`` is (..., h, w) bool. Returns a new float32 array.
    """
    x = stretch.apply(values) if stretch is not None else values
    mean = np.asarray(meta.mean, np.float64)[:, None, None]
    std = np.asarray(meta.std, np.float64)[:, None, None]
    scale = (1.0 / (meta.input_scale * std)).astype(np.float32)  # (x / s - mean) / std in two passes
    shift = (mean / std).astype(np.float32)
    x = np.multiply(x, scale, dtype=np.float32)
    x -= shift
    x *= np.expand_dims(valid, -3)
    return x
