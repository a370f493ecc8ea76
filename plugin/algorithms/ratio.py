"""cropland:croplandratio — cropland area, valid area and ratio of a mask raster or of polygons over a raster."""

from __future__ import annotations

import contextlib

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .. import adapters, deps, report_html
from .base import CroplandAlgorithm

NUMBERS = [
    ("CROPLAND_AREA_M2", "Cropland area (m²)", "cropland_area_m2"),
    ("VALID_AREA_M2", "Valid area (m²)", "valid_area_m2"),
    ("CROPLAND_RATIO", "Cropland ratio", "cropland_ratio"),
    ("CROPLAND_PIXELS", "Cropland pixels", "cropland_pixels"),
    ("VALID_PIXELS", "Valid pixels", "valid_pixels"),
]


class CroplandRatioAlgorithm(CroplandAlgorithm):
    """Cropland Area Ratio: areas and ratio from a mask raster, or from polygons on a raster's grid."""

    NAME = "croplandratio"
    DISPLAY_NAME = "Cropland Area Ratio"
    HELP_ANCHOR = "cropland-area-ratio"
    GROUP = "Statistics and evaluation"
    GROUP_ID = "statistics"
    TAGS = ("cropland", "area", "ratio", "statistics", "mask", "field", "parcel", "polygon", "hectare", "agriculture")
    HELP_TEXT = (
        "Measures the cropland area, the valid (not nodata) area in m² and the cropland ratio = cropland / "
        "valid.<br><br>"
        "<b>Mask mode</b> (no polygons): the input raster is a cropland mask or label raster, 1 (non-zero) = "
        "cropland, 0 = other; its nodata pixels are left out.<br>"
        "<b>Polygon mode</b>: the polygons (e.g. Extract Cropland's fields, or reference parcels) are "
        "rasterised on the input raster's grid; the raster's valid pixels are the area they are compared "
        "with.<br><br>"
        "Areas come from the raster's CRS (geodesic for geographic CRSs). For rasters without a CRS give the "
        "pixel size in metres. Run it on many rasters at once with <i>Run as Batch Process…</i>: the batch "
        "summary lists the numbers of every raster."
    )

    INPUT = "INPUT"
    POLYGONS = "POLYGONS"
    BAND = "BAND"
    PIXEL_SIZE = "PIXEL_SIZE"
    OUTPUT_HTML = "OUTPUT_HTML"

    def initAlgorithm(self, config=None):
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, tr("Mask raster (1 = cropland), or the raster the polygons cover")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POLYGONS, tr("Cropland polygons (optional; measured on the raster's grid)"),
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterBand(self.BAND, tr("Mask band (default 1)"), 1, self.INPUT,
                                                     optional=True))
        pixel = QgsProcessingParameterNumber(self.PIXEL_SIZE, tr("Pixel size (m), only for rasters without a CRS"),
                                             QgsProcessingParameterNumber.Double, None, True, 0.0)
        pixel.setFlags(pixel.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(pixel)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, tr("Report"), tr("HTML files (*.html)"), optional=True, createByDefault=False))
        for name, label, _ in NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))
        self.addOutput(QgsProcessingOutputString("AREA_METHOD", tr("Area method")))

    def processAlgorithm(self, parameters, context, feedback):
        deps.require("runtime")
        stats = deps.import_engine("stats")
        errors = deps.import_engine("errors")

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(
                f"{self.INPUT}: {parameters.get(self.INPUT)!s} is not a raster layer QGIS can open.")
        polygons = self.parameterAsSource(parameters, self.POLYGONS, context)
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        pixel_size = adapters.optional_number(self, parameters, self.PIXEL_SIZE, context) or None
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context) or None

        with adapters.engine_errors(errors), contextlib.ExitStack() as stack:
            raster = stack.enter_context(adapters.raster_file(layer, context, feedback))
            if polygons is not None:
                vector = stack.enter_context(
                    adapters.vector_file(polygons, layer.crs(), context, feedback, self.POLYGONS))
                feedback.pushInfo(f"Rasterising {polygons.featureCount()} polygon(s) on the grid of "
                                  f"'{layer.name()}'.")
                result = stats.polygon_statistics(vector, raster, pixel_size_m=pixel_size)
            else:
                result = stats.mask_file_statistics(raster, pixel_size_m=pixel_size, band=band)
        feedback.setProgress(100)

        values = {name: getattr(result, attribute) for name, _, attribute in NUMBERS}
        feedback.pushInfo(
            f"{layer.name()}: cropland {result.cropland_area_m2 / 1e4:,.2f} ha of {result.valid_area_m2 / 1e4:,.2f} ha "
            f"valid, ratio {result.cropland_ratio:.4f} ({result.area_method} areas).")
        if html:
            rows = [(label, getattr(result, attribute)) for _, label, attribute in NUMBERS]
            rows += [("CRS", result.crs or "none"), ("Pixel size (m)", result.pixel_size_m),
                     ("Area method", result.area_method)]
            source = [("Raster", layer.source()), ("Polygons", polygons.sourceName() if polygons else "none"),
                      ("Band", band if polygons is None else "n/a")]
            report_html.write(html, report_html.page("Cropland Extractor: Cropland Area Ratio", [
                ("Input", report_html.key_value_table(source)), ("Result", report_html.key_value_table(rows))]))
        return {**values, "AREA_METHOD": result.area_method, self.OUTPUT_HTML: html}
