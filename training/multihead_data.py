"""Training batches for the multi-head model: random, augmented crops of catalogue scenes with their targets.

The crop and augmentation are :mod:`training.augment`'s (scale jitter by the crop window, dihedral flips and
rotations, the same photometric jitter) applied to the image and both target masks together; the distance target
is computed on the final crop. Sets are drawn in the shares asked for (default: equal per set), scenes within a set
by area, so a big set does not drown a small one.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .augment import build_augmentation
from .datasets.scene import IGNORE, Scene, distance_target


def channel_stats(scenes: list[Scene]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the 0..1 images over labelled pixels of ``scenes`` (for the metadata)."""
    sums, total = np.zeros((2, scenes[0].image.shape[0])), 0
    for s in scenes:
        px = s.image[:, s.extent != IGNORE].astype(np.float64)
        sums += np.stack([px.sum(1), (px ** 2).sum(1)])
        total += px.shape[1]
    mean = sums[0] / max(total, 1)
    std = np.sqrt(np.maximum(sums[1] / max(total, 1) - mean ** 2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


class MultiHeadSampler:
    """Draws (images, targets) batches from training scenes.

    Args:
        scenes: training scenes (images on 0..1).
        tile: crop edge (px, multiple of 32). mean, std: standardisation after augmentation.
        scale_range: zoom factors (min, max); a window of tile/s px is cut and resized to tile.
        augment_strength: 0..1 (see :func:`training.augment.build_augmentation`).
        seed: batch ``i`` uses ``[seed, i]``, so a resumed run draws the same crops.
        set_shares: data set name -> relative share of crops (default: equal for every set present).
        distance_px: clip distance of the distance target (px).
    """

    def __init__(self, scenes: list[Scene], tile: int, mean: list[float], std: list[float],
                 scale_range: tuple[float, float] = (0.7, 1.4), augment_strength: float = 1.0, seed: int = 0,
                 set_shares: dict[str, float] | None = None, distance_px: float = 8.0) -> None:
        self.scenes, self.tile, self.seed = scenes, tile, seed
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.scale_range, self.distance_px = scale_range, distance_px
        self.augment = build_augmentation(scenes[0].image.shape[0], augment_strength)
        sets = sorted({s.dataset for s in scenes})
        shares = {k: float((set_shares or {}).get(k, 1.0)) for k in sets}
        area = {k: sum(s.extent.size for s in scenes if s.dataset == k) for k in sets}
        w = np.array([shares[s.dataset] * s.extent.size / area[s.dataset] for s in scenes], np.float64)
        self.weights = w / w.sum()

    def crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One sample: image (bands, t, t) float32 standardised; extent, boundary (t, t) int64; distance float32."""
        s = self.scenes[rng.choice(len(self.scenes), p=self.weights)]
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        h, w = s.shape
        size = round(self.tile / scale)
        sy, sx = min(size, h), min(size, w)
        y0 = int(rng.integers(0, h - sy + 1))
        x0 = int(rng.integers(0, w - sx + 1))
        img = np.ascontiguousarray(s.image[:, y0:y0 + sy, x0:x0 + sx].transpose(1, 2, 0))
        ext = s.extent[y0:y0 + sy, x0:x0 + sx]
        bnd = s.boundary[y0:y0 + sy, x0:x0 + sx]
        if sy < size or sx < size:  # scene smaller than the window: pad, padding ignored
            pad = ((0, size - sy), (0, size - sx))
            img = np.pad(img, (*pad, (0, 0)))
            ext = np.pad(ext, pad, constant_values=IGNORE)
            bnd = np.pad(bnd, pad, constant_values=IGNORE)
        if size != self.tile:
            interp = cv2.INTER_AREA if size > self.tile else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.tile, self.tile), interpolation=interp)
            ext = cv2.resize(ext, (self.tile, self.tile), interpolation=cv2.INTER_NEAREST)
            bnd = cv2.resize(bnd, (self.tile, self.tile), interpolation=cv2.INTER_NEAREST)
            if img.ndim == 2:
                img = img[:, :, None]
        self.augment.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = self.augment(image=img, masks=[ext, bnd])
        ext, bnd = out["masks"]
        img = (np.clip(out["image"], 0.0, None).transpose(2, 0, 1) - self.mean) / self.std
        dist = distance_target(ext, bnd, self.distance_px)
        return (np.ascontiguousarray(img, np.float32), ext.astype(np.int64), bnd.astype(np.int64), dist)

    def batch(self, index: int, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Batch ``index``: images (N, bands, t, t) float32 and targets {extent, boundary, distance} (N, t, t)."""
        rng = np.random.default_rng([self.seed, index])
        items = [self.crop(rng) for _ in range(batch_size)]
        x = np.stack([i[0] for i in items])
        return x, {"extent": np.stack([i[1] for i in items]), "boundary": np.stack([i[2] for i in items]),
                   "distance": np.stack([i[3] for i in items])}
