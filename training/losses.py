"""Losses: cross-entropy + soft Dice (the original study's), with an optional boundary-weighted term.

All take logits (N, C, H, W) float and targets (N, H, W) int64 with ``ignore_index`` (255) for excluded
pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from .data import IGNORE


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE,
                   eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient, computed over the whole batch, ignored pixels
    out."""
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def boundary_weights(target: torch.Tensor, width: int = 3, ignore_index: int = IGNORE) -> torch.Tensor:
    """(N, H, W) float: 1 within ``width`` px of a class change of ``target``, else 0 (ignored pixels 0)."""
    t = target.clone().float().unsqueeze(1)
    t[t == ignore_index] = 0.5
    k = 2 * width + 1
    hi = F.max_pool2d(t, k, stride=1, padding=width)
    lo = -F.max_pool2d(-t, k, stride=1, padding=width)
    near = (hi != lo).squeeze(1).float()
    return near * (target != ignore_index).float()


class SegmentationLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice + boundary_weight * CE on pixels near label edges``.

    The boundary term is the mean cross-entropy over pixels within ``boundary_px`` of a label edge, which
    pushes the model to place field edges exactly. Returns a scalar tensor.
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, boundary_weight: float = 0.0,
                 boundary_px: int = 3, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight, self.boundary_weight = ce_weight, dice_weight, boundary_weight
        self.boundary_px, self.ignore_index = boundary_px, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        pixel_ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        valid = (target != self.ignore_index).float()
        loss = self.ce_weight * (pixel_ce * valid).sum() / valid.sum().clamp(min=1.0)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
        if self.boundary_weight:
            w = boundary_weights(target, self.boundary_px, self.ignore_index)
            loss = loss + self.boundary_weight * (pixel_ce * w).sum() / w.sum().clamp(min=1.0)
        return loss
