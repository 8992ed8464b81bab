"""The Hugging Face family's rows of the parity contract (``porting.parity.contract``): its stage names, each with
its (strict, portable) rule built from the contract's rules and tolerances."""

from __future__ import annotations

import numpy as np

from ...parity.contract import ABS, ATOL, EXACT, GOLDEN_INPUT, ROW, RTOL, Rule


def _vector(expected, ctx):
    """The row rule over the axis that holds one vector: channels of a wav2vec2-family CNN feature map ``[C, T']``
    (axis -2), the hidden size of a token otherwise (axis -1)."""
    e = np.abs(np.asarray(expected, dtype=np.float64))
    axis = -2 if getattr(ctx, "kind", None) == "wav2vec2" and e.ndim >= 2 else -1
    return ATOL + RTOL * (e.max(axis=axis, keepdims=True) if e.size else e)


def _features(expected, ctx):
    """wav2vec2 FE: elementwise IEEE steps around two float32 reductions (mean, var) -> 1e-5 in both tiers; AST's
    kaldi fbank is FFT-dependent -> the derived FFT error model in the portable tier (``errormodel.fbank_bounds``)."""
    if getattr(ctx, "kind", None) == "ast":
        return ctx.bounds("F", expected)
    return ATOL


VECTOR = Rule(f"pre-activation: |d| <= {ATOL:g} + {RTOL:g} * max|vector|", _vector)
FFT_F = Rule("FFT error model (kaldi fbank) / abs 1e-5 (wav2vec2 FE)", _features)

# The Hugging Face family (golden/hf): stage names are its goldens'. Hidden states, pooled vectors and logits are
# pre-activation outputs (each feeds a LayerNorm or a linear layer), so the contract's rule for those applies
# everywhere, scaled per vector like the logits' row rule and for the same reason. A.waveform is soxr's HQ
# resampler (or the file's own samples at 16 kHz): soxr HQ is specified to 20-bit precision, so two correct
# implementations differ by at most 2 * 2^-20 = 1.9e-6 of full scale, inside 1e-5 in both tiers.
HF_TABLE: dict[str, tuple[Rule, Rule]] = {
    "A.waveform": (ABS, ABS),
    "F.input_values": (ABS, FFT_F),
    "F.input_values" + GOLDEN_INPUT: (ABS, FFT_F),
    "F.attention_mask": (EXACT, EXACT),
    "F.attention_mask" + GOLDEN_INPUT: (EXACT, EXACT),
    "M.features": (VECTOR, VECTOR),
    "M.pooled": (ROW, ROW),
    "Y.logits": (ROW, ROW),
    "all.logits": (ROW, ROW),
}


def tolerances(stage: str) -> tuple[Rule, Rule]:
    """The pair for ``stage``: model stages fed golden inputs take their chained stage's rule; hidden states the
    row rule."""
    base = stage.removesuffix(GOLDEN_INPUT)
    return HF_TABLE.get(stage) or HF_TABLE.get(base) or ((ROW, ROW) if base.startswith("M.hidden_states.") else (ABS, ABS))
