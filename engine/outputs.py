"""Output files: checked before any work, written under a temporary name, moved into place only on success.

Nothing the user had is overwritten unless they asked for it (``overwrite``), and a failed or cancelled run leaves
no partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PARAM, CroplandError, InputError, OutputError
from .options import OutputPaths

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile",
                  ".fgb": "FlatGeobuf"}
RASTER_SUFFIXES = (".tif", ".tiff")
# Every file GDAL, QGIS or ArcGIS may keep beside a shapefile; a stale spatial index (.qix, .sbn/.sbx) left
# beside a new .shp makes later reads fail, so overwriting removes them too.
SHAPEFILE_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".shp.xml", ".qmd")
DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
# What GDAL and SQLite say when a write fails (most often because the disk is full).
WRITE_FAILURE_WORDS = ("no space left", "disk full", "write error", "failed to commit", "failed to write",
                       "database or disk is full", "short write", "i/o error", "cannot write")


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
        existing = [p for p in _siblings(path) if p.exists()]
        if existing and not outputs.overwrite:
            shown = existing[0] if existing[0] == path else f"{path} (its {existing[0].name})"
            raise OutputError(f"The {kind} output {shown} already exists; choose another name or allow overwrite "
                              f"({PARAM}).", param="overwrite")
        _writable_dir(path)


def make_folders(outputs: OutputPaths) -> list[Path]:
    """Create the missing folders of the outputs; returns those this call created (deepest last) for
    :func:`remove_folders`. A folder that another process creates at the same moment is not an error."""
    created: list[Path] = []
    for _, path in outputs.items():
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by another run writing there (e.g. another Dask task)
                continue
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
    """``path`` and, for a shapefile, every sidecar name it may have (existing or not)."""
    if path.suffix.lower() != ".shp":
        return [path]
    return [path.with_suffix(s) for s in SHAPEFILE_SIDECARS]


def commit(part: Path, final: Path) -> None:
    """Move a finished temporary output (and a shapefile's sidecars) onto its final name; sidecars of an
    older shapefile there that the new one does not have (a stale .qix index...) are removed."""
    made = [src for src in _siblings(part) if src.exists()]
    suffixes = {src.name[len(part.stem):] for src in made}
    for old in _siblings(final):
        if old.name[len(final.stem):] not in suffixes:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    for src in made:
        os.replace(src, final.parent / (final.stem + src.name[len(part.stem):]))


def discard(part: Path) -> None:
    """Delete a temporary output (and sidecars) if it exists."""
    for p in [*_siblings(part), part]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def check_batch(plans: list[tuple[Path | str, OutputPaths]], report: Path | None = None) -> None:
    """Refuse, before any work, a batch whose inputs repeat or whose outputs collide.

    Args:
        plans: (input, its outputs) per input, in command-line order.
        report: the run's report file (one for all inputs), or None.

    Raises:
        InputError: an input is given twice.
        OutputError: two inputs would write the same file (e.g. the same ``{stem}``), or one file is given for
            two outputs (``--report`` equal to ``--output``...), naming both.
    """
    seen_inputs: dict[str, str] = {}
    for inp, _ in plans:
        key = _key(inp)
        if key in seen_inputs:
            raise InputError(f"The input {inp} is given twice (also as {seen_inputs[key]}); each raster once, "
                             "please.")
        seen_inputs[key] = str(inp)
    owners: dict[str, tuple[str, str | None]] = {}
    claims = [("report", report, None)] if report is not None else []
    claims += [(kind, path, str(inp)) for inp, outs in plans for kind, path in outs.items()]
    for kind, path, inp in claims:
        key = _key(path)
        if key in owners:
            other_kind, other_inp = owners[key]
            if inp is not None and other_inp is not None and inp != other_inp:
                raise OutputError(f"The inputs {other_inp} and {inp} would both write the {kind} output {path}; "
                                  "put '{stem}' in the output name, or rename one input.")
            raise OutputError(f"The same file {path} is given twice: as the {other_kind} and the {kind} output.")
        owners[key] = (kind, inp)


def _key(path) -> str:
    text = str(path)
    return text if "://" in text or text.startswith("/vsi") else str(Path(text).resolve())


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (*DISK_FULL_ERRNOS, errno.EIO, errno.EROFS, errno.EFBIG):
        return True
    text = " ".join(str(e).lower() for e in _chain(exc))
    return any(word in text for word in WRITE_FAILURE_WORDS)


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


@contextlib.contextmanager
def write_errors(outputs: OutputPaths, min_free: int = 64 << 20) -> Iterator[None]:
    """Turn a failed write of an output or temporary file (disk full, I/O error) into one :class:`OutputError`
    naming what could not be written: ``cannot write <file>: no space left on device``.

    The failed files are removed by the caller's cleanup; files the user had are untouched (outputs are
    written under temporary names, see :func:`part_path`). GDAL reports a full disk only as "Write error at
    scanline n", and the failed files are gone by the time the error arrives here, so a folder (of an output,
    or the temporary folder ``tempfile.gettempdir()``) that had less than ``min_free`` bytes free before the
    run or after the failure is taken as the full one.
    """
    import pyogrio.errors
    from rasterio.errors import RasterioError

    places = [(path, path.parent) for _, path in outputs.items()]
    places.append((Path(tempfile.gettempdir()) / "cropland-*", Path(tempfile.gettempdir())))
    free_before = [_free_bytes(folder) for _, folder in places]
    try:
        yield
    except CroplandError:
        raise
    except (OSError, RasterioError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
            pyogrio.errors.FieldError, pyogrio.errors.GeometryError) as exc:
        if not _is_write_failure(exc):
            raise
        free = [min(b if b is not None else min_free, _free_bytes(folder) or min_free)
                for b, (_, folder) in zip(free_before, places, strict=True)]
        full = [path for (path, _), f in sorted(zip(places, free, strict=True), key=lambda pf: pf[1])
                if f < min_free]
        disk_full = bool(full) or (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS) or \
            "no space" in str(exc).lower() or "disk is full" in str(exc).lower()
        target = full[0] if full else (Path(exc.filename) if isinstance(exc, OSError) and exc.filename else
                                      next((p for _, p in outputs.items()), Path(tempfile.gettempdir())))
        if disk_full:
            where = ("the temporary folder " + str(target.parent) + " (set TMPDIR to a folder with more space)"
                     if target.name == "cropland-*" else str(target))
            raise OutputError(f"cannot write {where}: no space left on device. Nothing was replaced; free some "
                              "space and run again.") from exc
        raise OutputError(f"cannot write {target}: {_reason(exc)}. Nothing was replaced.") from exc


def _reason(exc: BaseException) -> str:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
