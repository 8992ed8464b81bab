"""The PANNs bodies rebuilt in plain torch, with the upstream state-dict keys (reference/panns/README.md, section 2).

Each body maps the log-mel after ``bn0`` (``[B, 1, T, 64]``) to the last feature map ``[B, C, T', F']``; the head
(``head_pool``) is shared. The module trees mirror the upstream ones only so the checkpoint's keys load with
``strict=True`` (``nn.Sequential`` indices included, pools and activations taking their slots). Quirks kept:

* CNN14/10/6 blocks: conv -> BN -> ReLU (twice for 3x3 blocks), then ``avg_pool2d`` with floor mode; CNN14's sixth
  block pools by (1, 1), an identity. ``F.dropout`` between blocks is a no-op in eval and is left out.
* MobileNetV1/V2 downsample with an ``AvgPool2d(2)`` after a stride-1 conv, before the BN (not a strided conv), so
  a BN never directly follows the conv it could fold into; ``AvgPool2d(1)`` is an identity that still takes an index.
* MobileNetV2: ReLU6; a residual where the stride is 1 and the widths agree; expansion 1 skips the 1x1 expand conv.
* The head: mean over frequency, then max + mean over time, ReLU(fc1) -> the embedding, fc_audioset -> logits.
  MobileNetV2 upstream comments out the dropout before fc1; in eval every dropout is an identity anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convs (no bias) each followed by BN and ReLU, then average pooling by ``pool``."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return x if self.pool == (1, 1) else F.avg_pool2d(x, self.pool)


class ConvBlock5x5(nn.Module):
    """CNN6's block: one 5x5 conv (no bias), BN, ReLU, average pooling by 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.bn1(self.conv1(x))), (2, 2))


class ConvBody(nn.Module):
    """CNN14 / CNN10 / CNN6: ``conv_block1..n``."""

    def __init__(self, widths: tuple[int, ...], block=ConvBlock, last_pool: tuple[int, int] = (2, 2)):
        super().__init__()
        cin = 1
        for i, w in enumerate(widths, 1):
            last = i == len(widths)
            blk = block(cin, w) if block is ConvBlock5x5 else block(cin, w, last_pool if last else (2, 2))
            self.add_module(f"conv_block{i}", blk)
            cin = w
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.children():
            x = blk(x)
        return x


def _conv_bn(cin: int, cout: int, stride: int, act) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.AvgPool2d(stride), nn.BatchNorm2d(cout), act())


def _conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.AvgPool2d(stride),
                         nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


# MobileNetV1 (width 1.0): (output channels, pooling) of the 13 depthwise-separable blocks after the 32-channel stem.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
             (512, 1), (1024, 2), (1024, 1))
# MobileNetV2: (expansion t, channels c, repeats n, first pooling s), then a 1x1 conv to 1280.
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 2), (6, 160, 3, 1), (6, 320, 1, 1))


class MobileNetV1Body(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [_conv_bn(1, 32, 2, nn.ReLU)], 32
        for cout, s in V1_BLOCKS:
            layers.append(_conv_dw(cin, cout, s))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = round(cin * expand)
        self.residual = stride == 1 and cin == cout
        dw = [nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.AvgPool2d(stride),
              nn.BatchNorm2d(hidden), nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        expand_layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        self.conv = nn.Sequential(*expand_layers, *dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Body(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [_conv_bn(1, 32, 2, nn.ReLU6)], 32
        for t, c, n, s in V2_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.out_channels = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


#: body name -> (constructor, fc1 output width, poolings by 2: the body needs at least 2**poolings frames)
BODIES = {
    "Cnn14": (lambda: ConvBody((64, 128, 256, 512, 1024, 2048), last_pool=(1, 1)), 2048, 5),
    "Cnn10": (lambda: ConvBody((64, 128, 256, 512)), 512, 4),
    "Cnn6": (lambda: ConvBody((64, 128, 256, 512), block=ConvBlock5x5), 512, 4),
    "MobileNetV1": (MobileNetV1Body, 1024, 5),
    "MobileNetV2": (MobileNetV2Body, 1024, 5),
}


def body_of(keys) -> str | None:
    """The body whose keys these are (by the deepest key each has, and the absence of deeper ones); None if none."""
    keys = set(keys)
    if "conv_block6.conv2.weight" in keys:
        return "Cnn14"
    if "conv_block5.conv1.weight" in keys:
        return None  # five blocks: no published body
    if "conv_block4.conv2.weight" in keys:
        return "Cnn10"
    if "conv_block4.conv1.weight" in keys and "conv_block1.conv2.weight" not in keys:
        return "Cnn6"
    if "features.18.0.weight" in keys:
        return "MobileNetV2"
    if "features.13.4.weight" in keys and "features.14.0.weight" not in keys:
        return "MobileNetV1"
    return None


def head_pool(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T', F']`` -> ``[B, C]``: mean over frequency, then max + mean over time (PANNs' clip head)."""
    x = x.mean(dim=3)
    return x.amax(dim=2) + x.mean(dim=2)
