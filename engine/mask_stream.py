"""The thresholded mask, band of rows by band of rows, through the morphological opening.

:class:`MaskStream` takes rows of the mask in order, in bands of any height, and hands on strips of the opened
mask to a sink (usually a :class:`engine.fields.FieldBuilder`); the opening needs ``2 x radius`` rows of context on
each side, so the last rows of a band wait for the next band (or the end). It runs on rows straight from
inference (one pass) or read back from a temporary raster (when the filters need a second look at the mask).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .runtime import STRIP_ROWS

Sink = Callable[[int, np.ndarray, np.ndarray, "np.ndarray | None"], None]


class HaloRows:
    """Rows arriving in order, in bands of any height -> strips of ``strip_rows`` rows, each handed to
    :meth:`_strip` with ``halo`` rows of context on each side (fewer at the raster's edges). Only the bands that
    the next strip (with its context) still needs are held. Subclasses implement :meth:`_strip`."""

    def __init__(self, halo: int, strip_rows: int = STRIP_ROWS):
        self.halo = halo
        self.strip_rows = strip_rows
        self._bands: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []  # (row0, mask, valid, prob)
        self._end = 0  # rows received so far
        self._done = 0  # rows handed on so far

    def push(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Add rows ``row0 ..`` (consecutive with the last): ``mask`` uint8 (n, w) 1 = cropland (0 where not
        valid), ``valid`` bool (n, w), ``prob`` float32 (n, w) (or (n, w, c)) or None."""
        if row0 != self._end:
            raise ValueError(f"rows must be consecutive: expected {self._end}, got {row0}")
        self._bands.append((row0, mask, valid, prob))
        self._end += mask.shape[0]
        while self._end - self.halo - self._done >= self.strip_rows:
            self._hand_on(self.strip_rows)

    def close(self) -> None:
        """Hand on the rows still held (call after the last band)."""
        while self._done < self._end:
            self._hand_on(min(self.strip_rows, self._end - self._done))

    def _rows(self, a: int, b: int, k: int) -> np.ndarray | None:
        """Rows ``a .. b`` of item ``k`` (1 mask, 2 valid, 3 prob) of the held bands."""
        if self._bands[0][k] is None:
            return None
        parts = [band[k][max(a - band[0], 0):b - band[0]] for band in self._bands
                 if band[0] < b and band[0] + band[1].shape[0] > a]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _hand_on(self, n: int) -> None:
        row0 = self._done
        self._strip(row0, n, max(row0 - self.halo, 0), min(row0 + n + self.halo, self._end))
        self._done = row0 + n
        keep = self._done - self.halo  # the next strip's context starts here
        self._bands = [band for band in self._bands if band[0] + band[1].shape[0] > keep]

    def _strip(self, row0: int, n: int, a: int, b: int) -> None:
        """Hand on rows ``row0 .. row0 + n``; rows ``a .. b`` (their context included) are held."""
        raise NotImplementedError


class MaskStream(HaloRows):
    """Rows of a 0/1 mask in order -> strips of its square opening of radius ``opening_px``, exactly as the
    opening of the whole mask would give them, passed to ``sink(row0, mask, valid, prob)``.

    Only the bands that the next strip (with its ``2 x opening_px`` rows of context) still needs are held.
    """

    def __init__(self, opening_px: int, sink: Sink, strip_rows: int = STRIP_ROWS):
        import cv2

        super().__init__(2 * opening_px, strip_rows)
        self.kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * opening_px + 1,) * 2) if opening_px else None
        self.sink = sink

    def _strip(self, row0: int, n: int, a: int, b: int) -> None:
        import cv2

        mask = self._rows(a, b, 1)
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        mask = mask[row0 - a:row0 - a + n]
        self.sink(row0, mask, self._rows(row0, row0 + n, 2), self._rows(row0, row0 + n, 3))
