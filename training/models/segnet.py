"""SegNet (Badrinarayanan, Kendall & Cipolla 2017): encoder-decoder that upsamples with max-pooling indices.

Encoder: the 13 convolutions of VGG16 with batch norm in five stages (2, 2, 3, 3, 3 convolutions; width, 2w, 4w,
8w, 8w channels; w = 64 in the paper), each followed by a 2x2 max pool that remembers where each maximum came
from. Decoder: the mirror image; each stage first places its input back at the remembered positions
(``MaxUnpool2d``, zeros elsewhere: no learned upsampling), then convolves (3, 3, 3, 2, 2 convolutions). A 1x1
classifier gives full-resolution logits.

Written here because neither torchvision nor segmentation_models_pytorch has SegNet. Max pooling and unpooling are
local, so the output does not depend on the engine's tile size (for tiles at multiples of 32 px). Input H and W must
be multiples of 32.

ONNX: PyTorch's ONNX exporter (the TorchScript one the project uses, opset 17) has no rule for ``max_unpool2d``, so
:func:`unpool` does the same thing with a scatter: every value goes to the flat position its pooling index names,
zeros elsewhere (``nn.MaxUnpool2d``'s definition; a test checks they are equal). It exports as ``MaxPool`` with its
indices output and ``ScatterElements``, both run by ONNX Runtime with dynamic height and width.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNReLU

ENCODER_CONVS = (2, 2, 3, 3, 3)


def unpool(x: torch.Tensor, indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Max unpooling: (N, C, h, w) values and their max-pool ``indices`` (flat positions in each (H, W) plane) ->
    (N, C, H, W) shaped as ``like`` (the feature that was pooled), zeros where no maximum came from.
    Equal to ``nn.MaxUnpool2d``, written as a scatter so that it exports to ONNX."""
    flat = torch.zeros_like(like).flatten(2)
    return flat.scatter(2, indices.flatten(2), x.flatten(2)).view_as(like)


def _stage(in_ch: int, out_ch: int, n: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(in_ch, out_ch), *(ConvBNReLU(out_ch, out_ch) for _ in range(n - 1)))


class SegNet(nn.Module):
    """(N, in_channels, H, W) float -> (N, classes, H, W) logits."""

    def __init__(self, in_channels: int = 3, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        if width < 2:
            raise ValueError(f"width must be >= 2, got {width}")
        ch = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        ins = [in_channels, *ch[:-1]]
        self.encoders = nn.ModuleList(_stage(i, o, n) for i, o, n in zip(ins, ch, ENCODER_CONVS, strict=True))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        # decoder stage k mirrors encoder stage k: its convolutions keep ch[k] and the last goes to ch[k-1]
        decoders = []
        for k in range(4, -1, -1):
            n, out = ENCODER_CONVS[k], (ch[k - 1] if k > 0 else ch[0])
            decoders.append(nn.Sequential(*(ConvBNReLU(ch[k], ch[k]) for _ in range(n - 1)),
                                          ConvBNReLU(ch[k], out)))
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []  # (feature before pooling, indices) per stage
        for enc in self.encoders:
            x = enc(x)
            x, idx = self.pool(before := x)
            pooled.append((before, idx))
        for dec in self.decoders:
            before, idx = pooled.pop()
            x = dec(unpool(x, idx, before))
        return self.head(x)


def build_segnet(in_channels: int, classes: int, width: int = 64) -> SegNet:
    """Registry builder for ``segnet``."""
    return SegNet(in_channels, classes, width)
