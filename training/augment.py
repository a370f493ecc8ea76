"""Random crops with augmentation, drawn from whole rasters held in memory.

Why albumentations: it is maintained, fast (OpenCV underneath), applies one geometric transform to the image
and its mask together, handles float32 images of any band count, and has every transform the original study
used (90/180/270° rotations, flips, gamma, box blur, salt noise) plus the colour and noise jitter we add.
kornia would run on the GPU, but training here is CPU-bound on small batches and the crops are cheap.

Scale jitter is done by the crop itself: a window of ``tile / s`` pixels is cut and resized to ``tile``, so
the model sees the ground at 1/s times the training resolution (s log-uniform in ``scale_range``). This
makes the models usable on imagery coarser or finer than the 2 m contest tiles (e.g. 1 m or 5 m NAIP).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .data import IGNORE, Raster


def build_augmentation(bands: int, strength: float = 1.0):
    """The albumentations pipeline for one crop: image (H, W, bands) float32 in ~0..1, mask (H, W) uint8.

    ``strength`` 0 turns augmentation off except the dihedral flips/rotations.
    """
    import albumentations as A  # noqa: N812 - the library's own convention

    photometric = []
    if strength > 0:
        if bands == 3:
            photometric += [
                A.ColorJitter(brightness=(0.75, 1.25), contrast=(0.75, 1.25), saturation=(0.6, 1.4),
                              hue=(-0.04, 0.04), p=0.6 * strength),
                A.ToGray(p=0.05 * strength),
            ]
        else:
            photometric += [A.RandomBrightnessContrast(0.2, 0.2, p=0.6 * strength)]
        photometric += [
            A.RandomGamma(gamma_limit=(70, 150), p=0.5 * strength),
            A.OneOf([A.Blur(blur_limit=(3, 3)), A.GaussianBlur(blur_limit=(3, 5))], p=0.25 * strength),
            A.OneOf([A.GaussNoise(std_range=(0.01, 0.05)),
                     A.SaltAndPepper(amount=(0.001, 0.005), salt_vs_pepper=(0.8, 1.0))], p=0.25 * strength),
        ]
    return A.Compose([A.RandomRotate90(p=1.0), A.HorizontalFlip(p=0.5), *photometric])


class CropSampler:
    """Draws augmented, standardised training batches from whole rasters.

    Args:
        rasters: training rasters (images already divided by input_scale).
        tile: crop edge in pixels (a multiple of 32 for the registry's models).
        mean, std: per-band standardisation applied after augmentation.
        scale_range: (min, max) scale factor s; the crop covers tile/s source pixels. (1, 1) = off.
        augment_strength: 0..1, see :func:`build_augmentation`.
        seed: base seed; batch ``i`` of the run uses ``seed + i``, so a resumed run draws the same crops.
        weights: relative chance of drawing from each raster (default: its area).
    """

    def __init__(self, rasters: list[Raster], tile: int, mean: list[float], std: list[float],
                 scale_range: tuple[float, float] = (0.5, 1.6), augment_strength: float = 1.0,
                 seed: int = 0, weights: list[float] | None = None) -> None:
        self.rasters = rasters
        self.tile = tile
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.scale_range = scale_range
        self.seed = seed
        self.augment = build_augmentation(rasters[0].image.shape[0], augment_strength)
        sizes = np.array([r.shape[0] * r.shape[1] for r in rasters], np.float64)
        w = sizes if weights is None else np.asarray(weights, np.float64)
        self.weights = w / w.sum()

    def crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One sample: (bands, tile, tile) float32 standardised and (tile, tile) int64 label (IGNORE kept)."""
        r = self.rasters[rng.choice(len(self.rasters), p=self.weights)]
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        h, w = r.shape
        size = round(self.tile / scale)
        size = min(size, h, w)
        y0 = int(rng.integers(0, max(h - size, 0) + 1))
        x0 = int(rng.integers(0, max(w - size, 0) + 1))
        img = np.ascontiguousarray(r.image[:, y0:y0 + size, x0:x0 + size].transpose(1, 2, 0))
        lab = r.label[y0:y0 + size, x0:x0 + size]
        if img.shape[0] != self.tile or img.shape[1] != self.tile:
            img = cv2.resize(img, (self.tile, self.tile), interpolation=cv2.INTER_AREA if size > self.tile
                             else cv2.INTER_LINEAR)
            lab = cv2.resize(lab, (self.tile, self.tile), interpolation=cv2.INTER_NEAREST)
            if img.ndim == 2:
                img = img[:, :, None]
        self.augment.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = self.augment(image=img, mask=lab)
        img = np.clip(out["image"], 0.0, None).transpose(2, 0, 1)
        img = (img - self.mean) / self.std
        return np.ascontiguousarray(img, np.float32), out["mask"].astype(np.int64)

    def batch(self, index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``index``: images (N, bands, tile, tile) float32, labels (N, tile, tile) int64."""
        rng = np.random.default_rng([self.seed, index])
        items = [self.crop(rng) for _ in range(batch_size)]
        return np.stack([i[0] for i in items]), np.stack([i[1] for i in items])


def ignore_fraction(label: np.ndarray) -> float:
    """Fraction of pixels of a label array equal to :data:`IGNORE`."""
    return float(np.mean(label == IGNORE))
