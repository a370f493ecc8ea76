"""Output files: checked before any work, written under a temporary name, moved into place only on success.

Nothing the user had is overwritten unless they asked for it (``overwrite``), and a failed or cancelled run leaves
no partial file behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import PARAM, OutputError
from .options import OutputPaths

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile",
                  ".fgb": "FlatGeobuf"}
RASTER_SUFFIXES = (".tif", ".tiff")
SHAPEFILE_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix")


def vector_driver(path: Path) -> str:
    """OGR driver name for a vector output path, by extension; raises :class:`OutputError` for others."""
    try:
        return VECTOR_DRIVERS[path.suffix.lower()]
    except KeyError:
        raise OutputError(
            f"Unsupported vector output {path.name}: use one of {', '.join(VECTOR_DRIVERS)} "
            "(GeoPackage by default)."
        ) from None


def _writable_dir(path: Path) -> Path:
    """The nearest existing ancestor folder of ``path``; raises if it is not a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write {path}: the folder {parent} is not writable.")
    return parent


def check_outputs(outputs: OutputPaths, inputs: list[Path] = ()) -> None:
    """Refuse, before any work, outputs that would overwrite data or cannot be written.

    Raises:
        OutputError: an output exists (without ``overwrite``), is an input, is given twice, has an unsupported
            extension, is a folder, or its folder is not writable.
    """
    seen: dict[Path, str] = {}
    resolved_inputs = {Path(p).resolve() for p in inputs}
    for kind, path in outputs.items():
        full = path.resolve()
        if full in seen:
            raise OutputError(f"The same file {path} is given as both the {seen[full]} and the {kind} output.")
        seen[full] = kind
        if full in resolved_inputs:
            raise OutputError(f"The {kind} output {path} is an input of this run; choose another file name.")
        if kind == "vector":
            vector_driver(path)
        elif kind in ("mask", "probability") and path.suffix.lower() not in RASTER_SUFFIXES:
            raise OutputError(f"The {kind} output {path.name} must be a GeoTIFF (.tif).")
        if path.is_dir():
            raise OutputError(f"The {kind} output {path} is a folder; give a file name.")
        if path.exists() and not outputs.overwrite:
            raise OutputError(f"The {kind} output {path} already exists; choose another name or allow overwrite "
                              f"({PARAM}).", param="overwrite")
        _writable_dir(path)


def make_folders(outputs: OutputPaths) -> list[Path]:
    """Create the missing folders of the outputs; returns those created (deepest last) for :func:`remove_folders`."""
    created: list[Path] = []
    for _, path in outputs.items():
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
    return created


def remove_folders(created: list[Path]) -> None:
    """Remove folders made by :func:`make_folders` that are still empty (after a failed or cancelled run)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def part_path(final: Path) -> Path:
    """Temporary name beside ``final`` (same folder, so the final move is atomic), keeping its extension."""
    return final.parent / f".{final.stem}.part-{os.getpid()}{final.suffix}"


def _siblings(path: Path) -> list[Path]:
    if path.suffix.lower() != ".shp":
        return [path]
    return [path.with_suffix(s) for s in SHAPEFILE_SIDECARS if path.with_suffix(s).exists()]


def commit(part: Path, final: Path) -> None:
    """Move a finished temporary output (and a shapefile's sidecars) onto its final name."""
    for src in _siblings(part):
        os.replace(src, final.with_suffix(src.suffix))


def discard(part: Path) -> None:
    """Delete a temporary output (and sidecars) if it exists."""
    for p in [*_siblings(part), part]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
