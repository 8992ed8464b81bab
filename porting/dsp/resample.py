"""``scipy.signal.resample_poly(x, up, down, axis=-1)`` on float32 with scipy's defaults, bitwise, in numpy alone.

Why not scipy itself: ``import scipy.signal`` costs 1.1-1.7 s on a 2-core machine even with numpy and torch
already imported (it pulls in scipy.stats, scipy.linalg, scipy.special, ...), more than detecting a minute of
audio; its private pieces (``_upfirdn_apply``, ``windows``) cannot be reached without running
``scipy/signal/__init__.py``. The legacy flow called ``resample_poly`` with the defaults (Kaiser window,
beta 5, padtype 'constant', cval 0) on float32 input (golden/README.md §3 "Resample"); this module computes
the same bits (tests/test_frontend_a.py holds it against scipy on many rate pairs and against the goldens).

How the bits stay the same:

* The filter is ``firwin(20 * max_rate + 1, 1 / max_rate, window=('kaiser', 5.0))``: the same float64 numpy
  operations in the same order (``np.sinc``, the Kaiser window ``I0(beta * sqrt(1 - ((n - a) / a) ** 2)) /
  I0(beta)``, the pairwise ``np.sum`` for the DC gain). ``I0`` is evaluated as Cephes evaluates it (what
  ``scipy.special.i0`` runs): ``exp(x) * chbevl(x / 2 - 2, A, 30)`` for ``0 <= x <= 8``, the Chebyshev
  recurrence in float64 and ``exp`` from the C library (``math.exp``). ``np.i0`` is not a substitute: its
  SIMD ``exp`` differs from libm's in the last bit on ~4 % of arguments in [0, 5] (measured, AVX512). Then, as scipy does, the
  filter is cast to float32 and multiplied by ``up`` in float32, and zero-padded to centre the output.
* The polyphase filter (scipy's ``upfirdn``) computes each output as a float32 sum started at +0.0 and
  accumulated in order of ascending input index, one rounded product ``x[j] * h[k]`` then one rounded add
  per term (no fused multiply-add). Here the outputs of one polyphase class (same taps) are accumulated
  together, term by term in that same order, so every output sees the same sequence of roundings. Terms
  scipy skips at the edges appear here as products with zero padding: adding +-0.0 changes no sum (the
  sum starts at +0.0, so it is never -0.0), and non-finite inputs meet the same zero taps as in scipy.
  (scipy's x86-64 wheels compile that loop without FMA, as the legacy's did; a build that contracted it into
  FMA would change scipy's bits, not these.)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

BETA = 5.0  # resample_poly's default window ('kaiser', 5.0)

# Chebyshev coefficients of exp(-x) I0(x) on [0, 8] (Cephes, i0.c: the table scipy.special.i0 evaluates).
_I0_A = (
    -4.41534164647933937950e-18, 3.33079451882223809783e-17, -2.43127984654795469359e-16,
    1.71539128555513303061e-15, -1.16853328779934516808e-14, 7.67618549860493561688e-14,
    -4.85644678311192946090e-13, 2.95505266312963983461e-12, -1.72682629144155570723e-11,
    9.67580903537323691224e-11, -5.18979560163526290666e-10, 2.65982372468238665035e-9,
    -1.30002500998624804212e-8, 6.04699502254191894932e-8, -2.67079385394061173391e-7,
    1.11738753912010371815e-6, -4.41673835845875056359e-6, 1.64484480707288970893e-5,
    -5.75419501008210370398e-5, 1.88502885095841655729e-4, -5.76375574538582365885e-4,
    1.63947561694133579842e-3, -4.32430999505057594430e-3, 1.05464603945949983183e-2,
    -2.37374148058994688156e-2, 4.93052842396707084878e-2, -9.49010970480476444210e-2,
    1.71620901522208775349e-1, -3.04682672343198398683e-1, 6.76795274409476084995e-1,
)

# Above this many polyphase classes the per-class loop is Python-bound (an odd rate such as 44101 Hz has
# up = 20000 classes of two outputs each); the gathered loop runs H steps over every output at once.
_MAX_CLASSES = 1000
# Elements per accumulator block (128 KiB): measured 0.050 -> 0.028 s for 32 windows at 48 kHz on 1 thread
# (scipy: 0.034 s), 0.094 -> 0.059 s at 96 kHz.
_BLOCK = 1 << 15


def i0(x: np.ndarray) -> np.ndarray:
    """Modified Bessel function I0 on ``0 <= x <= 8``, float64, bitwise ``scipy.special.i0`` there."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and not (np.min(x) >= 0.0 and np.max(x) <= 8.0):
        raise ValueError("i0 is only implemented on [0, 8] (the Kaiser window of beta <= 8 needs no more)")
    y = x / 2.0 - 2.0
    b0, b1, b2 = np.full_like(y, _I0_A[0]), np.zeros_like(y), np.zeros_like(y)
    for c in _I0_A[1:]:
        b2 = b1
        b1 = b0
        b0 = y * b1 - b2 + c
    e = np.fromiter((math.exp(v) for v in x.ravel().tolist()), dtype=np.float64, count=x.size).reshape(x.shape)
    return e * (0.5 * (b0 - b2))


@lru_cache(maxsize=16)
def lowpass(max_rate: int) -> np.ndarray:
    """float64 taps of ``scipy.signal.firwin(20 * max_rate + 1, 1 / max_rate, window=('kaiser', 5.0))``.

    The filter ``resample_poly`` designs for ``max(up, down) == max_rate`` (cutoff relative to Nyquist).
    Read-only: it is cached.
    """
    numtaps = 2 * (10 * max_rate) + 1
    right = np.float64(1.0 / max_rate)  # firwin's band [0, cutoff / nyq] with nyq = 1.0
    alpha = 0.5 * (numtaps - 1)
    m = np.arange(0, numtaps, dtype=np.float64) - alpha
    h = 0 + right * np.sinc(right * m)  # firwin starts from h = 0 and adds the band's right edge
    h -= np.float64(0.0) * np.sinc(np.float64(0.0) * m)  # the band's left edge (0): firwin subtracts it too
    a = (numtaps - 1) / 2.0  # kaiser(numtaps, beta, sym=True)
    n = np.arange(0, numtaps, dtype=np.float64)
    h *= i0(BETA * np.sqrt(1 - ((n - a) / a) ** 2.0)) / i0(np.asarray(BETA, dtype=np.float64))
    h /= np.sum(h)  # firwin's scale at DC: sum(h * cos(0 * m)) and cos(0) == 1 exactly
    h.flags.writeable = False
    return h


def output_len(len_h: int, n_in: int, up: int, down: int) -> int:
    """Length of scipy's ``upfirdn`` output: ``ceil(((n_in - 1) * up + len_h) / down)``."""
    return ((n_in - 1) * up + len_h - 1) // down + 1


@lru_cache(maxsize=16)
def _plan(n_in: int, up: int, down: int) -> tuple[np.ndarray, int, int]:
    """(taps float32 zero-padded to a multiple of ``up``, n_out, first kept upfirdn output), as resample_poly."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = lowpass(max_rate).astype(np.float32)
    h *= np.float32(up)
    n_out = n_in * up
    n_out = n_out // down + bool(n_out % down)
    n_pre_pad = down - half_len % down
    n_post_pad = 0
    n_pre_remove = (half_len + n_pre_pad) // down
    while output_len(len(h) + n_pre_pad + n_post_pad, n_in, up, down) < n_out + n_pre_remove:
        n_post_pad += 1
    taps = n_pre_pad + len(h) + n_post_pad
    hz = np.zeros(-(-taps // up) * up, dtype=np.float32)  # upfirdn pads to whole phases with zeros as well
    hz[n_pre_pad : n_pre_pad + len(h)] = h
    hz.flags.writeable = False
    return hz, n_out, n_pre_remove


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, axis=-1)`` for float32 ``x`` [..., N]; float32 [..., n_out]."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"resample_poly here takes float32 input (the legacy's dtype), got {x.dtype}")
    if int(up) != up or int(down) != down or up < 1 or down < 1:
        raise ValueError(f"up and down must be integers >= 1, got {up!r}, {down!r}")
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    if up == down == 1:
        return x.copy()
    lead, n_in = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, n_in)
    hz, n_out, first = _plan(n_in, up, down)
    apply = _by_class if min(up, n_out) <= _MAX_CLASSES else _gathered
    with np.errstate(all="ignore"):  # inf * 0 and the like: NaN as in scipy, which does not warn
        y = apply(x2, hz, up, down, n_out, first)
    return y.reshape(*lead, n_out)


def _by_class(x: np.ndarray, hz: np.ndarray, up: int, down: int, n_out: int, first: int) -> np.ndarray:
    """Outputs ``q = c + s*up`` share their taps; their inputs are a stride-``down`` run of ``x``.

    ``y[q] = sum over m = H-1 .. 0 of x[base + s*down - m] * hz[m*up + phase]`` (ascending input index),
    with ``base, phase = divmod((c + first) * down, up)``. ``x`` is zero-padded and split into its ``down``
    residues so that every term is one contiguous slice.
    """
    rows, n_in = x.shape
    h_per_phase = len(hz) // up
    pad = h_per_phase
    last = (min(up, n_out) - 1 + first) * down // up + ((n_out - 1) // up) * down  # largest input index read
    cols = -(-(pad + max(n_in, last + 1)) // down) * down
    xz = np.zeros((rows, cols), dtype=np.float32)
    xz[:, pad : pad + n_in] = x
    residues = np.ascontiguousarray(xz.reshape(rows, cols // down, down).transpose(0, 2, 1))  # [rows, down, S]
    out = np.empty((rows, n_out), dtype=np.float32)
    for c in range(min(up, n_out)):
        n_c = (n_out - 1 - c) // up + 1
        base, phase = divmod((c + first) * down, up)
        step = max(1, _BLOCK // n_c)  # rows per block: the accumulator stays in cache across the H steps
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            acc = np.zeros((r1 - r0, n_c), dtype=np.float32)
            term = np.empty_like(acc)
            for m in range(h_per_phase - 1, -1, -1):
                k, r = divmod(base - m + pad, down)
                np.multiply(residues[r0:r1, r, k : k + n_c], hz[m * up + phase], out=term)
                np.add(acc, term, out=acc)
            out[r0:r1, c::up] = acc
    return out


def _gathered(x: np.ndarray, hz: np.ndarray, up: int, down: int, n_out: int, first: int) -> np.ndarray:
    """The same sums, one step per tap position over all outputs (each output's input and tap gathered)."""
    rows, n_in = x.shape
    h_per_phase = len(hz) // up
    pad = h_per_phase
    y = (np.arange(n_out, dtype=np.int64) + first) * down
    base, phase = np.divmod(y, up)
    xz = np.zeros((rows, pad + n_in + 1), dtype=np.float32)  # the last column stays 0: every index past the end
    xz[:, pad : pad + n_in] = x
    acc = np.zeros((rows, n_out), dtype=np.float32)
    term = np.empty_like(acc)
    for m in range(h_per_phase - 1, -1, -1):
        idx = np.minimum(base - m + pad, pad + n_in)
        np.multiply(xz[:, idx], hz[m * up + phase], out=term)
        np.add(acc, term, out=acc)
    return acc
