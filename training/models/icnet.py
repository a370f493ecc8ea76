"""ICNet (Zhao et al. 2018, "ICNet for Real-Time Semantic Segmentation on High-Resolution Images").

Three branches see the input at three resolutions and are fused coarse to fine by cascade feature fusion (CFF):

* low (1/4 of the input): the medium branch's stride-16 features, average-pooled 2x, go through the deep part of a
  ResNet (two stages of basic blocks, 4w and 8w channels, the second dilated 2, neither strided) to stride-32
  features, then a pyramid of average pools and a 1x1 convolution;
* medium (1/2 of the input, 2x2 average): a ResNet stem (three 3x3 convolutions, max pool) and two stages of basic
  blocks (w, 2w channels): stride-16 features of the full-size input; the low branch continues from them, so the
  two branches share these weights and this computation, as in the paper;
* high (full input): three 3x3 stride-2 convolutions (w/2, w/2, w channels): stride-8 features.

A CFF unit upsamples the coarser features 2x (bilinear), applies a 3x3 convolution with dilation 2 and batch norm,
adds the finer features projected by a 1x1 convolution and batch norm, and applies ReLU. The fused stride-8
features are upsampled 2x, classified by a 1x1 convolution and upsampled 4x (bilinear) to full resolution.

Differences from the paper, for the engine:

* **Pyramid pooling without global pooling.** The paper's pyramid pooling averages the low-resolution features
  over the whole image and over 2x2, 3x3 and 6x6 bins of it, so every pixel's result depends on the whole tile and
  changes with the engine's tile size. Here the pyramid averages over fixed windows of 3, 5 and 9 stride-32 cells
  (96, 160 and 288 px) around each cell (stride 1, borders averaged over the pixels inside): the same idea of
  context at several scales, independent of the tile size.
* No auxiliary cascade-label losses (the training loop trains one output); the paper uses them only in training.
* Basic blocks instead of the bottlenecks of its PSPNet50 backbone, dilations 1 and 2 instead of 2 and 4 (the low
  branch already works at stride 32, where the paper's dilations would give each pixel a field of about 2,200 px,
  four 512 px tiles), and ``width`` scales every channel (w = 64: the paper's 32/32/64 high-resolution branch at w/2,
  w/2, w).

Written here because neither torchvision nor segmentation_models_pytorch has ICNet. ONNX: average pools, bilinear
``Resize`` and dilated convolutions only. Input H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from .fcn_resnet34 import resnet_stage

POOL_WINDOWS = (3, 5, 9)


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1) with ``stride``, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling (align_corners=False, as ONNX ``Resize`` half_pixel)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class LocalPyramidPooling(nn.Module):
    """x + the averages of x over fixed windows (``POOL_WINDOWS`` cells, stride 1), then 1x1 conv + BN + ReLU:
    (N, in_ch, H, W) -> (N, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)
                                   for k in POOL_WINDOWS)
        self.project = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
                                     nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for pool in self.pools:
            y = y + pool(x)
        return self.project(y)


class CascadeFeatureFusion(nn.Module):
    """CFF: (coarse (N, low_ch, h, w), fine (N, high_ch, 2h, 2w)) -> (N, out_ch, 2h, 2w)."""

    def __init__(self, low_ch: int, high_ch: int, out_ch: int) -> None:
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(low_ch, out_ch, 3, padding=2, dilation=2, bias=False),
                                 nn.BatchNorm2d(out_ch))
        self.high = nn.Sequential(nn.Conv2d(high_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return self.relu(self.low(up2(coarse)) + self.high(fine))


class ICNet(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        w, half = width, max(width // 2, 2)
        self.high = nn.Sequential(conv_bn_relu(in_channels, half, 2), conv_bn_relu(half, half, 2),
                                  conv_bn_relu(half, w, 2))  # /8
        self.medium = nn.Sequential(  # on the 1/2 input: stride 8 -> /16 of the input
            conv_bn_relu(in_channels, half, 2), conv_bn_relu(half, half), conv_bn_relu(half, w),
            nn.MaxPool2d(3, stride=2, padding=1),
            resnet_stage(w, w, 2, 1),
            resnet_stage(w, 2 * w, 2, 2),
        )
        self.low = nn.Sequential(  # on the /16 features pooled to /32; dilated, stays at /32
            resnet_stage(2 * w, 4 * w, 2, 1),
            resnet_stage(4 * w, 8 * w, 2, 1, dilation=2),
            LocalPyramidPooling(8 * w, 4 * w),
        )
        self.cff_low = CascadeFeatureFusion(4 * w, 2 * w, 2 * w)  # -> /16
        self.cff_high = CascadeFeatureFusion(2 * w, w, 2 * w)  # -> /8
        self.classifier = nn.Conv2d(2 * w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8 = self.high(x)
        f16 = self.medium(F.avg_pool2d(x, 2))
        f32 = self.low(F.avg_pool2d(f16, 2))
        fused = self.cff_high(self.cff_low(f32, f16), f8)
        logits = self.classifier(up2(fused))  # /4
        return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)


def build_icnet(in_channels: int, classes: int, width: int = 64) -> ICNet:
    """Registry builder for ``icnet``."""
    return ICNet(in_channels, classes, width)
