"""The Audio Spectrogram Transformer (AST) rebuilt in plain torch.

Mirrors transformers' ``ASTModel`` / ``ASTForAudioClassification``
(``transformers/models/audio_spectrogram_transformer/modeling_audio_spectrogram_transformer.py``) module for
module, so a transformers ``state_dict()`` loads with ``strict=True``: base under ``audio_spectrogram_transformer``,
head ``classifier.layernorm`` / ``classifier.dense``.

AST reads a fixed-size log-mel spectrogram ``input_values`` [B, max_length, num_mel_bins] (what
``ASTFeatureExtractor`` pads or truncates every clip to), cuts it into overlapping 16x16 patches, and runs a
pre-LN ViT encoder over ``[cls, distillation, patches...]``. Its position embeddings are sized for exactly
``max_length`` frames, so unlike the wav2vec2 family there is no dynamic time axis: the input shape is fixed by
the config and checked up front.

Quirks of the reference reproduced here (all verified in ``tests/test_hf_ast.py``):

* Patch layout (``ASTPatchEmbeddings.forward``): the input is unsqueezed to [B, 1, frames, bins] and then
  transposed to [B, 1, bins, frames], so the conv's first spatial axis (stride ``frequency_stride``) runs over
  mel bins and the second (stride ``time_stride``) over frames; ``flatten(2)`` then orders the patches
  frequency-major (all time positions of the lowest-frequency row first).
* Patch count (``ASTEmbeddings.get_shape``): ``((bins - patch) // f_stride + 1) * ((max_len - patch) // t_stride
  + 1)``; the position table holds that many + 2 rows. Transformers itself only fails when the *patch grid*
  differs, so it silently accepts e.g. 101..105 frames for ``max_length=100, time_stride=10`` (the conv drops
  the tail frames). The feature extractor never produces such input; we refuse anything but the exact
  ``[*, max_length, num_mel_bins]`` shape rather than guess.
* ``hidden_states`` (``utils/generic.py`` ``check_model_inputs`` with ``_can_record_outputs = {"hidden_states":
  ASTLayer}``): entry 0 is the first layer's *input* (the embeddings output, == ``M.features``), entries
  1..L-1 are the raw layer outputs, and the last entry is *replaced* by ``last_hidden_state``, i.e. it is taken
  AFTER the final ``layernorm``. The un-normalised output of the last layer is never exposed. That is 4.x
  (``check_model_inputs`` of 4.57); 5.x decorates ``ASTModel.forward`` with ``capture_outputs(tie_last_hidden_states
  =False)`` (``utils/output_capturing.py``), so there the last entry is the raw output of the last layer, before
  ``layernorm``. The head pools ``last_hidden_state`` in both, so the logits do not move
  (``porting.families.hf.semantics``).
* Pooling (``ASTModel.forward``): ``(h[:, 0] + h[:, 1]) / 2`` on the final-layernormed sequence (cls and
  distillation token averaged), then the head applies *another* LayerNorm before its dense
  (``ASTMLPHead``). ``M.pooled`` is what the final Linear (``classifier.dense``) reads: that mean after the
  head's LayerNorm (golden/hf records the input of ``classifier.dense``).
* Attention: transformers' default on CPU is ``attn_implementation="sdpa"`` (``ASTPreTrainedModel._supports_sdpa``),
  i.e. ``torch.nn.functional.scaled_dot_product_attention`` (``integrations/sdpa_attention.py``), not the eager
  ``softmax(q k^T * scale) v`` of ``eager_attention_forward``. Both are available here; ``"sdpa"`` is the
  default because it is the path transformers runs: it matches it bitwise on CPU (torch 2.13), while the eager
  math differs from transformers' sdpa by <= 4.8e-7 on the tiny test configs and 4.8e-6 (hidden states) /
  1.3e-6 (logits) on the full 768x12, 1024-frame config. (transformers' sdpa under torch 2.9.1 vs this rebuild
  under torch 2.13, full config: 4.7e-6 hidden / 1.4e-6 logits, from the CPU kernels, not the attention path.)
* ``num_labels <= 0`` makes the head's dense an ``nn.Identity`` (``ASTMLPHead.__init__``): no
  ``classifier.dense`` keys, logits = the head's layernorm output.
* AST takes no attention mask; ``head_mask`` (pruning experiments) is not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.errors import UnsupportedModelError
from porting.families.hf.base import AudioClassifier, EncoderOutput, Intermediate, num_labels, stage_dict
from porting.families.hf.semantics import SEMANTICS_KEY, of as semantics_of

# Defaults of transformers' ASTConfig (configuration_audio_spectrogram_transformer.py) for keys a config.json
# may omit.
AST_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "patch_size": 16,
    "qkv_bias": True,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
}

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def ast_config(config: dict) -> dict:
    """The config dict with ASTConfig's defaults filled in and the label count resolved.

    ``num_labels`` follows transformers' ``PretrainedConfig.__init__``: the length of ``id2label`` when given,
    else ``num_labels``, else 2.
    """
    cfg = dict(AST_DEFAULTS)
    cfg.update({k: v for k, v in config.items() if k in AST_DEFAULTS or k in (SEMANTICS_KEY, "tie_last_hidden_states")})
    cfg["num_labels"] = num_labels(config, "AST config")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise UnsupportedModelError(
            f"AST config hidden_size={cfg['hidden_size']} is not a multiple of "
            f"num_attention_heads={cfg['num_attention_heads']}"
        )
    return cfg


def patch_grid(cfg: dict) -> tuple[int, int]:
    """(frequency, time) patch counts, as transformers ``ASTEmbeddings.get_shape`` computes them."""
    p = cfg["patch_size"]
    return (cfg["num_mel_bins"] - p) // cfg["frequency_stride"] + 1, (cfg["max_length"] - p) // cfg["time_stride"] + 1


class _SelfAttention(nn.Module):
    def __init__(self, cfg: dict, attn_implementation: str):
        super().__init__()
        h = cfg["hidden_size"]
        self.num_heads = cfg["num_attention_heads"]
        self.head_dim = h // self.num_heads
        self.scale = self.head_dim**-0.5
        self.attn_implementation = attn_implementation
        self.query = nn.Linear(h, h, bias=cfg["qkv_bias"])
        self.key = nn.Linear(h, h, bias=cfg["qkv_bias"])
        self.value = nn.Linear(h, h, bias=cfg["qkv_bias"])

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        if self.attn_implementation == "sdpa":
            # transformers integrations/sdpa_attention.py sdpa_attention_forward: no mask, not causal,
            # scale = head_dim ** -0.5.
            ctx = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # transformers eager_attention_forward: the scale multiplies the scores after q @ k^T.
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1, dtype=torch.float32)
            ctx = torch.matmul(probs.to(q.dtype), v)
        return ctx.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)


class _Dense(nn.Module):
    """A holder of one ``dense`` Linear, so keys read ``...output.dense.weight`` as in transformers."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x)


class _Attention(nn.Module):
    def __init__(self, cfg: dict, attn_implementation: str):
        super().__init__()
        self.attention = _SelfAttention(cfg, attn_implementation)
        self.output = _Dense(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.attention(x))


class _Layer(nn.Module):
    """Pre-LN block (transformers ``ASTLayer``): x + attn(LN(x)), then h + mlp(LN(h))."""

    def __init__(self, cfg: dict, attn_implementation: str):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.attention = _Attention(cfg, attn_implementation)
        self.intermediate = Intermediate(cfg)
        self.output = _Dense(cfg["intermediate_size"], h)
        self.layernorm_before = nn.LayerNorm(h, eps=eps)
        self.layernorm_after = nn.LayerNorm(h, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        h = self.attention(self.layernorm_before(x)) + x
        # transformers ASTOutput adds the residual after its dense: dense(...) + h.
        return self.output(self.intermediate(self.layernorm_after(h))) + h


class _Encoder(nn.Module):
    def __init__(self, cfg: dict, attn_implementation: str):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, attn_implementation) for _ in range(cfg["num_hidden_layers"]))


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        p = cfg["patch_size"]
        self.projection = nn.Conv2d(
            1, cfg["hidden_size"], kernel_size=(p, p), stride=(cfg["frequency_stride"], cfg["time_stride"])
        )

    def forward(self, input_values: Tensor) -> Tensor:
        # [B, frames, bins] -> [B, 1, bins, frames]: frequency on the conv's first spatial axis.
        x = input_values.unsqueeze(1).transpose(2, 3)
        return self.projection(x).flatten(2).transpose(1, 2)  # [B, F'*T', H], frequency-major


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h = cfg["hidden_size"]
        f, t = patch_grid(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, h))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.position_embeddings = nn.Parameter(torch.zeros(1, f * t + 2, h))

    def forward(self, input_values: Tensor) -> Tensor:
        patches = self.patch_embeddings(input_values)
        b = patches.shape[0]
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), self.distillation_token.expand(b, -1, -1), patches), 1)
        return tokens + self.position_embeddings


class ASTModel(nn.Module):
    """Rebuild of transformers ``ASTModel``: embeddings, pre-LN encoder, final ``layernorm``.

    ``attn_implementation``: ``"sdpa"`` (transformers' default, the default here) or ``"eager"``.
    """

    def __init__(self, config: dict, attn_implementation: str = "sdpa"):
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise UnsupportedModelError(
                f"AST attn_implementation={attn_implementation!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        self.cfg = cfg = ast_config(config)
        self.input_shape = (cfg["max_length"], cfg["num_mel_bins"])
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg, attn_implementation)
        self.layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def check_input(self, input_values: Tensor, attention_mask: Tensor | None = None) -> None:
        """Refuse what transformers cannot (or should not) run: a mask, or a shape the position table misfits.

        A check on ``x.shape`` only (the shape is static for AST anyway). It is skipped under ``torch.jit.trace`` /
        ``torch.onnx.export(dynamo=False)``, where sizes are traced tensors and the check would only be baked in as
        a constant (with a TracerWarning); the traced graph has the shape fixed by its example input anyway.
        """
        if attention_mask is not None:
            raise UnsupportedModelError("AST takes no attention_mask (every input is padded to max_length); pass None")
        if torch.jit.is_tracing():
            return
        if input_values.dim() != 3 or tuple(input_values.shape[1:]) != self.input_shape:
            raise UnsupportedModelError(
                f"AST input_values has shape {list(input_values.shape)}; this model expects "
                f"[batch, {self.input_shape[0]}, {self.input_shape[1]}] (max_length frames x num_mel_bins, its "
                "position embeddings are sized for that)"
            )

    def encode(self, input_values: Tensor, attention_mask: Tensor | None = None) -> EncoderOutput:
        """``features`` = embeddings output [B, N+2, H]; ``hidden_states`` as transformers reports them (the last
        one after the final layernorm, see module docstring); ``frame_mask`` None (AST has no mask)."""
        self.check_input(input_values, attention_mask)
        x = self.embeddings(input_values)
        hidden = [x]
        for layer in self.encoder.layer:
            hidden.append(layer(hidden[-1]))
        last = self.layernorm(hidden[-1])
        if semantics_of(self.cfg) >= 5 and not self.cfg.get("tie_last_hidden_states"):
            # 5.x: capture_outputs(tie_last_hidden_states=False), the raw last layer (unless the config ties it)
            return EncoderOutput(x, hidden, None, last)
        hidden[-1] = last
        return EncoderOutput(x, hidden, None)

    @staticmethod
    def pool(last_hidden_state: Tensor) -> Tensor:
        """transformers ``ASTModel`` pooler_output: mean of the cls and distillation tokens."""
        return (last_hidden_state[:, 0] + last_hidden_state[:, 1]) / 2

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``last_hidden_state`` [B, N+2, H] (after the final layernorm)."""
        return self.encode(input_values, attention_mask).last


class _MLPHead(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dense = nn.Linear(cfg["hidden_size"], cfg["num_labels"]) if cfg["num_labels"] > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.layernorm(x))


class ASTForAudioClassification(AudioClassifier):
    """Rebuild of transformers ``ASTForAudioClassification``: ``ASTModel`` + LayerNorm/Linear head on the pooled
    cls/distillation mean."""

    def __init__(self, config: dict, attn_implementation: str = "sdpa"):
        super().__init__()
        self.audio_spectrogram_transformer = ASTModel(config, attn_implementation)
        self.cfg = self.audio_spectrogram_transformer.cfg
        self.classifier = _MLPHead(self.cfg)

    def stages(self, input_values: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        enc = self.audio_spectrogram_transformer.encode(input_values, attention_mask)
        pooled = self.classifier.layernorm(ASTModel.pool(enc.last))  # the input of classifier.dense (golden/hf)
        return stage_dict(enc, pooled, self.classifier.dense(pooled))
