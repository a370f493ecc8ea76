"""Seamless blending of overlapping tile predictions, streamed row band by row band.

Each tile's probabilities are weighted by a window that is 1 in the tile's interior and tapers with a Hann
(sin²) ramp only across the overlap with a neighbour, never at the raster edge; the outer quarter of the overlap
gets weight 0, so the border pixels where a network sees zero padding are left to the neighbour. The blended value
is ``sum(w * p) / sum(w)``; complementary sin²/cos² ramps sum to one across an overlap, so no seam appears. Only one row
of tiles (``tile`` rows x raster width) is held at a time: once a tile row is complete, the rows no later tile can
touch are handed to ``emit`` and dropped, so memory does not grow with the raster's height.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .tiling import TileGrid

EmitFn = Callable[[int, np.ndarray, np.ndarray], None]


def hann_ramp(n: int) -> np.ndarray:
    """Rising ramp of ``n`` weights in [0, 1]: 0 over the first ``n // 4``, then sin² up to 1 over the middle half,
    1 over the last ``n // 4``; ``ramp + ramp[::-1] == 1``."""
    margin = n // 4
    t = np.clip((np.arange(n, dtype=np.float64) + 0.5 - margin) / (n - 2 * margin), 0.0, 1.0)
    return np.sin(np.pi / 2 * t) ** 2


def tile_weights(tile: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    """(tile, tile) float32 weights, tapered across the overlap on the sides that have a neighbour."""

    def axis(before: bool, after: bool) -> np.ndarray:
        w = np.ones(tile)
        if overlap > 0:
            ramp = hann_ramp(overlap)
            if before:
                w[:overlap] = ramp
            if after:
                w[tile - overlap:] = ramp[::-1]
        return w

    return np.outer(axis(top, bottom), axis(left, right)).astype(np.float32)


class StripBlender:
    """Accumulates tile probabilities for one tile row and emits finished raster rows.

    Use: for each tile (row-major), :meth:`add` it; after the last tile of a tile row, call :meth:`finish_row`.
    ``emit(row0, probability, valid)`` receives float32 (h, width) probabilities (NaN where invalid) and the bool
    (h, width) validity of raster rows ``row0 .. row0 + h``. With ``channels`` > 1 (a model's extent, boundary,
    ...), tiles are (channels, tile, tile), every channel is blended alike and ``probability`` is
    (h, width, channels).
    """

    def __init__(self, grid: TileGrid, emit: EmitFn, channels: int = 1):
        self.grid = grid
        self.emit = emit
        self.channels = channels
        t, w = grid.tile, max(grid.width, grid.tile)
        self._acc = np.zeros((channels, t, w + grid.tile), np.float32)
        self._wsum = np.zeros((t, w + grid.tile), np.float32)
        self._valid = np.zeros(self._wsum.shape, bool)
        self._weights: dict[tuple[bool, bool, bool, bool], np.ndarray] = {}

    def _window(self, i: int, j: int) -> np.ndarray:
        g = self.grid
        key = (i > 0, i < len(g.row_origins) - 1, j > 0, j < len(g.col_origins) - 1)
        if key not in self._weights:
            self._weights[key] = tile_weights(g.tile, g.overlap, *key)
        return self._weights[key]

    def add(self, i: int, j: int, prob: np.ndarray, valid: np.ndarray) -> None:
        """Add the (tile, tile) probabilities (or (channels, tile, tile)) and validity of tile (i, j) of the
        current tile row."""
        c = self.grid.col_origins[j]
        t = self.grid.tile
        w = self._window(i, j)
        self._acc[:, :, c:c + t] += w * prob.reshape(self.channels, t, t)
        self._wsum[:, c:c + t] += w
        self._valid[:, c:c + t] |= valid

    def finish_row(self, i: int) -> None:
        """Emit the raster rows that tile row ``i`` completes, and shift the buffer to tile row ``i + 1``."""
        g = self.grid
        last = i == len(g.row_origins) - 1
        row0 = g.row_origins[i]
        end = g.height if last else min(g.row_origins[i + 1], g.height)
        n = end - row0
        if n > 0:
            acc, wsum = self._acc[:, :n, :g.width], self._wsum[:n, :g.width]
            valid = self._valid[:n, :g.width].copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                prob = np.where(valid & (wsum > 0), acc / np.maximum(wsum, 1e-12), np.nan).astype(np.float32)
            valid &= np.isfinite(prob[0])
            self.emit(row0, prob[0] if self.channels == 1 else np.moveaxis(prob, 0, -1), valid)
        if not last:
            shift = g.stride
            for buf in (self._wsum, self._valid):
                buf[:-shift] = buf[shift:]
                buf[-shift:] = 0
            self._acc[:, :-shift] = self._acc[:, shift:]
            self._acc[:, -shift:] = 0
