"""The Processing Results Viewer: report names, and two QGIS 3.22 faults worked around.

1. QGIS 3.22's batch dialog adds each row's HTML output with ``resultsList.addResult(icon=, name=, result=)`` but
   ``ProcessingResults.addResult`` requires ``timestamp``: the TypeError leaves the dialog at 100 % with Cancel
   enabled and no summary. :func:`install` gives ``timestamp`` a default (now), for every algorithm.
2. Its batch summary is a UTF-8 file without a charset, shown as Latin-1 ("mÂ²"), and lists each row's
   parameters and outputs one under the other. For this plugin's algorithms :func:`install` writes a summary
   instead: one table row per raster, with a link to each row's report.

Reports are also listed under the input's name ("naip_nd_2012 — report", not "Report"): algorithms call
:func:`name_report` with the file they wrote, and the patched ``addResult`` uses that name.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any

from . import report_html

PROVIDER_ID = "cropland"
_REPORT_NAMES: dict[str, str] = {}
_ORIGINALS: dict[str, Any] = {}


def _key(path: Any) -> str:
    return os.path.normcase(os.path.normpath(str(path)))


def name_report(path: str | None, name: str) -> None:
    """List the HTML report ``path`` as ``name`` in the Results Viewer."""
    if path:
        _REPORT_NAMES[_key(path)] = name


def report_name(path: Any, default: str) -> str:
    """The name recorded for ``path`` by :func:`name_report`, else ``default``."""
    return _REPORT_NAMES.get(_key(path), default) if path else default


def install() -> bool:
    """Patch QGIS's ProcessingResults.addResult and BatchAlgorithmDialog.createSummaryTable (idempotent).

    Returns False when the Processing plugin cannot be imported (nothing to patch).
    """
    if _ORIGINALS:
        return True
    try:
        from processing.core.ProcessingResults import ProcessingResults
        from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    except ImportError:
        return False
    add_result = ProcessingResults.addResult
    create_summary = BatchAlgorithmDialog.createSummaryTable

    def addResult(self, icon, name, timestamp=None, result=None):
        return add_result(self, icon, report_name(result, name),
                          timestamp if timestamp is not None else time.localtime(), result)

    def createSummaryTable(self, algorithm_results, errors):
        algorithm = self.algorithm()
        provider = algorithm.provider()
        if provider is None or provider.id() != PROVIDER_ID:
            return create_summary(self, algorithm_results, errors)
        from processing.core.ProcessingResults import resultsList
        from processing.tools.system import getTempFilename

        path = getTempFilename("html")
        report_html.write(path, batch_summary(algorithm, algorithm_results, errors))
        resultsList.addResult(icon=algorithm.icon(), name=f"{algorithm.displayName()} — batch summary",
                              timestamp=time.localtime(), result=path)
        return None

    _ORIGINALS.update(addResult=(ProcessingResults, add_result),
                      createSummaryTable=(BatchAlgorithmDialog, create_summary))
    ProcessingResults.addResult = addResult
    BatchAlgorithmDialog.createSummaryTable = createSummaryTable
    return True


def uninstall() -> None:
    """Undo :func:`install`."""
    for name, (cls, original) in _ORIGINALS.items():
        setattr(cls, name, original)
    _ORIGINALS.clear()


def input_name(value: Any) -> str:
    """A readable name for a batch row's INPUT value: a layer's name, or a file's name without extension."""
    from qgis.core import QgsMapLayer, QgsProject

    if isinstance(value, QgsMapLayer):
        return value.name()
    text = str(value or "")
    layer = QgsProject.instance().mapLayer(text)
    if layer is not None:
        return layer.name()
    return Path(text.split("|")[0]).stem or text


def batch_summary(algorithm, algorithm_results: list[dict], errors: list[dict]) -> str:
    """An HTML page with one row per raster (numbers of every number output, a link to its report), then the
    rows that failed with their errors."""
    from qgis.core import QgsProcessingOutputHtml, QgsProcessingOutputNumber, QgsProcessingOutputString

    numbers = [o for o in algorithm.outputDefinitions()
               if isinstance(o, (QgsProcessingOutputNumber, QgsProcessingOutputString))]
    reports = [o for o in algorithm.outputDefinitions() if isinstance(o, QgsProcessingOutputHtml)]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["Raster", *[o.description() for o in numbers], *(["Report"] if reports else [])])
    rows = []
    for item in algorithm_results:
        results, parameters = item["results"], item["parameters"]
        cells = [f"<td>{html.escape(input_name(parameters.get('INPUT')))}</td>"]
        cells += [report_html.cell(results.get(o.name())) for o in numbers]
        if reports:
            path = results.get(reports[0].name())
            link = (f'<a href="{html.escape(Path(path).as_uri())}">{html.escape(Path(path).name)}</a>'
                    if path else "–")
            cells.append(f"<td>{link}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    sections = [(f"{len(algorithm_results)} raster(s)", f"<table><tr>{head}</tr>{''.join(rows)}</table>")]
    if errors:
        failed = "".join(
            f"<tr><td>{html.escape(input_name(e['parameters'].get('INPUT')))}</td>"
            f"<td>{'<br>'.join(html.escape(str(m)) for m in e['errors'])}</td></tr>" for e in errors)
        sections.append((f"{len(errors)} failed", f"<table><tr><th>Raster</th><th>Error</th></tr>{failed}</table>"))
    return report_html.page(f"Cropland Extractor: {algorithm.displayName()} — batch summary", sections)
