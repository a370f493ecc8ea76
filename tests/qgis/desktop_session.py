"""Run inside a real QGIS desktop (``qgis.bin --code desktop_session.py`` under Xvfb) by test_qgis_desktop.py.

Drives the batch dialog with the report column filled, reads the Results Viewer, checks the layers loaded,
and runs the dependency installer on a small local wheel; writes what it saw as JSON to
``$CROPLAND_DESKTOP_RESULT`` and leaves QGIS. Not a test module itself (no ``test_`` prefix).
"""

import functools
import json
import os
import site
import sys
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QMessageBox
from qgis.utils import iface

SETUP = json.loads(os.environ["CROPLAND_DESKTOP_SETUP"])
RESULT = os.environ["CROPLAND_DESKTOP_RESULT"]
seen = {"errors": []}


def hook(kind, value, tb):  # anything QGIS would show as a Python error dialog
    seen["errors"].append("".join(traceback.format_exception(kind, value, tb)))


def batch_dialog():
    import qgis.utils
    from processing.core.ProcessingResults import resultsList
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    seen["plugin_loaded"] = "cropland_extractor" in qgis.utils.plugins
    alg = QgsApplication.processingRegistry().createAlgorithmById("cropland:extractcropland")
    dialog = BatchAlgorithmDialog(alg, iface.mainWindow())
    dialog.show()
    panel = dialog.mainWidget()
    context = dataobjects.createContext()
    while panel.batchRowCount() < len(SETUP["rasters"]):
        panel.addRow()
    for row, raster in enumerate(SETUP["rasters"]):
        stem = os.path.splitext(os.path.basename(raster))[0]
        for name, value in (("INPUT", raster), ("MODEL", SETUP["model"])):
            panel.wrappers[row][panel.parameter_to_column[name]].setParameterValue(value, context)
        for name, value in (("OUTPUT", f"{SETUP['out']}/{stem}_fields.gpkg"),
                            ("OUTPUT_HTML", f"{SETUP['out']}/{stem}_report.html")):
            panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column[name]).setValue(value)
    panel.checkLoadLayersOnCompletion.setChecked(True)
    seen["load_layers_checkbox"] = panel.checkLoadLayersOnCompletion.isChecked()
    before = len(resultsList.getResults())
    dialog.runAlgorithm()
    QApplication.processEvents()
    seen["cancel_enabled_after"] = dialog.cancelButton().isEnabled()
    from qgis.gui import QgsProcessingAlgorithmDialogBase

    log_file = os.path.join(SETUP["out"], "batch_log.txt")
    dialog.saveLogToFile(log_file, QgsProcessingAlgorithmDialogBase.FormatPlainText)
    seen["log"] = Path(log_file).read_text(encoding="utf-8")
    seen["results"] = [{"name": r.name, "file": r.filename, "timestamp": bool(r.timestamp)}
                       for r in resultsList.getResults()[before:]]
    summaries = [r.filename for r in resultsList.getResults()[before:] if "summary" in r.name]
    seen["summary"] = Path(summaries[-1]).read_text(encoding="utf-8") if summaries else ""
    dock = qgis.utils.plugins["processing"].resultsDock
    tree = dock.treeResults
    seen["results_viewer"] = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    seen["layers"] = [node.name() for node in QgsProject.instance().layerTreeRoot().children()]
    shot = SETUP.get("screenshot")
    if shot:
        dialog.grab().save(shot)
    dialog.close()


def installer():
    from cropland_extractor.plugin import deps
    from cropland_extractor.plugin.install_dialog import InstallDialog

    plugin = __import__("qgis.utils").utils.plugins["cropland_extractor"]
    target = SETUP["private"]
    probe = {"cropland_probe": "cropland-probe"}
    wheel_args = {"requirements": ["cropland-probe==1.0"], "extra": ["--no-index", "--find-links", SETUP["wheels"]]}
    originals = (deps.install_args, deps.after_install, QMessageBox.question)
    deps.install_args = functools.partial(originals[0], target=target, **wheel_args)
    deps.after_install = functools.partial(originals[1], probe, target)
    QMessageBox.question = staticmethod(lambda *args: QMessageBox.Yes)
    try:
        assert plugin.install_dependencies() is True
        dialog = plugin.dialog
        dialog.process.waitForFinished(120000)
        for _ in range(20):
            QApplication.processEvents()
        import cropland_probe

        seen["install"] = {
            "args": dialog.args, "exit_code": dialog.exit_code, "progress": dialog.progress.value(),
            "status": dialog.status_label.text(), "restart_needed": dialog.restart_needed,
            "probe_file": cropland_probe.__file__, "probe_version": cropland_probe.__version__,
            "user_site_has_probe": os.path.exists(os.path.join(site.getusersitepackages(), "cropland_probe")),
        }
        dialog.reject()
        # Already loaded from elsewhere: a second folder gets version 1.0 while 0.9 is in memory.
        other = SETUP["private"] + "_second"
        deps.install_args = functools.partial(originals[0], target=other, **wheel_args)
        deps.after_install = functools.partial(originals[1], probe, other)
        sys.modules["cropland_probe"].__file__ = os.path.join(SETUP["elsewhere"], "cropland_probe", "__init__.py")
        second = InstallDialog(deps.install_args("runtime"), iface.mainWindow(), steps=1,
                               on_success=deps.after_install)
        second.start()
        second.process.waitForFinished(120000)
        for _ in range(20):
            QApplication.processEvents()
        seen["install_again"] = {"exit_code": second.exit_code, "status": second.status_label.text(),
                                 "restart_needed": second.restart_needed}
        second.reject()
    finally:
        deps.install_args, deps.after_install = originals[0], originals[1]
        QMessageBox.question = originals[2]


def main():
    sys.excepthook = hook
    for step in (batch_dialog, installer):
        try:
            step()
        except Exception:
            seen["errors"].append(f"{step.__name__}: {traceback.format_exc()}")
    with open(RESULT, "w", encoding="utf-8") as handle:
        json.dump(seen, handle)
    os._exit(0)  # QGIS's own exit can crash on leftover layers; everything is written


QTimer.singleShot(500, main)
