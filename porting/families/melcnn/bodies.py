"""The bodies a Hydra run names (``model.params.model_name``), rebuilt with the keys the framework saves.

* ``efficientnet_v2_s`` / ``_m`` / ``_l``: torchvision's ``EfficientNet`` layout (``features.<stage>.<block>.block.<i>``:
  FusedMBConv stages, then MBConv stages with squeeze-excitation, then a 1x1 conv to 1280) with Project-Echo's two
  changes: a 1-channel stem (``features.0.0.weight`` is ``[24, 1, 3, 3]``: upstream averages the RGB kernel) and no
  classifier (``head.*`` instead). **BatchNorm eps**: Project-Echo subclasses ``EfficientNet`` without a
  ``norm_layer``, so every BatchNorm is ``nn.BatchNorm2d``'s default, **1e-5**; torchvision's
  ``efficientnet_v2_s()`` builder passes ``eps=1e-3``. The eps is not in the checkpoint: it is recorded in the
  converted config (``bn_eps``) and the goldens catch a wrong one. Stochastic depth and dropout are identity in eval.
* ``panns_cnn14``: ``PannsCNN14ArcFace``: PANNs' CNN14 conv blocks under ``cnn.`` with ``conv1/bn1`` renamed
  ``seq1.0/seq1.1`` (``conv2/bn2`` -> ``seq2.0/seq2.1``), no torchlibrosa frontend and no ``bn0``, ``cnn.fc1`` and
  the framework's ``head``. Its input is the framework's ``[B, 1, n_mels, T]``, transposed relative to PANNs'
  ``[B, 1, T, n_mels]``, so its ``mean(dim=3)`` averages **time** and the max + mean run over **mel bins**.

Each body maps ``[B, 1, n_mels, T]`` -> (its last feature map, the embedding the head takes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (kind, expand ratio, kernel, stride, in, out, layers): torchvision.models.efficientnet._efficientnet_conf
EFFNET_V2 = {
    "efficientnet_v2_s": ((("fused", 1, 3, 1, 24, 24, 2), ("fused", 4, 3, 2, 24, 48, 4), ("fused", 4, 3, 2, 48, 64, 4),
                           ("mb", 4, 3, 2, 64, 128, 6), ("mb", 6, 3, 1, 128, 160, 9), ("mb", 6, 3, 2, 160, 256, 15)),
                          1280),
    "efficientnet_v2_m": ((("fused", 1, 3, 1, 24, 24, 3), ("fused", 4, 3, 2, 24, 48, 5), ("fused", 4, 3, 2, 48, 80, 5),
                           ("mb", 4, 3, 2, 80, 160, 7), ("mb", 6, 3, 1, 160, 176, 14), ("mb", 6, 3, 2, 176, 304, 18),
                           ("mb", 6, 3, 1, 304, 512, 5)), 1280),
    "efficientnet_v2_l": ((("fused", 1, 3, 1, 32, 32, 4), ("fused", 4, 3, 2, 32, 64, 7), ("fused", 4, 3, 2, 64, 96, 7),
                           ("mb", 4, 3, 2, 96, 192, 10), ("mb", 6, 3, 1, 192, 224, 19), ("mb", 6, 3, 2, 224, 384, 25),
                           ("mb", 6, 3, 1, 384, 640, 7)), 1280),
}
CNN14 = "panns_cnn14"
BODIES = (*EFFNET_V2, CNN14)
CNN14_WIDTHS = (64, 128, 256, 512, 1024, 2048)


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of 8, never more than 10% down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvNormAct(nn.Sequential):
    """torchvision's ``Conv2dNormActivation``: conv (no bias), BatchNorm, optional SiLU: keys ``0.*``, ``1.*``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True,
                 eps: float = 1e-5):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
        super().__init__(*layers, *([nn.SiLU()] if act else []))


class SqueezeExcitation(nn.Module):
    """torchvision's: avg pool -> ``fc1`` (1x1 conv, bias) -> SiLU -> ``fc2`` -> sigmoid -> scale the input."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return torch.sigmoid(self.fc2(F.silu(self.fc1(s)))) * x


class MBlock(nn.Module):
    """FusedMBConv / MBConv: ``block`` then the residual when the shape is kept (stochastic depth: eval identity)."""

    def __init__(self, kind: str, expand: int, k: int, stride: int, cin: int, cout: int, eps: float):
        super().__init__()
        exp = _divisible(cin * expand)
        layers: list[nn.Module] = []
        if kind == "fused":
            if exp != cin:
                layers += [ConvNormAct(cin, exp, k, stride, eps=eps), ConvNormAct(exp, cout, 1, act=False, eps=eps)]
            else:
                layers += [ConvNormAct(cin, cout, k, stride, eps=eps)]
        else:
            if exp != cin:
                layers.append(ConvNormAct(cin, exp, 1, eps=eps))
            layers += [ConvNormAct(exp, exp, k, stride, groups=exp, eps=eps),
                       SqueezeExcitation(exp, max(1, cin // 4)),  # squeeze from the block's input width (torchvision)
                       ConvNormAct(exp, cout, 1, act=False, eps=eps)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return y + x if self.residual else y


class EfficientNetV2(nn.Module):
    """``features`` (stem, stages, head conv) -> global average -> the embedding (``[B, 1280]``)."""

    def __init__(self, name: str, eps: float = 1e-5, in_channels: int = 1):
        super().__init__()
        stages, last = EFFNET_V2[name]
        layers: list[nn.Module] = [ConvNormAct(in_channels, stages[0][4], 3, 2, eps=eps)]
        for kind, expand, k, stride, cin, cout, n in stages:
            layers.append(nn.Sequential(*[MBlock(kind, expand, k, stride if i == 0 else 1, cin if i == 0 else cout,
                                                 cout, eps) for i in range(n)]))
        layers.append(ConvNormAct(stages[-1][5], last, 1, eps=eps))
        self.features = nn.Sequential(*layers)
        self.width = last

    def forward(self, x):
        feats = self.features(x)
        return feats, torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1)


class _Cnn14Block(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.seq1 = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout, eps=eps), nn.ReLU())
        self.seq2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout, eps=eps), nn.ReLU())


class _Cnn14(nn.Module):
    def __init__(self, eps: float):
        super().__init__()
        cin = 1
        for i, w in enumerate(CNN14_WIDTHS, 1):
            self.add_module(f"conv_block{i}", _Cnn14Block(cin, w, eps))
            cin = w
        self.fc1 = nn.Linear(2048, 2048)


class Cnn14(nn.Module):
    """``cnn.conv_block1..6`` (2x2 average pools after blocks 1-5, none after 6) -> mean over the last axis, max +
    mean over the other -> ReLU(``cnn.fc1``) (dropout: eval identity; ``fc_audioset`` is an Identity upstream)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.cnn = _Cnn14(eps)
        self.width = 2048

    def forward(self, x):
        for i in range(1, 7):
            block = getattr(self.cnn, f"conv_block{i}")
            x = block.seq2(block.seq1(x))
            if i < 6:
                x = F.avg_pool2d(x, 2)
        feats = x
        x = torch.mean(x, dim=3)
        x = torch.amax(x, dim=2) + torch.mean(x, dim=2)
        return feats, F.relu(self.cnn.fc1(x))


def make_body(name: str, eps: float = 1e-5) -> nn.Module:
    return Cnn14(eps) if name == CNN14 else EfficientNetV2(name, eps)


def min_frames(name: str) -> int:
    """The smallest ``n_mels`` / frame count the body takes: CNN14 pools five times by 2 (32); EfficientNetV2's
    strided convs pad, so any size of at least 1 runs (``1`` here; the frontend's own minimum applies)."""
    return 32 if name == CNN14 else 1
