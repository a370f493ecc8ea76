"""Whole-raster prediction with a PyTorch model, for validation and cross-validation.

Tiles of ``tile`` px with ``overlap`` px overlap cover the raster (the last row/column of tiles is aligned
to the edge; rasters smaller than a tile are reflect-padded); overlapping probabilities are averaged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` px; the last tile ends at ``length`` (needs length >=
    tile)."""
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: np.ndarray, mean: list[float], std: list[float], tile: int,
                          overlap: int = 32, device: str | torch.device = "cpu", batch_size: int = 4,
                          cropland_class: int = 1) -> np.ndarray:
    """Cropland probability of a whole raster.

    Args:
        model: returns logits (N, C, H, W); it is switched to eval mode.
        image: (bands, H, W) float32 already divided by input_scale (not standardised).
        mean, std: standardisation per band.
        tile, overlap: tiling in pixels (tile a multiple of 32).

    Returns:
        (H, W) float32 probabilities of ``cropland_class`` in 0..1.
    """
    model.eval()
    _, h, w = image.shape
    ph, pw = max(tile - h, 0), max(tile - w, 0)
    x = (image - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    H, W = x.shape[1:]
    acc = np.zeros((H, W), np.float32)
    cnt = np.zeros((H, W), np.float32)
    boxes = [(y, xx) for y in tile_starts(H, tile, overlap) for xx in tile_starts(W, tile, overlap)]
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = np.stack([x[:, y:y + tile, xx:xx + tile] for y, xx in chunk])
        logits = model(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        probs = logits.float().softmax(1)[:, cropland_class].cpu().numpy()
        for (y, xx), p in zip(chunk, probs, strict=True):
            acc[y:y + tile, xx:xx + tile] += p
            cnt[y:y + tile, xx:xx + tile] += 1
    return (acc / cnt)[:h, :w]
