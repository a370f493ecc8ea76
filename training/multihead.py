"""Extent + boundary (+ distance) heads on any registry architecture, and the stacking of their targets.

:class:`MultiHeadNet` builds a registry model (:func:`training.models.build_model`) with one output channel group
per head instead of the usual two classes, so every architecture of the registry gets the heads for free:

=========  ========  ====================================================  ========================
head       channels  meaning                                               exported output (ONNX)
=========  ========  ====================================================  ========================
extent     0-1       logits of (other, field/cropland)                     ``extent``   (N, 2, H, W)
boundary   2-3       logits of (not edge, field edge)                      ``boundary`` (N, 2, H, W)
distance   4         optional: distance to the nearest edge, 0..1 (logit)  ``distance`` (N, 1, H, W)
=========  ========  ====================================================  ========================

The exported ``extent`` output is the first one and has the v1 layout (softmax over other/cropland), so an engine
that only knows v1 models reads v2 models as extent models unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import build_model

HEADS = ("extent", "boundary", "distance")


def head_channels(distance: bool) -> int:
    """Output channels of the inner network: 4 (extent, boundary), 5 with the distance head."""
    return 5 if distance else 4


class MultiHeadNet(nn.Module):
    """A registry architecture whose output channels are split into heads (see the module docstring).

    ``forward(x)``: (N, bands, H, W) float32 -> (N, 4 or 5, H, W) raw scores; :func:`split_heads` names them.
    """

    def __init__(self, arch: str, in_channels: int = 3, distance: bool = False, width: int | None = None,
                 decoder_channels: list[int] | None = None) -> None:
        super().__init__()
        self.arch, self.distance = arch, distance
        self.net = build_model(arch, in_channels, head_channels(distance), width=width,
                               decoder_channels=decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def split_heads(scores: torch.Tensor, distance: bool | None = None) -> dict[str, torch.Tensor]:
    """(N, 4|5, H, W) raw scores -> {"extent": (N,2,H,W) logits, "boundary": (N,2,H,W) logits[, "distance":
    (N,1,H,W) logit]}; ``distance`` None = decide from the channel count (not in traced code)."""
    out = {"extent": scores[:, 0:2], "boundary": scores[:, 2:4]}
    if distance if distance is not None else scores.shape[1] > 4:
        out["distance"] = scores[:, 4:5]
    return out


class ExportHeads(nn.Module):
    """What the ONNX file computes: probabilities per head, as a tuple in :data:`HEADS` order."""

    def __init__(self, model: MultiHeadNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        heads = split_heads(self.model(x), self.model.distance)
        out = (torch.softmax(heads["extent"], dim=1), torch.softmax(heads["boundary"], dim=1))
        if "distance" in heads:
            out = (*out, torch.sigmoid(heads["distance"]))
        return out
