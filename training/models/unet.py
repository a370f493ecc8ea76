"""U-Net (Ronneberger et al. 2015) with batch norm: 4 poolings, transposed-convolution upsampling.

Input height and width must be multiples of 16. ``width`` is the channel count of the first level (64 in the
paper); the levels have width, 2w, 4w, 8w, 16w channels.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DoubleConv, channels


class UNet(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        ch = channels(width)
        self.encoders = nn.ModuleList([DoubleConv(in_channels, ch[0])])
        self.encoders.extend(DoubleConv(ch[i - 1], ch[i]) for i in range(1, 5))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2) for i in range(4, 0, -1))
        self.decoders = nn.ModuleList(DoubleConv(2 * ch[i - 1], ch[i - 1]) for i in range(4, 0, -1))
        self.head = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def build_unet(in_channels: int, classes: int, width: int = 64) -> UNet:
    """Registry builder for ``unet``."""
    return UNet(in_channels, classes, width)
