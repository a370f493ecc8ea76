"""The provider in real QGIS: registration, algorithm definitions, metadata, lazy imports, GUI hooks."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap

import pytest
from plugin_testkit import HEAVY_MODULES, PLUGIN_NAME, REPO, SYSTEM_PYTHON

pytestmark = pytest.mark.qgis

ALGORITHMS = {
    "cropland:extractcropland": "Extract Cropland",
    "cropland:croplandratio": "Cropland Area Ratio",
    "cropland:evaluate": "Evaluate Against Reference",
    "cropland:trainmodel": "Train Cropland Model",
}


def test_provider_lists_the_four_algorithms(provider):
    from qgis.core import QgsApplication

    assert provider.name() == "Cropland Extractor"
    assert not provider.icon().isNull()
    ids = {alg.id(): alg.displayName() for alg in provider.algorithms()}
    assert ids == ALGORITHMS
    for alg_id in ALGORITHMS:
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        assert alg is not None, alg_id
        assert len(alg.shortHelpString()) > 200, alg_id
        assert alg.helpUrl().startswith("file://"), alg_id
        assert not alg.icon().isNull()


def test_extract_parameters_and_outputs(provider):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    alg = QgsApplication.processingRegistry().algorithmById("cropland:extractcropland")
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert set(params) == {"INPUT", "BANDS", "MODEL", "EXTENT", "AOI", "DEVICE", "AREA_UNITS",
                           "TILE_SIZE", "OVERLAP", "THRESHOLD", "MIN_AREA",
                           "MAX_HOLE", "SIMPLIFY", "PIXEL_SIZE", "TTA", "STRETCH", "SPLIT", "RESAMPLE", "OUTPUT",
                           "OUTPUT_MASK", "OUTPUT_PROBABILITY", "OUTPUT_HTML"}
    advanced = {n for n, p in params.items() if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == {"TILE_SIZE", "OVERLAP", "THRESHOLD", "MIN_AREA", "MAX_HOLE", "SIMPLIFY", "PIXEL_SIZE", "TTA",
                        "STRETCH", "SPLIT", "RESAMPLE"}
    assert params["DEVICE"].options()[1:] == ["CPU", "CUDA GPU"]
    assert params["OUTPUT_MASK"].flags() & QgsProcessingParameterDefinition.FlagOptional
    outputs = {o.name(): o.type() for o in alg.outputDefinitions()}
    assert outputs["OUTPUT"] == "outputVector"
    assert outputs["OUTPUT_MASK"] == outputs["OUTPUT_PROBABILITY"] == "outputRaster"
    assert outputs["OUTPUT_HTML"] == "outputHtml"
    for name in ("CROPLAND_AREA_M2", "VALID_AREA_M2", "CROPLAND_RATIO", "FIELD_COUNT"):
        assert outputs[name] == "outputNumber"


def test_parameter_defaults_match_the_engine(provider):
    """The plugin hard-codes the defaults (no engine import at start-up); they must equal ExtractOptions'."""
    from cropland_extractor.engine.options import ExtractOptions
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("cropland:extractcropland")
    defaults = ExtractOptions()
    for name, attribute in (("SIMPLIFY", "simplify_m"), ("TTA", "tta"), ("TILE_SIZE", "tile_size"),
                            ("THRESHOLD", "threshold")):
        assert alg.parameterDefinition(name).defaultValue() == getattr(defaults, attribute), name
    # MIN_AREA / MAX_HOLE default to empty: chosen from the model's resolution at run time (engine.defaults)
    for name in ("MIN_AREA", "MAX_HOLE"):
        assert alg.parameterDefinition(name).defaultValue() is None, name
    from cropland_extractor.engine.options import RESAMPLES, SPLITS
    from cropland_extractor.plugin.algorithms import extract

    for name, choices, attribute, engine_choices in (("SPLIT", extract.SPLITS, "split", SPLITS),
                                                     ("RESAMPLE", extract.RESAMPLES, "resample", RESAMPLES)):
        assert choices[alg.parameterDefinition(name).defaultValue()][0] == getattr(defaults, attribute), name
        assert [value for value, _ in choices] == list(engine_choices), name


def test_other_algorithms_outputs(provider):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    ratio = {o.name() for o in registry.algorithmById("cropland:croplandratio").outputDefinitions()}
    assert {"CROPLAND_AREA_M2", "VALID_AREA_M2", "CROPLAND_RATIO"} <= ratio
    evaluate = {o.name() for o in registry.algorithmById("cropland:evaluate").outputDefinitions()}
    assert {"IOU", "F1", "PRECISION", "RECALL", "RATIO_ERROR", "OUTPUT_HTML"} <= evaluate
    train = {o.name() for o in registry.algorithmById("cropland:trainmodel").outputDefinitions()}
    assert {"OUTPUT_MODEL", "OUTPUT_FOLDER"} <= train


def test_metadata_txt():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    assert general["name"] == "Cropland Extractor"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    for key in ("description", "about", "version", "author", "email", "tags", "license", "category"):
        assert general[key].strip(), key
    assert (REPO / general["icon"]).exists()
    from cropland_extractor.engine import __version__

    assert general["version"] == __version__


def test_start_up_imports_nothing_heavy_and_lists_algorithms_without_packages(tmp_path, plugins_dir):
    """In QGIS's own Python (no venv) with the heavy packages blocked, the provider still loads."""
    blocker = _write_blocker(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from qgis.core import QgsApplication
        app = QgsApplication([], False); app.initQgis()
        sys.path.append('/usr/share/qgis/python/plugins')
        from processing.core.Processing import Processing
        Processing.initialize()
        before = set(sys.modules)
        import qgis.utils
        sys.path.insert(0, {str(plugins_dir)!r}); qgis.utils.plugin_paths.insert(0, {str(plugins_dir)!r})
        qgis.utils.updateAvailablePlugins()
        assert qgis.utils.loadPlugin({PLUGIN_NAME!r}) and qgis.utils.startProcessingPlugin({PLUGIN_NAME!r})
        ids = sorted(a.id() for a in QgsApplication.processingRegistry().providerById('cropland').algorithms())
        print('ALGS', ','.join(ids))
        heavy = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY_MODULES!r})
        print('HEAVY', ','.join(heavy))
    """)
    proc = _run_system_python(script, blocker)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("ALGS", "HEAVY")))
    assert lines["ALGS"].split(",") == sorted(ALGORITHMS)
    assert lines["HEAVY"].strip() == ""


def test_missing_package_gives_install_command_for_qgis_python(tmp_path, plugins_dir, data_dir):
    """QGIS's Python without onnxruntime/rasterio: running fails with the pip command, not an ImportError."""
    blocker = _write_blocker(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from qgis.core import QgsApplication, QgsProcessingException
        app = QgsApplication([], False); app.initQgis()
        sys.path.append('/usr/share/qgis/python/plugins')
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing, qgis.utils
        sys.path.insert(0, {str(plugins_dir)!r}); qgis.utils.plugin_paths.insert(0, {str(plugins_dir)!r})
        qgis.utils.updateAvailablePlugins()
        qgis.utils.loadPlugin({PLUGIN_NAME!r}); qgis.utils.startProcessingPlugin({PLUGIN_NAME!r})
        try:
            processing.run('cropland:extractcropland', {{'INPUT': {str(data_dir / 'rgb_a.tif')!r},
                           'OUTPUT': {str(tmp_path / 'fields.gpkg')!r}}})
        except QgsProcessingException as exc:
            print('MESSAGE-START'); print(exc); print('MESSAGE-END')
    """)
    proc = _run_system_python(script, blocker)
    out = proc.stdout
    assert "MESSAGE-START" in out, out + proc.stderr
    message = out[out.index("MESSAGE-START"):out.index("MESSAGE-END")]
    assert "onnxruntime" in message and "rasterio" in message
    assert f'"{SYSTEM_PYTHON}" -m pip install --upgrade --disable-pip-version-check --target' in message
    assert "--user" not in message and "cropland_extractor_packages" in message
    assert str(REPO / "requirements" / "runtime.txt") in message.replace(str(plugins_dir / PLUGIN_NAME), str(REPO))
    assert "-c " in message and "constraints.txt" in message
    assert "Traceback" not in message
    assert not (tmp_path / "fields.gpkg").exists()


def _write_blocker(folder):
    """A sitecustomize that makes the heavy packages unimportable, as on a fresh QGIS install."""
    site_dir = folder / "blocker"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        BLOCKED = {HEAVY_MODULES!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
                return None

        sys.meta_path.insert(0, Blocker())
    """))
    return site_dir


def _run_system_python(script: str, blocker) -> subprocess.CompletedProcess:
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} (QGIS's Python) is absent")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(blocker))
    return subprocess.run([SYSTEM_PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_gui_adds_menu_entries_and_offers_install(qgis_iface, monkeypatch, provider):
    """initGui with an iface: menu entries and the install offer when packages are missing; clean unload."""
    from cropland_extractor.plugin import deps
    from cropland_extractor.plugin.plugin import CroplandPlugin
    from qgis.PyQt.QtWidgets import QMessageBox

    monkeypatch.setattr(deps, "missing_modules",
                        lambda *a, **k: [deps.Missing("onnxruntime", "onnxruntime", "No module")])
    monkeypatch.setattr(CroplandPlugin, "initProcessing", lambda self: None)  # the session's provider stays
    ui = CroplandPlugin(qgis_iface)
    ui.initGui()
    assert [a.text() for a in ui.actions] == ["Extract Cropland…", "Install Python Dependencies…"]
    assert ui.message is not None
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args[2]) or QMessageBox.No)
    assert ui.install_dependencies() is False
    assert "-m pip install" in asked[0] and "runtime.txt" in asked[0] and "onnxruntime" in asked[0]
    ui.unload()
    assert not ui.actions and ui.message is None


def test_install_dialog_runs_the_command(qgis_app):
    """The GUI installer runs its command in a QProcess and reports the exit status."""
    from cropland_extractor.plugin.install_dialog import InstallDialog

    dialog = InstallDialog([sys.executable, "-c", "print('pip says hello')"])
    dialog.start()
    assert dialog.process.waitForFinished(30000)
    qgis_app.processEvents()
    assert dialog.exit_code == 0
    assert "pip says hello" in dialog.output.toPlainText()
    assert "Restart QGIS" in dialog.status_label.text()
    dialog.reject()


def test_shapely_loaded_early_on_qgis_geos_is_refused_clearly(tmp_path, plugins_dir, data_dir, tiny_model):
    """As in QGIS Desktop: QGIS's GEOS in the global symbol scope, shapely imported by someone else first."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)  # what linking qgis.bin to libqgis_core amounts to
        from qgis.core import QgsApplication, QgsProcessingException
        sys.setdlopenflags(os.RTLD_NOW)
        import shapely  # another plugin, the default way: bound to QGIS's GEOS
        app = QgsApplication([], False); app.initQgis()
        sys.path.append('/usr/share/qgis/python/plugins')
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing, qgis.utils
        sys.path.insert(0, {str(plugins_dir)!r}); qgis.utils.plugin_paths.insert(0, {str(plugins_dir)!r})
        qgis.utils.updateAvailablePlugins()
        qgis.utils.loadPlugin({PLUGIN_NAME!r}); qgis.utils.startProcessingPlugin({PLUGIN_NAME!r})
        try:
            processing.run('cropland:extractcropland', {{'INPUT': {str(data_dir / 'rgb_a.tif')!r},
                           'MODEL': {str(tiny_model)!r}, 'OUTPUT': {str(tmp_path / 'fields.gpkg')!r}}})
        except QgsProcessingException as exc:
            print('MESSAGE', exc)
        os._exit(0)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert "MESSAGE" in proc.stdout, proc.stdout + proc.stderr
    assert "was loaded before Cropland Extractor" in proc.stdout
    assert not (tmp_path / "fields.gpkg").exists()


def test_the_install_command_resolves_for_qgis_python(plugins_dir):
    """The exact pip command offered for QGIS's own Python resolves (pip --dry-run: nothing is installed)."""
    import json

    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} (QGIS's Python) is absent")
    script = (f"import json, sys; sys.path.insert(0, {str(plugins_dir)!r})\n"
              f"from {PLUGIN_NAME}.plugin import deps\nprint(json.dumps(deps.install_args('runtime')))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    args = json.loads(proc.stdout.strip().splitlines()[-1])
    assert args[0] == SYSTEM_PYTHON and args[1:4] == ["-m", "pip", "install"]
    pip = subprocess.run([*args, "--dry-run"], env=env, capture_output=True, text=True, timeout=300, check=False)
    offline = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution")
    if pip.returncode != 0 and any(s in pip.stdout + pip.stderr for s in offline):
        pytest.skip("no package index reachable")
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert "Would install" in pip.stdout or "already satisfied" in pip.stdout
    assert "numpy-2" not in pip.stdout


@pytest.mark.parametrize("executable", ["/usr/bin/qgis.bin", "/usr/bin/qgis_process.bin", "/root/.pyenv/shims/python3",
                                        ""])
def test_python_executable_is_qgis_own_python(monkeypatch, provider, executable):
    """Inside QGIS sys.executable is the QGIS program or a PATH lookup: the install command needs QGIS's Python."""
    from cropland_extractor.plugin import deps

    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is absent")
    monkeypatch.setattr(sys, "executable", executable)
    for name in ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
        monkeypatch.setattr(sys, name, "/usr")
    assert deps.python_executable() == SYSTEM_PYTHON
