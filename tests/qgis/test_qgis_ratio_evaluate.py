"""Cropland Area Ratio and Evaluate Against Reference through processing.run in real QGIS."""

from __future__ import annotations

import pytest
from plugin_testkit import FIELDS, HEIGHT, PIXEL_M, WIDTH, field_pixels, field_polygons_layer, shared_file

pytestmark = pytest.mark.qgis


def run(alg: str, params: dict) -> dict:
    import processing

    return processing.run(f"cropland:{alg}", params)


# --- Cropland Area Ratio ----------------------------------------------------------------------------------------

def test_ratio_of_a_mask_raster(provider, data_dir, tmp_path):
    result = run("croplandratio", {"INPUT": str(data_dir / "mask.tif"), "OUTPUT_HTML": str(tmp_path / "r.html")})
    assert result["CROPLAND_PIXELS"] == field_pixels()
    assert result["VALID_PIXELS"] == HEIGHT * WIDTH
    assert result["CROPLAND_AREA_M2"] == pytest.approx(field_pixels() * PIXEL_M**2)
    assert result["VALID_AREA_M2"] == pytest.approx(HEIGHT * WIDTH * PIXEL_M**2)
    assert result["CROPLAND_RATIO"] == pytest.approx(field_pixels() / (HEIGHT * WIDTH))
    assert result["AREA_METHOD"] == "projected"
    assert "Cropland ratio" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_ratio_ignores_nodata(provider, data_dir):
    result = run("croplandratio", {"INPUT": str(data_dir / "mask_nodata.tif")})
    assert result["VALID_PIXELS"] == HEIGHT * (WIDTH - 20)
    assert result["CROPLAND_PIXELS"] == field_pixels(nodata_cols=20)


def test_ratio_of_polygons_over_a_raster_in_another_crs(provider, data_dir):
    """Polygons in EPSG:4326 (a memory layer) are reprojected and rasterised on the UTM raster's grid."""
    polygons = field_polygons_layer(crs="EPSG:4326")
    result = run("croplandratio", {"INPUT": str(data_dir / "rgb_b.tif"), "POLYGONS": polygons})
    # rgb_b's 20 left columns are nodata, which cuts field 1 (cols 12..51) to cols 20..51.
    assert result["VALID_PIXELS"] == HEIGHT * (WIDTH - 20)
    assert result["CROPLAND_PIXELS"] == pytest.approx(field_pixels(nodata_cols=20), abs=HEIGHT // 4)


def test_ratio_of_an_on_the_fly_virtual_raster(provider, data_dir):
    """A layer that is not a file (QGIS's virtual raster provider) is copied to a GeoTIFF first."""
    from qgis.core import QgsRasterLayer

    uri = (f"?crs=EPSG:32633&extent=500000,{5000000 - HEIGHT * PIXEL_M},{500000 + WIDTH * PIXEL_M},5000000"
           f"&width={WIDTH}&height={HEIGHT}&formula=%22m@1%22&m:uri={data_dir / 'mask.tif'}&m:provider=gdal")
    layer = QgsRasterLayer(uri, "virtual mask", "virtualraster")
    assert layer.isValid(), layer.error().summary()
    result = run("croplandratio", {"INPUT": layer})
    assert result["CROPLAND_PIXELS"] == field_pixels()
    assert result["VALID_PIXELS"] == HEIGHT * WIDTH


def test_ratio_batch_over_three_masks(provider, data_dir, tmp_path):
    """The batch dialog's code path: the same algorithm over three rasters, a new context per row."""
    from plugin_testkit import make_mask_raster
    from processing.gui.BatchAlgorithmDialog import BatchFeedback
    from processing.tools import dataobjects
    from qgis.core import QgsApplication, QgsProcessingFeedback

    masks = [make_mask_raster(tmp_path / f"mask_{i}.tif", fields=FIELDS[:i + 1]) for i in range(3)]
    alg = QgsApplication.processingRegistry().createAlgorithmById("cropland:croplandratio")
    feedback = QgsProcessingFeedback()
    multi = BatchFeedback(len(masks), feedback)
    ratios = []
    for step, mask in enumerate(masks):
        multi.setCurrentStep(step)
        results, ok = alg.run(alg.preprocessParameters({"INPUT": str(mask)}), dataobjects.createContext(feedback),
                              multi)
        assert ok, multi.errors
        ratios.append(results["CROPLAND_RATIO"])
    assert ratios == pytest.approx([field_pixels(FIELDS[:i + 1]) / (HEIGHT * WIDTH) for i in range(3)])


def test_ratio_refuses_an_image_that_is_not_a_mask(provider, data_dir):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="not a cropland mask"):
        run("croplandratio", {"INPUT": str(data_dir / "rgb_a.tif")})


@pytest.mark.shared
def test_ratio_of_a_contest_label_matches_the_study(provider):
    """MathorCup Data1's label: the original study reports a cropland ratio of 0.8329."""
    label = shared_file("mathorcup2020_cropland", "train", "labels", "Data1_reference.tif")
    result = run("croplandratio", {"INPUT": str(label), "PIXEL_SIZE": 2.0})
    assert result["CROPLAND_RATIO"] == pytest.approx(0.8329, abs=5e-4)
    assert result["VALID_AREA_M2"] == pytest.approx(600 * 500 * 4.0)
    assert result["AREA_METHOD"] == "pixel_size"


# --- Evaluate Against Reference ---------------------------------------------------------------------------------

def test_evaluate_identical_masks_scores_one(provider, data_dir, tmp_path):
    html = tmp_path / "eval.html"
    result = run("evaluate", {"PREDICTION": str(data_dir / "mask.tif"), "REFERENCE": str(data_dir / "mask.tif"),
                              "OUTPUT_HTML": str(html)})
    for name in ("IOU", "F1", "PRECISION", "RECALL", "ACCURACY", "OBJECT_F1"):
        assert result[name] == pytest.approx(1.0), name
    assert result["RATIO_ERROR"] == pytest.approx(0.0)
    assert "IoU" in html.read_text(encoding="utf-8")


def test_evaluate_missing_field_lowers_recall(provider, data_dir, tmp_path):
    from plugin_testkit import make_mask_raster

    prediction = make_mask_raster(tmp_path / "pred.tif", fields=FIELDS[:2])
    result = run("evaluate", {"PREDICTION": str(prediction), "REFERENCE": str(data_dir / "mask.tif")})
    expected_recall = field_pixels(FIELDS[:2]) / field_pixels()
    assert result["PRECISION"] == pytest.approx(1.0)
    assert result["RECALL"] == pytest.approx(expected_recall)
    assert result["IOU"] == pytest.approx(expected_recall)
    assert result["OBJECT_RECALL"] == pytest.approx(2 / 3)
    assert result["RATIO_ERROR"] == pytest.approx((field_pixels(FIELDS[:2]) - field_pixels()) / (HEIGHT * WIDTH))


def test_evaluate_polygons_against_a_raster(provider, data_dir):
    """Predicted polygons (a memory layer in another CRS) against the reference mask's grid."""
    result = run("evaluate", {"PREDICTION": field_polygons_layer(crs="EPSG:3857"),
                              "REFERENCE": str(data_dir / "mask.tif")})
    assert result["IOU"] > 0.95
    assert result["OBJECT_F1"] == pytest.approx(1.0)


def test_evaluate_two_polygon_layers(provider):
    """Two polygon layers (one in another CRS) are compared on a grid over their joint extent."""
    result = run("evaluate", {"PREDICTION": field_polygons_layer(fields=FIELDS[:2], crs="EPSG:3857"),
                              "REFERENCE": field_polygons_layer()})
    assert result["PRECISION"] == pytest.approx(1.0, abs=0.01)
    assert result["RECALL"] == pytest.approx(field_pixels(FIELDS[:2]) / field_pixels(), abs=0.01)
    assert result["OBJECT_RECALL"] == pytest.approx(2 / 3) and result["OBJECT_PRECISION"] == pytest.approx(1.0)


def test_a_graphical_model_chains_extract_and_ratio(provider, tiny_model, data_dir, tmp_path):
    """Extract Cropland's fields feed Cropland Area Ratio inside a Graphical Modeler model."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("fields and ratio", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    extract = QgsProcessingModelChildAlgorithm("cropland:extractcropland")
    extract.setChildId("extract")
    extract.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    extract.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(str(tiny_model))])
    fields_output = QgsProcessingModelOutput("fields", "Fields")
    fields_output.setChildOutputName("OUTPUT")
    extract.setModelOutputs({"fields": fields_output})
    model.addChildAlgorithm(extract)
    ratio = QgsProcessingModelChildAlgorithm("cropland:croplandratio")
    ratio.setChildId("ratio")
    ratio.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    ratio.addParameterSources("POLYGONS", [QgsProcessingModelChildParameterSource.fromChildOutput("extract",
                                                                                                  "OUTPUT")])
    report_output = QgsProcessingModelOutput("ratio_report", "Ratio report")
    report_output.setChildOutputName("OUTPUT_HTML")
    ratio.setModelOutputs({"ratio_report": report_output})
    model.addChildAlgorithm(ratio)

    report = tmp_path / "ratio.html"
    results = processing.run(model, {"scene": str(data_dir / "rgb_a.tif"),
                                     "extract:fields": str(tmp_path / "fields.gpkg"),
                                     "ratio:ratio_report": str(report)})
    assert results["extract:fields"] == str(tmp_path / "fields.gpkg")
    html = report.read_text(encoding="utf-8")
    assert "fields" in html  # the polygons came from the extract step
    assert f"{field_pixels() / (HEIGHT * WIDTH):.4f}" in html
