"""The parity contract: which tier applies, and the one tolerance table every check uses.

* **strict** -- the golden was captured on a machine with this machine's numerics fingerprint
  (``porting.parity.fingerprint``): every stage within 1e-5 absolute (``A.*`` bitwise).
* **portable** -- it was not: ``A.*`` stays bitwise (integer-exact resampling and PCM round trips, equal
  on every CPU measured); the FFT-dependent stages are held to the derived error model of
  ``porting.parity.errormodel``; exact elementwise steps fed golden inputs stay at 1e-5.

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
    tolerance: Callable[[np.ndarray, "Context"], np.ndarray | float]


def _abs(expected, ctx):
    return ATOL


def _exact(expected, ctx):
    return 0.0


def _row(expected, ctx):
    e = np.abs(np.asarray(expected, dtype=np.float64))
    scale = e.max(axis=-1, keepdims=True) if e.ndim >= 1 and e.size else e
    return ATOL + RTOL * scale


EXACT = Rule("exact (bitwise)", _exact)
ABS = Rule(f"abs {ATOL:g}", _abs)
ROW = Rule(f"logits: |d| <= {ATOL:g} + {RTOL:g} * max|row|", _row)
FFT_B = Rule("FFT error model (mel dB)", lambda e, ctx: ctx.bounds("B"))
FFT_C = Rule("FFT error model (padded)", lambda e, ctx: ctx.bounds("C"))
FFT_X = Rule("FFT error model (normalized)", lambda e, ctx: ctx.bounds("X", e))

# stage -> (strict rule, portable rule); "(golden input)" variants are looked up by their own names.
TABLE: dict[str, tuple[Rule, Rule]] = {
    "A.segment": (EXACT, EXACT),
    "A.downmix": (EXACT, EXACT),
    "A.waveform": (EXACT, EXACT),
    "B.mel_db": (ABS, FFT_B),
    "B.mel_db" + GOLDEN_INPUT: (ABS, FFT_B),  # same FFT, on the golden waveform
    "C.padded": (ABS, FFT_C),
    "C.padded" + GOLDEN_INPUT: (ABS, ABS),  # crop/pad of the golden mel: exact on any CPU
    "X.model_input": (ABS, FFT_X),
    "X.model_input" + GOLDEN_INPUT: (ABS, ABS),  # (x - mean) / std: IEEE elementwise, equal everywhere
    "Y.logits": (ROW, ROW),
    "Y.logits" + GOLDEN_INPUT: (ROW, ROW),
    "all.logits": (ROW, ROW),
}


def rule_for(stage: str, tier: str, family: str | None = None) -> Rule:
    """The table's rule; probabilities, confidences and aggregates not listed are ``ABS`` in both tiers.
    ``family`` (a name in ``porting.family``'s registry) reads that family's ``tolerances(stage)`` instead: its
    (strict, portable) pair, None where the default applies."""
    if family is not None:
        from .. import family as registry

        pair = registry.get(family).tolerances(stage) or (ABS, ABS)
    else:
        pair = TABLE.get(stage, (ABS, ABS))
    strict, portable = pair
    return strict if tier == STRICT else portable


class Context:
    """What the error model needs about one golden case: its stage-A waveform, frontend and normalization.

    Bounds are computed once per case and stage, on first use.
    """

    def __init__(self, waveform, frontend, normalize: dict | None):
        self.waveform = waveform
        self.frontend = frontend
        self.normalize = normalize
        self._cache: dict[str, np.ndarray] = {}

    def bounds(self, stage: str, expected=None) -> np.ndarray:
        from . import errormodel as em

        if stage not in self._cache:
            if stage == "B":
                self._cache[stage] = em.mel_db_bounds(self.waveform, self.frontend.mel)
            elif stage == "C":
                self._cache[stage] = em.padded_bounds(self.bounds("B"), self.frontend.pad)
            else:
                self._cache[stage] = em.normalized_bounds(self.bounds("C"), np.asarray(expected, dtype=np.float64),
                                                          self.normalize)
        return self._cache[stage]
