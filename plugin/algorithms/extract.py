"""cropland:extractcropland — run a segmentation model over a raster layer and write cropland fields."""

from __future__ import annotations

import os
import sys

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from .. import adapters, deps, report_html
from ..styles import FIELDS_QML, MASK_QML, PROBABILITY_QML, StylePostProcessor
from .base import CroplandAlgorithm

DEVICES = [("auto", "Automatic (CUDA GPU when usable, else CPU)"), ("cpu", "CPU"), ("cuda", "CUDA GPU")]
STRETCHES = [("auto", "Automatic (the raster's value range, all bands alike)"), ("none", "None (raw values)"),
             ("percentile", "Per band (2-98 %)")]
SPLITS = [("auto", "Automatic (the model's boundary output when it has one, else image edges)"),
          ("boundary", "On the model's boundary output"),
          ("image", "On image edges and dips of the cropland probability"),
          ("extent", "On dips of the cropland probability only"),
          ("none", "Do not split (one polygon per connected cropland area)")]
RESAMPLES = [("auto", "Automatic (when the pixel size is outside the model's accepted range)"), ("off", "Never")]
VECTOR_EXTENSIONS = (".gpkg", ".geojson", ".json", ".shp")
RASTER_EXTENSIONS = (".tif", ".tiff")


class ExtractCroplandAlgorithm(CroplandAlgorithm):
    """Extract Cropland: raster in; field polygons, optional mask/probability rasters and statistics out."""

    NAME = "extractcropland"
    DISPLAY_NAME = "Extract Cropland"
    HELP_ANCHOR = "extract-cropland"
    HELP_TEXT = (
        "Finds cropland in a raster layer (aerial or satellite imagery) with a segmentation model and writes "
        "one polygon per field, with its area (m², ha), perimeter (m) and mean cropland probability.<br><br>"
        "<b>Model</b>: leave empty for the shipped default ensemble, or choose an .onnx model exported by "
        "<i>Train Cropland Model</i> (or <code>python -m training export</code>) or an ensemble.json. The "
        "model knows its bands, normalisation, tile size and threshold.<br>"
        "<b>Bands</b>: raster band numbers fed to the model, e.g. <code>1,2,3</code> for R,G,B; empty = the "
        "model's bands.<br>"
        "<b>Device</b>: Automatic uses a CUDA GPU when one is usable and says so in the log.<br><br>"
        "Advanced: tile size and overlap (pixels; empty = the model's), probability threshold (empty = the "
        "model's), minimum field area and maximum hole area to fill (m²), simplification tolerance (m), pixel "
        "size (m, only for rasters without a CRS, e.g. 2 for ZY-3 tiles), test-time augmentation (8 flipped "
        "and rotated views; slower, smoother) and the value stretch (automatic: the raster's value range, from its "
        "data type, declared NBITS or sampled values, e.g. 12-bit or reflectance 0-1, is mapped onto the model's, "
        "all bands alike, and the log says which). Field splitting: touching fields are cut "
        "apart along field edges (the model's boundary output, or edges in the image) so that each becomes its "
        "own polygon, sharing its edge with its neighbour. Resampling: a raster whose pixel size is outside what "
        "the model accepts is read at the model's resolution and the result mapped back to the raster's grid."
        "<br><br>"
        "Outputs: the field polygons; optionally a cropland mask (1 cropland, 0 other, 255 nodata) and a "
        "probability raster; an HTML report; and the cropland area, valid area (m²), cropland ratio and field "
        "count as numbers for models and batch runs. Layers that are not plain raster files (for example "
        "on-the-fly virtual rasters or GeoPackage raster tables) are first copied to a temporary GeoTIFF; web "
        "map layers must be saved at a chosen resolution first. Cancelling stops within one batch of tiles "
        "and writes nothing."
    )

    INPUT = "INPUT"
    BANDS = "BANDS"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    MAX_HOLE = "MAX_HOLE"
    SIMPLIFY = "SIMPLIFY"
    PIXEL_SIZE = "PIXEL_SIZE"
    TTA = "TTA"
    STRETCH = "STRETCH"
    SPLIT = "SPLIT"
    RESAMPLE = "RESAMPLE"
    OUTPUT = "OUTPUT"
    OUTPUT_MASK = "OUTPUT_MASK"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    OUTPUT_HTML = "OUTPUT_HTML"
    NUMBERS = ("CROPLAND_AREA_M2", "VALID_AREA_M2", "CROPLAND_RATIO", "FIELD_COUNT")

    def initAlgorithm(self, config=None):
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, tr("Bands fed to the model, e.g. 1,2,3 (empty = the model's bands)"), "", optional=True))
        model = QgsProcessingParameterFile(
            self.MODEL, tr("Model (.onnx or ensemble.json; empty = shipped default ensemble)"),
            QgsProcessingParameterFile.File, optional=True,
            fileFilter="Models (*.onnx *.json);;ONNX models (*.onnx);;Ensembles (*.json);;All files (*.*)")
        self.addParameter(model)
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, tr("Device"), [tr(label) for _, label in DEVICES], defaultValue=0))

        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, tr("Tile size (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 32, 8192),
            QgsProcessingParameterNumber(self.OVERLAP, tr("Tile overlap (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 0, 4096),
            QgsProcessingParameterNumber(self.THRESHOLD, tr("Probability threshold (empty = the model's)"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.001, 0.999),
            QgsProcessingParameterNumber(self.MIN_AREA, tr("Minimum field area (m²)"),
                                         QgsProcessingParameterNumber.Double, 0.0, False, 0.0),
            QgsProcessingParameterNumber(self.MAX_HOLE, tr("Fill holes smaller than (m²)"),
                                         QgsProcessingParameterNumber.Double, 0.0, False, 0.0),
            QgsProcessingParameterNumber(self.SIMPLIFY, tr("Simplification tolerance (m; 0 = pixel outlines)"),
                                         QgsProcessingParameterNumber.Double, 0.0, False, 0.0),
            QgsProcessingParameterNumber(self.PIXEL_SIZE, tr("Pixel size (m), only for rasters without a CRS"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
            QgsProcessingParameterBoolean(self.TTA, tr("Test-time augmentation (8 views; slower)"), False),
            QgsProcessingParameterEnum(self.STRETCH, tr("Stretch values onto the model's range"),
                                       [tr(label) for _, label in STRETCHES], defaultValue=0),
            QgsProcessingParameterEnum(self.SPLIT, tr("Split touching fields"),
                                       [tr(label) for _, label in SPLITS], defaultValue=0),
            QgsProcessingParameterEnum(self.RESAMPLE, tr("Resample to the model's resolution"),
                                       [tr(label) for _, label in RESAMPLES], defaultValue=0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

        output = QgsProcessingParameterVectorDestination(
            self.OUTPUT, tr("Cropland fields"), QgsProcessing.TypeVectorPolygon)
        mask = QgsProcessingParameterRasterDestination(
            self.OUTPUT_MASK, tr("Cropland mask"), None, optional=True, createByDefault=False)
        probability = QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITY, tr("Cropland probability"), None, optional=True, createByDefault=False)
        for destination in (output, mask, probability):
            destination.setSupportsNonFileBasedOutput(False)
            self.addParameter(destination)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, tr("Report"), tr("HTML files (*.html)"), optional=True, createByDefault=True))
        for name, label in zip(self.NUMBERS, ("Cropland area (m²)", "Valid area (m²)", "Cropland ratio",
                                               "Number of fields"), strict=True):
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))

    def checkParameterValues(self, parameters, context):
        """QGIS's checks, then whether the model loads and the raster has its bands: refused here, these print
        once, like any parameter error (a run-time error prints three times in qgis_process)."""
        ok, message = super().checkParameterValues(parameters, context)
        if ok:
            problem = self._model_and_bands_problem(parameters, context)
            if problem:
                return False, problem
        return ok, message

    def _model_and_bands_problem(self, parameters, context) -> str | None:
        try:
            deps.require("runtime")
            api, errors, io = (deps.import_engine(m) for m in ("api", "errors", "io"))
            options_module = deps.import_engine("options")
        except (QgsProcessingException, ImportError):
            return None  # processAlgorithm says what to install
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if (model and not (os.path.isfile(model) and model.lower().endswith((".onnx", ".json")))) or layer is None:
            return None  # processAlgorithm's own messages
        try:
            bands = adapters.parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        except QgsProcessingException as exc:
            return str(exc)
        path = adapters.file_source(layer)
        try:
            ens = api.load_model(model, options_module.ExtractOptions(device="cpu"))
            if path is not None:
                io.open_input(path, ens.meta, ens.name, bands).close()
        except errors.ModelError as exc:
            return f"{self.MODEL}: {adapters.plugin_message(exc)}"
        except errors.CroplandError as exc:
            return adapters.plugin_message(exc)
        return None

    def processAlgorithm(self, parameters, context, feedback):
        deps.require("runtime")
        api = deps.import_engine("api")
        errors = deps.import_engine("errors")
        options_module = deps.import_engine("options")

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(
                f"{self.INPUT}: {parameters.get(self.INPUT)!s} is not a raster layer QGIS can open.")
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        if model and not os.path.isfile(model):
            raise QgsProcessingException(f"{self.MODEL}: model file '{model}' does not exist.")
        if model and not model.lower().endswith((".onnx", ".json")):
            raise QgsProcessingException(
                f"{self.MODEL}: '{model}' is not an .onnx model or an ensemble .json. Export a PyTorch checkpoint "
                "first (Train Cropland Model does, or: python -m training export best.pt --onnx model.onnx).")

        settings = {
            "bands": adapters.parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)][0],
            "tile_size": adapters.optional_number(self, parameters, self.TILE_SIZE, context, integer=True),
            "overlap": adapters.optional_number(self, parameters, self.OVERLAP, context, integer=True),
            "threshold": adapters.optional_number(self, parameters, self.THRESHOLD, context),
            "min_area_m2": self.parameterAsDouble(parameters, self.MIN_AREA, context),
            "max_hole_m2": self.parameterAsDouble(parameters, self.MAX_HOLE, context),
            "simplify_m": self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            "pixel_size_m": adapters.optional_number(self, parameters, self.PIXEL_SIZE, context) or None,
            "tta": self.parameterAsBool(parameters, self.TTA, context),
            "stretch": STRETCHES[self.parameterAsEnum(parameters, self.STRETCH, context)][0],
            "split": SPLITS[self.parameterAsEnum(parameters, self.SPLIT, context)][0],
            "resample": RESAMPLES[self.parameterAsEnum(parameters, self.RESAMPLE, context)][0],
        }
        with adapters.engine_errors(errors):
            options = options_module.ExtractOptions(**settings)

        vector = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        mask = self.parameterAsOutputLayer(parameters, self.OUTPUT_MASK, context) or None
        probability = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITY, context) or None
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None
        adapters.check_extension(vector, VECTOR_EXTENSIONS, self.OUTPUT)
        adapters.check_extension(mask, RASTER_EXTENSIONS, self.OUTPUT_MASK)
        adapters.check_extension(probability, RASTER_EXTENSIONS, self.OUTPUT_PROBABILITY)
        outputs = options_module.OutputPaths(vector=vector, mask=mask, probability=probability, overwrite=True)
        new_files = [p for p in (vector, mask, probability, html) if p and not os.path.exists(p)]

        feedback.pushInfo(f"Python {sys.version.split()[0]}; {deps.library_versions()}")
        feedback.pushInfo(f"Model: {model or 'shipped default ensemble (' + str(api.DEFAULT_MODEL) + ')'}")
        progress, is_cancelled, log = adapters.feedback_callbacks(feedback)
        with adapters.engine_errors(errors, new_files), \
                adapters.raster_file(layer, context, feedback) as path:
            result = api.extract(path, model=model, outputs=outputs, options=options, progress=progress,
                                 is_cancelled=is_cancelled, log=log, keep_fields=False)
            feedback.pushInfo(result.summary())
            if html:
                report = result.to_report()
                report["input"] = layer.source()  # not the temporary copy, when there was one
                shown = {k: (v if v is not None else "from the model") for k, v in settings.items()}
                shown["model"] = model or "shipped default ensemble"
                report_html.write(html, report_html.extraction_report(report, shown))

        StylePostProcessor.attach(context, vector, FIELDS_QML)
        StylePostProcessor.attach(context, mask, MASK_QML)
        StylePostProcessor.attach(context, probability, PROBABILITY_QML)
        return {
            self.OUTPUT: vector,
            self.OUTPUT_MASK: mask,
            self.OUTPUT_PROBABILITY: probability,
            self.OUTPUT_HTML: html,
            "CROPLAND_AREA_M2": result.cropland_area_m2,
            "VALID_AREA_M2": result.valid_area_m2,
            "CROPLAND_RATIO": result.cropland_ratio,
            "FIELD_COUNT": result.field_count,
        }
