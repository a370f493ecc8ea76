"""Architecture registry: a dict from name to builder, plus ``smp:<Arch>:<encoder>`` names.

Every builder has the signature ``builder(in_channels, classes, **options) -> nn.Module`` and the model maps
(N, in_channels, H, W) float32 to (N, classes, H, W) logits. Adding an architecture = one module + one line
here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureError, CheckpointError
from .attention_unet import build_attention_unet
from .fcn_resnet34 import build_fcn_resnet34
from .fcn_se_resnet import build_fcn_se_resnet50, build_fcn_se_resnet101
from .icnet import build_icnet
from .segnet import build_segnet
from .smp_models import build_smp, smp_architectures
from .unet import build_unet

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": build_unet,
    "attention_unet": build_attention_unet,
    "fcn_se_resnet50": build_fcn_se_resnet50,
    "fcn_se_resnet101": build_fcn_se_resnet101,
    "fcn_resnet34": build_fcn_resnet34,
    "segnet": build_segnet,
    "icnet": build_icnet,
}

#: One line per architecture, for ``python -m training fit --help`` (a test checks every name has one).
DESCRIPTIONS: dict[str, str] = {
    "unet": "U-Net (Ronneberger 2015), 4 poolings, width..16*width channels (paper: width 64)",
    "attention_unet": "U-Net with additive attention gates on the skips (Oktay 2018); the original study's 3rd model",
    "fcn_se_resnet50": "FCN-1s decoder on SE-ResNet50 (study's main model; global SE pooling: tile-size dependent)",
    "fcn_se_resnet101": "the same on SE-ResNet101 [3,4,23,3] (study's 2nd model; tile-size dependent)",
    "fcn_resnet34": "FCN-8s skips (stride 32/16/8 scores) on a ResNet34 encoder, random init",
    "segnet": "SegNet: VGG16-BN encoder, decoder upsamples with max-pooling indices (MaxUnpool)",
    "icnet": "ICNet: 3-resolution cascade (1/4, 1/2, 1) for speed; local instead of global pyramid pooling",
}

#: One line per segmentation_models_pytorch architecture used in this project (any smp architecture builds).
SMP_DESCRIPTIONS: dict[str, str] = {
    "Unet": "U-Net decoder on an smp encoder (--decoder-channels slims it)",
    "Linknet": "LinkNet: additive skips, light decoder (~half U-Net's parameters)",
    "FPN": "feature pyramid network decoder, output at 1/4 upsampled",
    "PSPNet": "pyramid pooling over the whole tile (tile-size dependent; no ONNX export with a dynamic size)",
}

SMP_PREFIX = "smp:"

#: Examples of smp names, for help texts and the registry test (each is built there).
SMP_ARCHITECTURES = ["smp:Unet:resnet18", "smp:Linknet:resnet18", "smp:FPN:resnet18", "smp:PSPNet:resnet18",
                     "smp:Unet:mobilenet_v2", "smp:Unet:efficientnet-b0"]

#: Input H and W must be multiples of this for every registered architecture.
SIZE_MULTIPLE = 32


def describe_architectures() -> str:
    """One line naming the registry's architectures and the smp form."""
    return (f"{', '.join(ARCHITECTURES)}, or smp:<Arch>:<encoder> with Arch one of "
            f"{', '.join(smp_architectures())} (e.g. smp:Unet:mobilenet_v2)")


def architecture_help() -> str:
    """Multi-line listing of every architecture with its one-line description (for ``fit --help``)."""
    width = max(len(n) for n in ARCHITECTURES) + 2
    lines = ["architectures (--arch; --width scales the custom ones, default 64 = the papers'):"]
    lines += [f"  {name:<{width}}{DESCRIPTIONS[name]}" for name in ARCHITECTURES]
    lines.append("  smp:<Arch>:<encoder>  segmentation_models_pytorch, random init (e.g. smp:Linknet:mobilenet_v2):")
    lines += [f"    {arch:<{width - 2}}{text}" for arch, text in SMP_DESCRIPTIONS.items()]
    others = [a for a in smp_architectures() if a not in SMP_DESCRIPTIONS]
    if others:
        lines.append(f"    also: {', '.join(others)}")
    return "\n".join(lines)


def build_model(name: str, in_channels: int = 3, classes: int = 2, width: int | None = None,
                decoder_channels: list[int] | None = None) -> nn.Module:
    """Build architecture ``name`` with random weights.

    Args:
        name: a key of :data:`ARCHITECTURES` or ``smp:<Arch>:<encoder>``.
        in_channels, classes: input bands and output classes.
        width: base channel count of a custom architecture (``None`` = its default); not for smp.
        decoder_channels: decoder widths of an smp model (Unet family), e.g. [128, 64, 32, 16, 16].

    Raises:
        ArchitectureError: unknown name (the message lists the known ones) or an option the architecture
        lacks.
    """
    if name.startswith(SMP_PREFIX):
        parts = name.split(":")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ArchitectureError(f"smp architectures are named smp:<Arch>:<encoder>, got {name!r}.")
        if width is not None:
            raise ArchitectureError(f"--width applies to custom architectures, not to {name}.")
        return build_smp(parts[1], parts[2], in_channels, classes, decoder_channels)
    if name not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {name!r}; known: {describe_architectures()}.")
    if decoder_channels:
        raise ArchitectureError(f"--decoder-channels applies to smp architectures, not to {name}.")
    options: dict[str, Any] = {} if width is None else {"width": int(width)}
    try:
        return ARCHITECTURES[name](in_channels, classes, **options)
    except ValueError as exc:
        raise ArchitectureError(f"{name}: {exc}") from exc


def load_weights(model: nn.Module, path: str | Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """Load initial weights from a local file (a state_dict, or a dict holding one under ``state_dict``).

    Loaded with ``torch.load(weights_only=True)``; tensors whose name or shape does not fit are skipped
    (e.g. a classifier with another class count). Returns (loaded names, skipped names); raises
    :class:`CheckpointError`
    when the file cannot be read or nothing fits.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc}).") from exc
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict (dict of tensors).")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and hasattr(v, "shape") and v.shape == own[k].shape}
    skipped = sorted(set(state) - set(fitting))
    if not fitting or (strict and skipped):
        raise CheckpointError(f"{path}: {len(fitting)} of {len(state)} tensors fit the model; "
                              "wrong architecture?")
    model.load_state_dict(fitting, strict=False)
    return sorted(fitting), skipped
