"""The bodies a Hydra run names (``model.params.model_name``), rebuilt with the keys the framework saves.

* ``efficientnet_v2_s`` / ``_m`` / ``_l``: torchvision's ``EfficientNet`` layout (``features.<stage>.<block>.block.<i>``:
  FusedMBConv stages, then MBConv stages with squeeze-excitation, then a 1x1 conv to 1280) with Project-Echo's two
  changes: a 1-channel stem (``features.0.0.weight`` is ``[24, 1, 3, 3]``: upstream averages the RGB kernel) and no
  classifier (``head.*`` instead). **BatchNorm eps**: Project-Echo subclasses ``EfficientNet`` without a
  ``norm_layer``, so every BatchNorm is ``nn.BatchNorm2d``'s default, **1e-5**; torchvision's
  ``efficientnet_v2_s()`` builder passes ``eps=1e-3``. The eps is not in the checkpoint: it is recorded in the
  converted config (``bn_eps``) and the goldens catch a wrong one. Stochastic depth and dropout are identity in eval.
* ``ghost_efficientnet_v2``: Project-Echo's own GhostEfficientNetV2 (its docs: "WIP"): the same six stages with
  GhostNet modules (a primary conv plus a cheap depthwise conv, concatenated), ECA channel attention instead of
  squeeze-excitation, LayerScale on the residual branch, ``width_mult`` / ``depth_mult`` from ``model.params``
  (the yaml's 1 / 1; the factory's defaults are 0.75 / 0.5).
* ``panns_cnn14``: ``PannsCNN14ArcFace``: PANNs' CNN14 conv blocks under ``cnn.`` with ``conv1/bn1`` renamed
  ``seq1.0/seq1.1`` (``conv2/bn2`` -> ``seq2.0/seq2.1``), no torchlibrosa frontend and no ``bn0``, ``cnn.fc1`` and
  the framework's ``head``. Its input is the framework's ``[B, 1, n_mels, T]``, transposed relative to PANNs'
  ``[B, 1, T, n_mels]``, so its ``mean(dim=3)`` averages **time** and the max + mean run over **mel bins**.

Each body maps ``[B, 1, n_mels, T]`` -> (its last feature map, the embedding the head takes).
"""

from __future__ import annotations

import math

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
GHOST = "ghost_efficientnet_v2"
BODIES = (*EFFNET_V2, GHOST, CNN14)
# Project-Echo's GhostEfficientNetV2 stages: (kind, expand ratio, channels, repeats, stride) before width/depth
GHOST_STAGES = (("fused", 1, 24, 2, 1), ("fused", 4, 48, 4, 2), ("fused", 4, 64, 4, 2), ("mb", 4, 128, 6, 2),
                ("mb", 6, 160, 9, 1), ("mb", 6, 256, 15, 2))
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


class GhostModule(nn.Module):
    """GhostNet's module: a primary conv to ``ceil(out / 2)`` channels, a cheap depthwise 3x3 making as many
    "ghost" channels from them, both BN (+ SiLU when ``act``), concatenated and cut to ``out``."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: bool = True, eps: float = 1e-5):
        super().__init__()
        self.out = cout
        init = math.ceil(cout / 2)
        tail = [nn.SiLU()] if act else [nn.Sequential()]  # upstream's empty Sequential keeps the key layout
        self.primary_conv = nn.Sequential(nn.Conv2d(cin, init, k, stride, k // 2, bias=False),
                                          nn.BatchNorm2d(init, eps=eps), *tail)
        self.cheap_operation = nn.Sequential(nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
                                             nn.BatchNorm2d(init, eps=eps), *([nn.SiLU()] if act else [nn.Sequential()]))

    def forward(self, x):
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, : self.out]


class ConvBnAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, 1, groups=groups, bias=False)
        self.batch_norm = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        return F.silu(self.batch_norm(self.conv(x)))


class ECA(nn.Module):
    """Efficient channel attention: a 1-D conv of odd width ``k = t or t + 1``, ``t = int(|log2(C) + 1| / 2)``, over
    the channels' means, sigmoid, scale."""

    def __init__(self, channels: int):
        super().__init__()
        t = int(abs((math.log(channels, 2) + 1) / 2))
        k = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


class _LayerScale(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))


class GhostBlock(nn.Module):
    """Project-Echo's Ghost (Fused)MBConv: ``conv`` then, when the shape is kept, ``x + gamma * conv(x)``
    (LayerScale; stochastic depth is eval identity). Blocks that change the shape skip their LayerScale, whose
    ``gamma`` is still in the checkpoint."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int, expand: int, eps: float):
        super().__init__()
        hidden = cin * expand  # no rounding to a multiple of 8 (unlike torchvision)
        layers: list[nn.Module] = []
        if kind == "fused":
            layers.append(GhostModule(cin, hidden, 3, stride, True, eps) if expand != 1
                          else ConvBnAct(cin, hidden, 3, stride, cin, eps))
        else:
            if expand != 1:
                layers.append(GhostModule(cin, hidden, 1, 1, True, eps))
            layers.append(ConvBnAct(hidden, hidden, 3, stride, hidden, eps))
        layers += [ECA(hidden), GhostModule(hidden, cout, 1, 1, False, eps)]
        self.conv = nn.Sequential(*layers)
        self.layerscale = _LayerScale(cout)
        self.residual = cin == cout and stride == 1

    def forward(self, x):
        y = self.conv(x)
        return x + y * self.layerscale.gamma if self.residual else y


class GhostEfficientNetV2(nn.Module):
    """Project-Echo's ``GhostEfficientNetV2``: ``backbone`` = stem, Ghost blocks, pool; the stem is also registered
    as ``stem``, so the checkpoint holds it twice (``stem.*`` and ``backbone.0.*``), as upstream's does."""

    def __init__(self, eps: float = 1e-5, width_mult: float = 1.0, depth_mult: float = 1.0):
        super().__init__()
        c = int(24 * width_mult)
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c, eps=eps), nn.SiLU())
        blocks: list[nn.Module] = [self.stem]
        for kind, expand, chans, repeats, stride in GHOST_STAGES:
            out = int(chans * width_mult)
            for i in range(int(math.ceil(repeats * depth_mult))):
                blocks.append(GhostBlock(kind, c, out, stride if i == 0 else 1, expand, eps))
                c = out
        self.backbone = nn.Sequential(*blocks)
        self.width = c

    def forward(self, x):
        feats = self.backbone(x)
        return feats, torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1)


def make_body(name: str, eps: float = 1e-5, params: dict | None = None) -> nn.Module:
    params = params or {}
    if name == CNN14:
        return Cnn14(eps)
    if name == GHOST:
        return GhostEfficientNetV2(eps, float(params.get("width_mult", 1.0)), float(params.get("depth_mult", 1.0)))
    return EfficientNetV2(name, eps)


def min_frames(name: str) -> int:
    """The smallest ``n_mels`` / frame count the body takes: CNN14 pools five times by 2 (32); EfficientNetV2's
    strided convs pad, so any size of at least 1 runs (``1`` here; the frontend's own minimum applies)."""
    return 32 if name == CNN14 else 1
