"""The PANNs family's rows of the parity contract (``porting.parity.contract``): its stage names, each with its
(strict, portable) rule built from the contract's rules.

* ``A.waveform``: soxr HQ (or the file's own samples), as the HF family: 1e-5 in both tiers.
* ``F.logmel``: 1e-5 dB strict; portable: the conv-STFT error model (``porting.dsp.errormodel.convstft_db_bounds``:
  the STFT is a 1024-tap dot product per bin whose summation order the conv kernel picks per ISA).
* ``M.bn0``: an elementwise affine of ``F.logmel``: 1e-5 strict; portable: ``F.logmel``'s bound times the bin's
  ``|gamma / sqrt(var + eps)|`` plus two ulps.
* ``M.features`` (post-ReLU maps that feed a mean/max and a linear layer): the row rule scaled by the window's
  whole map (``1e-5 + 1e-5 * max|map|``), as a pre-activation output: a conv output's rounding scales with the
  magnitudes summed, not with the (possibly ~0) element.
* ``M.pooled``, ``M.embedding``, ``Y.logits``, ``all.logits``: the row rule. Probabilities 1e-5 absolute; the
  decisions (``all.decisions``: ``prob > threshold`` per class) exact.

In the portable tier the chained ``M.*`` and logits are compared around the golden's first-order response to this
machine's ``F.logmel`` difference (``parity._propagated``), as the HF family does for its fbank.
"""

from __future__ import annotations

from ...parity.contract import ABS, EXACT, GOLDEN_INPUT, MAP, ROW, Rule, bounded


LOGMEL = bounded("conv-STFT error model (porting.dsp.errormodel.convstft_db_bounds)", "F.logmel")
BN0 = bounded("conv-STFT error model through bn0's scale", "M.bn0")

TABLE: dict[str, tuple[Rule, Rule]] = {
    "A.waveform": (ABS, ABS),
    "F.logmel": (ABS, LOGMEL),
    "M.bn0": (ABS, BN0),
    "M.bn0" + GOLDEN_INPUT: (ABS, ABS),
    "M.features": (MAP, MAP),
    "M.pooled": (ROW, ROW),
    "M.embedding": (ROW, ROW),
    "Y.logits": (ROW, ROW),
    "Y.probs": (ABS, ABS),
    "all.logits": (ROW, ROW),
    "all.probs": (ABS, ABS),
    "all.decisions": (EXACT, EXACT),
}


def tolerances(stage: str) -> tuple[Rule, Rule]:
    return TABLE.get(stage) or TABLE.get(stage.removesuffix(GOLDEN_INPUT)) or (ABS, ABS)
