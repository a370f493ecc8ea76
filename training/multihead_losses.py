"""Losses of the multi-head model: extent CE + soft Dice, boundary class-weighted CE + Tversky, distance L1.

Boundaries are thin (about 5-15 % of pixels), so plain CE learns "no edge everywhere". The boundary term weights
edge pixels up in the CE and adds a Tversky loss (alpha = 0.3 on false positives, beta = 0.7 on false negatives),
which rewards recall of the thin class. Targets hold :data:`~training.datasets.scene.IGNORE` where unknown; a
batch whose boundary targets are all IGNORE (e.g. only contest blocks, which have no edges) contributes no boundary
loss - those crops train the extent head only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from .datasets.scene import IGNORE
from .losses import soft_dice_loss
from .multihead import split_heads


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 eps: float = 1.0) -> torch.Tensor:
    """1 - Tversky index of class 1: logits (N, 2, H, W), target (N, H, W) int64 with IGNORE excluded."""
    valid = (target != IGNORE).float()
    p = logits.float().softmax(dim=1)[:, 1] * valid
    t = (target == 1).float()
    tp = (p * t).sum()
    fp = (p * (1 - t) * valid).sum()
    fn = ((1 - p) * t).sum()
    return 1.0 - (tp + eps) / (tp + alpha * fp + beta * fn + eps)


class MultiHeadLoss(nn.Module):
    """Weighted sum of the head losses; ``forward(scores, targets)`` returns (total, {term: value}).

    Args:
        boundary_weight: weight of the boundary terms (0 trains the extent head only).
        boundary_pos_weight: CE weight of edge pixels relative to others.
        distance_weight: weight of the L1 distance term (used only when the model has a distance head).
    Targets: ``extent`` and ``boundary`` (N, H, W) int64 in {0, 1, IGNORE}; ``distance`` (N, H, W) float32.
    """

    def __init__(self, boundary_weight: float = 1.0, boundary_pos_weight: float = 5.0,
                 distance_weight: float = 1.0) -> None:
        super().__init__()
        self.boundary_weight, self.pos_weight = boundary_weight, boundary_pos_weight
        self.distance_weight = distance_weight

    def forward(self, scores: torch.Tensor, targets: dict[str, torch.Tensor]):
        heads = split_heads(scores.float())
        ext_t = targets["extent"]
        terms = {"extent_ce": F.cross_entropy(heads["extent"], ext_t, ignore_index=IGNORE)
                 if (ext_t != IGNORE).any() else scores.sum() * 0,
                 "extent_dice": soft_dice_loss(heads["extent"], ext_t, IGNORE)}
        total = terms["extent_ce"] + terms["extent_dice"]
        bnd_t = targets["boundary"]
        if self.boundary_weight and (bnd_t != IGNORE).any():
            w = torch.tensor([1.0, self.pos_weight], device=scores.device)
            terms["boundary_ce"] = F.cross_entropy(heads["boundary"], bnd_t, weight=w, ignore_index=IGNORE)
            terms["boundary_tversky"] = tversky_loss(heads["boundary"], bnd_t)
            total = total + self.boundary_weight * (terms["boundary_ce"] + terms["boundary_tversky"])
        if "distance" in heads and self.distance_weight and "distance" in targets:
            valid = (ext_t != IGNORE).float()
            err = (torch.sigmoid(heads["distance"][:, 0]) - targets["distance"]).abs() * valid
            terms["distance_l1"] = err.sum() / valid.sum().clamp(min=1.0)
            total = total + self.distance_weight * terms["distance_l1"]
        return total, {k: float(v.detach()) for k, v in terms.items()}
