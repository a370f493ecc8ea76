"""Small building blocks shared by the custom architectures."""

from __future__ import annotations

from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (padding 1, no bias), batch norm, ReLU; keeps H and W."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two :class:`ConvBNReLU` in a row, the U-Net stage: (N, in_ch, H, W) -> (N, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


def channels(width: int, depth: int = 5) -> list[int]:
    """Channel count per U-Net level: ``width * 2**level`` for levels 0..depth-1."""
    if width < 2:
        raise ValueError(f"width must be >= 2 base channels, got {width}")
    return [width * 2**i for i in range(depth)]


def shortcut(in_ch: int, out_ch: int, stride: int = 1) -> nn.Module:
    """A residual block's shortcut: the identity, or a strided 1x1 convolution + BatchNorm when the block changes
    the channel count or the resolution."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
