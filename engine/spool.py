"""A temporary file of finished fields, so that a run holds only the fields still being traced, not all of them.

Fields finish in the order their last row is reached; the output numbers them top-to-bottom, left-to-right.
The spool keeps each field's geometry (WKB) and attributes on disk and only three numbers per field in memory,
and gives them back in output order. A plain append-only file with offsets, not a GeoPackage: nothing here needs
a spatial index or SQL, and writing WKB blobs is several times faster.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_HEAD = struct.Struct("<Idddd")  # WKB length, area_m2, perimeter_m, mean probability, mean boundary (NaN = unknown)


class FieldSpool:
    """Append-only store of field records under ``folder`` (deleted with it)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "fields.spool"
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        self._offsets = array("q")
        self._rows = array("d")
        self._cols = array("d")
        self._ties = array("d")

    def __len__(self) -> int:
        return len(self._offsets)

    def add_many(self, wkbs, areas_m2: np.ndarray, perimeters_m: np.ndarray, mean_probabilities: np.ndarray,
                 keys: np.ndarray, mean_boundaries: np.ndarray | None = None) -> None:
        """Store many fields: their WKB geometries (map coordinates), float64 (n,) areas (m²), perimeters (m),
        mean probabilities and, or None, mean boundary probabilities (NaN = unknown), and float64 (n, 3) order
        keys (:func:`engine.vectorize.order_keys`: top row, left edge of the box, and the left edge of the first
        pixel on the top row, which no two fields share, so that the order does not depend on the order fields
        were added in)."""
        n = len(wkbs)
        edges = np.full(n, np.nan) if mean_boundaries is None else np.asarray(mean_boundaries, np.float64)
        heads = np.column_stack((np.asarray(areas_m2, np.float64), np.asarray(perimeters_m, np.float64),
                                 np.asarray(mean_probabilities, np.float64), edges))
        pos = self._file.tell()
        parts = []
        for wkb, head in zip(wkbs, heads.tolist(), strict=True):
            self._offsets.append(pos)
            parts.append(_HEAD.pack(len(wkb), *head))
            parts.append(wkb)
            pos += _HEAD.size + len(wkb)
        self._file.write(b"".join(parts))
        keys = np.asarray(keys, np.float64).reshape(n, 3)
        self._rows.extend(keys[:, 0].tolist())
        self._cols.extend(keys[:, 1].tolist())
        self._ties.extend(keys[:, 2].tolist())

    def chunks(self, max_bytes: int = 16 << 20) -> Iterator[tuple[list[bytes], np.ndarray]]:
        """Every field in output order (top-to-bottom, left-to-right), in chunks of at most about ``max_bytes``
        of WKB: (WKB geometries, float64 (n, 4) area_m2, perimeter_m, mean_probability, mean_boundary with NaN
        where unknown)."""
        import mmap

        order = np.lexsort((np.arange(len(self)), np.frombuffer(self._ties, dtype=np.float64),
                            np.frombuffer(self._cols, dtype=np.float64), np.frombuffer(self._rows, dtype=np.float64)))
        self._file.flush()
        if not len(self):
            return
        # mapped rather than read: one seek and two reads per field cost more than the rest of writing it
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            wkbs, heads, size = [], [], 0
            offsets = np.frombuffer(self._offsets, dtype=np.int64)[order].tolist()
            for at in offsets:
                n, *head = _HEAD.unpack_from(mapped, at)
                wkbs.append(mapped[at + _HEAD.size:at + _HEAD.size + n])
                heads.append(head)
                size += n
                if size >= max_bytes:
                    yield wkbs, np.array(heads, dtype=np.float64)
                    wkbs, heads, size = [], [], 0
            if wkbs:
                yield wkbs, np.array(heads, dtype=np.float64)

    def close(self) -> None:
        """Close and delete the file."""
        self._file.close()
        self.path.unlink(missing_ok=True)
