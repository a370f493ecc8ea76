"""Adapters between QGIS and the engine: layers to files, feedback to callbacks, engine errors to QGIS errors.

No pipeline logic lives here. The engine reads files, so a layer that is a plain file is passed by path and
any other layer (a web service, a virtual raster, a database table...) is first written to a temporary GeoTIFF
through QGIS at the layer's own resolution.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsVectorFileWriter,
    QgsWkbTypes,
)

# A layer copied to a temporary GeoTIFF above this many pixels is refused (about 3 GB for 3 bytes a pixel).
MAX_COPY_PIXELS = 1_000_000_000
VSI_PREFIXES = ("/vsizip/", "/vsigzip/", "/vsitar/", "/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsimem/")


def temp_path(suffix: str) -> str:
    """A new file path in QGIS's processing temp folder (QGIS removes that folder on exit)."""
    return os.path.join(QgsProcessingUtils.tempFolder(), f"cropland_{uuid.uuid4().hex[:12]}{suffix}")


def file_source(layer: QgsRasterLayer) -> str | None:
    """The file path GDAL can open for ``layer``, or ``None`` when the layer is not a plain raster file."""
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    if parts.get("layerName"):  # a table or subdataset inside a container file
        return None
    if parts.get("vsiPrefix"):
        return layer.source()
    path = parts.get("path") or layer.source()
    if path.startswith(VSI_PREFIXES) or os.path.isfile(path):
        return path
    return None


def copy_to_geotiff(layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                    parameter: str = "INPUT") -> str:
    """Write ``layer`` through QGIS to a temporary GeoTIFF at its native resolution and return the path.

    Raises:
        QgsProcessingException: the layer has no native pixel size (WMS, XYZ tiles), is too large, or writing
            failed.
    """
    provider = layer.dataProvider()
    name = layer.name()
    if not provider.capabilities() & QgsRasterDataProvider.Size or layer.width() <= 0 or layer.height() <= 0:
        raise QgsProcessingException(
            f"{parameter}: layer '{name}' ({layer.providerType()}) has no native pixel size, so it cannot be "
            "read pixel by pixel. Save it as a GeoTIFF at the resolution you need (right-click the layer > "
            "Export > Save As…, or Raster > Conversion > Translate) and run on that file."
        )
    if layer.width() * layer.height() > MAX_COPY_PIXELS:
        raise QgsProcessingException(
            f"{parameter}: layer '{name}' is {layer.width()} x {layer.height()} pixels, too large to copy to a "
            "temporary file. Export the part you need to a GeoTIFF first and run on that file."
        )
    path = temp_path(".tif")
    feedback.pushInfo(f"Layer '{name}' is not a plain raster file: reading it through QGIS into {path} "
                      f"({layer.width()} x {layer.height()} px, {layer.bandCount()} band(s)).")
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise QgsProcessingException(f"{parameter}: QGIS cannot read layer '{name}' ({layer.providerType()}).")
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    block_feedback = QgsRasterBlockFeedback()
    feedback.canceled.connect(block_feedback.cancel)
    try:
        error = writer.writeRaster(pipe, layer.width(), layer.height(), provider.extent(), layer.crs(),
                                   context.transformContext(), block_feedback)
    finally:
        feedback.canceled.disconnect(block_feedback.cancel)
    if feedback.isCanceled():
        remove_quietly(path)
        raise QgsProcessingException("Cancelled: no output was written.")
    if error != QgsRasterFileWriter.NoError:
        remove_quietly(path)
        raise QgsProcessingException(f"{parameter}: writing layer '{name}' to a temporary GeoTIFF failed "
                                     f"(QgsRasterFileWriter error {int(error)}).")
    return path


@contextlib.contextmanager
def raster_file(layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                parameter: str = "INPUT") -> Iterator[str]:
    """Yield a file path the engine can read for ``layer``; a temporary copy is deleted afterwards."""
    path = file_source(layer)
    if path is not None:
        yield path
        return
    path = copy_to_geotiff(layer, context, feedback, parameter)
    try:
        yield path
    finally:
        remove_quietly(path)


@contextlib.contextmanager
def vector_file(source: QgsFeatureSource, crs: QgsCoordinateReferenceSystem | None,
                context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                parameter: str = "POLYGONS") -> Iterator[str]:
    """Yield a temporary one-layer GeoPackage of ``source``'s features, reprojected to ``crs`` when both are set.

    Going through a copy handles every provider, selected-features-only, filters and layers inside
    multi-layer files the same way; the copy is deleted afterwards.
    """
    if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.PolygonGeometry:
        raise QgsProcessingException(f"{parameter}: '{source.sourceName()}' must be a polygon layer.")
    target = crs if crs is not None and crs.isValid() and source.sourceCrs().isValid() else source.sourceCrs()
    transform = None
    if target.isValid() and source.sourceCrs().isValid() and target != source.sourceCrs():
        transform = QgsCoordinateTransform(source.sourceCrs(), target, context.transformContext())
    path = temp_path(".gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = Path(path).stem
    writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), target,
                                        context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"{parameter}: cannot write a temporary copy ({writer.errorMessage()}).")
    try:
        for feature in source.getFeatures(QgsFeatureRequest()):
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled: no output was written.")
            if transform is not None and feature.hasGeometry():
                geometry = feature.geometry()
                geometry.transform(transform)
                copy = QgsFeature(feature)
                copy.setGeometry(geometry)
                feature = copy
            writer.addFeature(feature)
    finally:
        del writer  # closes the file
    try:
        yield path
    finally:
        remove_quietly(path)


def remove_quietly(path: str | os.PathLike | None) -> None:
    """Delete ``path`` (and GDAL/GeoPackage side files) if it exists; never raise."""
    if not path:
        return
    for candidate in (str(path), f"{path}.aux.xml", f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(OSError):
            os.remove(candidate)


def feedback_callbacks(feedback: QgsProcessingFeedback, start: float = 0.0, end: float = 100.0
                       ) -> tuple[Callable[[float, str], None], Callable[[], bool], Callable[[str], None]]:
    """Engine callbacks ``(progress, is_cancelled, log)`` driving ``feedback``.

    Engine fractions 0..1 map to ``start``..``end`` percent of the QGIS progress bar.
    """
    last_message = [""]

    def progress(fraction: float, message: str = "") -> None:
        feedback.setProgress(start + (end - start) * min(max(float(fraction), 0.0), 1.0))
        if message and message != last_message[0]:
            last_message[0] = message
            feedback.setProgressText(message)

    return progress, feedback.isCanceled, feedback.pushInfo


@contextlib.contextmanager
def engine_errors(errors_module, outputs: list[str] | None = None) -> Iterator[None]:
    """Turn the engine's user-ready errors into :class:`QgsProcessingException` (no traceback for the user).

    On any failure, files listed in ``outputs`` that the run may have begun are removed, so a failed or
    cancelled run leaves nothing behind.
    """
    try:
        yield
    except errors_module.Cancelled as exc:
        _cleanup(outputs)
        raise QgsProcessingException("Cancelled: no output was written.") from exc
    except errors_module.DependencyError as exc:
        _cleanup(outputs)
        from .deps import install_command

        message = str(exc)
        if "pip install" not in message:
            kind = "gpu" if "cuda" in message.lower() else "runtime"
            message += f"\n\nInstall command for QGIS's Python:\n    {install_command(kind)}"
        raise QgsProcessingException(message) from exc
    except errors_module.CroplandError as exc:
        _cleanup(outputs)
        raise QgsProcessingException(plugin_message(exc)) from exc
    except QgsProcessingException:
        _cleanup(outputs)
        raise
    except ImportError as exc:  # a package the engine imports late (e.g. for one backend)
        _cleanup(outputs)
        from .deps import Missing, missing_message

        top = (exc.name or "?").split(".")[0]
        raise QgsProcessingException(missing_message([Missing(top, top, f"{type(exc).__name__}: {exc}")])) from exc
    except OSError as exc:  # a file the engine or the plugin could not read or write
        _cleanup(outputs)
        raise QgsProcessingException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from exc
    except MemoryError as exc:
        _cleanup(outputs)
        raise QgsProcessingException("Out of memory: try a smaller TILE_SIZE, or split the raster.") from exc


# The engine's errors name the setting they concern as data (``exc.param``, an ExtractOptions field or API argument);
# in QGIS the same settings are algorithm parameters.
PARAMETER_NAMES = {"bands": "BANDS", "pixel_size_m": "PIXEL_SIZE", "tile_size": "TILE_SIZE", "overlap": "OVERLAP",
                   "threshold": "THRESHOLD", "model": "MODEL", "device": "DEVICE", "min_area_m2": "MIN_AREA",
                   "max_hole_m2": "MAX_HOLE", "simplify_m": "SIMPLIFY", "tta": "TTA", "stretch": "STRETCH"}


def plugin_message(exc) -> str:
    """The message of the engine error ``exc`` with the setting it concerns named as the algorithm's parameter."""
    param = getattr(exc, "param", None)
    if param is None or not hasattr(exc, "message_for"):
        return str(exc)
    return exc.message_for(PARAMETER_NAMES.get(param, param.upper()))


def _cleanup(outputs: list[str] | None) -> None:
    for path in outputs or []:
        remove_quietly(path)


def parse_bands(text: str | None, parameter: str = "BANDS") -> list[int] | None:
    """``"1,2,3"`` (spaces and ``;`` allowed) -> ``[1, 2, 3]``; empty -> ``None`` (the model's bands)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        bands = [int(part) for part in text.replace(";", ",").replace(" ", ",").split(",") if part]
    except ValueError:
        bands = []
    if not bands or any(b < 1 for b in bands):
        raise QgsProcessingException(
            f"{parameter}: '{text}' is not a list of 1-based band numbers such as 1,2,3."
        )
    return bands


def optional_number(alg, parameters: dict, name: str, context: QgsProcessingContext, integer: bool = False):
    """The value of an optional number parameter, or ``None`` when it was left unset."""
    value = parameters.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return alg.parameterAsInt(parameters, name, context) if integer else alg.parameterAsDouble(parameters,
                                                                                                name, context)


def check_extension(path: str, allowed: tuple[str, ...], parameter: str) -> None:
    """Refuse an output path whose extension the engine cannot write."""
    if path and not path.lower().endswith(allowed):
        raise QgsProcessingException(
            f"{parameter}: '{path}' has an unsupported extension; use one of {', '.join(allowed)}."
        )


SQUARE_METRES_PER_ACRE = 4046.8564224


def add_field_attributes(path: str, values: dict[str, str], acres: bool = False) -> None:
    """Add constant text attributes (``values``: name -> value) to every field in the vector file ``path``,
    and ``area_ac`` (acres, from ``area_m2``) when ``acres``.

    Done through QGIS's OGR provider, so GeoPackage, GeoJSON and Shapefile outputs are handled alike (names
    are at most 10 characters for Shapefiles).

    Raises:
        QgsProcessingException: the file cannot be opened or changed.
    """
    from qgis.core import QgsField, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer(path, "fields", "ogr")
    if not layer.isValid():
        raise QgsProcessingException(f"OUTPUT: cannot reopen {path} to add the field attributes.")
    provider = layer.dataProvider()
    new = [QgsField(name, QVariant.String) for name in values]
    if acres:
        new.append(QgsField("area_ac", QVariant.Double))
    if not provider.addAttributes(new):
        raise QgsProcessingException(f"OUTPUT: cannot add attributes to {path} ({provider.error().message()}).")
    layer.updateFields()
    fields = layer.fields()
    constant = {fields.indexOf(name): value for name, value in values.items()}
    area_index, acres_index = fields.indexOf("area_m2"), fields.indexOf("area_ac")
    changes = {}
    for feature in layer.getFeatures():
        change = dict(constant)
        if acres and acres_index >= 0:
            area = feature[area_index] if area_index >= 0 else None
            change[acres_index] = None if area is None or area != area else round(area / SQUARE_METRES_PER_ACRE, 4)
        changes[feature.id()] = change
    if changes and not provider.changeAttributeValues(changes):
        raise QgsProcessingException(f"OUTPUT: cannot write the attributes of {path} ({provider.error().message()}).")
    del layer
