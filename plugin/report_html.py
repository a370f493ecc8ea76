"""Small self-contained HTML reports shown in the Processing Results Viewer."""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: sans-serif; font-size: 10pt; margin: 12px; }
h1 { font-size: 13pt; margin: 0 0 4px 0; }
h2 { font-size: 11pt; margin: 14px 0 4px 0; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #eef2e6; font-weight: normal; }
td.num { text-align: right; font-family: monospace; }
p.note { color: #555; }
ul.warnings li { color: #8a4b00; }
"""


def cell(value: Any) -> str:
    """One <td> for ``value``: numbers right-aligned with thousands separators, lists joined, None as a dash."""
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value) if value is not None else '–')}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        text = f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
        return f'<td class="num">{text}</td>'
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return f"<td>{html.escape(str(value))}</td>"


def key_value_table(rows: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labels and values."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    body = "".join(f"<tr><th>{html.escape(str(k))}</th>{cell(v)}</tr>" for k, v in items)
    return f"<table>{body}</table>"


def page(title: str, sections: Iterable[tuple[str, str]], note: str = "") -> str:
    """A whole HTML document: a title, then (heading, html body) sections, then an optional note."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">{datetime.datetime.now().isoformat(timespec="seconds")}</p>']
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def extraction_report(report: Mapping[str, Any], settings: Iterable[tuple[str, Any]],
                      warnings: Iterable[str] = (), input_rows: Iterable[tuple[str, Any]] = ()) -> str:
    """Report of one Extract Cropland run.

    Args:
        report: ``ExtractionResult.to_report()``.
        settings: (label, value) pairs worded for a person (see the algorithm's ``settings_for_report``).
        warnings: the run's warnings (resolution mismatch, stretching, CUDA not used...), shown first.
        input_rows: more (label, value) rows for the Input section (area of interest...).
    """
    area_method = {"projected": "from the raster's projected CRS", "geodesic": "geodesic, on the CRS's ellipsoid",
                   "pixel_size": "pixel size given by hand (raster without a CRS)"}
    areas = [
        ("Cropland area (ha)", report.get("cropland_area_ha")),
        ("Cropland area (m²)", report.get("cropland_area_m2")),
        ("Valid area (ha)", report.get("valid_area_ha")),
        ("Valid area (m²)", report.get("valid_area_m2")),
        ("Cropland ratio", report.get("cropland_ratio")),
        ("Fields", report.get("field_count")),
        ("Cropland / valid pixels", f"{report.get('cropland_pixels', 0):,} / {report.get('valid_pixels', 0):,}"),
        ("Pixel size (m)", report.get("pixel_size_m")),
        ("CRS", report.get("crs") or "none"),
        ("Areas computed", area_method.get(report.get("area_method"), report.get("area_method"))),
    ]
    run = [
        ("Models", report.get("models")),
        ("Device", report.get("device")),
        ("Total time (s)", report.get("seconds")),
        *[(f"  {stage.replace('_', ' ')} (s)", seconds)
          for stage, seconds in (report.get("stage_seconds") or {}).items()],
    ]
    sections = []
    warnings = list(warnings)
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(("Warnings", f'<ul class="warnings">{items}</ul>'))
    sections += [
        ("Input", key_value_table([("Raster", report.get("input")), *input_rows])),
        ("Result", key_value_table(areas)),
        ("Run", key_value_table(run)),
        ("Settings", key_value_table(list(settings))),
        ("Outputs", key_value_table(report.get("outputs") or {})),
    ]
    return page("Cropland Extractor: Extract Cropland", sections)


def write(path: str | Path, document: str) -> str:
    """Write ``document`` to ``path`` (UTF-8) and return the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(document, encoding="utf-8")
    return str(path)
