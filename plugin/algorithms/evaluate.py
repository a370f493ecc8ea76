"""cropland:evaluate — score a cropland prediction against a reference (rasters or polygons)."""

from __future__ import annotations

import contextlib

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
)

from .. import adapters, deps, report_html
from .base import CroplandAlgorithm

METRICS = [
    ("IOU", "IoU (cropland)", "iou"),
    ("F1", "F1 / Dice", "f1"),
    ("PRECISION", "Precision", "precision"),
    ("RECALL", "Recall", "recall"),
    ("ACCURACY", "Pixel accuracy", "accuracy"),
    ("BOUNDARY_F1", "Boundary F1", "boundary_f1"),
    ("RATIO_PRED", "Cropland ratio, prediction", "ratio_pred"),
    ("RATIO_REF", "Cropland ratio, reference", "ratio_ref"),
    ("RATIO_ERROR", "Ratio error (prediction - reference)", "ratio_error"),
    ("OBJECT_PRECISION", "Field precision", "object_precision"),
    ("OBJECT_RECALL", "Field recall", "object_recall"),
    ("OBJECT_F1", "Field F1", "object_f1"),
]


class EvaluateAlgorithm(CroplandAlgorithm):
    """Evaluate Against Reference: pixel, boundary and per-field scores of a prediction."""

    NAME = "evaluate"
    DISPLAY_NAME = "Evaluate Against Reference"
    HELP_ANCHOR = "evaluate-against-reference"
    GROUP = "Statistics and evaluation"
    GROUP_ID = "statistics"
    TAGS = ("cropland", "evaluate", "accuracy", "iou", "f1", "precision", "recall", "reference", "field", "parcel",
            "boundary", "segmentation", "polygon")
    HELP_TEXT = (
        "Compares a cropland prediction with a reference. Each may be a mask raster (1 = cropland, 0 = other, "
        "nodata ignored) or a polygon layer. A raster's grid is used (the prediction's first); two polygon "
        "layers are rasterised on a grid of 2048 cells along the longer side of their joint extent.<br><br>"
        "Scores: pixel IoU, F1 (Dice), precision, recall and accuracy of the cropland class; boundary F1 "
        "(field edges matching within the tolerance in pixels); cropland ratios of both and their difference; "
        "field (object) precision, recall and F1, where a reference field counts as found when a predicted "
        "field overlaps it with IoU above the threshold — the way Fields of The World reports them.<br><br>"
        "All scores are outputs (for models and batch runs) and in the HTML report."
    )

    PREDICTION = "PREDICTION"
    REFERENCE = "REFERENCE"
    PIXEL_SIZE = "PIXEL_SIZE"
    TOLERANCE = "TOLERANCE"
    IOU_THRESHOLD = "IOU_THRESHOLD"
    OUTPUT_HTML = "OUTPUT_HTML"

    def initAlgorithm(self, config=None):
        tr = self.tr
        types = [QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterMapLayer(
            self.PREDICTION, tr("Prediction (mask raster or polygons)"), types=types))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.REFERENCE, tr("Reference (mask raster or polygons)"), types=types))
        advanced = [
            QgsProcessingParameterNumber(self.TOLERANCE, tr("Boundary tolerance (pixels)"),
                                         QgsProcessingParameterNumber.Integer, 2, False, 0, 100),
            QgsProcessingParameterNumber(self.IOU_THRESHOLD, tr("Field match IoU threshold"),
                                         QgsProcessingParameterNumber.Double, 0.5, False, 0.01, 0.99),
            QgsProcessingParameterNumber(self.PIXEL_SIZE, tr("Pixel size (m), only for rasters without a CRS"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, tr("Report"), tr("HTML files (*.html)"), optional=True, createByDefault=True))
        for name, label, _ in METRICS:
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))

    def processAlgorithm(self, parameters, context, feedback):
        deps.require("evaluate")
        evaluate = deps.import_engine("evaluate")
        errors = deps.import_engine("errors")

        layers = {}
        for name in (self.PREDICTION, self.REFERENCE):
            layer = self.parameterAsLayer(parameters, name, context)
            if layer is None or not layer.isValid():
                raise QgsProcessingException(f"{name}: {parameters.get(name)!s} is not a layer QGIS can open.")
            layers[name] = layer
        rasters = [lyr for lyr in layers.values() if lyr.type() == QgsMapLayer.RasterLayer]
        target_crs = rasters[0].crs() if rasters else layers[self.REFERENCE].crs()
        pixel_size = adapters.optional_number(self, parameters, self.PIXEL_SIZE, context) or None
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None

        with adapters.engine_errors(errors), contextlib.ExitStack() as stack:
            paths = {}
            for name, layer in layers.items():
                if layer.type() == QgsMapLayer.RasterLayer:
                    paths[name] = stack.enter_context(adapters.raster_file(layer, context, feedback, name))
                elif layer.type() == QgsMapLayer.VectorLayer:
                    paths[name] = stack.enter_context(
                        adapters.vector_file(layer, target_crs, context, feedback, name))
                else:
                    raise QgsProcessingException(f"{name}: '{layer.name()}' must be a raster or polygon layer.")
            scores = evaluate.evaluate(
                paths[self.PREDICTION], paths[self.REFERENCE], pixel_size_m=pixel_size,
                tolerance_px=self.parameterAsInt(parameters, self.TOLERANCE, context),
                iou_threshold=self.parameterAsDouble(parameters, self.IOU_THRESHOLD, context))
        feedback.setProgress(100)

        values = {name: _number(scores.get(key)) for name, _, key in METRICS}
        feedback.pushInfo(", ".join(f"{key} {_fmt(scores.get(key))}" for _, _, key in METRICS))
        if html:
            inputs = [("Prediction", layers[self.PREDICTION].source()),
                      ("Reference", layers[self.REFERENCE].source())]
            rows = [(label, scores.get(key)) for _, label, key in METRICS]
            extra = [(k, v) for k, v in scores.items() if k not in {key for _, _, key in METRICS}]
            sections = [("Input", report_html.key_value_table(inputs)), ("Scores", report_html.key_value_table(rows))]
            if extra:
                sections.append(("Details", report_html.key_value_table(extra)))
            report_html.write(html, report_html.page("Cropland Extractor: Evaluation", sections))
        return {**values, self.OUTPUT_HTML: html}


def _number(value):
    return None if value is None else float(value)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
