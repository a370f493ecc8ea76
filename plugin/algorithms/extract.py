"""cropland:extractcropland — run a segmentation model over a raster layer and write cropland fields."""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
import uuid
from pathlib import Path

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsUnitTypes,
)

from .. import adapters, deps, report_html, results_viewer
from ..styles import FIELDS_QML, MASK_QML, PROBABILITY_QML, StylePostProcessor, drop_unrequested
from .base import CroplandAlgorithm, plugin_version

DEVICES = [("auto", "Automatic (CUDA GPU when usable, else CPU)"), ("cpu", "CPU"), ("cuda", "CUDA GPU")]
STRETCHES = [("auto", "Automatic (the raster's value range, all bands alike)"), ("none", "None (raw values)"),
             ("percentile", "Per band (2-98 %)")]
SPLITS = [("auto", "Automatic (the model's boundary output when it has one, else image edges)"),
          ("boundary", "On the model's boundary output"),
          ("image", "On image edges and dips of the cropland probability"),
          ("extent", "On dips of the cropland probability only"),
          ("none", "Do not split (one polygon per connected cropland area)")]
RESAMPLES = [("auto", "Automatic (when the pixel size is outside the model's accepted range)"), ("off", "Never")]
AREA_UNITS = [("auto", "Automatic (acres too when the project's area unit is imperial)"), ("ha", "Hectares"),
              ("ha_acres", "Hectares and acres")]
IMPERIAL_AREA_UNITS = (QgsUnitTypes.AreaSquareFeet, QgsUnitTypes.AreaSquareYards, QgsUnitTypes.AreaSquareMiles,
                       QgsUnitTypes.AreaAcres)
VECTOR_EXTENSIONS = (".gpkg", ".geojson", ".json", ".shp")
RASTER_EXTENSIONS = (".tif", ".tiff")
# Engine log lines that are warnings for the user (shown in the report and as warnings in the log).
WARNING_MARKERS = ("Note:", "stretched", "rounded up", "not used", "accuracy may be lower", "Warning", "Resampling:")

class ExtractCroplandAlgorithm(CroplandAlgorithm):
    """Extract Cropland: raster in; field polygons, optional mask/probability rasters and statistics out."""

    NAME = "extractcropland"
    DISPLAY_NAME = "Extract Cropland"
    HELP_ANCHOR = "extract-cropland"
    GROUP = "Extraction"
    GROUP_ID = "extraction"
    TAGS = ("cropland", "field", "fields", "parcel", "parcels", "boundary", "boundaries", "segment", "segmentation",
            "polygon", "polygonize", "vectorize", "agriculture", "farmland", "crop", "deep learning", "onnx",
            "classification", "area", "ratio", "hectare", "acre")
    HELP_TEXT = (
        "Finds cropland in a raster layer (aerial or satellite imagery) with a segmentation model and writes "
        "one polygon per field, with its area (m², ha, and acres when asked), perimeter (m), mean cropland "
        "probability, the source raster, the model and the run date.<br><br>"
        "<b>Model</b>: leave empty for the shipped default ensemble, or choose an .onnx model exported by "
        "<i>Train Cropland Model</i> (or <code>python -m training export</code>) or an ensemble.json. The "
        "model knows its bands, normalisation, tile size, threshold and ground resolution.<br>"
        "<b>Bands</b>: the raster bands fed to the model, in the model's channel order (e.g. 1, 2, 3 for R, G, "
        "B of a 4-band image); empty = the model's bands.<br>"
        "<b>Processing extent</b> and <b>area of interest</b>: run on part of the raster only, e.g. the map "
        "canvas extent, or inside the polygons of a layer (only its selected features, when you tick that). The "
        "areas, the ratio and the fields then cover that area only.<br>"
        "<b>Device</b>: Automatic uses a CUDA GPU when one is usable and says so in the log.<br><br>"
        "Advanced: tile size and overlap (pixels; empty = the model's), probability threshold (empty = the "
        "model's), minimum field area and largest hole to fill (m²; empty = chosen from the model's ground "
        "resolution: 500 m² and 200 m² for a 2 m model), simplification tolerance (m), pixel size (m, only for "
        "rasters without a CRS), test-time augmentation, the value stretch, field splitting (touching fields are "
        "cut apart along field edges, from the model's boundary output or edges in the image, so that each "
        "becomes its own polygon sharing its edge with its neighbour) and resampling (a raster whose pixel size "
        "is outside what the model accepts is read at the model's resolution and the result mapped back to the "
        "raster's grid).<br><br>"
        "Outputs: the field polygons; optionally a cropland mask (1 cropland, 0 other, 255 nodata) and a "
        "probability raster; an HTML report (with the run's warnings); and the cropland area, valid area "
        "(m²), cropland ratio and field count as numbers for models and batch runs. Cancelling stops within "
        "one batch of tiles and writes nothing."
    )

    INPUT = "INPUT"
    BANDS = "BANDS"
    MODEL = "MODEL"
    EXTENT = "EXTENT"
    AOI = "AOI"
    DEVICE = "DEVICE"
    AREA_UNITS = "AREA_UNITS"
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
        add = self.add
        add(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")),
            "The imagery to classify: any raster QGIS opens (GeoTIFF, VRT, JPEG2000, GeoPackage raster...).")
        add(QgsProcessingParameterBand(self.BANDS, tr("Bands fed to the model (empty = the model's bands)"), None,
                                       self.INPUT, optional=True, allowMultiple=True),
            "Raster bands given to the model, in the model's channel order (the shipped models take red, green, "
            "blue). Empty = the bands listed in the model's metadata.")
        add(QgsProcessingParameterFile(
            self.MODEL, tr("Model (.onnx or ensemble.json; empty = shipped default ensemble)"),
            QgsProcessingParameterFile.File, optional=True,
            fileFilter="Models (*.onnx *.json);;ONNX models (*.onnx);;Ensembles (*.json);;All files (*.*)"),
            "An .onnx model exported by Train Cropland Model, or an ensemble.json listing several. Empty = the "
            "shipped default ensemble (three CNNs trained on 2 m RGB imagery).")
        add(QgsProcessingParameterExtent(self.EXTENT, tr("Processing extent (empty = whole raster)"),
                                         optional=True),
            "Classify only this rectangle, e.g. the map canvas extent. Areas and the ratio cover it only.")
        add(QgsProcessingParameterFeatureSource(
            self.AOI, tr("Area of interest (polygon layer; empty = whole raster)"),
            [QgsProcessing.TypeVectorPolygon], optional=True),
            "Classify only inside these polygons (their union; only the selected features when 'Selected "
            "features only' is ticked). Areas, the ratio and the fields cover the area of interest only.")
        add(QgsProcessingParameterEnum(self.DEVICE, tr("Device"), [tr(label) for _, label in DEVICES],
                                       defaultValue=0),
            "Automatic uses a CUDA GPU when onnxruntime-gpu can use it, otherwise the CPU; the log says which.")
        add(QgsProcessingParameterEnum(self.AREA_UNITS, tr("Field areas in"), [tr(label) for _, label in AREA_UNITS],
                                       defaultValue=0),
            "Field attributes area_m2 and area_ha are always written; area_ac (acres) too when chosen, or "
            "automatically when the project's area unit (Project Properties > General) is imperial.")

        add(QgsProcessingParameterNumber(self.TILE_SIZE, tr("Tile size (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 32, 8192),
            "Edge of the square tiles the model sees. Larger tiles give more context and fewer seams but need "
            "more memory.", advanced=True)
        add(QgsProcessingParameterNumber(self.OVERLAP, tr("Tile overlap (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 0, 4096),
            "Overlap between neighbouring tiles, blended smoothly; at most half the tile size.", advanced=True)
        add(QgsProcessingParameterNumber(self.THRESHOLD, tr("Probability threshold (empty = the model's)"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.001, 0.999),
            "Pixels with a cropland probability above this are cropland. Lower it to find more cropland.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.MIN_AREA, tr("Minimum field area (m²; empty = from the model's "
                                                           "resolution)"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
            "Fields smaller than this are dropped. Empty = 100 pixels of the model's ground resolution, at least "
            "500 m² (500 m² for the shipped 2 m models). 0 keeps every speck.", advanced=True)
        add(QgsProcessingParameterNumber(self.MAX_HOLE, tr("Fill holes smaller than (m²; empty = from the "
                                                           "model's resolution)"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
            "Holes inside a field smaller than this are filled. Empty = 50 pixels of the model's ground "
            "resolution, at least 200 m². 0 keeps every hole.", advanced=True)
        add(QgsProcessingParameterNumber(self.SIMPLIFY, tr("Simplification tolerance (m; 0 = pixel outlines)"),
                                         QgsProcessingParameterNumber.Double, 0.0, False, 0.0),
            "Douglas-Peucker tolerance; neighbouring fields are simplified together and stay gap-free.",
            advanced=True)
        add(QgsProcessingParameterNumber(self.PIXEL_SIZE, tr("Pixel size (m), only for rasters without a CRS"),
                                         QgsProcessingParameterNumber.Double, None, True, 0.0),
            "Needed for areas in m² when the raster has no coordinate reference system.", advanced=True)
        add(QgsProcessingParameterBoolean(self.TTA, tr("Test-time augmentation (8 views; slower)"), False),
            "Average the model over 8 flipped and rotated views: smoother edges, 8 times slower.", advanced=True)
        add(QgsProcessingParameterEnum(self.STRETCH, tr("Stretch values onto the model's range"),
                                       [tr(label) for _, label in STRETCHES], defaultValue=0),
            "Automatic maps the raster's value range (from its data type, declared NBITS or sampled values, e.g. "
            "12-bit or reflectance 0-1) onto the model's, all bands alike, and the log says which; Per band "
            "stretches each band between its 2 and 98th percentiles.",
            advanced=True)
        add(QgsProcessingParameterEnum(self.SPLIT, tr("Split touching fields"),
                                       [tr(label) for _, label in SPLITS], defaultValue=0),
            "Cuts cropland apart where fields touch, so that each field becomes its own polygon sharing its edge "
            "with its neighbour: on the model's boundary output (models that have one), on edges in the image "
            "and dips of the cropland probability, or on those dips only. Automatic uses the boundary output "
            "when the model has one, else image edges; None gives one polygon per connected cropland area.",
            advanced=True)
        add(QgsProcessingParameterEnum(self.RESAMPLE, tr("Resample to the model's resolution"),
                                       [tr(label) for _, label in RESAMPLES], defaultValue=0),
            "Automatic reads a raster whose pixel size is outside the range the model accepts (its metadata says "
            "which) at the model's resolution, and maps the result back to the raster's own grid; areas are "
            "unchanged. Never uses the raster as it is.",
            advanced=True)

        output = QgsProcessingParameterVectorDestination(
            self.OUTPUT, tr("Cropland fields"), QgsProcessing.TypeVectorPolygon)
        mask = QgsProcessingParameterRasterDestination(
            self.OUTPUT_MASK, tr("Cropland mask"), None, optional=True, createByDefault=False)
        probability = QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITY, tr("Cropland probability"), None, optional=True, createByDefault=False)
        for destination, text in ((output, "Field polygons: GeoPackage, GeoJSON or Shapefile."),
                                  (mask, "Optional uint8 GeoTIFF: 1 cropland, 0 other, 255 nodata."),
                                  (probability, "Optional float32 GeoTIFF of the cropland probability.")):
            destination.setSupportsNonFileBasedOutput(False)
            add(destination, text)
        add(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, tr("Report"), tr("HTML files (*.html)"), optional=True, createByDefault=True),
            "An HTML report: areas, ratio, warnings, models, device, settings; shown in the Results Viewer.")
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
            bands = self.bands(parameters, context)
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
        defaults = deps.import_engine("defaults")

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
        aoi, aoi_text = self.area_of_interest(parameters, context, layer)

        settings = {
            "bands": self.bands(parameters, context),
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)][0],
            "tile_size": adapters.optional_number(self, parameters, self.TILE_SIZE, context, integer=True),
            "overlap": adapters.optional_number(self, parameters, self.OVERLAP, context, integer=True),
            "threshold": adapters.optional_number(self, parameters, self.THRESHOLD, context),
            "min_area_m2": adapters.optional_number(self, parameters, self.MIN_AREA, context),
            "max_hole_m2": adapters.optional_number(self, parameters, self.MAX_HOLE, context),
            "simplify_m": self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            "pixel_size_m": adapters.optional_number(self, parameters, self.PIXEL_SIZE, context) or None,
            "tta": self.parameterAsBool(parameters, self.TTA, context),
            "stretch": STRETCHES[self.parameterAsEnum(parameters, self.STRETCH, context)][0],
            "split": SPLITS[self.parameterAsEnum(parameters, self.SPLIT, context)][0],
            "resample": RESAMPLES[self.parameterAsEnum(parameters, self.RESAMPLE, context)][0],
        }
        units = AREA_UNITS[self.parameterAsEnum(parameters, self.AREA_UNITS, context)][0]
        project = context.project()
        acres = units == "ha_acres" or (units == "auto" and project is not None
                                        and project.areaUnits() in IMPERIAL_AREA_UNITS)

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
        warnings: list[str] = []

        def log_line(line: str) -> None:
            if any(marker in line for marker in WARNING_MARKERS):
                warnings.append(line)
                push = getattr(feedback, "pushWarning", feedback.pushInfo)  # pushWarning: QGIS >= 3.16
                push(line)
            else:
                log(line)

        name = layer.name() or Path(layer.source()).stem
        with adapters.engine_errors(errors, new_files), \
                adapters.raster_file(layer, context, feedback) as path:
            ensemble = api.load_model(model, options_module.ExtractOptions(device=settings["device"]), log_line)
            chosen = dict(settings)
            chosen["min_area_m2"], chosen["max_hole_m2"] = defaults.area_filters(
                ensemble.meta.resolution_m, settings["min_area_m2"], settings["max_hole_m2"])
            options = options_module.ExtractOptions(**chosen, aoi=aoi)
            result = api.extract(path, model=ensemble, outputs=outputs, options=options, progress=progress,
                                 is_cancelled=is_cancelled, log=log_line, keep_fields=False)
            feedback.pushInfo(result.summary())
            model_name = getattr(ensemble, "name", None) or ", ".join(result.models)
            if vector:
                adapters.add_field_attributes(vector, {
                    "source": name, "model": model_name, "model_ver": model_version(model or api.DEFAULT_MODEL),
                    "run_date": datetime.datetime.now().isoformat(timespec="seconds")}, acres=acres)
            if html:
                report = result.to_report()
                report["input"] = layer.source()  # not the temporary copy, when there was one
                words = settings_for_report(settings, chosen, ensemble, model, acres)
                input_rows = [("Area of interest", aoi_text)] if aoi_text else []
                report_html.write(html, report_html.extraction_report(report, words, warnings, input_rows))
                results_viewer.name_report(html, f"{name} — report")

        run = uuid.uuid4().hex
        StylePostProcessor.attach(context, vector, FIELDS_QML, f"{name} — fields", 0, run)
        StylePostProcessor.attach(context, mask, MASK_QML, f"{name} — cropland mask", 1, run)
        StylePostProcessor.attach(context, probability, PROBABILITY_QML, f"{name} — cropland probability", 2, run)
        drop_unrequested(context)
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

    def bands(self, parameters, context) -> list[int] | None:
        """The BANDS value as 1-based band numbers in the order given; None when empty.

        The band widget gives a list; Python callers and qgis_process may also give "1,2,3".
        """
        value = parameters.get(self.BANDS)
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, str):
            return adapters.parse_bands(value, self.BANDS)
        try:
            bands = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        except (TypeError, ValueError):
            return adapters.parse_bands(str(value), self.BANDS)
        if any(b < 1 for b in bands):
            raise QgsProcessingException(f"{self.BANDS}: {value} are not 1-based band numbers such as 1,2,3.")
        return bands or None

    def area_of_interest(self, parameters, context, layer):
        """(the area to process as WKT in the raster's CRS, or None; a description for the report)."""
        geometries, described = [], []
        if parameters.get(self.EXTENT) not in (None, ""):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if not extent.isNull() and not extent.isEmpty():
                geometries.append(QgsGeometry.fromRect(extent))
                described.append(f"extent {extent.toString(2)}")
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is not None:
            transform = None
            if source.sourceCrs().isValid() and layer.crs().isValid() and source.sourceCrs() != layer.crs():
                transform = QgsCoordinateTransform(source.sourceCrs(), layer.crs(), context.transformContext())
            parts = []
            for feature in source.getFeatures(QgsFeatureRequest()):
                if feature.hasGeometry():
                    geometry = QgsGeometry(feature.geometry())
                    if transform is not None:
                        geometry.transform(transform)
                    parts.append(geometry)
            if not parts:
                raise QgsProcessingException(f"{self.AOI}: '{source.sourceName()}' has no polygon to process in "
                                             "(no features, or none selected).")
            union = QgsGeometry.unaryUnion(parts)
            geometries.append(union)
            described.append(f"{len(parts)} polygon(s) of '{source.sourceName()}'")
        if not geometries:
            return None, ""
        area = geometries[0]
        for other in geometries[1:]:
            area = area.intersection(other)
        if area.isEmpty():
            raise QgsProcessingException(f"{self.EXTENT}/{self.AOI}: the extent and the area of interest do not "
                                         "overlap.")
        return area.asWkt(), " within ".join(described)


def model_version(path) -> str:
    """A short content hash of the model file (an ensemble: of its JSON and its members), so that two runs
    with the same model_ver used the very same weights."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path]
    if path.suffix.lower() == ".json":
        import json

        try:
            members = json.loads(path.read_text(encoding="utf-8")).get("members", [])
            files += [path.parent / m["path"] for m in members if isinstance(m, dict) and "path" in m]
        except (OSError, ValueError):
            pass
    for file in files:
        try:
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            continue
    return digest.hexdigest()[:12]


def settings_for_report(given: dict, used: dict, ensemble, model, acres: bool) -> list[tuple[str, str]]:
    """The run's settings worded for a person: what was used, and where it came from when not given."""
    meta = ensemble.meta

    def origin(key: str, value, model_value, unit: str = "") -> str:
        if given.get(key) is None:
            return f"{model_value:g}{unit} (the model's)" if isinstance(model_value, (int, float)) else \
                f"{model_value}{unit} (the model's)"
        return f"{value:g}{unit}" if isinstance(value, (int, float)) else f"{value}{unit}"

    resolution = f"{meta.resolution_m:g} m/px" if meta.resolution_m else "an unknown resolution"
    bands = given.get("bands")
    return [
        ("Model", model or "shipped default ensemble"),
        ("Model name", getattr(ensemble, "name", meta.name)),
        ("Model trained at", resolution),
        ("Bands fed to the model", ", ".join(map(str, bands)) if bands else
         f"{', '.join(map(str, meta.input_bands))} (the model's: {', '.join(meta.band_names) or 'unnamed'})"),
        ("Device asked for", dict(DEVICES)[given["device"]]),
        ("Tile size", origin("tile_size", given.get("tile_size"), ensemble.tile_size, " px")),
        ("Tile overlap", origin("overlap", given.get("overlap"), ensemble.overlap, " px")),
        ("Probability threshold", origin("threshold", given.get("threshold"), ensemble.threshold)),
        ("Minimum field area", f"{used['min_area_m2']:g} m²" + ("" if given.get("min_area_m2") is not None
                                                               else f" (automatic for a model at {resolution})")),
        ("Holes filled below", f"{used['max_hole_m2']:g} m²" + ("" if given.get("max_hole_m2") is not None
                                                               else f" (automatic for a model at {resolution})")),
        ("Simplification tolerance", f"{given['simplify_m']:g} m" if given["simplify_m"] else
         "none (exact pixel outlines)"),
        ("Pixel size", f"{given['pixel_size_m']:g} m (given)" if given.get("pixel_size_m") else
         "from the raster's CRS"),
        ("Test-time augmentation", "yes (8 views)" if given["tta"] else "no"),
        ("Value stretch", dict(STRETCHES)[given["stretch"]]),
        ("Split touching fields", dict(SPLITS)[given["split"]]),
        ("Resample to the model's resolution", dict(RESAMPLES)[given["resample"]]),
        ("Field areas in", "m², ha and acres" if acres else "m² and ha"),
        ("Plugin version", plugin_version()),
    ]
