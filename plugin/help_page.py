"""The algorithms' help: a rendered HTML page for the dialog's Help button, plain text for qgis_process.

QGIS opens ``helpUrl()`` in the browser; a ``file://…/PLUGIN.md#anchor`` showed raw Markdown there, so each
algorithm gets a page built from its own help text and parameter definitions (always in step with the code).
``qgis_process help`` prints ``shortHelpString()`` as it is, so there the HTML is turned into text.
"""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path

from qgis.core import QgsApplication, QgsProcessingParameterDefinition

from . import report_html

HELP_DIR = Path(tempfile.gettempdir()) / "cropland_extractor_help"


def plain_text(text: str) -> str:
    """HTML help -> plain text: <br> and paragraphs become line breaks, other tags go, entities are decoded."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"</?(p|li|ul|h\d)[^>]*>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def for_this_application(text: str) -> str:
    """``text`` (HTML) as it should be shown here: plain text in qgis_process, HTML in QGIS."""
    return plain_text(text) if QgsApplication.platform() == "qgis_process" else text


def page(algorithm, manual: Path | None = None) -> str:
    """A whole HTML help page of ``algorithm``: what it does, its parameters (with their help), its outputs."""
    rows = []
    for definition in algorithm.parameterDefinitions():
        flags = definition.flags()
        notes = []
        if flags & QgsProcessingParameterDefinition.FlagOptional:
            notes.append("optional")
        if flags & QgsProcessingParameterDefinition.FlagAdvanced:
            notes.append("advanced")
        default = definition.defaultValue()
        if default not in (None, "") and not definition.isDestination():
            notes.append(f"default {default}")
        rows.append(f"<tr><th>{html.escape(definition.description())}<br><code>{definition.name()}</code></th>"
                    f"<td>{html.escape(definition.help() or '')}"
                    f"{'<br><i>' + ', '.join(notes) + '</i>' if notes else ''}</td></tr>")
    outputs = "".join(f"<tr><th>{html.escape(o.description())}<br><code>{o.name()}</code></th>"
                      f"<td>{html.escape(o.type())}</td></tr>" for o in algorithm.outputDefinitions())
    sections = [
        ("What it does", f"<p>{algorithm.HELP_TEXT}</p>"),
        ("Parameters", f"<table>{''.join(rows)}</table>"),
        ("Outputs", f"<table>{outputs}</table>"),
    ]
    if manual is not None and manual.exists():
        sections.append(("More", f'<p>The full manual: <a href="{manual.as_uri()}">{manual.name}</a>.</p>'))
    return report_html.page(f"{algorithm.displayName()} (cropland:{algorithm.name()})", sections)


def write(algorithm, manual: Path | None = None) -> Path:
    """Write (or refresh) the help page of ``algorithm`` and return its path."""
    path = HELP_DIR / f"{algorithm.name()}.html"
    text = page(algorithm, manual)
    # page() stamps the time: compare without that line so the file is rewritten only when the help changed
    strip = re.compile(r'<p class="note">[^<]*</p>')
    if not path.exists() or strip.sub("", path.read_text(encoding="utf-8")) != strip.sub("", text):
        HELP_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path
