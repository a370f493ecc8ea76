"""Fields out of strips of the opened mask: count, write the final mask rows, vectorise, filter, spool.

:class:`FieldBuilder` is the sink of a :class:`engine.mask_stream.MaskStream`: it counts the cropland, writes the
final mask rows, vectorises, and sends each field, once no later strip can add to it, through the minimum-area and
hole filters into a :class:`~engine.spool.FieldSpool`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .areas import AreaCounter, AreaModel
from .masks import encode
from .spool import FieldSpool
from .vectorize import Field, StripVectorizer, filter_field, order_keys, simplify_fields, to_map


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
        self.traced = 0  # fields traced, before the filters
        self._held: list[Field] = []
        self._vec = StripVectorizer(width)

    def __call__(self, row0: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None,
                 split=None) -> None:
        """Take a strip; ``split``: its :class:`engine.split.SplitStrip` when fields are split, else None."""
        if self.counter is not None:
            self.counter.add_cropland(row0, mask.astype(bool))
        if self.mask_writer is not None:
            with self.timer("write_raster"):
                self.mask_writer.write(row0, encode(mask.astype(bool), valid))
        with self.timer("vectorize"):
            self._vec.add(row0, mask, prob, split)
            self._take(self._vec.pop_finished())

    def finish(self) -> list:
        """Take the last fields (and simplify all when asked); returns :attr:`changes`."""
        with self.timer("vectorize"):
            self._take(self._vec.fields())
            if self._held:
                tolerance_px = self.opts.simplify_m / (self.area.pixel_size_m or 1.0)
                self._spool(self._held, simplify_fields([f.polygon for f in self._held], tolerance_px, self.width,
                                                        self.height))
                self._held = []
        return self.changes

    def _take(self, fields: list[Field]) -> None:
        self.traced += len(fields)
        kept_fields = []
        for f in fields:
            kept, change = filter_field(f, self.area, self.opts.min_area_m2, self.opts.max_hole_m2,
                                        self.hole_has_nodata)
            self.changes.extend(change)
            if kept is not None:
                kept_fields.append(kept)
        if self.opts.simplify_m > 0:
            self._held.extend(kept_fields)
        elif kept_fields:
            self._spool(kept_fields)

    def _spool(self, fields: list[Field], polys_px: list | None = None) -> None:
        self.spool.add_many(*spool_columns(fields, self.area, self.transform, polys_px))


def spool_columns(fields: list[Field], area: AreaModel, transform, polys_px: list | None = None) -> tuple:
    """Pixel-space fields -> the arguments of :meth:`engine.spool.FieldSpool.add_many`: WKB in map coordinates,
    areas (m²), perimeters (m), mean probabilities, order keys and mean boundary probabilities (or None), in a
    few GEOS calls for all of them. ``polys_px``: their simplified polygons to store instead of their own (the
    order keys come from their own)."""
    import shapely

    own = np.array([f.polygon for f in fields], dtype=object)
    geoms = to_map(own if polys_px is None else np.array(polys_px, dtype=object), transform)
    areas, perimeters = area.areas_perimeters(geoms)
    edges = None if fields[0].edge_sum is None else [f.mean_boundary for f in fields]
    return (shapely.to_wkb(geoms), areas, perimeters, [f.mean_probability for f in fields], order_keys(own),
            edges)
