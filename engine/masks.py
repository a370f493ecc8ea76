"""The cropland mask's rules, in one place: what a probability above the threshold means, how a mask raster encodes
cropland, other and nodata, and which values a mask (or a training label) made elsewhere may hold.

* Cropland is a probability (or fused score) *strictly above* the threshold: :func:`cropland`.
* Masks this tool writes are uint8: :data:`CROPLAND` 1, :data:`OTHER` 0, :data:`NODATA` 255: :func:`encode`.
* Masks read from elsewhere hold 0 = other and 1 = cropland, or 0 and 255 (then 255 = cropland) in their valid
  pixels; nodata is whatever the file marks (nodata value, internal mask). Both 1 and 255, or any other value,
  is an error: :func:`decode` and :func:`check_values`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

OTHER, CROPLAND, NODATA = 0, 1, 255


def cropland(score: np.ndarray, threshold: float, valid: np.ndarray | None = None) -> np.ndarray:
    """bool mask of ``score > threshold`` (NaN is never cropland), False where ``valid`` is False."""
    with np.errstate(invalid="ignore"):
        crop = np.asarray(score) > threshold
    return crop & valid if valid is not None else crop


def encode(crop: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """bool (h, w) cropland and validity -> uint8 (h, w) 1 / 0 / 255 (nodata)."""
    return np.where(valid, crop, NODATA).astype(np.uint8)


def decode(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mask values (any integer dtype) and their validity -> bool cropland: 1, or 255 in a valid pixel (a 0/255
    mask). Check the values seen with :func:`check_values`."""
    return valid & ((values == CROPLAND) | (values == NODATA))


def check_values(found: Iterable[float]) -> str | None:
    """None when the distinct values ``found`` in a mask's valid pixels follow the rules, else what is wrong (for
    an error message naming the file)."""
    found = {float(v) for v in found}
    other = sorted(found - {OTHER, CROPLAND, NODATA})
    if other:
        shown = ", ".join(f"{v:g}" for v in other[:8]) + (" ..." if len(other) > 8 else "")
        return f"unexpected value(s) {shown}"
    if {CROPLAND, NODATA} <= found:
        return "both 1 and 255"
    return None
