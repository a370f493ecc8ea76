"""Typed errors of ``python -m training``; the CLI prints their message on one line and exits with status 2.

They subclass the engine's errors (:mod:`engine.errors`), so callers can catch
:class:`engine.errors.CroplandError` for both packages.
"""

from engine.errors import CroplandError, InputError, ModelError


class TrainingError(CroplandError):
    """Base class of the errors raised on purpose by the training package."""


class DataError(TrainingError, InputError):
    """Training rasters cannot be used: no pairs, size mismatch, unexpected label values, unreadable
    file..."""


class ArchitectureError(TrainingError, ModelError):
    """Unknown architecture or encoder, or options the architecture does not take."""


class CheckpointError(TrainingError, ModelError):
    """A checkpoint is missing, unreadable or was not written by this package."""
