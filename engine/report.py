"""The JSON report: one row per input, with the areas, ratio, field count and what ran."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import __version__
from .outputs import commit, part_path
from .result import ExtractionResult, SceneFailure


def report_document(results: list[ExtractionResult | SceneFailure], command: str | None = None) -> dict:
    """The report as a dict: ``{"engine_version", "created", "command", "rows": [...], "total": {...}}``.

    A failed input (:class:`SceneFailure`, from a cluster run) is a row ``{"input", "error"}``; ``total`` sums
    areas and fields over the other rows (areas None when any row's areas are unknown) and counts the failures.
    """
    rows = [r.to_report() for r in results]
    failed = sum(isinstance(r, SceneFailure) for r in results)
    results = [r for r in results if not isinstance(r, SceneFailure)]
    known = all(r.valid_area_m2 is not None for r in results)
    valid_px = sum(r.valid_pixels for r in results)
    crop_px = sum(r.cropland_pixels for r in results)
    total = {
        "inputs": len(rows),
        "valid_area_m2": round(sum(r.valid_area_m2 for r in results), 3) if known else None,
        "cropland_area_m2": round(sum(r.cropland_area_m2 for r in results), 3) if known else None,
        "cropland_ratio": round(crop_px / valid_px, 6) if valid_px else None,
        "field_count": sum(r.field_count for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
    }
    if failed:
        total["failed"] = failed
    return {
        "engine_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "rows": rows,
        "total": total,
    }


def write_report(path: Path, results: list[ExtractionResult | SceneFailure], command: str | None = None) -> None:
    """Write the report atomically to ``path`` (UTF-8 JSON, indented)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    part = part_path(Path(path))
    part.write_text(json.dumps(report_document(results, command), indent=2, ensure_ascii=False), encoding="utf-8")
    commit(part, Path(path))
