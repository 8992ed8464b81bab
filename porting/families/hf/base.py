"""What every rebuilt Hugging Face audio classifier looks like to the rest of porting.

A rebuild is a plain ``nn.Module`` built from the HF ``config.json`` dict alone, whose ``state_dict()`` keys
and shapes are exactly those of the transformers model of the same class (so a checkpoint loads with
``load_state_dict(strict=True)`` and nothing is renamed). ``forward`` is ``input_values -> logits``; ``stages``
returns every intermediate the golden captures record, named as ``reference/hf_capture.py`` names them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.errors import UnsupportedModelError

# Golden stage names of the model part of the HF stage graph (per window, leading dim = windows).
FEATURES = "M.features"  # the CNN feature encoder's output [B, C, T'] (AST: patch embeddings + tokens [B, N+2, H])
HIDDEN = "M.hidden_states.{}"  # transformers' output_hidden_states=True entries 0..L, [B, T', H]
POOLED = "M.pooled"  # the vector the final classification layer reads [B, D]
LOGITS = "Y.logits"  # [B, num_labels]


def hidden_name(i: int) -> str:
    return HIDDEN.format(i)


def stage_dict(enc: "EncoderOutput", pooled: Tensor, logits: Tensor) -> dict[str, Tensor]:
    """The golden stages of one batch, in capture order: features, hidden states 0..L, pooled, logits."""
    out = {FEATURES: enc.features}
    for i, h in enumerate(enc.hidden_states):
        out[hidden_name(i)] = h
    out[POOLED] = pooled
    out[LOGITS] = logits
    return out


class AudioClassifier(nn.Module):
    """Base of the rebuilt heads: ``forward(input_values, attention_mask=None) -> logits``."""

    def stages(self, input_values: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{M.features, M.hidden_states.0..L, M.pooled, Y.logits}`` for one batch (eval mode)."""
        raise NotImplementedError

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.stages(input_values, attention_mask)[LOGITS]


class EncoderOutput(NamedTuple):
    """What a rebuilt base model (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``, ``SEWDModel``, ``ASTModel``)
    hands a head."""

    features: Tensor  # M.features, [B, C, T'] as the feature encoder returns it
    hidden_states: list[Tensor]  # M.hidden_states.0..L as transformers returns them, [B, T'', H] (SEW-D: at the
    # squeezed length, the last one before upsampling -- so not always the base model's last_hidden_state)
    frame_mask: Tensor | None  # [B, T'] bool, True on frames computed from real samples; None = all valid
    last_hidden_state: Tensor | None = None  # transformers' last_hidden_state where it is not hidden_states[-1]
    # (SEW-D: the upsampled [B, T', H] tensor); None = hidden_states[-1]

    @property
    def last(self) -> Tensor:
        """transformers' ``last_hidden_state``: what a head pools when it does not take a weighted layer sum."""
        return self.hidden_states[-1] if self.last_hidden_state is None else self.last_hidden_state


def num_labels(config: dict, what: str = "config") -> int:
    """The label count transformers' ``PretrainedConfig.__init__`` derives: ``len(id2label)`` whenever ``id2label``
    is given (even empty), else ``num_labels``, else 2. Where both are given and disagree transformers logs a
    warning and goes with ``id2label``; so does the port (a folder transformers loads must load here too; the
    classifier weights' shape is checked against the result by ``porting.families.hf.model.load_weights``)."""
    id2label, n = config.get("id2label"), config.get("num_labels")
    if id2label is None:
        return int(n) if n is not None else 2
    return len(id2label)


# ---------------------------------------------------------------------------------------------------------------
# activations


def _gelu_new(x: Tensor) -> Tensor:
    # NewGELUActivation spells the tanh approximation out (not F.gelu(approximate="tanh"): last bits differ).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_fast(x: Tensor) -> Tensor:
    # FastGELUActivation: another hand-written tanh approximation, with a rounded constant.
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


# transformers' ACT2FN (activations.py ``ACT2CLS``) by name: the parameter-free entries, each computed with the ops
# of the class transformers instantiates, so every one is bitwise ACT2FN[name] (tests/test_hf_ast.py checks each).
# Not here: gelu_python_tanh, gelu_accurate, laplace, leaky_relu, and the learned prelu / xielu.
ACTIVATIONS = {
    "gelu": F.gelu,  # GELUActivation
    "gelu_python": lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),  # GELUActivation(use_gelu_python)
    "gelu_new": _gelu_new,
    "gelu_fast": _gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GELUTanh
    "gelu_10": lambda x: torch.clip(F.gelu(x), -10.0, 10.0),  # ClippedGELUActivation(-10, 10)
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # QuickGELUActivation
    "relu": F.relu,
    "relu6": F.relu6,
    "relu2": lambda x: torch.square(F.relu(x)),  # ReLUSquaredActivation
    "silu": F.silu,  # SiLUActivation
    "swish": F.silu,  # nn.SiLU
    "mish": F.mish,  # MishActivation
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,  # LinearActivation
}


def activation(name, setting: str = "activation"):
    """The function ``ACT2FN[name]`` computes; ``setting`` (the config key it came from) names it in the error."""
    fn = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if fn is None:
        raise UnsupportedModelError(
            f"config {setting}={name!r}: activation has no plain-torch rebuild; known: {', '.join(sorted(ACTIVATIONS))}"
        )
    return fn


class Activation(nn.Module):
    """``activation(name)`` as a parameter-free module (where transformers holds the activation as a submodule).
    Holds the name only, so the module pickles and prints as the config spells it."""

    def __init__(self, name: str, setting: str = "activation"):
        super().__init__()
        activation(name, setting)
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


class Intermediate(nn.Module):
    """``dense`` then ``intermediate_act_fn`` (``hidden_act``): the BERT-style feed-forward input half that
    transformers ``SEWDIntermediate`` and ``ASTIntermediate`` share (keys ``...intermediate.dense.*``)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.intermediate_act_fn = Activation(cfg["hidden_act"], "hidden_act")

    def forward(self, x: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(x))


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
