"""Whole-raster prediction with a PyTorch model, for validation and cross-validation, through the engine's own
inference path.

The model is wrapped as an engine member (:class:`ModuleMember`) in an ensemble of one and run by the engine's pass
1 (:class:`engine.stages.Infer`): its reader (reflect padding beyond the edges, validity), tile grid, normalisation,
fusion and Hann blending. So the scores that pick checkpoints are the scores of what ships: the same tiles, the same
seams, the same treatment of nodata.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.areas import area_model
from engine.backends import scores_to_probability
from engine.context import Callbacks, RunContext, Tiling
from engine.ensemble import Ensemble
from engine.io import ArraySource
from engine.metadata import ModelMetadata
from engine.options import ExtractOptions
from engine.runtime import StageTimer
from engine.stages import Infer


class ModuleMember:
    """An engine ensemble member around a PyTorch module that returns logits (N, C, H, W)."""

    def __init__(self, model: nn.Module, meta: ModelMetadata, device: str | torch.device = "cpu"):
        self.model, self.meta, self.device = model.eval(), meta, torch.device(device)
        self.path, self.label = "<torch module>", f"{self.device.type} (torch module)"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) normalised tiles -> float32 (N, H, W) cropland probability."""
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return scores_to_probability(logits.float().cpu().numpy(), self.meta)

    def release_memory(self) -> None:
        pass


def predict_probabilities(model: nn.Module, image: np.ndarray, mean: list[float], std: list[float], tile: int,
                          overlap: int = 32, device: str | torch.device = "cpu", batch_size: int = 4,
                          cropland_class: int = 1, valid: np.ndarray | None = None) -> np.ndarray:
    """Cropland probability of a whole raster, as the engine computes it.

    Args:
        model: returns logits (N, C, H, W); it is switched to eval mode.
        image: (bands, H, W) float32 already divided by input_scale (not standardised).
        mean, std: standardisation per band.
        tile, overlap: tiling in pixels (tile a multiple of 32).
        valid: (H, W) bool, False for nodata (None = all valid, apart from non-finite values).

    Returns:
        (H, W) float32 probabilities of ``cropland_class`` in 0..1, NaN where not valid.
    """
    from affine import Affine

    bands = image.shape[0]
    classes = ["other", "cropland"] if cropland_class == 1 else [f"class{i}" for i in range(cropland_class + 1)]
    meta = ModelMetadata(name="validation", architecture="torch module", input_bands=list(range(1, bands + 1)),
                         input_scale=1.0, mean=list(mean), std=list(std), classes=classes,
                         cropland_class=cropland_class, output="logits", tile_size=tile, overlap=overlap)
    ens = Ensemble([ModuleMember(model, meta, device)], [1.0], "mean", 0.5, tile, overlap, meta.name, meta.name,
                   batch_size=batch_size)
    source = ArraySource(image, valid_mask=valid)
    h, w = source.height, source.width
    ctx = RunContext(source, ens, ExtractOptions(stretch="none", opening_px=0), Tiling(tile, overlap, batch_size),
                     area_model(None, Affine.identity(), h), StageTimer(), Callbacks())
    out = np.full((h, w), np.nan, np.float32)

    class Collect:
        def __call__(self, band) -> None:
            out[band.row0:band.row0 + band.prob.shape[0]] = band.prob

        def close(self) -> None:
            pass

    Infer([Collect()]).run(ctx)
    return out
