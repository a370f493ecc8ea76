"""qgis_process end to end: the plugin from a plugins folder, the packaged zip in a fresh profile, and a QGIS
Python without the inference packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from plugin_testkit import (
    FIELDS,
    HEAVY_MODULES,
    HEIGHT,
    PIXEL_M,
    PLUGIN_NAME,
    REPO,
    SYSTEM_PYTHON,
    WIDTH,
    field_pixels,
    qgis_process_json,
    run_qgis_process,
    venv_site_packages,
)

pytestmark = pytest.mark.qgis


def test_qgis_process_lists_and_runs_extract(qgis_profile, plugins_dir, tiny_model, data_dir, tmp_path):
    listing = run_qgis_process(["list"], qgis_profile, plugins_dir)
    assert listing.returncode == 0, listing.stderr
    for alg_id in ("cropland:extractcropland", "cropland:croplandratio", "cropland:evaluate", "cropland:trainmodel"):
        assert alg_id in listing.stdout

    out = qgis_process_json(["run", "cropland:extractcropland", f"--INPUT={data_dir / 'rgb_a.tif'}",
                             f"--MODEL={tiny_model}", "--DEVICE=1", f"--OUTPUT={tmp_path / 'fields.gpkg'}",
                             f"--OUTPUT_MASK={tmp_path / 'mask.tif'}", f"--OUTPUT_HTML={tmp_path / 'report.html'}"],
                            qgis_profile, plugins_dir)
    results = out["results"]
    assert results["FIELD_COUNT"] == len(FIELDS)
    assert results["CROPLAND_AREA_M2"] == pytest.approx(field_pixels() * PIXEL_M**2, rel=0.01)
    assert results["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * PIXEL_M**2)
    assert results["OUTPUT"] == str(tmp_path / "fields.gpkg")
    for name in ("fields.gpkg", "mask.tif", "report.html"):
        assert (tmp_path / name).exists(), name
    info = "\n".join(out["log"]["info"]) if isinstance(out.get("log"), dict) else str(out.get("log"))
    assert "Models: tiny_green" in info and "Stages:" in info
    # QGIS links the system GDAL/GEOS/PROJ; the wheels must still run on their own bundled copies.
    import rasterio
    import shapely

    assert f"rasterio GDAL {rasterio.__gdal_version__}" in info
    assert f"shapely GEOS {shapely.geos_version_string}" in info


def test_qgis_process_ratio_of_a_mask(qgis_profile, plugins_dir, data_dir):
    out = qgis_process_json(["run", "cropland:croplandratio", f"--INPUT={data_dir / 'mask.tif'}"],
                            qgis_profile, plugins_dir)
    assert out["results"]["CROPLAND_RATIO"] == pytest.approx(field_pixels() / (HEIGHT * WIDTH))


def test_qgis_process_without_packages_prints_the_install_command(tmp_path, qgis_profile, plugins_dir, data_dir):
    """QGIS's Python with the inference packages blocked: the algorithms are listed, running names pip."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {HEAVY_MODULES!r}\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n")
    pythonpath = f"{blocker}:{venv_site_packages()}"
    listing = run_qgis_process(["list"], qgis_profile, plugins_dir, pythonpath=pythonpath)
    assert "cropland:extractcropland" in listing.stdout
    proc = run_qgis_process(["run", "cropland:extractcropland", f"--INPUT={data_dir / 'rgb_a.tif'}",
                             f"--OUTPUT={tmp_path / 'fields.gpkg'}"], qgis_profile, plugins_dir,
                            pythonpath=pythonpath)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "-m pip install" in output and "runtime.txt" in output and "onnxruntime" in output
    # qgis_process's sys.executable is whatever python3 is first on PATH; the command must name QGIS's own.
    assert f'"{SYSTEM_PYTHON}" -m pip install --upgrade --disable-pip-version-check --target' in output
    assert "--user" not in output and "cropland_extractor_packages" in output
    assert "Traceback" not in output
    assert not (tmp_path / "fields.gpkg").exists()


@pytest.fixture(scope="module")
def installed_profile(tmp_path_factory) -> Path:
    """A fresh QGIS profile with the packaged zip unzipped into its plugins folder and the plugin enabled."""
    folder = tmp_path_factory.mktemp("zip")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "--out", str(folder)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    archives = list(folder.glob(f"{PLUGIN_NAME}-*.zip"))
    assert len(archives) == 1
    profile = folder / "config"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archives[0]) as archive:
        names = archive.namelist()
        assert all(n.startswith(f"{PLUGIN_NAME}/") for n in names)
        for required in ("metadata.txt", "__init__.py", "plugin/provider.py", "plugin/algorithms/extract.py",
                         "engine/api.py", "training/__main__.py", "resources/icons/icon.svg",
                         "resources/styles/fields.qml", "resources/styles/mask.qml", "requirements/runtime.txt",
                         "requirements/constraints.txt", "docs/PLUGIN.md"):
            assert f"{PLUGIN_NAME}/{required}" in names, required
        for forbidden in ("/tests/", "/.venv/", "__pycache__", ".pyc", "/.git/", "/bench/", "/scripts/", "/runs/",
                          "requirements/dev.txt", "docs/screenshots", ".aux.xml"):
            assert not any(forbidden in n for n in names), forbidden
        archive.extractall(plugins)
    enable = run_qgis_process(["plugins", "enable", PLUGIN_NAME], profile)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    return profile


def test_packaged_zip_installs_into_a_fresh_profile_and_runs(installed_profile, tiny_model, data_dir, tmp_path):
    out = qgis_process_json(["run", "cropland:extractcropland", f"--INPUT={data_dir / 'rgb_a.tif'}",
                             f"--MODEL={tiny_model}", f"--OUTPUT={tmp_path / 'fields.gpkg'}"], installed_profile)
    assert out["results"]["FIELD_COUNT"] == len(FIELDS)
    assert (tmp_path / "fields.gpkg").exists()


def test_packaged_default_model_runs(installed_profile, data_dir, tmp_path):
    """The shipped default ensemble, from the installed zip (no MODEL given); its quality is not tested."""
    if not (REPO / "resources" / "models" / "ensemble.json").exists():
        pytest.skip("resources/models/ensemble.json (the shipped default model) does not exist yet")
    out = qgis_process_json(["run", "cropland:extractcropland", f"--INPUT={data_dir / 'rgb_a.tif'}",
                             f"--OUTPUT={tmp_path / 'fields.gpkg'}"], installed_profile)
    results = out["results"]
    assert results["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * PIXEL_M**2)
    assert 0.0 <= results["CROPLAND_RATIO"] <= 1.0
    info = "\n".join(out["log"]["info"]) if isinstance(out.get("log"), dict) else str(out.get("log"))
    assert "shipped default ensemble" in info and "Models:" in info


def test_qgis_process_prints_a_bad_model_or_bands_once(qgis_profile, plugins_dir, tiny_model, data_dir, tmp_path):
    """A corrupt model and a raster without the model's bands are refused with the parameters, so qgis_process
    prints the message once (a run-time exception is echoed three times by QGIS itself); nothing is written."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage" * 50)
    cases = [([f"--INPUT={data_dir / 'rgb_a.tif'}", f"--MODEL={broken}"], "is not a usable ONNX model"),
             ([f"--INPUT={data_dir / 'grey.tif'}", f"--MODEL={tiny_model}"], "has 1 band(s)")]
    for args, message in cases:
        proc = run_qgis_process(["run", "cropland:extractcropland", *args, f"--OUTPUT={tmp_path / 'f.gpkg'}"],
                                qgis_profile, plugins_dir)
        assert proc.returncode != 0
        both = proc.stdout + proc.stderr
        assert both.count(message) == 1, both[-3000:]
        assert "Traceback" not in both
        assert not (tmp_path / "f.gpkg").exists()
