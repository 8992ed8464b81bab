"""OrcaHello's rows of the parity contract (``porting.parity.contract``): its stage names (golden/README.md), each
with its (strict, portable) rule, and the comparison context its portable tier needs.

Stage A is integer-exact resampling and PCM round trips, bitwise on every CPU measured: ``EXACT`` in both tiers.
B, C and X depend on the FFT: 1e-5 in the strict tier, the derived error model of ``porting.dsp.errormodel``
(mel dB -> crop/pad -> normalization) in the portable one. Steps fed golden inputs that are IEEE elementwise
(crop/pad, ``(x - mean) / std``) stay at 1e-5 on any CPU.
"""

from __future__ import annotations

import numpy as np

from ...parity.contract import ABS, EXACT, GOLDEN_INPUT, ROW, Rule

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
        from ...dsp import errormodel as em

        if stage not in self._cache:
            if stage == "B":
                self._cache[stage] = em.mel_db_bounds(self.waveform, self.frontend.mel)
            elif stage == "C":
                self._cache[stage] = em.padded_bounds(self.bounds("B"), self.frontend.pad)
            else:
                self._cache[stage] = em.normalized_bounds(self.bounds("C"), np.asarray(expected, dtype=np.float64),
                                                          self.normalize)
        return self._cache[stage]


def tolerances(stage: str) -> tuple[Rule, Rule] | None:
    return TABLE.get(stage)
