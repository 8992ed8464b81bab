"""Exact savings from stage C's constant pad (issue 6; golden/README.md §3 "Crop/pad").

Every 2-s window fills only the first 157 of the model's 312 input frames; stage C appends the same
constant (0 dB, then normalized) for the other 155, in every window. In a conv net a feature-map column
whose receptive field lies wholly inside that pad is therefore the same for every window. ``fold_pad``
computes those columns once, from an all-pad input, and each batch then computes only the columns that
can see data, plus the few pad columns ("halo") their kernels read.

How: the model's leading conv / pool / pointwise layers, and the ResNet / SqueezeNet / xresnet blocks built
from them, are cut into segments. A segment runs on its first ``width`` input columns (the data-dependent
ones, then precomputed pad columns) and keeps its first ``keep`` output columns: exactly those whose
receptive field reaches data. The columns after them see the cut right edge and are dropped. The next
segment re-joins precomputed pad columns. From the first layer it cannot reason about (global pooling,
a linear layer, an unknown block) on, the network runs at full width.

Exactness: every kept value has the same receptive field and weights as in the full network, so only the
convolution's float summation order can change (the BLAS blocks a narrower map differently): measured
<= 1.9e-6 in logits against the full model, the same size as batching does (golden/README.md §6).
Segments are chosen to minimise multiply-accumulates plus a cost per join (a join copies a feature map).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import layers as L
from .graph import StageGraph

# Elementwise layers: column j of the output depends on column j of the input only.
_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.SiLU, nn.GELU,
              nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Identity)

# A join (re-attaching the pad columns between segments) costs about this many multiply-accumulates per
# feature-map element, because in onnxruntime a Concat also breaks its blocked-layout conv chain. Chosen
# from onnxruntime timings on 2 cores (batch 32): rn18 model stage 0.99 s full, 0.86 s at 100-400, 0.89 s
# at 2000, no gain at 0 (a join after every layer); sq11-norm 0.45 s full, ~0.25 s at 100-400. It only
# steers where segments are cut, never the numbers.
JOIN_COST = 400


class _Opaque(Exception):
    """A layer whose columns cannot be reasoned about one by one: the network runs at full width from it."""


def _time_axis(v) -> int:
    return v if isinstance(v, int) else v[-1]


def _window(op: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) along time for a sliding-window layer; None for an elementwise one."""
    if isinstance(op, _POINTWISE):
        return None
    if isinstance(op, nn.Conv2d) and op.dilation[1] == 1 and not isinstance(op.padding, str):
        return op.kernel_size[1], op.stride[1], op.padding[1]
    if isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)) and _time_axis(getattr(op, "dilation", 1)) == 1:
        k = _time_axis(op.kernel_size)
        return k, _time_axis(op.stride if op.stride is not None else k), _time_axis(op.padding)
    raise _Opaque(type(op).__name__)


def _branches(op: nn.Module) -> tuple[list[nn.Module], list[list[nn.Module]]] | None:
    """(trunk, parallel branches) of a block whose output column j mixes its branches' column j."""
    if isinstance(op, nn.Sequential):
        return list(op), []
    if isinstance(op, L.BasicBlock):
        main = [op.conv1, op.bn1, op.relu, op.conv2, op.bn2]
    elif isinstance(op, L.Bottleneck):
        main = [op.conv1, op.bn1, op.relu, op.conv2, op.bn2, op.relu, op.conv3, op.bn3]
    elif isinstance(op, L.ResBlock):
        main = [op.convpath]
    elif isinstance(op, L.Fire):
        return [op.squeeze, op.squeeze_activation], [[op.expand1x1], [op.expand3x3]]
    else:
        return None
    down = op._child("downsample") if not isinstance(op, L.ResBlock) else op.idpath
    return [], [main, [down] if down is not None else []]


def columns(op: nn.Module, n: int) -> int:
    """How many leading output columns of ``op`` can see data, when its first ``n`` input columns can."""
    parts = _branches(op)
    if parts is not None:
        trunk, branches = parts
        for sub in trunk:
            n = columns(sub, n)
        return max(_seq_columns(b, n) for b in branches) if branches else n
    win = _window(op)
    if win is None:
        return n
    k, s, p = win
    return (n - 1 + p) // s + 1  # output j reads inputs j*s-p .. j*s-p+k-1


def needed(op: nn.Module, n: int) -> int:
    """How many leading input columns ``op`` reads to compute its first ``n`` output columns."""
    parts = _branches(op)
    if parts is not None:
        trunk, branches = parts
        if branches:
            n = max(_seq_needed(b, n) for b in branches)
        return _seq_needed(trunk, n)
    win = _window(op)
    if win is None:
        return n
    k, s, p = win
    return (n - 1) * s - p + k


def _seq_columns(ops: list[nn.Module], n: int) -> int:
    for op in ops:
        n = columns(op, n)
    return n


def _seq_needed(ops: list[nn.Module], n: int) -> int:
    for op in reversed(ops):
        n = needed(op, n)
    return n


def _flatten(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _flatten(child)]
    return [model]


@dataclass(frozen=True)
class _Op:
    module: nn.Module
    n_out: int  # data-dependent output columns
    width_in: int  # full input width
    macs: int  # multiply-accumulates of one full-width window
    elements: int  # elements of one window's full-width output


def _analyse(ops: list[nn.Module], x: Tensor, n: int) -> tuple[list[_Op], list[Tensor]]:
    """Run the all-pad input through the foldable prefix of ``ops``; returns its facts and pad maps."""
    facts, maps = [], []
    for op in ops:
        try:
            n_out = columns(op, n)  # visits the same layers ``needed`` does, so it finds any opaque one
        except _Opaque:
            break
        macs = [0]

        def count(mod, inp, out):
            macs[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

        hooks = [m.register_forward_hook(count) for m in op.modules() if isinstance(m, nn.Conv2d)]
        try:
            y = op(x.clone())
        finally:
            for h in hooks:
                h.remove()
        facts.append(_Op(op, n_out, x.shape[-1], macs[0], y.numel()))
        maps.append(y)
        x, n = y, n_out
    return facts, maps


def _width(facts: list[_Op], a: int, b: int) -> int:
    """Input columns the segment of layers ``a..b-1`` reads to compute its kept (data-dependent) columns."""
    return min(facts[a].width_in, _seq_needed([f.module for f in facts[a:b]], facts[b - 1].n_out))


def _plan(facts: list[_Op], n_data: int) -> list[int]:
    """Segment ends (op indices, exclusive) minimising MACs + joins; [] when folding saves nothing."""
    total = sum(f.macs for f in facts)
    best = {0: (0.0, [])}
    for b in range(1, len(facts) + 1):
        options = []
        for a, (cost, ends) in best.items():
            n_in = n_data if a == 0 else facts[a - 1].n_out
            width = _width(facts, a, b)
            share = width / facts[a].width_in
            join = JOIN_COST * (facts[a - 1].elements if a else 0) if width > n_in else 0
            options.append((cost + join + share * sum(f.macs for f in facts[a:b]), ends + [b]))
        best[b] = min(options, key=lambda o: o[0])
    def finish(b: int) -> float:  # layers after the last segment run at full width, after one join
        return best[b][0] + sum(f.macs for f in facts[b:]) + JOIN_COST * facts[b - 1].elements

    if not facts:
        return []
    b = min(range(1, len(facts) + 1), key=finish)
    return best[b][1] if finish(b) < total else []


class PadFolded(nn.Module):
    """``model(x)`` for model inputs ``[B, C, F, frames]`` whose frames from ``n_data`` on are stage C's
    pad (every 2-s window): only the first ``n_data`` frames are read, the pad is built in."""

    def __init__(self, segments: list[nn.Module], widths: list[int], keeps: list[int], joins: list[Tensor],
                 tail: nn.Module, n_data: int):
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.widths, self.keeps, self.n_data = list(widths), list(keeps), int(n_data)
        for i, join in enumerate(joins):
            self.register_buffer(f"join{i}", join.contiguous())
        self.tail = tail

    def _join(self, i: int, y: Tensor) -> Tensor:
        pad = getattr(self, f"join{i}")
        return torch.cat([y, pad.expand(y.shape[0], -1, -1, -1)], -1) if pad.shape[-1] else y

    def forward(self, x: Tensor) -> Tensor:
        y = x[..., : self.n_data].contiguous()  # a copy: in-place layers never touch the caller's input
        for i, seg in enumerate(self.segments):
            y = seg(self._join(i, y))[..., : self.keeps[i]]
        return self.tail(self._join(len(self.segments), y))


@torch.no_grad()
def fold_pad(model: nn.Module, config: dict) -> PadFolded | None:
    """A ``PadFolded`` twin of ``model`` for the detector's windows, or None where nothing can be folded
    (a window longer than the model input, no analysable leading layers, or no saving)."""
    graph = StageGraph.from_config(config)
    fe = graph.frontend
    n_data, frames = fe.mel.n_frames(fe.windows.window_samples), fe.pad.frames
    if n_data >= frames:
        return None
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = graph.normalized(torch.full((1, 1, fe.mel.n_mels, frames), fe.pad.pad_value, device=device))
    ops = _flatten(model)
    facts, maps = _analyse(ops, x, n_data)
    ends = _plan(facts, n_data)
    if not ends:
        return None
    segments, widths, keeps, joins = [], [], [], []
    start, n_in, pad_in = 0, n_data, x
    for end in ends:
        keep, width = facts[end - 1].n_out, _width(facts, start, end)
        segments.append(nn.Sequential(*ops[start:end]))
        widths.append(width)
        keeps.append(keep)
        joins.append(pad_in[..., n_in:width].clone())
        start, n_in, pad_in = end, keep, maps[end - 1]
    joins.append(pad_in[..., n_in:].clone())
    return PadFolded(segments, widths, keeps, joins, nn.Sequential(*ops[start:]), n_data).eval()
