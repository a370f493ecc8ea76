"""segmentation_models_pytorch architectures, named ``smp:<Arch>:<encoder>`` (e.g. ``smp:Unet:mobilenet_v2``).

Encoders are always built with ``encoder_weights=None``: nothing is downloaded. Initial weights come from a
local file through ``--weights`` (see :func:`training.models.registry.load_weights`).
"""

from __future__ import annotations

from torch import nn

from ..errors import ArchitectureError


def smp_architectures() -> list[str]:
    """Names of the segmentation_models_pytorch architectures (``Unet``, ``Linknet``, ``FPN``, ...)."""
    import segmentation_models_pytorch as smp

    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def build_smp(arch: str, encoder: str, in_channels: int, classes: int,
              decoder_channels: list[int] | None = None) -> nn.Module:
    """Build ``smp.<arch>(encoder_name=encoder, encoder_weights=None, in_channels, classes)``.

    ``decoder_channels`` (Unet, UnetPlusPlus, MAnet only) slims the decoder, e.g. [128, 64, 32, 16, 16].
    Raises :class:`ArchitectureError` for an unknown architecture or encoder, listing the known ones.
    """
    import segmentation_models_pytorch as smp

    known = {name.lower(): name for name in smp_architectures()}
    if arch.lower() not in known:
        raise ArchitectureError(
            f"unknown segmentation_models_pytorch architecture {arch!r}; known: {', '.join(known.values())}.")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders:
        raise ArchitectureError(
            f"unknown segmentation_models_pytorch encoder {encoder!r} for smp:{arch}; e.g. resnet18, "
            f"resnet34, mobilenet_v2, efficientnet-b0 ({len(encoders)} known; "
            "see smp.encoders.get_encoder_names()).")
    kwargs = {}
    if decoder_channels:
        kwargs["decoder_channels"] = list(decoder_channels)
    cls = getattr(smp, known[arch.lower()])
    try:
        return cls(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes,
                   **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise ArchitectureError(
            f"smp:{arch}:{encoder} cannot be built with {kwargs or 'defaults'}: {exc}") from exc
