"""Runtime plumbing of a run, kept out of the pipeline's logic: the stage timer, GDAL's block cache, the C heap,
and the strip height every streamed pass reads and writes in.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

STRIP_ROWS = 256  # rows per strip of every streamed pass: the arrays of a strip are ~20 bytes x width x this
GDAL_CACHE_MIN, GDAL_CACHE_MAX = 32 * 2**20, 256 * 2**20


class StageTimer:
    """Wall time per stage (``seconds``) and the process's CPU time (user + system, all threads) during it
    (``cpu_seconds``: on a shared machine the stage's own cost, where wall time also counts waiting for a core);
    nested stages are exclusive (an inner stage's time is not counted in the outer)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._stack: list[list] = []

    @contextmanager
    def __call__(self, name: str):
        start, cpu = time.perf_counter(), _process_cpu()
        self._stack.append([name, 0.0, 0.0])
        try:
            yield
        finally:
            _, inner, inner_cpu = self._stack.pop()
            spent, spent_cpu = time.perf_counter() - start, _process_cpu() - cpu
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - inner
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + spent_cpu - inner_cpu
            if self._stack:
                self._stack[-1][1] += spent
                self._stack[-1][2] += spent_cpu


def _process_cpu() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    t = os.times()
    return t.user + t.system


def iter_strips(height: int, rows: int = STRIP_ROWS) -> Iterator[tuple[int, int]]:
    """(row0, n) of consecutive strips of at most ``rows`` rows covering ``height`` rows."""
    for row0 in range(0, height, rows):
        yield row0, min(rows, height - row0)


def gdal_cache_bytes(source, tile: int) -> int:
    """Bytes of GDAL block cache a run needs: three rows of tiles of the source's selected bands (the rows being
    read while the last is still cached), within :data:`GDAL_CACHE_MIN`..:data:`GDAL_CACHE_MAX`.

    ``source``: an :class:`engine.io.RasterSource`; ``tile``: tile side in pixels.
    """
    row = source.width * tile * len(source.bands) * np.dtype(source.dtype).itemsize
    return int(min(max(3 * row, GDAL_CACHE_MIN), GDAL_CACHE_MAX))


@contextmanager
def bounded_gdal_cache(nbytes: int = GDAL_CACHE_MIN):
    """Cap GDAL's raster block cache at ``nbytes`` for the duration of a run.

    GDAL's default cache is 5 % of the machine's RAM; streaming a large raster fills it, so the process's memory
    grows with the raster up to that size instead of staying flat. Every pass reads and writes in order, so a
    cache larger than one band of rows buys nothing.
    A ``GDAL_CACHEMAX`` set in the environment is respected. The previous limit is restored afterwards.
    """
    if os.environ.get("GDAL_CACHEMAX"):
        yield
        return
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=int(nbytes)):  # rasterio passes an integer to GDALSetCacheMax64 (bytes)
        yield


def release_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc only; elsewhere nothing happens).

    GDAL's polygonize and GEOS allocate millions of small blocks; glibc keeps them after they are freed, so
    without this each pass's high-water mark would stack on the last one's.
    """
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
