"""Exact fast convolutions for the CNN bodies porting rebuilds: Winograd minimal filtering F(m, 3) (issue 14).

A 3x3, stride-1 convolution computes each ``m x m`` output tile from an ``n x n`` input tile (``n = m + 2``) as
``Y = A^T [ U . V ] A`` with ``U = G g G^T`` (the weights, transformed once at load) and ``V = B^T d B`` (the
input tile): ``n^2`` multiplications per tile and channel pair instead of ``9 m^2`` -- 2.25x fewer for F(2,3),
4x for F(4,3). Summed over input channels, the ``n^2`` element-wise products are ``n^2`` independent GEMMs
(tiles x C) @ (C x K), one per tile position. It is the same linear map as the direct convolution, so only float
rounding changes: the transforms add a few roundings per element (F(2,3): ~1x, F(4,3): ~3x the direct conv's
error, measured per layer and whole-model in tests/test_winograd.py and tools/bench), far inside the parity
contract (logits ~1e-6 against 1e-5), and the backend is verified against the goldens like any other. Which layers
take it, and which tile size, is ``choose`` (a per-layer cost model from measured timings).

The transform matrices come from the Cook-Toom construction on the interpolation points below (``matrices``),
in exact rational arithmetic: ``A^T = V_m^T``, ``G = V_3``, ``B^T = V_n^{-T}`` with ``V_k`` the ``n x k``
evaluation matrix of the points (plus the point at infinity). F(4,3) uses (0, +-1, 1/2, -2): the issue's
prototype measured ~3x less error per layer than (0, +-1, +-2) at the same cost (1/2 and -2 are exact in binary).
Each row of ``B^T`` is scaled to small integers and ``G`` takes the inverse scale (``G`` meets only the weights,
in float64).

Two implementations of the same arithmetic: ``porting/families/orcahello/_winograd.c`` (tile transforms vectorized over channels in
NHWC, bias / residual / ReLU fused into the output transform; built at install when a C compiler is there) and
the pure-torch ``winograd_conv2d_torch`` (any layout). The C path runs the per-position GEMMs in C on AVX-512 and
with ``torch.bmm`` elsewhere; the torch path always with ``torch.bmm``. Every one of these paths is forced and
checked on every machine (``use_isa``, tests/test_winograd.py), not only the one the CPU would pick.
"""

from __future__ import annotations

import copy
import ctypes
import math
import threading
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import layers as L

NAME = "winograd"  # the backend's name: ``port detect --backend``, parity.json's entry

#: Interpolation points of F(m, 3), plus the point at infinity.
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, Fraction(1, 2), -2)}
R = 3  # kernel size


def _vandermonde(points, k: int) -> list[list[Fraction]]:
    """``len(points) + 1`` rows: ``[p^0 .. p^(k-1)]`` per point, then the point at infinity ``[0 .. 0, 1]``."""
    rows = [[Fraction(p) ** j for j in range(k)] for p in points]
    return rows + [[Fraction(0)] * (k - 1) + [Fraction(1)]]


def _inverse(a: list[list[Fraction]]) -> list[list[Fraction]]:
    n = len(a)
    m = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for c in range(n):
        p = next(r for r in range(c, n) if m[r][c] != 0)
        m[c], m[p] = m[p], m[c]
        piv = m[c][c]
        m[c] = [v / piv for v in m[c]]
        for r in range(n):
            if r != c and m[r][c] != 0:
                f = m[r][c]
                m[r] = [v - f * w for v, w in zip(m[r], m[c])]
    return [row[n:] for row in m]


@lru_cache(maxsize=None)
def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T [m, n], G [n, 3], B^T [n, n])`` of F(m, 3) as float64 (every entry is exact in binary)."""
    pts = POINTS[m]
    n = m + R - 1
    at = [list(col) for col in zip(*_vandermonde(pts, m))]  # V_m^T
    g = _vandermonde(pts, R)
    bt = [list(col) for col in zip(*_inverse(_vandermonde(pts, n)))]  # V_n^{-T}
    for j, row in enumerate(bt):  # row j of B^T to coprime integers; G's row j takes the inverse scale
        den = math.lcm(*(v.denominator for v in row))
        num = math.gcd(*(int(v * den) for v in row))
        s = Fraction(den, num)
        bt[j] = [v * s for v in row]
        g[j] = [v / s for v in g[j]]
    as_np = lambda rows: np.array([[float(v) for v in row] for row in rows], dtype=np.float64)  # noqa: E731
    return as_np(at), as_np(g), as_np(bt)


def transform_weight(weight: Tensor, m: int) -> Tensor:
    """``[K, C, 3, 3]`` -> ``U [n*n, C, K]`` float32: ``G g G^T`` per (k, c), in float64, rounded once."""
    _, g, _ = matrices(m)
    g = torch.from_numpy(g)
    u = g @ weight.detach().double().cpu() @ g.T  # [K, C, n, n]
    n = g.shape[0]
    return u.permute(2, 3, 1, 0).reshape(n * n, weight.shape[1], weight.shape[0]).float().contiguous()


def winograd_conv2d_torch(x: Tensor, u: Tensor, m: int, bias: Tensor | None = None, residual: Tensor | None = None,
                          relu: bool = False) -> Tensor:
    """3x3, stride 1, padding 1 convolution of ``x [N, C, H, W]`` with transformed weights ``u`` (torch ops only),
    then ``+ bias``, ``+ residual``, ReLU: the reference and the fallback of the C kernel."""
    at, _, bt = (torch.from_numpy(a).to(x.device, torch.float32) for a in matrices(m))
    n = m + R - 1
    nb, c, h, w = x.shape
    th, tw = -(-h // m), -(-w // m)
    xp = F.pad(x, (1, tw * m + 1 - w, 1, th * m + 1 - h))
    d = xp.unfold(2, n, m).unfold(3, n, m)  # [N, C, th, tw, n, n]
    v = bt @ d @ bt.T
    v = v.permute(4, 5, 0, 2, 3, 1).reshape(n * n, nb * th * tw, c)
    mm = torch.bmm(v, u)  # [n*n, T, K]
    k = u.shape[-1]
    mm = mm.reshape(n, n, nb, th, tw, k).permute(2, 5, 3, 4, 0, 1)  # [N, K, th, tw, n, n]
    y = at @ mm @ at.T  # [N, K, th, tw, m, m]
    y = y.permute(0, 1, 2, 4, 3, 5).reshape(nb, k, th * m, tw * m)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y.contiguous()


# ----------------------------------------------------------------------------------------------- C kernel

_LIB: ctypes.CDLL | None | bool = False  # False: not looked for yet
ABI = 2  # porting/families/orcahello/_winograd.c's wino_abi(): a stale build of another layout is not loaded

#: The kernel's ISA variants by code (porting/families/orcahello/_winograd.c): each is the same arithmetic, bit for bit.
ISAS = ("baseline", "avx2", "avx512f")  # baseline: the compiler's default target (x86-64: SSE2)


def kernel() -> ctypes.CDLL | None:
    """The compiled transforms (``porting/families/orcahello/_winograd.c``, built by ``pip install``), or None where they were not built."""
    global _LIB
    if _LIB is False:
        _LIB = None
        from importlib.util import find_spec

        try:
            spec = find_spec("porting.families.orcahello._winograd")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and not spec.origin.endswith(".py"):
            try:
                lib = ctypes.CDLL(spec.origin)
                i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
                lib.wino_input.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, cint]
                lib.wino_output.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, cint, cint]
                lib.wino_gemm.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, cint]
                lib.wino_input.restype = lib.wino_output.restype = lib.wino_gemm.restype = None
                lib.wino_isa_supported.argtypes = lib.wino_set_isa.argtypes = [cint]
                if lib.wino_abi() == ABI:
                    _LIB = lib
            except (OSError, AttributeError):
                _LIB = None
    return _LIB


def isas() -> list[str]:
    """The kernel's ISA variants this CPU can run (none without the kernel), widest last."""
    lib = kernel()
    return [name for code, name in enumerate(ISAS) if lib is not None and lib.wino_isa_supported(code)]


def isa() -> str | None:
    """The variant the kernel runs now: the widest this CPU has, unless ``use_isa`` chose another."""
    lib = kernel()
    return ISAS[lib.wino_isa()] if lib is not None else None


@contextmanager
def use_isa(name: str):
    """Run the kernel's ``name`` variant inside the block (``"avx2"`` on an AVX-512 CPU also takes the torch.bmm
    GEMMs): how the tests prove every compiled path on every machine rather than only the one CI lands on."""
    lib = kernel()
    if lib is None:
        raise RuntimeError("use_isa: the compiled winograd kernel is not built here")
    before = lib.wino_isa()
    if name not in ISAS or not lib.wino_set_isa(ISAS.index(name)):
        raise ValueError(f"use_isa: this CPU cannot run the {name!r} variant; it can run {isas()}")
    try:
        yield
    finally:
        lib.wino_set_isa(before)


def has_gemm() -> bool:
    """The compiled GEMMs run now (the AVX-512 variant); elsewhere the C path takes torch.bmm for them."""
    lib = kernel()
    return bool(lib is not None and lib.wino_has_gemm())


def _ptr(t: Tensor | None):
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> Tensor:
    """A reused buffer: the transformed tiles of one layer are dead once the next layer starts, and a fresh
    ~100 MB buffer per call costs its page faults (measured: half the time of a 64-channel layer).

    One per thread (two detectors in two threads must not share it), and always a normal tensor: one first
    allocated under ``torch.inference_mode()`` is an inference tensor, and the ``torch.bmm(..., out=)`` of the
    AVX2 path then fails in every later call made outside inference mode (issue 19: red on AVX2-only CPUs only,
    because the AVX-512 GEMM writes through a pointer and never met the check)."""
    numel = math.prod(shape)
    bufs = _SCRATCH.__dict__
    buf = bufs.get(name)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):
            buf = bufs[name] = torch.empty(numel)
    return buf[:numel].view(shape)


def pack_weight(u: Tensor) -> Tensor | None:
    """``U [n*n, C, K]`` -> ``[n*n, K/32, C * 32]``, the panels ``wino_gemm`` reads; None where K is not a multiple of 32."""
    p, c, k = u.shape  # kept 3-D: ``module.to(memory_format=channels_last)`` would re-lay a 4-D buffer
    return None if k % 32 else u.view(p, c, k // 32, 32).permute(0, 2, 1, 3).reshape(p, k // 32, c * 32).contiguous()


def winograd_conv2d_c(x: Tensor, u: Tensor, m: int, bias: Tensor | None = None, residual: Tensor | None = None,
                      relu: bool = False, packed: Tensor | None = None) -> Tensor:
    """As ``winograd_conv2d_torch``, with the tile transforms (and, on AVX-512 with ``packed`` weights, the GEMMs)
    in C on NHWC (channels_last) memory."""
    lib = kernel()
    n = m + R - 1
    nb, c, h, w = x.shape
    k = u.shape[-1]
    t = nb * -(-h // m) * -(-w // m)
    x = x.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    v = _scratch("v", (n * n, t, c))
    lib.wino_input(_ptr(x), _ptr(v), nb, h, w, c, m, threads)
    mm = _scratch("m", (n * n, t, k))
    if packed is not None and has_gemm():
        lib.wino_gemm(_ptr(v), _ptr(packed), _ptr(mm), n * n, t, c, k, threads)
    else:
        torch.bmm(v, u, out=mm)
    y = torch.empty(nb, k, h, w, memory_format=torch.channels_last)
    if residual is not None:
        residual = residual.contiguous(memory_format=torch.channels_last)
    lib.wino_output(_ptr(mm), _ptr(y), _ptr(bias), _ptr(residual), nb, h, w, k, m, int(relu), threads)
    return y


# ----------------------------------------------------------------------------------------------- modules


class FastConv2d(nn.Conv2d):
    """A convolution with its batch norm folded in, the block's residual and ReLU fused, and -- for 3x3 stride-1
    ones with ``m`` set -- Winograd F(m, 3). Still an ``nn.Conv2d`` (same weight shape, kernel, stride, padding),
    so ``porting.families.orcahello.padfold`` reasons about it as about the original layer."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, relu: bool, m: int | None, impl: str):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, True, conv.padding_mode)
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
        if bn is not None:  # eval-mode BN: y = (conv - mean) * gamma / sqrt(var + eps) + beta, folded in float64
            s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            w = w * s.view(-1, 1, 1, 1)
            b = (b - bn.running_mean.double()) * s + bn.bias.detach().double()
        with torch.no_grad():
            self.weight.copy_(w.float())
            self.bias.copy_(b.float())
        self.relu, self.m, self.impl = relu, m, impl
        if m is not None:
            if not winograd_able(conv):
                raise ValueError(f"FastConv2d: Winograd needs a 3x3, stride-1, padding-1, ungrouped conv, got {conv}")
            self.register_buffer("u", transform_weight(w, m))
            packed = pack_weight(self.u) if impl == "c" else None
            self.register_buffer("packed", packed if packed is not None else torch.empty(0))

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.m is not None:
            if self.impl == "c":
                return winograd_conv2d_c(x, self.u, self.m, self.bias, residual, self.relu,
                                         self.packed if self.packed.numel() else None)
            return winograd_conv2d_torch(x, self.u, self.m, self.bias, residual, self.relu)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y.add_(residual)  # in place: y is this call's own fresh output
        return torch.relu_(y) if self.relu else y

    def extra_repr(self) -> str:
        algo = f"winograd F({self.m},3) [{self.impl}]" if self.m is not None else "direct"
        return f"{super().extra_repr()}, {algo}, bn folded{', relu' if self.relu else ''}"


def winograd_able(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
            and tuple(conv.padding) == (1, 1) and tuple(conv.dilation) == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


# ----------------------------------------------------------------------------------------------- the model rewrite

#: Winograd from this many input channels on; direct below. Measured per layer (tools/bench --layers; batch 32, 2
#: threads, AMD Zen 5, AVX-512; direct = oneDNN channels_last at 420-470 GFLOP/s), ms direct / F(2,3) / F(4,3):
#: 64 ch 64x78 36-80 / 53-115 / 61-134; 128 ch 32x39 25 / 24-34 / 25-33; 256 ch 16x20 26-28 / 19-21 / 18-23;
#: 512 ch 8x10 24-56 / 15-33 / 19-26. Below 256 channels the tile transforms (memory-bound) cost more than the fewer
#: multiplications save.
MIN_CHANNELS = 256
#: F(2,3): as fast as F(4,3) where either pays (above), and more accurate: per-layer error against float64 0.6-1.5e-6
#: of max |y| (direct: 1.5-2.9e-6, F(4,3): 4.5-7.5e-6), because its transforms are exact (+-1, 1/2 in G) and its
#: GEMMs sum shorter dot products.
TILE = 2


def choose(conv: nn.Conv2d) -> int | None:
    """The Winograd tile size for ``conv`` (``TILE``), or None: direct. A function of the layer's shape only, so every
    machine computes the same algorithm (the numbers then differ only by rounding)."""
    return TILE if winograd_able(conv) and conv.in_channels >= MIN_CHANNELS else None


def implementation() -> str:
    """"c" where the compiled kernel is built, else "torch" (the same arithmetic in torch ops, slower)."""
    return "c" if kernel() is not None else "torch"


def _fast(conv: nn.Conv2d, bn: nn.Module | None, relu: bool, impl: str) -> FastConv2d:
    return FastConv2d(conv, bn if isinstance(bn, nn.BatchNorm2d) else None, relu, choose(conv), impl)


class FastBasicBlock(L.BasicBlock):
    """``BasicBlock`` with BN folded, the second conv's residual add and ReLU fused (same children names)."""

    def forward(self, x):
        down = self._child("downsample")
        identity = x if down is None else down(x)
        return self.conv2(self.conv1(x), residual=identity)


class FastBottleneck(L.Bottleneck):
    """``Bottleneck`` with BN folded, the last conv's residual add and ReLU fused."""

    def forward(self, x):
        down = self._child("downsample")
        identity = x if down is None else down(x)
        return self.conv3(self.conv2(self.conv1(x)), residual=identity)


def _relu(mod: nn.Module | None) -> bool:
    return isinstance(mod, nn.ReLU)


def _rewrite(module: nn.Module, impl: str) -> None:
    for name, child in list(module.named_children()):
        if type(child) is L.BasicBlock:
            new = FastBasicBlock()
            new.add_module("conv1", _fast(child.conv1, child.bn1, True, impl))
            new.add_module("bn1", nn.Identity())
            new.add_module("relu", nn.ReLU())
            new.add_module("conv2", _fast(child.conv2, child.bn2, True, impl))
            new.add_module("bn2", nn.Identity())
            if child._child("downsample") is not None:
                new.add_module("downsample", _rewritten(child.downsample, impl))
            setattr(module, name, new)
        elif type(child) is L.Bottleneck:
            new = FastBottleneck()
            for i in (1, 2, 3):  # every conv of a Bottleneck ends in ReLU (the last one after the residual add)
                new.add_module(f"conv{i}", _fast(getattr(child, f"conv{i}"), getattr(child, f"bn{i}"), True, impl))
                new.add_module(f"bn{i}", nn.Identity())
            new.add_module("relu", nn.ReLU())
            if child._child("downsample") is not None:
                new.add_module("downsample", _rewritten(child.downsample, impl))
            setattr(module, name, new)
        elif isinstance(child, L.Fire):
            for conv, act in (("squeeze", "squeeze_activation"), ("expand1x1", "expand1x1_activation"),
                              ("expand3x3", "expand3x3_activation")):
                relu = _relu(getattr(child, act))
                setattr(child, conv, _fast(getattr(child, conv), None, relu, impl))
                if relu:
                    setattr(child, act, nn.Identity())
        elif isinstance(child, nn.Sequential):
            _fold_sequential(child, impl)
            _rewrite(child, impl)
        elif not isinstance(child, FastConv2d):
            _rewrite(child, impl)


def _rewritten(mod: nn.Module, impl: str) -> nn.Module:
    out = copy.deepcopy(mod)
    if isinstance(out, nn.Sequential):
        _fold_sequential(out, impl)
    _rewrite(out, impl)
    return out


def _fold_sequential(seq: nn.Sequential, impl: str) -> None:
    """conv, BN[, ReLU] runs of a Sequential -> FastConv2d, Identity[, Identity] (positions kept for padfold)."""
    mods = list(seq)
    i = 0
    while i < len(mods):
        conv = mods[i]
        if type(conv) is nn.Conv2d:
            bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
            j = i + 1 + (bn is not None)
            relu = j < len(mods) and _relu(mods[j])
            seq[i] = _fast(conv, bn, relu, impl)
            for q in range(i + 1, j + relu):
                seq[q] = nn.Identity()
            i = j + relu
        else:
            i += 1


@torch.no_grad()
def winograd_model(model: nn.Module, impl: str | None = None) -> nn.Module:
    """A copy of ``model`` (eval) with BN folded into its convolutions, residual adds and ReLUs fused, Winograd
    where ``choose`` says it pays, channels_last; ``impl`` "c" | "torch" (default: ``implementation()``).
    Everything else (pooling, the head) is the original module."""
    out = copy.deepcopy(model).eval()
    _rewrite(out, impl or implementation())
    return out.to(memory_format=torch.channels_last)


def describe(model: nn.Module) -> tuple[str, list[str]]:
    """(runtime line, one line per convolution: direct or Winograd F(m,3)) for parity.json and the bench."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, FastConv2d)]
    impl = {m.impl for _, m in convs if m.m is not None}
    if "c" in impl:
        how = f"compiled transforms ({isa()}), " + ("AVX-512 GEMMs" if has_gemm() else "torch.bmm GEMMs")
    elif impl:
        how = "torch-op transforms (no compiled kernel), torch.bmm GEMMs"
    else:
        how = "no layer takes Winograd"
    rows = [f"{name}: {m.in_channels}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]} "
            + (f"winograd F({m.m},3)" if m.m is not None else "direct") for name, m in convs]
    n = sum(m.m is not None for _, m in convs)
    return (f"porting.families.orcahello.winograd ({n} of {len(convs)} convolutions Winograd F({TILE},3); {how}; torch {torch.__version__})",
            rows)
