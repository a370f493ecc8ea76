"""Segmentation architectures of ``python -m training``; see :mod:`training.models.registry`."""

from .registry import (
                       ARCHITECTURES,
                       DESCRIPTIONS,
                       SMP_ARCHITECTURES,
                       architecture_help,
                       build_model,
                       describe_architectures,
)

__all__ = ["ARCHITECTURES", "DESCRIPTIONS", "SMP_ARCHITECTURES", "architecture_help", "build_model",
           "describe_architectures"]
