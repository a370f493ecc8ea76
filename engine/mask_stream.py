"""The thresholded mask, band of rows by band of rows: opening -> cropland count -> final mask rows -> fields.

:class:`MaskStream` takes rows of the mask in order, in bands of any height, and hands on strips of the opened
mask; the opening needs ``2 x radius`` rows of context on each side, so the last rows of a band wait for the next
band (or the end). :class:`FieldBuilder` takes those strips: it counts the cropland, writes the final mask rows,
vectorises, and sends each field, once no later strip can add to it, through the minimum-area and hole filters
into a :class:`~engine.spool.FieldSpool`. The same two run on rows straight from inference (one pass) or read
back from a temporary raster (when the filters need a second look at the mask).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .spool import FieldSpool
from .stats import AreaCounter, AreaModel
from .vectorize import Field, StripVectorizer, filter_field, simplify_fields, to_map

STRIP_ROWS = 256  # rows per strip: arrays of a strip are ~20 bytes x width x this
MASK_NODATA = 255

Sink = Callable[[int, np.ndarray, np.ndarray, "np.ndarray | None"], None]


class MaskStream:
    """Rows of a 0/1 mask in order -> strips of its square opening of radius ``opening_px``, exactly as the
    opening of the whole mask would give them, passed to ``sink(row0, mask, valid, prob)``.

    Only the bands that the next strip (with its ``2 x opening_px`` rows of context) still needs are held.
    """

    def __init__(self, opening_px: int, sink: Sink, strip_rows: int = STRIP_ROWS):
        import cv2

        self.halo = 2 * opening_px
        self.kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * opening_px + 1,) * 2) if opening_px else None
        self.sink = sink
        self.strip_rows = strip_rows
        self._bands: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []  # (row0, mask, valid, prob)
        self._end = 0  # rows received so far
        self._done = 0  # rows handed on so far

    def push(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Add rows ``row0 ..`` (consecutive with the last): ``mask`` uint8 (n, w) 1 = cropland (0 where not
        valid), ``valid`` bool (n, w), ``prob`` float32 (n, w) or None."""
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
        import cv2

        row0 = self._done
        a, b = max(row0 - self.halo, 0), min(row0 + n + self.halo, self._end)
        mask = self._rows(a, b, 1)
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        mask = mask[row0 - a:row0 - a + n]
        self.sink(row0, mask, self._rows(row0, row0 + n, 2), self._rows(row0, row0 + n, 3))
        self._done = row0 + n
        keep = self._done - self.halo  # the next strip's context starts here
        self._bands = [band for band in self._bands if band[0] + band[1].shape[0] > keep]


class FieldBuilder:
    """Sink for :class:`MaskStream`: counts cropland into ``counter``, writes final mask rows (1/0/255) with
    ``mask_writer``, and vectorises; each finished field goes through the filters and, in map coordinates with
    its area and perimeter, into ``spool`` (all of them at the end when simplifying, which needs neighbours).

    ``hole_has_nodata(hole_px) -> bool`` tells whether a hole holds nodata (then it is never filled); None when
    the mask has no nodata.
    """

    def __init__(self, width: int, height: int, transform, area: AreaModel, opts, spool: FieldSpool,
                 counter: AreaCounter | None = None, mask_writer=None,
                 hole_has_nodata: Callable[[object], bool] | None = None, timer=None):
        from contextlib import nullcontext

        self.width, self.height, self.transform = width, height, transform
        self.area, self.opts, self.spool = area, opts, spool
        self.counter, self.mask_writer, self.hole_has_nodata = counter, mask_writer, hole_has_nodata
        self.timer = timer or (lambda _name: nullcontext())
        self.changes: list = []  # (polygon_px, 0 = dropped | 1 = filled), for a corrected mask
        self._held: list[Field] = []
        self._vec = StripVectorizer(width)

    def __call__(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None) -> None:
        if self.counter is not None:
            self.counter.add_cropland(row0, mask.astype(bool))
        if self.mask_writer is not None:
            with self.timer("write_raster"):
                self.mask_writer.write(row0, np.where(valid, mask, MASK_NODATA).astype(np.uint8))
        with self.timer("vectorize"):
            self._vec.add(row0, mask, prob)
            self._take(self._vec.pop_finished())

    def finish(self) -> list:
        """Take the last fields (and simplify all when asked); returns :attr:`changes`."""
        with self.timer("vectorize"):
            self._take(self._vec.fields())
            if self._held:
                tolerance_px = self.opts.simplify_m / (self.area.pixel_size_m or 1.0)
                polys = simplify_fields([f.polygon for f in self._held], tolerance_px, self.width, self.height)
                for f, poly in zip(self._held, polys, strict=True):
                    self._spool(f, poly)
                self._held = []
        return self.changes

    def _take(self, fields: list[Field]) -> None:
        for f in fields:
            kept, change = filter_field(f, self.area, self.opts.min_area_m2, self.opts.max_hole_m2,
                                        self.hole_has_nodata)
            self.changes.extend(change)
            if kept is None:
                continue
            if self.opts.simplify_m > 0:
                self._held.append(kept)
            else:
                self._spool(kept, kept.polygon)

    def _spool(self, field: Field, poly_px) -> None:
        geom = to_map(poly_px, self.transform)
        a, p = self.area.polygon_area_perimeter(geom)
        x0, y0 = field.polygon.bounds[:2]
        self.spool.add(geom, a, p, field.mean_probability, y0, x0)
