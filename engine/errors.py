"""Typed errors of the engine.

Every error the engine raises on purpose is a :class:`CroplandError` whose message is written for the user: it
names the file, the band or the parameter, says what was found and what was expected. The CLI prints the message
and exits non-zero; the QGIS plugin turns it into a ``QgsProcessingException``.

An error about one setting carries it as data: ``param`` is the name of the :class:`engine.options.ExtractOptions`
field (or API argument) it concerns, e.g. ``InputError(msg, param="bands")``. Where the message names the setting it
writes :data:`PARAM` (``"{param}"``); ``str(error)`` shows the command line's option there (``--bands``), and a front
end with other names (the QGIS plugin's ``BANDS``) calls :meth:`CroplandError.message_for` with its own.
"""

from __future__ import annotations

PARAM = "{param}"

# How the command line names each setting (``str()`` of an error uses these).
CLI_NAMES = {
    "bands": "--bands", "tile_size": "--tile-size", "overlap": "--overlap", "batch_size": "--batch-size",
    "device": "--device", "backend": "--backend", "fp16": "--fp16", "threshold": "--threshold", "fusion": "--fusion",
    "tta": "--tta", "min_area_m2": "--min-area", "max_hole_m2": "--max-hole", "simplify_m": "--simplify",
    "opening_px": "--opening", "pixel_size_m": "--pixel-size", "stretch": "--stretch", "threads": "--threads",
    "model": "--model", "overwrite": "--overwrite", "cell_size": "--cell-size", "tolerance_px": "--tolerance",
    "iou_threshold": "--iou-threshold", "split": "--split", "resample": "--resample",
}


class CroplandError(Exception):
    """Base class of every error the engine raises on purpose.

    Args:
        message: for the user; :data:`PARAM` where it names the setting ``param``.
        param: the setting the error concerns (an ``ExtractOptions`` field or API argument name), or None.
    """

    def __init__(self, message: str = "", param: str | None = None):
        super().__init__(message)
        self.param = param

    def message_for(self, name: str | None) -> str:
        """The message naming the setting ``name`` (None: the setting's own name, e.g. ``bands``)."""
        text = str(self.args[0]) if self.args else ""
        return text.replace(PARAM, name or self.param or "")

    def __str__(self) -> str:
        return self.message_for(CLI_NAMES.get(self.param or "", self.param))


class InputError(CroplandError):
    """The input raster (or array) cannot be used: missing, unreadable, too few bands, all nodata..."""


class ModelError(CroplandError):
    """A model file or ensemble description is missing, corrupt, or does not fit the input."""


class OutputError(CroplandError):
    """An output cannot be written: it exists (without overwrite), or its folder is not writable."""


class DependencyError(CroplandError):
    """An optional package (torch, onnxruntime...) needed for what was asked is not installed."""


class ClusterError(CroplandError):
    """The Dask cluster cannot be started or reached, or it lost a task for good (a worker died too often)."""


class Cancelled(CroplandError):  # noqa: N818 - a state, not a failure
    """The run was cancelled through the ``is_cancelled`` callback; nothing was written."""
