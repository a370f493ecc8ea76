"""FCN-1s on an SE-ResNet encoder: the original study's main model.

Encoder: ResNet bottleneck layout ([3, 4, 6, 3] for SE-ResNet50, [3, 4, 23, 3] for SE-ResNet101; He et al.
2016) with a squeeze-and-excitation gate (Hu et al. 2018, reduction 16) in every block. Decoder (the study's
"FCN-1s"): five stride-2 transposed 3x3 convolutions (2048 -> 1024 -> 512 -> 256 -> 64 -> 32 channels at
width 64), each followed by ReLU, added to the encoder feature of the same resolution (the last has none)
and batch-normalised; then a 1x1 classifier at full resolution.

``width`` is the stem's channel count (64 in ResNet); every channel count scales with it, so width 16 is a
1/16-size model. Input H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import shortcut


class SqueezeExcitation(nn.Module):
    """Channel gate: x * sigmoid(FC(ReLU(FC(global_avg_pool(x))))), shape preserved."""

    def __init__(self, ch: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, ch, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SEBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with stride, 1x1 to 4*planes) with an SE gate before the residual sum."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            SqueezeExcitation(out_ch),
        )
        self.shortcut = shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class FCNSEResNet(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits; ``layers`` = blocks per stage."""

    def __init__(self, layers: list[int], in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        if width < 8:
            raise ValueError(f"width must be >= 8, got {width}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, in_ch = [], width
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = [SEBottleneck(in_ch, planes, stride=1 if i == 0 else 2)]
            in_ch = planes * SEBottleneck.expansion
            stage += [SEBottleneck(in_ch, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        # decoder channels: 32w -> 16w -> 8w -> 4w -> w -> w/2 (2048 -> ... -> 32 at width 64)
        dec = [32 * width, 16 * width, 8 * width, 4 * width, width, max(width // 2, 4)]
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(dec[i], dec[i + 1], 3, stride=2, padding=1, output_padding=1) for i in range(5)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(dec[i + 1]) for i in range(5))
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(dec[-1], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)  # /2
        feats = [stem]
        y = self.pool(stem)
        for stage in self.stages:  # /4, /8, /16, /32
            y = stage(y)
            feats.append(y)
        # skips for deconv outputs at /16, /8, /4, /2 and none at /1
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        for deconv, norm, skip in zip(self.deconvs, self.norms, skips, strict=True):
            y = self.relu(deconv(y))
            y = norm(y if skip is None else y + skip)
        return self.classifier(y)


def build_fcn_se_resnet50(in_channels: int, classes: int, width: int = 64) -> FCNSEResNet:
    """Registry builder for ``fcn_se_resnet50`` (stages [3, 4, 6, 3])."""
    return FCNSEResNet([3, 4, 6, 3], in_channels, classes, width)


def build_fcn_se_resnet101(in_channels: int, classes: int, width: int = 64) -> FCNSEResNet:
    """Registry builder for ``fcn_se_resnet101`` (stages [3, 4, 23, 3])."""
    return FCNSEResNet([3, 4, 23, 3], in_channels, classes, width)
