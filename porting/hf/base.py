"""What every rebuilt Hugging Face audio classifier looks like to the rest of porting.

A rebuild is a plain ``nn.Module`` built from the HF ``config.json`` dict alone, whose ``state_dict()`` keys
and shapes are exactly those of the transformers model of the same class (so a checkpoint loads with
``load_state_dict(strict=True)`` and nothing is renamed). ``forward`` is ``input_values -> logits``; ``stages``
returns every intermediate the golden captures record, named as ``reference/hf_capture.py`` names them.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

# Golden stage names of the model part of the HF stage graph (per window, leading dim = windows).
FEATURES = "M.features"  # the CNN feature encoder's output [B, C, T'] (AST: patch embeddings + tokens [B, N+2, H])
HIDDEN = "M.hidden_states.{}"  # transformers' output_hidden_states=True entries 0..L, [B, T', H]
POOLED = "M.pooled"  # the vector the final classification layer reads [B, D]
LOGITS = "Y.logits"  # [B, num_labels]


def hidden_name(i: int) -> str:
    return HIDDEN.format(i)


class AudioClassifier(nn.Module):
    """Base of the rebuilt heads: ``forward(input_values, attention_mask=None) -> logits``."""

    def stages(self, input_values: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{M.features, M.hidden_states.0..L, M.pooled, Y.logits}`` for one batch (eval mode)."""
        raise NotImplementedError

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.stages(input_values, attention_mask)[LOGITS]


class EncoderOutput(NamedTuple):
    """What a rebuilt base model (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``, ``SEWDModel``) hands a head."""

    features: Tensor  # M.features, [B, C, T'] as the feature encoder returns it
    hidden_states: list[Tensor]  # M.hidden_states.0..L as transformers returns them, [B, T'', H] (SEW-D: at the
    # squeezed length, the last one before upsampling -- so not always the base model's last_hidden_state)
    frame_mask: Tensor | None  # [B, T'] bool, True on frames computed from real samples; None = all valid


_WN_SUFFIXES = ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1"))


def fold_weight_norm(state: dict[str, Tensor], dims: dict[str, int]) -> dict[str, Tensor]:
    """Replace each weight-normed pair (``X.weight_g``/``X.weight_v``, as checkpoints on the hub store it, or
    ``X.parametrizations.weight.original0/1``, as transformers >= 4.3x saves it under torch >= 2.1) by the plain
    ``X.weight`` it stands for. ``dims`` maps module prefix ``X`` -> the ``dim`` weight_norm was applied over
    (wav2vec2's positional conv: 2, transformers ``Wav2Vec2PositionalConvEmbedding``).

    The fold is ``torch._weight_norm(v, g, dim)``, the very op torch's weight_norm runs on each forward, so the
    folded weight is bitwise the one the reference convolves with.
    """
    import torch

    out = dict(state)
    for prefix, dim in dims.items():
        for g_suf, v_suf in _WN_SUFFIXES:
            g, v = out.pop(prefix + g_suf, None), out.pop(prefix + v_suf, None)
            if g is not None and v is not None:
                out[prefix + ".weight"] = torch._weight_norm(v, g, dim)
    return out
