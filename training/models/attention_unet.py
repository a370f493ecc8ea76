"""Attention U-Net (Oktay et al. 2018, "Attention U-Net: Learning Where to Look for the Pancreas").

A U-Net whose skip connections pass through additive attention gates: the decoder's gating signal ``g`` and
the encoder's skip feature ``x`` are projected by 1x1 convolutions to ``F_int`` channels, added, passed
through ReLU, a 1x1 convolution to one channel and a sigmoid; the result (a per-pixel coefficient in 0..1)
scales ``x`` before it is concatenated with ``g``. As in the common implementation, the gating signal is the
decoder feature after its upsampling, so ``g`` and ``x`` share one resolution. The original study used
64..1024 channels (``width`` 64); ``width`` 16 gives a 2 M-parameter model that runs on a CPU. Input H and W
must be multiples of 16.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNReLU, DoubleConv, channels


class AttentionGate(nn.Module):
    """Additive attention gate: (g, x) both (N, C, H, W) -> x * alpha with alpha (N, 1, H, W) in 0..1."""

    def __init__(self, g_ch: int, x_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(g_ch, inter_ch, 1), nn.BatchNorm2d(inter_ch))
        self.w_x = nn.Sequential(nn.Conv2d(x_ch, inter_ch, 1, bias=False), nn.BatchNorm2d(inter_ch))
        self.psi = nn.Sequential(nn.Conv2d(inter_ch, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = self.psi(self.relu(self.w_g(g) + self.w_x(x)))
        return x * alpha


class AttentionUNet(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        ch = channels(width)
        self.encoders = nn.ModuleList([DoubleConv(in_channels, ch[0])])
        self.encoders.extend(DoubleConv(ch[i - 1], ch[i]) for i in range(1, 5))
        self.pool = nn.MaxPool2d(2)
        levels = range(4, 0, -1)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ConvBNReLU(ch[i], ch[i - 1]))
            for i in levels
        )
        self.gates = nn.ModuleList(AttentionGate(ch[i - 1], ch[i - 1], max(ch[i - 1] // 2, 1))
                                   for i in levels)
        self.decoders = nn.ModuleList(DoubleConv(2 * ch[i - 1], ch[i - 1]) for i in levels)
        self.head = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, gate, dec in zip(self.ups, self.gates, self.decoders, strict=True):
            g = up(x)
            x = dec(torch.cat([gate(g, skips.pop()), g], dim=1))
        return self.head(x)


def build_attention_unet(in_channels: int, classes: int, width: int = 64) -> AttentionUNet:
    """Registry builder for ``attention_unet``."""
    return AttentionUNet(in_channels, classes, width)
