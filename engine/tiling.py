"""The tile grid: where tiles of ``tile`` px with ``overlap`` px between neighbours start.

Tiles start every ``stride = tile - overlap`` px from the top-left corner; the last row and column may extend
beyond the raster, and that part is reflect-padded when read (see :mod:`engine.io`). A raster smaller than a
tile is one padded tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets (px) covering ``length`` px with tiles of ``tile`` px overlapping by ``overlap`` px."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - overlap) / stride)
    return [i * stride for i in range(n)]


def fit_tile(tile: int, height: int, width: int, model_tile: int, log=None) -> int:
    """The tile size (px) to run: ``tile``, or, when it exceeds both the raster and the model's own tile size,
    the raster's longer side (never below ``model_tile``), so a huge ``--tile-size`` on a small raster does not
    allocate a huge padded tile. ``log`` is told when the size changed."""
    fitted = max(model_tile, height, width)
    if tile <= fitted:
        return tile
    if log is not None:
        log(f"Tile size {tile} px is larger than the raster ({width} x {height} px): using {fitted} px.")
    return fitted


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a ``height`` x ``width`` raster, in row-major order."""

    height: int
    width: int
    tile: int
    overlap: int

    @cached_property
    def row_origins(self) -> list[int]:
        """Top row of each tile row."""
        return axis_origins(self.height, self.tile, self.overlap)

    @cached_property
    def col_origins(self) -> list[int]:
        """Left column of each tile column."""
        return axis_origins(self.width, self.tile, self.overlap)

    @property
    def stride(self) -> int:
        """Distance between consecutive tile origins (px)."""
        return self.tile - self.overlap

    def __len__(self) -> int:
        return len(self.row_origins) * len(self.col_origins)

    def tiles(self):
        """Yield (tile_row_index, tile_col_index, row, col) in row-major order."""
        for i, r in enumerate(self.row_origins):
            for j, c in enumerate(self.col_origins):
                yield i, j, r, c
