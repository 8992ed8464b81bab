"""The librosa-mel CNN family's rows of the parity contract (``porting.parity.contract``).

* ``A.waveform``: soxr HQ (``librosa.load``'s resampler) or the file's own samples: 1e-5 in both tiers.
* ``F.mel`` (mel power, values spanning many decades): strict ``|d| <= 1e-5 * |golden|`` (the float32 mel GEMM is
  the one order-dependent step: numpy's BLAS vs torch's); portable: ``porting.dsp.errormodel.librosa_mel_bounds``.
* ``F.db`` (dB against the clip's maximum, values to -top_db): strict ``|d| <= 1e-5 + 1e-5 * |golden|``: the mel
  GEMM's order moves a value near -64 dB by one or two float32 ulps (7.6e-6 each; measured 1.5e-5 against librosa),
  which an absolute 1e-5 would call a failure; ``F.input`` (per-clip min-max, the model input, in [0, 1)): 1e-5
  absolute. Portable: the same error model carried through dB, the ``top_db`` floor and the min-max.
* ``M.features`` (a map that feeds a mean): ``1e-5 + 1e-5 * max|map|``; ``M.embedding``, ``Y.output`` (logits or
  cos θ), ``Y.logits``, ``all.logits``: the row rule. Probabilities 1e-5 absolute; the decisions (``all.decisions``:
  the top class per window) exact.

In the portable tier the chained ``M.*`` / ``Y.*`` are compared around the golden's first-order response to this
machine's ``F.input`` difference (``porting.parity.windowed``).
"""

from __future__ import annotations

import numpy as np

from ...parity.contract import ABS, ATOL, EXACT, GOLDEN_INPUT, MAP, ROW, RTOL, Rule, bounded


def _rel(expected, ctx):
    return RTOL * np.abs(np.asarray(expected, dtype=np.float64)) + 1e-30


REL = Rule(f"power: |d| <= {RTOL:g} * |golden|", _rel)
DBREL = Rule(f"dB: |d| <= {ATOL:g} + {RTOL:g} * |golden|", lambda e, ctx: ATOL + _rel(e, ctx))
MEL = bounded("librosa mel error model (porting.dsp.errormodel.librosa_mel_bounds)", "F.mel")
DB = bounded("librosa mel error model through power_to_db(ref=max, top_db)", "F.db")
INPUT = bounded("librosa mel error model through the per-clip min-max", "F.input")

TABLE: dict[str, tuple[Rule, Rule]] = {
    "A.waveform": (ABS, ABS),
    "F.mel": (REL, MEL),
    "F.db": (DBREL, DB),
    "F.input": (ABS, INPUT),
    "M.features": (MAP, MAP),
    "M.embedding": (ROW, ROW),
    "Y.output": (ROW, ROW),
    "Y.logits": (ROW, ROW),
    "Y.probs": (ABS, ABS),
    "all.logits": (ROW, ROW),
    "all.probs": (ABS, ABS),
    "all.decisions": (EXACT, EXACT),
}


def tolerances(stage: str) -> tuple[Rule, Rule]:
    return TABLE.get(stage) or TABLE.get(stage.removesuffix(GOLDEN_INPUT)) or (ABS, ABS)
