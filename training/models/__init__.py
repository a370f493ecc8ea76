"""Segmentation architectures of ``python -m training``; see :mod:`training.models.registry`."""

from .registry import ARCHITECTURES, SMP_ARCHITECTURES, build_model, describe_architectures

__all__ = ["ARCHITECTURES", "SMP_ARCHITECTURES", "build_model", "describe_architectures"]
