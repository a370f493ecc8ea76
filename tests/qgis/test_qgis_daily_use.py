"""What gets in an analyst's way in daily use (issue 15), checked in real QGIS (processing in-process).

The batch dialog, the Results Viewer and the installer dialog run in a real QGIS desktop under Xvfb in
test_qgis_desktop.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from plugin_testkit import FIELDS, HEIGHT, PIXEL_M, REPO, WIDTH, field_polygons_layer

pytestmark = pytest.mark.qgis
SAMPLE = REPO / "resources" / "samples" / "naip_nd_2012.tif"


def run_like_the_dialog(params: dict, load: bool = True):
    """alg.run + handleAlgorithmResults with outputs loaded into the project, as the dialogs do.

    Returns (results, context, feedback errors, ok of handleAlgorithmResults).
    """
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProcessingOutputLayerDefinition, QgsProject

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors = []

        def reportError(self, error, fatalError=False):
            self.errors.append(error)
            super().reportError(error, fatalError)

    project = QgsProject.instance()
    alg = QgsApplication.processingRegistry().createAlgorithmById("cropland:extractcropland")
    params = dict(params)
    for name in ("OUTPUT", "OUTPUT_MASK", "OUTPUT_PROBABILITY"):
        if name in params and isinstance(params[name], str) and load:
            params[name] = QgsProcessingOutputLayerDefinition(params[name], project)
    feedback = Feedback()
    context = dataobjects.createContext(feedback)
    params = alg.preprocessParameters(params)
    results, ok = alg.run(params, context, feedback)
    assert ok, feedback.errors
    queued = list(context.layersToLoadOnCompletion())
    loaded = handleAlgorithmResults(alg, context, feedback, False, params)
    return results, queued, feedback.errors, loaded


# Item 2 ------------------------------------------------------------------------------------------------------------

def test_optional_outputs_left_empty_queue_nothing_and_warn_nothing(provider, tiny_model, data_dir, tmp_path):
    """The dialogs pass an empty destination for an optional raster left empty: nothing may be queued for it."""
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProject

    project = QgsProject.instance()
    project.removeAllMapLayers()
    _, queued, errors, loaded = run_like_the_dialog({
        "INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "OUTPUT": str(tmp_path / "f.gpkg"),
        "OUTPUT_MASK": QgsProcessingOutputLayerDefinition("", project),
        "OUTPUT_PROBABILITY": QgsProcessingOutputLayerDefinition("", project)})
    assert queued == [str(tmp_path / "f.gpkg")]
    assert loaded and not any("not correctly generated" in e for e in errors), errors
    assert len(project.mapLayers()) == 1
    project.removeAllMapLayers()


# Item 3 ------------------------------------------------------------------------------------------------------------

def test_layers_are_named_after_the_input_and_fields_lie_on_top(provider, tiny_model, data_dir, tmp_path):
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.removeAllMapLayers()
    for name in ("rgb_a", "rgb_b"):
        # file names chosen so that QGIS's own (alphabetical) load order would put the probability on top
        run_like_the_dialog({"INPUT": str(data_dir / f"{name}.tif"), "MODEL": str(tiny_model),
                             "OUTPUT": str(tmp_path / f"{name}_a.gpkg"), "OUTPUT_MASK": str(tmp_path / f"{name}_b.tif"),
                             "OUTPUT_PROBABILITY": str(tmp_path / f"{name}_c.tif")})
    order = [node.name() for node in project.layerTreeRoot().children()]
    assert order == ["rgb_b — fields", "rgb_b — cropland mask", "rgb_b — cropland probability",
                     "rgb_a — fields", "rgb_a — cropland mask", "rgb_a — cropland probability"]
    assert all(node.layer() is not None for node in project.layerTreeRoot().findLayers())
    project.removeAllMapLayers()


def test_report_is_listed_under_the_input_name_with_a_timestamp(provider, tiny_model, data_dir, tmp_path):
    """What the dialogs call after a run (QGIS 3.22's batch dialog omits the timestamp)."""
    import processing
    from processing.core.ProcessingResults import resultsList

    html = str(tmp_path / "report.html")
    processing.run("cropland:extractcropland", {"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model),
                                                "OUTPUT": str(tmp_path / "f.gpkg"), "OUTPUT_HTML": html})
    before = len(resultsList.getResults())
    resultsList.addResult(icon=provider.icon(), name="Report [0]", result=html)  # the 3.22 batch call
    added = resultsList.getResults()[before]
    assert added.name == "rgb_a — report" and added.timestamp is not None and added.filename == html


# Item 5 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["field", "parcel", "boundary", "segment", "polygon"])
def test_toolbox_search_finds_extract_cropland(provider, qgis_app, word):
    from qgis.core import QgsApplication
    from qgis.gui import QgsProcessingToolboxModel, QgsProcessingToolboxProxyModel

    model = QgsProcessingToolboxProxyModel(None, QgsApplication.processingRegistry())
    model.setFilterString(word)
    found = []

    def walk(parent):
        for row in range(model.rowCount(parent)):
            index = model.index(row, 0, parent)
            algorithm = model.toolboxModel().algorithmForIndex(model.mapToSource(index))
            if algorithm is not None:
                found.append(algorithm.id())
            walk(index)

    walk(model.index(-1, -1))
    assert "cropland:extractcropland" in found, (word, found)
    assert isinstance(model.toolboxModel(), QgsProcessingToolboxModel)


def test_groups_band_parameter_help_and_rendered_help_page(provider):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QUrl

    registry = QgsApplication.processingRegistry()
    groups = {alg.id(): alg.group() for alg in provider.algorithms()}
    assert groups == {"cropland:extractcropland": "Extraction", "cropland:croplandratio": "Statistics and evaluation",
                      "cropland:evaluate": "Statistics and evaluation", "cropland:trainmodel": "Training"}
    alg = registry.algorithmById("cropland:extractcropland")
    bands = alg.parameterDefinition("BANDS")
    assert bands.type() == "band" and bands.allowMultiple() and bands.parentLayerParameterName() == "INPUT"
    for definition in alg.parameterDefinitions():
        assert len(definition.help()) > 20, definition.name()
    url = QUrl(alg.helpUrl())
    assert url.isLocalFile() and url.toLocalFile().endswith(".html")
    page = Path(url.toLocalFile()).read_text(encoding="utf-8")
    assert "<table>" in page and "Minimum field area" in page and "MIN_AREA" in page and "##" not in page


def test_qgis_process_help_is_plain_text(qgis_profile, plugins_dir):
    from plugin_testkit import run_qgis_process

    proc = run_qgis_process(["help", "cropland:extractcropland"], qgis_profile, plugins_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Finds cropland" in proc.stdout and "Processing extent" in proc.stdout
    for tag in ("<br>", "<b>", "<i>", "<code>"):
        assert tag not in proc.stdout


def test_default_filters_drop_slivers_on_the_sample(provider, tiny_model, tmp_path):
    """Defaults from the model's 2 m GSD (500 m², holes 200 m²) against no filter at all, on the NAIP sample."""
    import processing
    from qgis.core import QgsVectorLayer

    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is absent")
    sample = tmp_path / SAMPLE.name
    shutil.copyfile(SAMPLE, sample)
    areas = {}
    for label, extra in (("default", {}), ("none", {"MIN_AREA": 0.0, "MAX_HOLE": 0.0})):
        out = str(tmp_path / f"{label}.gpkg")
        processing.run("cropland:extractcropland", {"INPUT": str(sample), "MODEL": str(tiny_model),
                                                    "BANDS": [1, 2, 3], "OUTPUT": out, **extra})
        layer = QgsVectorLayer(out, label, "ogr")
        areas[label] = [f["area_m2"] for f in layer.getFeatures()]
        del layer
    slivers = [a for a in areas["none"] if a < 500]
    assert slivers, "the unfiltered run should leave slivers under 500 m² on the sample"
    assert areas["default"] and min(areas["default"]) >= 500
    assert len(areas["default"]) == len(areas["none"]) - len(slivers)


# Item 6 ------------------------------------------------------------------------------------------------------------

def test_processing_extent_limits_the_statistics(provider, tiny_model, data_dir, tmp_path):
    import processing

    # columns 0..80, rows 0..64 of rgb_a: field 1 (rows 10-40, cols 12-52) and part of field 2 (cols 70-80)
    x0, y1 = 500000.0, 5000000.0
    extent = f"{x0},{x0 + 80 * PIXEL_M},{y1 - 64 * PIXEL_M},{y1} [EPSG:32633]"
    result = processing.run("cropland:extractcropland", {"INPUT": str(data_dir / "rgb_a.tif"),
                                                         "MODEL": str(tiny_model), "EXTENT": extent,
                                                         "MIN_AREA": 0.0, "OUTPUT": str(tmp_path / "f.gpkg")})
    assert result["VALID_AREA_M2"] == pytest.approx(80 * 64 * PIXEL_M**2)
    expected = 30 * 40 + 14 * 10  # field 1, and field 2's rows 50-64 x cols 70-80
    assert result["CROPLAND_AREA_M2"] == pytest.approx(expected * PIXEL_M**2, rel=0.03)


def test_area_of_interest_layer_in_another_crs_and_selected_features(provider, tiny_model, data_dir, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsProject

    aoi = field_polygons_layer(FIELDS, crs="EPSG:4326", name="parcels")
    QgsProject.instance().addMapLayer(aoi)
    try:
        whole = processing.run("cropland:extractcropland", {"INPUT": str(data_dir / "rgb_a.tif"),
                                                            "MODEL": str(tiny_model), "AOI": aoi, "MIN_AREA": 0.0,
                                                            "OUTPUT": str(tmp_path / "a.gpkg")})
        inside = sum(h * w for _, _, h, w in FIELDS) * PIXEL_M**2
        assert whole["VALID_AREA_M2"] == pytest.approx(inside, rel=0.03)
        assert whole["CROPLAND_RATIO"] > 0.95 and whole["FIELD_COUNT"] == len(FIELDS)
        aoi.selectByIds([next(aoi.getFeatures()).id()])
        selected = processing.run("cropland:extractcropland", {
            "INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model), "MIN_AREA": 0.0,
            "AOI": QgsProcessingFeatureSourceDefinition(aoi.id(), True), "OUTPUT": str(tmp_path / "s.gpkg")})
        _, _, h, w = FIELDS[0]
        assert selected["VALID_AREA_M2"] == pytest.approx(h * w * PIXEL_M**2, rel=0.05)
        assert selected["FIELD_COUNT"] == 1
    finally:
        QgsProject.instance().removeMapLayer(aoi.id())
    assert whole["VALID_AREA_M2"] < HEIGHT * WIDTH * PIXEL_M**2


# Item 7 ------------------------------------------------------------------------------------------------------------

def test_report_shows_warnings_and_settings_worded_for_a_person(provider, tiny_model, tmp_path):
    import processing

    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is absent")
    sample = tmp_path / SAMPLE.name
    shutil.copyfile(SAMPLE, sample)
    html = tmp_path / "report.html"
    processing.run("cropland:extractcropland", {"INPUT": str(sample), "MODEL": str(tiny_model), "BANDS": "1,2,3",
                                                "OUTPUT": str(tmp_path / "f.gpkg"), "OUTPUT_HTML": str(html)})
    text = html.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in text
    warnings = text.split("<h2>Warnings</h2>", 1)[1].split("<h2>", 1)[0]
    assert "trained at 2 m/px" in warnings and "5 m/px" in warnings
    for internal in ("min_area_m2", "max_hole_m2", "pixel_size_m", "from the model", "tile_size", "None"):
        assert internal not in text.split("<h2>Outputs</h2>")[0], internal
    assert "Minimum field area" in text and "500 m² (automatic for a model at 2 m/px)" in text
    assert "512" not in text or "Tile size" in text


def test_batch_summary_has_one_row_per_raster(provider, tiny_model, data_dir, tmp_path):
    import processing
    from cropland_extractor.plugin.results_viewer import batch_summary
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("cropland:extractcropland")
    rows = []
    for name in ("rgb_a", "rgb_b"):
        params = {"INPUT": str(data_dir / f"{name}.tif"), "MODEL": str(tiny_model), "MIN_AREA": 0.0,
                  "OUTPUT": str(tmp_path / f"{name}.gpkg"), "OUTPUT_HTML": str(tmp_path / f"{name}.html")}
        rows.append({"parameters": params, "results": processing.run("cropland:extractcropland", params)})
    page = batch_summary(alg, rows, [{"parameters": {"INPUT": str(data_dir / "grey.tif")}, "errors": ["bands!"]}])
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 3  # header + one row per raster
    assert "<th>Cropland area (m²)</th>" in table and "rgb_a" in table and "rgb_b" in table
    assert f"{rows[0]['results']['FIELD_COUNT']:,}" in table and "rgb_a.html" in table
    assert "grey" in page and "bands!" in page and '<meta charset="utf-8">' in page


# Item 8 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".gpkg", ".shp", ".geojson"])
def test_fields_carry_source_model_date_and_acres_when_asked(provider, tiny_model, data_dir, tmp_path, ext):
    import processing
    from qgis.core import QgsVectorLayer

    out = str(tmp_path / f"fields{ext}")
    processing.run("cropland:extractcropland", {"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model),
                                                "AREA_UNITS": 2, "OUTPUT": out})
    layer = QgsVectorLayer(out, "f", "ogr")
    names = [f.name() for f in layer.fields()]
    assert {"source", "model", "model_ver", "run_date", "area_ac"} <= set(names)
    for feature in layer.getFeatures():
        assert feature["area_ac"] == pytest.approx(feature["area_m2"] / 4046.8564224, rel=1e-4)
        assert feature["source"] == "rgb_a" and feature["model"] == "tiny_green"
    del layer


def test_acres_follow_an_imperial_project(provider, tiny_model, data_dir, tmp_path):
    import processing
    from qgis.core import QgsProject, QgsUnitTypes, QgsVectorLayer

    project = QgsProject.instance()
    previous = project.areaUnits()
    project.setAreaUnits(QgsUnitTypes.AreaAcres)
    try:
        processing.run("cropland:extractcropland", {"INPUT": str(data_dir / "rgb_a.tif"), "MODEL": str(tiny_model),
                                                    "OUTPUT": str(tmp_path / "f.gpkg")})
    finally:
        project.setAreaUnits(previous)
    layer = QgsVectorLayer(str(tmp_path / "f.gpkg"), "f", "ogr")
    assert "area_ac" in [f.name() for f in layer.fields()]
    del layer
