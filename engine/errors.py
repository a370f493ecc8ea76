"""Typed errors of the engine.

Every error the engine raises on purpose is a :class:`CroplandError` whose message is written for the user: it
names the file, the band or the parameter, says what was found and what was expected. The CLI prints the message
and exits non-zero; the QGIS plugin turns it into a ``QgsProcessingException``.
"""


class CroplandError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(CroplandError):
    """The input raster (or array) cannot be used: missing, unreadable, too few bands, all nodata..."""


class ModelError(CroplandError):
    """A model file or ensemble description is missing, corrupt, or does not fit the input."""


class OutputError(CroplandError):
    """An output cannot be written: it exists (without overwrite), or its folder is not writable."""


class DependencyError(CroplandError):
    """An optional package (torch, onnxruntime...) needed for what was asked is not installed."""


class Cancelled(CroplandError):  # noqa: N818 - a state, not a failure
    """The run was cancelled through the ``is_cancelled`` callback; nothing was written."""
