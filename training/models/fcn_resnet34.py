"""FCN-8s (Long, Shelhamer & Darrell 2015) on a ResNet34 encoder, random initialisation.

Encoder: ResNet34 (He et al. 2016): 7x7 stride-2 stem, 3x3 max pool, four stages of basic blocks [3, 4, 6, 3]
with width, 2w, 4w, 8w channels at strides 4, 8, 16, 32 (w = 64 in ResNet34). Head, as in FCN-8s: a 1x1 "score"
convolution to ``classes`` channels on the stride-32, -16 and -8 features; the stride-32 scores are upsampled 2x
by a transposed convolution and added to the stride-16 scores, the sum upsampled 2x and added to the stride-8
scores, and that sum upsampled 8x to the input size. The transposed convolutions start as bilinear
interpolation (as in the paper) and are learned.

The encoder is written here rather than taken from torchvision or segmentation_models_pytorch because their
ResNet34 has a fixed width; ``width`` (the stem's channel count) scales every channel so that the model fits a
CPU budget (width 16 = 1/4 of the channels, ~1/16 of the parameters). There is no global pooling: the output at
a pixel depends only on its neighbourhood, so the result does not change with the engine's tile size. Input H and
W must be multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import shortcut


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN (the first with ``stride``), identity or 1x1 projection shortcut;
    ``dilation`` > 1 widens both 3x3 convolutions (as in dilated ResNets) and keeps H and W."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut = shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet_stage(in_ch: int, out_ch: int, blocks: int, stride: int, dilation: int = 1) -> nn.Sequential:
    """``blocks`` basic blocks, the first with ``stride``: (N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride)."""
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride, dilation),
                         *(BasicBlock(out_ch, out_ch, 1, dilation) for _ in range(blocks - 1)))


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A per-channel transposed convolution that upsamples by ``factor`` (output = factor x input size),
    initialised to bilinear interpolation, as FCN does."""
    kernel = 2 * factor
    up = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=factor // 2, groups=channels,
                            bias=False)
    center = (kernel - 1) / 2
    coords = torch.arange(kernel, dtype=torch.float32)
    line = 1 - torch.abs(coords - center) / factor
    with torch.no_grad():
        up.weight.copy_((line[:, None] * line[None, :]).expand(channels, 1, kernel, kernel))
    return up


class FCNResNet34(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits; FCN-8s skips on ResNet34."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}")
        ch = [width, width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, ch[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList(resnet_stage(ch[i], ch[i + 1], n, 1 if i == 0 else 2)
                                    for i, n in enumerate([3, 4, 6, 3]))
        self.score32 = nn.Conv2d(ch[4], classes, 1)
        self.score16 = nn.Conv2d(ch[3], classes, 1)
        self.score8 = nn.Conv2d(ch[2], classes, 1)
        self.up32 = bilinear_upsampler(classes, 2)
        self.up16 = bilinear_upsampler(classes, 2)
        self.up8 = bilinear_upsampler(classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)  # /4
        feats = []
        for stage in self.stages:  # /4, /8, /16, /32
            y = stage(y)
            feats.append(y)
        s = self.up32(self.score32(feats[3])) + self.score16(feats[2])  # /16
        s = self.up16(s) + self.score8(feats[1])  # /8
        return self.up8(s)


def build_fcn_resnet34(in_channels: int, classes: int, width: int = 64) -> FCNResNet34:
    """Registry builder for ``fcn_resnet34``."""
    return FCNResNet34(in_channels, classes, width)
