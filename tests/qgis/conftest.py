"""Fixtures for the plugin tests in real QGIS (pytest-qgis starts QgsApplication headless).

The repository root is the plugin folder, but it is named ``main`` in development, so the tests load it the way
QGIS does: from a temporary plugins folder holding a symlink ``cropland_extractor`` -> the repository. Helpers
(synthetic rasters, the tiny ONNX model, qgis_process) live in ``plugin_testkit.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from plugin_testkit import (
    FIELDS,
    PLUGIN_NAME,
    REPO,
    build_tiny_onnx,
    make_mask_raster,
    make_rgb_raster,
    run_qgis_process,
)


@pytest.fixture(scope="session")
def plugins_dir(tmp_path_factory) -> Path:
    """A plugins folder holding ``cropland_extractor`` -> the repository (QGIS_PLUGINPATH for qgis_process)."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / PLUGIN_NAME).symlink_to(REPO, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def plugin(qgis_app, qgis_processing, plugins_dir):
    """The plugin loaded through QGIS's own plugin loader (classFactory + initProcessing), as QGIS does."""
    import qgis.utils

    sys.path.insert(0, str(plugins_dir))
    qgis.utils.plugin_paths.insert(0, str(plugins_dir))
    qgis.utils.updateAvailablePlugins()
    assert qgis.utils.loadPlugin(PLUGIN_NAME)
    assert qgis.utils.startProcessingPlugin(PLUGIN_NAME)
    yield qgis.utils.plugins[PLUGIN_NAME]
    qgis.utils.unloadPlugin(PLUGIN_NAME)


@pytest.fixture(scope="session")
def provider(plugin):
    """The registered ``cropland`` provider."""
    from qgis.core import QgsApplication

    found = QgsApplication.processingRegistry().providerById("cropland")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Synthetic rasters shared by the tests: rgb_a/b/c.tif (3 bands), grey.tif (1 band), mask.tif, text.txt."""
    folder = tmp_path_factory.mktemp("data")
    make_rgb_raster(folder / "rgb_a.tif")
    make_rgb_raster(folder / "rgb_b.tif", fields=FIELDS[:2], seed=1, nodata_cols=20)
    make_rgb_raster(folder / "rgb_c.tif", fields=FIELDS[:1], seed=2, crs=None)
    make_rgb_raster(folder / "grey.tif", bands=1)
    make_mask_raster(folder / "mask.tif")
    make_mask_raster(folder / "mask_nodata.tif", nodata_cols=20)
    (folder / "text.txt").write_text("not a raster\n")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, plugin) -> Path:
    """Path of the tiny RGB ONNX model (see :func:`build_tiny_onnx`)."""
    return build_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny_green.onnx")


@pytest.fixture(scope="session")
def tiny_ensemble(tiny_model) -> Path:
    """An ensemble.json with the tiny model twice (weights 1 and 2), next to it."""
    path = tiny_model.parent / "ensemble.json"
    path.write_text(json.dumps({"name": "tiny-ensemble", "fusion": "mean", "threshold": 0.5,
                                "members": [{"path": tiny_model.name, "weight": 1.0},
                                            {"path": tiny_model.name, "weight": 2.0}]}))
    return path


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory, plugins_dir) -> Path:
    """A fresh QGIS profile folder with the plugin enabled (``qgis_process plugins enable``)."""
    config = tmp_path_factory.mktemp("qgis_profile")
    proc = run_qgis_process(["plugins", "enable", PLUGIN_NAME], config, plugins_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config

