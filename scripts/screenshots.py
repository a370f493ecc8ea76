"""Screenshots of the plugin in a real QGIS window: ``python scripts/screenshots.py [--model M] [--out DIR]``.

Run with any Python: it starts Xvfb, a throw-away QGIS profile with the plugin enabled, and
``qgis.bin --code scripts/screenshots.py``, which runs this same file inside QGIS. Inside QGIS it opens the
sample raster, shows the Extract Cropland dialog and grabs the screen (``extract_dialog.png``), shows the batch
dialog with two rows filled (``batch_dialog.png``), runs the extraction through Processing (so the result loads
named after the input, styled and ordered, and its report is listed in the Results Viewer) and grabs the window
(``result.png``), then renders the HTML report (``report.png``). Writes into docs/screenshots/ by default. Needs
Xvfb (``apt-get install xvfb``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_OUT, ENV_MODEL, ENV_REPO = "CROPLAND_SHOT_OUT", "CROPLAND_SHOT_MODEL", "CROPLAND_SHOT_REPO"
SCREEN = (1400, 900)
SHOTS = ("extract_dialog.png", "batch_dialog.png", "result.png", "report.png")


# --- outside QGIS: the launcher ---------------------------------------------------------------------------------

def launch(argv: list[str] | None = None) -> int:
    """Start Xvfb and QGIS with this file as its start-up code; return QGIS's exit status."""
    import argparse
    import shutil
    import subprocess
    import sysconfig
    import tempfile
    import time

    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model for the result shot (default: the shipped ensemble)")
    parser.add_argument("--out", type=Path, default=repo / "docs" / "screenshots", help="output folder")
    parser.add_argument("--display", default=":97")
    args = parser.parse_args(argv)
    for program in ("Xvfb", "qgis.bin", "qgis_process.bin"):
        if shutil.which(program) is None:
            sys.exit(f"error: {program} is not installed (apt-get install xvfb qgis).")
    model = args.model or repo / "resources" / "models" / "ensemble.json"
    if not model.exists():
        sys.exit(f"error: model {model} does not exist; pass --model.")
    args.out.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="cropland_shots_"))
    (work / "plugins").mkdir()
    (work / "plugins" / "cropland_extractor").symlink_to(repo, target_is_directory=True)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(work / "profile"), QGIS_PLUGINPATH=str(work / "plugins"),
               PYTHONPATH=sysconfig.get_paths()["purelib"], **{ENV_OUT: str(args.out.resolve()),
                                                                ENV_MODEL: str(model.resolve()),
                                                                ENV_REPO: str(repo)})
    subprocess.run(["qgis_process.bin", "plugins", "enable", "cropland_extractor"],
                   env=dict(env, QT_QPA_PLATFORM="offscreen"), check=True, capture_output=True)
    xvfb = subprocess.Popen(["Xvfb", args.display, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        env.pop("QT_QPA_PLATFORM", None)
        env["DISPLAY"] = args.display
        proc = subprocess.run(["qgis.bin", "--noversioncheck", "--nologo", "--code", str(Path(__file__).resolve())],
                              env=env, timeout=300, check=False)
    finally:
        xvfb.terminate()
        xvfb.wait()
        shutil.rmtree(work, ignore_errors=True)
    for name in SHOTS:
        path = args.out / name
        print(f"{path}: {'written' if path.exists() else 'MISSING'}")
    return proc.returncode


# --- inside QGIS ------------------------------------------------------------------------------------------------

def shoot() -> None:
    """Run inside QGIS (``--code``): take both screenshots, then quit QGIS."""
    import shutil
    import tempfile

    import processing
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import Qt, QTimer
    from qgis.PyQt.QtWidgets import QApplication, QTextBrowser
    from qgis.utils import iface

    out = Path(os.environ[ENV_OUT])
    model = os.environ[ENV_MODEL]
    repo = Path(os.environ[ENV_REPO])
    work = Path(tempfile.mkdtemp(prefix="cropland_shot_"))
    sample = work / "naip_nd_2012.tif"  # a copy: QGIS writes statistics (.aux.xml) next to rasters it opens
    shutil.copyfile(repo / "resources" / "samples" / "naip_nd_2012.tif", sample)
    state: dict = {}

    window = iface.mainWindow()
    window.move(0, 0)
    window.resize(*SCREEN)

    def step_open():
        layer = QgsRasterLayer(str(sample), "naip_nd_2012")
        QgsProject.instance().addMapLayer(layer)
        state["layer"] = layer
        iface.mapCanvas().setExtent(layer.extent())
        shown_model = "" if Path(model) == repo / "resources" / "models" / "ensemble.json" else model
        dialog = processing.createAlgorithmDialog("cropland:extractcropland", {
            "INPUT": layer, "BANDS": [1, 2, 3], "MODEL": shown_model, "SIMPLIFY": 2.0})
        dialog.resize(900, 760)
        dialog.move((SCREEN[0] - 900) // 2, (SCREEN[1] - 760) // 2)
        dialog.show()
        state["dialog"] = dialog
        QTimer.singleShot(2500, step_grab_dialog)

    def step_grab_dialog():
        QApplication.primaryScreen().grabWindow(0).save(str(out / "extract_dialog.png"), "PNG", 0)
        state["dialog"].close()
        from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
        from processing.tools import dataobjects
        from qgis.core import QgsApplication

        alg = QgsApplication.processingRegistry().createAlgorithmById("cropland:extractcropland")
        batch = BatchAlgorithmDialog(alg, window)
        panel = batch.mainWidget()
        context = dataobjects.createContext()
        while panel.batchRowCount() < 2:
            panel.addRow()
        for row, stem in enumerate(("naip_nd_2012", "naip_nd_2012_east")):
            panel.wrappers[row][panel.parameter_to_column["INPUT"]].setParameterValue(str(sample), context)
            for name, suffix in (("OUTPUT", "fields.gpkg"), ("OUTPUT_HTML", "report.html")):
                panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column[name]).setValue(
                    f"/data/out/{stem}_{suffix}")
        panel.checkLoadLayersOnCompletion.setChecked(True)
        batch.show()
        batch.setGeometry(20, 150, 1360, 420)
        state["batch"] = batch
        QTimer.singleShot(500, lambda: panel.tblParameters.horizontalScrollBar().setValue(
            panel.tblParameters.horizontalScrollBar().maximum()))
        QTimer.singleShot(1500, step_grab_batch)

    def step_grab_batch():
        state["batch"].grab().save(str(out / "batch_dialog.png"), "PNG", 0)
        state["batch"].close()
        report = work / "naip_nd_2012_report.html"
        results = processing.runAndLoadResults("cropland:extractcropland", {
            "INPUT": state["layer"], "BANDS": [1, 2, 3], "MODEL": model, "SIMPLIFY": 2.0,
            "OUTPUT": str(work / "fields.gpkg"), "OUTPUT_MASK": str(work / "mask.tif"), "OUTPUT_HTML": str(report)})
        from processing.core.ProcessingResults import resultsList

        resultsList.addResult(icon=QgsApplication.processingRegistry().providerById("cropland").icon(),
                              name="Report", result=results["OUTPUT_HTML"])  # as the dialog does
        import qgis.utils

        dock = qgis.utils.plugins["processing"].resultsDock
        window.addDockWidget(Qt.RightDockWidgetArea, dock)
        dock.show()
        state["report"] = report
        for node in QgsProject.instance().layerTreeRoot().findLayers():
            if node.name().endswith("cropland mask"):
                node.setItemVisibilityChecked(False)  # listed (under the fields) but not hiding the image
        iface.mapCanvas().setExtent(state["layer"].extent())
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(4000, step_grab_result)

    def step_grab_result():
        window.grab().save(str(out / "result.png"), "PNG", 0)
        browser = QTextBrowser()
        browser.setHtml(state["report"].read_text(encoding="utf-8"))
        browser.resize(760, 880)
        browser.show()
        state["browser"] = browser
        QTimer.singleShot(1000, step_grab_report)

    def step_grab_report():
        state["browser"].grab().save(str(out / "report.png"), "PNG", 0)
        state["browser"].close()
        QgsProject.instance().removeAllMapLayers()
        shutil.rmtree(work, ignore_errors=True)
        QTimer.singleShot(200, lambda: QApplication.exit(0))

    QTimer.singleShot(3000, step_open)


def _inside_qgis() -> bool:
    try:
        from qgis.utils import iface
    except ImportError:
        return False
    return iface is not None and ENV_OUT in os.environ


if _inside_qgis():
    shoot()
elif __name__ == "__main__":
    sys.exit(launch())
