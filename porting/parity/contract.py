"""The parity contract: which tier applies, and the rules every family's tolerance table is built from.

* **strict** -- the golden was captured on a machine with this machine's numerics fingerprint
  (``porting.parity.fingerprint``): every stage within 1e-5 absolute (integer-exact stages bitwise).
* **portable** -- it was not: integer-exact stages stay bitwise; FFT/BLAS-dependent stages are held to a
  derived error model (``porting.dsp.errormodel``); exact elementwise steps fed golden inputs stay at 1e-5.

Which rule holds a stage in each tier is its family's table (``Family.tolerances``: e.g.
``porting.families.orcahello.contract``), built from the rules below; one comparison engine applies them.

In both tiers: probabilities and confidences within 1e-5 absolute, decisions exact, and logits by the
**row rule** ``|d| <= ATOL + RTOL * max_j |ref_j|`` over the window's logits.

Why the row rule and not Polygraphy's elementwise ``ATOL + RTOL * |ref|``: a logit is a dot product
whose float32 rounding scales with the magnitudes summed, not with the (possibly near-zero) result.
Softmax is shift-invariant and reads the whole row, so the row's largest logit is the natural scale;
it is a lower bound of the final layer's ``sum |w h| + |b|`` for that logit, so the rule is the stricter
of the two. Polygraphy's rule fails on rounding alone where one logit of a confident window is near 0
(-0.068760 vs -0.068746 beside a logit of 7.5, confidence 6e-8 off); the row rule does not, and still
fails a logit off by more than 1e-5 of the row's scale. Both statistics are reported (max abs, max rel,
ulps), and the gate on the probabilities, which is absolute, is unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ATOL = 1e-5  # the contract; never loosened
RTOL = 1e-5
STRICT, PORTABLE = "strict", "portable"
GOLDEN_INPUT = " (golden input)"

REGENERATE = ("for the strict tier on this machine, regenerate the goldens here: tools/regenerate_golden in "
              "your legacy venv, then pytest -m parity (reference/README.md)")


@dataclass(frozen=True)
class Tier:
    name: str  # STRICT | PORTABLE
    why: str  # the fingerprint comparison that decided it

    def line(self) -> str:
        return f"{self.name} tier ({self.why})"


def choose_tier(golden_fp: dict | None, running_fp: dict) -> Tier:
    """Strict when the golden's fingerprint matches this machine's, portable otherwise."""
    from .fingerprint import match

    if golden_fp is None:
        return Tier(PORTABLE, "the golden has no fingerprint")
    same, why = match(running_fp, golden_fp)
    return Tier(STRICT if same else PORTABLE, why)


@dataclass(frozen=True)
class Rule:
    """How one stage is gated: a name for reports, and the per-element tolerance it allows."""

    name: str
    tolerance: Callable[[np.ndarray, object], np.ndarray | float]  # (expected, the family's comparison context)


def _abs(expected, ctx):
    return ATOL


def _exact(expected, ctx):
    return 0.0


def _row(expected, ctx):
    e = np.abs(np.asarray(expected, dtype=np.float64))
    scale = e.max(axis=-1, keepdims=True) if e.ndim >= 1 and e.size else e
    return ATOL + RTOL * scale


def _map(expected, ctx):
    e = np.abs(np.asarray(expected, dtype=np.float64))
    if not e.size:
        return ATOL
    return ATOL + RTOL * e.reshape(e.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (e.ndim - 1))


def bounded(name: str, stage: str) -> "Rule":
    """A rule whose per-element tolerance is the family's derived error model of ``stage``: ``ctx.bounds(stage,
    expected)`` of the comparison context (``ATOL`` where a comparison has none, e.g. an export's probe)."""
    def tol(expected, ctx):
        return ctx.bounds(stage, expected) if ctx is not None else ATOL
    return Rule(name, tol)


EXACT = Rule("exact (bitwise)", _exact)
ABS = Rule(f"abs {ATOL:g}", _abs)
ROW = Rule(f"logits: |d| <= {ATOL:g} + {RTOL:g} * max|row|", _row)
# a feature map (a conv output feeding a pooling and a linear layer): its rounding scales with the magnitudes summed,
# so the row rule is taken over each window's whole map, not per element
MAP = Rule(f"feature map: |d| <= {ATOL:g} + {RTOL:g} * max|map|", _map)


def rule_for(stage: str, tier: str, family: str | None = None) -> Rule:
    """The rule of ``stage`` in ``tier``: the (strict, portable) pair of the family's table (its ``tolerances``;
    ``family`` is a name in ``porting.family``'s registry, None: the family whose records name none), ``ABS`` in
    both tiers where the family lists none (probabilities, confidences, aggregates)."""
    from .. import family as registry

    strict, portable = registry.named(family).tolerances(stage) or (ABS, ABS)
    return strict if tier == STRICT else portable
