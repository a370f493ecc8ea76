"""Extract Cropland through processing.run in real QGIS: outputs, numbers, log, cancel, batch, bad inputs."""

from __future__ import annotations

import datetime
import shutil
import sys

import pytest
from plugin_testkit import FIELDS, HEIGHT, PIXEL_M, REPO, WIDTH, field_pixels, shared_file

pytestmark = pytest.mark.qgis

FIELD_NAMES = ["id", "area_m2", "area_ha", "perimeter_m", "mean_prob", "source", "model", "model_ver", "run_date"]


class RecordingFeedback:
    """Build a QgsProcessingFeedback that records log lines and progress values."""

    @staticmethod
    def create(cancel_at_first_progress: bool = False):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.infos, self.progress = [], []
                self.progressChanged.connect(self._progress)

            def _progress(self, value):
                self.progress.append(value)
                if cancel_at_first_progress and value > 0:
                    self.cancel()

            def pushInfo(self, info):
                self.infos.append(info)
                super().pushInfo(info)

        return Feedback()


def extract(params: dict, feedback=None) -> dict:
    """processing.run('cropland:extractcropland', params)."""
    import processing

    return processing.run("cropland:extractcropland", params, feedback=feedback)


def test_extract_writes_fields_mask_probability_report(provider, tiny_model, data_dir, tmp_path):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    feedback = RecordingFeedback.create()
    out = {name: str(tmp_path / name) for name in ("fields.gpkg", "mask.tif", "prob.tif", "report.html")}
    result = extract({"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
                      "OUTPUT": out["fields.gpkg"], "OUTPUT_MASK": out["mask.tif"],
                      "OUTPUT_PROBABILITY": out["prob.tif"], "OUTPUT_HTML": out["report.html"]}, feedback)

    assert result["FIELD_COUNT"] == len(FIELDS)
    assert result["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * PIXEL_M**2)
    assert result["CROPLAND_AREA_M2"] == pytest.approx(field_pixels() * PIXEL_M**2, rel=0.01)
    assert result["CROPLAND_RATIO"] == pytest.approx(result["CROPLAND_AREA_M2"] / result["VALID_AREA_M2"])
    assert result["OUTPUT"] == out["fields.gpkg"] and result["OUTPUT_MASK"] == out["mask.tif"]

    layer = QgsVectorLayer(out["fields.gpkg"], "fields", "ogr")
    assert layer.isValid() and layer.featureCount() == len(FIELDS)
    assert [f.name() for f in layer.fields()][-len(FIELD_NAMES):] == FIELD_NAMES
    assert layer.crs().authid() == "EPSG:32633"
    areas = sorted(f["area_m2"] for f in layer.getFeatures())
    assert areas == pytest.approx(sorted(h * w * PIXEL_M**2 for _, _, h, w in FIELDS), rel=0.01)
    assert sum(areas) == pytest.approx(result["CROPLAND_AREA_M2"], rel=0.01)
    assert all(f["mean_prob"] > 0.9 for f in layer.getFeatures())
    assert {(f["source"], f["model"]) for f in layer.getFeatures()} == {("rgb_a", "tiny_green")}
    assert len({f["model_ver"] for f in layer.getFeatures()}) == 1 and len(layer.getFeature(1)["model_ver"]) == 12
    assert all(f["run_date"].startswith(str(datetime.date.today().year)) for f in layer.getFeatures())
    assert "area_ac" not in [f.name() for f in layer.fields()]  # a metric project: no acres unless asked
    del layer

    for name in ("mask.tif", "prob.tif"):
        raster = QgsRasterLayer(out[name], name)
        assert raster.isValid() and raster.width() == WIDTH and raster.height() == HEIGHT
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Cropland ratio" in html and "tiny_green" in html

    log = "\n".join(feedback.infos)
    assert "Models: tiny_green" in log and "device cpu" in log.lower()
    assert "Stages:" in log
    assert feedback.progress and max(feedback.progress) == pytest.approx(100)


def test_extract_with_ensemble_json_and_advanced_options(provider, tiny_ensemble, data_dir, tmp_path):
    result = extract({"INPUT": str(data_dir / "rgb_b.tif"), "MODEL": str(tiny_ensemble), "BANDS": "1, 2, 3",
                      "TILE_SIZE": 64, "OVERLAP": 16, "THRESHOLD": 0.6, "MIN_AREA": 5000.0, "SIMPLIFY": 2.0,
                      "TTA": True, "OUTPUT": str(tmp_path / "fields.geojson")})
    # rgb_b holds fields 1 and 2; its 20 nodata columns cut field 1 to 30 x 32 px = 3840 m², under MIN_AREA.
    assert result["VALID_AREA_M2"] == pytest.approx(HEIGHT * (WIDTH - 20) * PIXEL_M**2)
    assert result["FIELD_COUNT"] == 1
    assert result["CROPLAND_AREA_M2"] == pytest.approx(40 * 50 * PIXEL_M**2, rel=0.02)
    assert (tmp_path / "fields.geojson").exists()


def test_extract_raster_without_crs_uses_pixel_size(provider, tiny_model, data_dir, tmp_path):
    result = extract({"INPUT": str(data_dir / "rgb_c.tif"), "MODEL": str(tiny_model), "PIXEL_SIZE": 2.0,
                      "OUTPUT": str(tmp_path / "fields.gpkg")})
    _, _, h, w = FIELDS[0]
    assert result["FIELD_COUNT"] == 1
    assert result["CROPLAND_AREA_M2"] == pytest.approx(h * w * 4.0, rel=0.01)
    assert result["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * 4.0)


def test_extract_reads_a_layer_that_is_not_a_plain_file(provider, tiny_model, data_dir, tmp_path):
    """A GeoPackage raster table is read through QGIS into a temporary GeoTIFF, which is removed afterwards."""
    from osgeo import gdal
    from qgis.core import QgsProcessingUtils, QgsRasterLayer

    gpkg = tmp_path / "imagery.gpkg"
    gdal.Translate(str(gpkg), str(data_dir / "rgb_a.tif"), format="GPKG", creationOptions=["RASTER_TABLE=scene"])
    layer = QgsRasterLayer(f"GPKG:{gpkg}:scene", "scene", "gdal")
    assert layer.isValid()
    feedback = RecordingFeedback.create()
    before = set(_temp_copies(QgsProcessingUtils.tempFolder()))
    result = extract({"INPUT": layer, "MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "f.gpkg")}, feedback)
    assert result["FIELD_COUNT"] == len(FIELDS)
    assert result["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * PIXEL_M**2)
    assert any("not a plain raster file" in line for line in feedback.infos)
    assert set(_temp_copies(QgsProcessingUtils.tempFolder())) == before


def _temp_copies(folder):
    import glob
    import os

    return glob.glob(os.path.join(folder, "cropland_*.tif"))


def test_extract_refuses_a_web_layer_without_native_resolution(provider, tiny_model, tmp_path):
    from qgis.core import QgsProcessingException, QgsRasterLayer

    xyz = QgsRasterLayer("type=xyz&url=file:///nonexistent/{z}/{x}/{y}.png&zmax=5&zmin=0", "tiles", "wms")
    assert xyz.isValid()
    with pytest.raises(QgsProcessingException, match="no native pixel size"):
        extract({"INPUT": xyz, "MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "f.gpkg")})
    assert not (tmp_path / "f.gpkg").exists()


def test_cancel_stops_and_leaves_no_output(provider, tiny_model, data_dir, tmp_path):
    from qgis.core import QgsProcessingException

    feedback = RecordingFeedback.create(cancel_at_first_progress=True)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        extract({"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "TILE_SIZE": 32, "OVERLAP": 8,
                 "OUTPUT": str(tmp_path / "f.gpkg"), "OUTPUT_MASK": str(tmp_path / "m.tif"),
                 "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"), "OUTPUT_HTML": str(tmp_path / "r.html")},
                feedback)
    assert feedback.isCanceled()
    assert max(feedback.progress) < 100
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(("change", "message"), [
    ({"INPUT": "text.txt"}, r"INPUT: .*text\.txt' is not a raster QGIS can open"),
    ({"INPUT": "grey.tif"}, r"band.*Choose this raster's bands with BANDS \(e\.g\. BANDS 1,1,1"),
    ({"MODEL": "missing.onnx"}, r"MODEL: model file .*missing\.onnx' does not exist"),
    ({"BANDS": "red,green"}, r"BANDS: 'red,green' is not a list of 1-based band numbers"),
    ({"BANDS": "1,2,9"}, r"band\(s\) 9 were requested .*Choose existing bands with BANDS, e\.g\. BANDS 1,2,3"),
    ({"OUTPUT": "fields.csv"}, r"OUTPUT: .*fields\.csv' has an unsupported extension"),
    ({"MODEL": "grey.tif"}, r"MODEL: .*grey\.tif' is not an \.onnx model or an ensemble \.json"),
])
def test_bad_inputs_raise_a_clear_processing_exception(provider, tiny_model, data_dir, tmp_path, change, message):
    from qgis.core import QgsProcessingException

    params = {"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "f.gpkg")}
    for key, value in change.items():
        params[key] = str(data_dir / value) if key == "INPUT" else (
            str(tmp_path / value) if key in ("MODEL", "OUTPUT") and value != "grey.tif" else (
                str(data_dir / value) if value == "grey.tif" else value))
    with pytest.raises(QgsProcessingException, match=message) as info:
        extract(params)
    assert "Traceback" not in str(info.value) and "--bands" not in str(info.value)
    assert not (tmp_path / "f.gpkg").exists()


def test_missing_package_in_process_gives_install_command(provider, tiny_model, data_dir, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(QgsProcessingException) as info:
        extract({"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "f.gpkg")})
    message = str(info.value)
    assert "onnxruntime" in message and "-m pip install" in message
    assert str(REPO / "requirements" / "runtime.txt") in message
    assert not (tmp_path / "f.gpkg").exists()


def test_batch_over_three_rasters_loads_styled_layers(provider, tiny_model, data_dir, tmp_path):
    """The batch dialog's code path: one algorithm, a new context per row, results loaded and styled."""
    from processing.gui.BatchAlgorithmDialog import BatchFeedback
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects
    from qgis.core import (
        QgsApplication,
        QgsMapLayer,
        QgsProcessingFeedback,
        QgsProcessingOutputLayerDefinition,
        QgsProject,
    )

    project = QgsProject.instance()
    project.removeAllMapLayers()
    alg = QgsApplication.processingRegistry().createAlgorithmById("cropland:extractcropland")
    feedback = QgsProcessingFeedback()
    multi = BatchFeedback(3, feedback)
    rows = []
    for step, name in enumerate(("rgb_a", "rgb_b", "rgb_c")):
        multi.setCurrentStep(step)
        params = alg.preprocessParameters({
            "INPUT": str(data_dir / f"{name}.tif"), "MODEL": str(tiny_model), "PIXEL_SIZE": 2.0,
            "OUTPUT": QgsProcessingOutputLayerDefinition(str(tmp_path / f"{name}_fields.gpkg"), project),
            "OUTPUT_MASK": QgsProcessingOutputLayerDefinition(str(tmp_path / f"{name}_mask.tif"), project),
        })
        context = dataobjects.createContext(feedback)
        results, ok = alg.run(params, context, multi)
        assert ok, multi.errors
        assert handleAlgorithmResults(alg, context, multi, False, params)
        rows.append(results)

    assert [r["FIELD_COUNT"] for r in rows] == [3, 2, 1]
    assert rows[1]["VALID_AREA_M2"] < rows[0]["VALID_AREA_M2"] == rows[2]["VALID_AREA_M2"]
    layers = list(project.mapLayers().values())
    vectors = [lyr for lyr in layers if lyr.type() == QgsMapLayer.VectorLayer]
    rasters = [lyr for lyr in layers if lyr.type() == QgsMapLayer.RasterLayer]
    assert len(vectors) == 3 and len(rasters) == 3
    for layer in vectors:
        symbol = layer.renderer().symbol()
        assert symbol.color().alpha() < 100  # light, see-through fill
        assert symbol.symbolLayer(0).strokeColor().name() == "#ffd60a"
    for layer in rasters:
        assert layer.renderer().type() == "paletted"
        assert layer.renderer().opacity() < 1.0
    project.removeAllMapLayers()


def test_extract_on_the_shipped_naip_sample_with_bands(provider, tiny_model, tmp_path):
    """The 4-band (R,G,B,NIR) NAIP sample with BANDS=1,2,3; areas from its UTM CRS (5 m pixels)."""
    shipped = REPO / "resources" / "samples" / "naip_nd_2012.tif"
    if not shipped.exists():
        pytest.skip(f"{shipped} is absent")
    sample = tmp_path / shipped.name  # QGIS writes a .aux.xml (statistics) next to a raster it opens
    shutil.copyfile(shipped, sample)
    result = extract({"INPUT": str(sample), "MODEL": str(tiny_model), "BANDS": "1,2,3", "MIN_AREA": 5000.0,
                      "OUTPUT": str(tmp_path / "fields.gpkg")})
    assert result["VALID_AREA_M2"] == pytest.approx(934 * 723 * 25.0, rel=1e-6)
    assert 0.0 <= result["CROPLAND_RATIO"] <= 1.0
    assert result["FIELD_COUNT"] >= 0


@pytest.mark.shared
def test_extract_on_a_shared_contest_tile_without_crs(provider, tiny_model, tmp_path):
    """A MathorCup tile: uint16 holding 0-255, no CRS, nodata 256; 2 m pixels given by hand."""
    tile = shared_file("mathorcup2020_cropland", "test_unlabelled", "Test1.tif")
    result = extract({"INPUT": str(tile), "MODEL": str(tiny_model), "PIXEL_SIZE": 2.0,
                      "OUTPUT": str(tmp_path / "fields.gpkg")})
    assert result["VALID_AREA_M2"] == pytest.approx(600 * 500 * 4.0, rel=0.01)
    assert 0.0 <= result["CROPLAND_RATIO"] <= 1.0


def test_cuda_without_a_cuda_build_says_what_to_install(provider, tiny_model, data_dir, tmp_path):
    """DEVICE=CUDA: runs on a CUDA build of onnxruntime, else stops naming onnxruntime-gpu and the command."""
    import onnxruntime
    from qgis.core import QgsProcessingException

    params = {"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "DEVICE": 2,
              "OUTPUT": str(tmp_path / "f.gpkg")}
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        feedback = RecordingFeedback.create()
        extract(params, feedback)
        assert any("cuda" in line.lower() for line in feedback.infos)
        return
    with pytest.raises(QgsProcessingException, match="CUDA") as info:
        extract(params)
    message = str(info.value)
    assert "pip uninstall -y onnxruntime &&" in message and "gpu.txt" in message
    assert not (tmp_path / "f.gpkg").exists()
