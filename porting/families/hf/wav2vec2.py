"""Plain-torch rebuilds of the transformers base models ``Wav2Vec2Model``, ``HubertModel`` and ``WavLMModel``.

Built from the HF ``config.json`` dict alone; ``state_dict()`` keys and shapes are those of the transformers base
model (``feature_extractor.conv_layers.*``, ``feature_projection.*``, ``masked_spec_embed``, ``encoder.*``), except
the weight-normed positional conv, which holds a plain ``encoder.pos_conv_embed.conv.weight``: fold checkpoints with
``porting.families.hf.base.fold_weight_norm(state, weight_norm_dims(prefix, config))`` first.

Eval semantics only (no dropout, SpecAugment or layerdrop). Each base model's ``encode`` returns
``porting.families.hf.base.EncoderOutput`` so one head implementation (``porting.families.hf.heads``) serves them all.

Which tensor is which ``hidden_states`` entry (transformers ``*Encoder.forward`` / ``*EncoderStableLayerNorm.forward``
in ``models/{wav2vec2,hubert,wavlm}/modeling_*.py``), with ``x`` the feature projection with padded frames zeroed:

* post-LN (``do_stable_layer_norm=False``): ``hs[0] = encoder.layer_norm(x + pos_conv(x))``, ``hs[i]`` = output of
  layer ``i``; the last entry is the raw output of the last layer.
* pre-LN (``do_stable_layer_norm=True``): ``hs[0] = x + pos_conv(x)`` (no norm), ``hs[i]`` = output of layer ``i``
  for ``i < L``, but ``hs[L] = encoder.layer_norm(output of layer L)`` -- the final norm is applied to the last
  entry only. That is transformers 4.x (``Wav2Vec2EncoderStableLayerNorm.forward`` appends the normed state after
  the loop). transformers 5.x records ``hidden_states`` with output-capturing hooks on the encoder layers
  (``utils/output_capturing.py``, ``_can_record_outputs``, ``capture_outputs(tie_last_hidden_states=False)``), so
  its ``hs[L]`` is the last layer's output BEFORE the final norm, while ``last_hidden_state`` stays normed: a head
  with ``use_weighted_layer_sum`` gives other logits (``Encoder.transformers_semantics``, ``porting.families.hf.semantics``).

Export: no data-dependent Python control flow; shapes are read off tensors. Measured (torch 2.13): the TorchScript
ONNX exporter (opset 17, dynamic batch and samples) and ``torch.jit.trace`` follow the time axis;
``torch.export`` does with ``Dim.AUTO`` for batch and samples, but a named ``Dim("n", min=..., max=...)`` on the
samples axis is rejected -- the exporter cannot prove, for every ``n``, guards such as
``2 % (2 + 2*((n//10 - 3)//2)) != 0`` that the conv-length floor divisions put on reshapes (transformers' graph
has the same arithmetic).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.errors import UnsupportedModelError
from porting.families.hf.base import EncoderOutput, activation
from porting.families.hf.semantics import of as semantics_of

# Defaults of transformers' Wav2Vec2Config (models/wav2vec2/configuration_wav2vec2.py), the keys the encoder reads.
WAV2VEC2_DEFAULTS: dict = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (512, 512, 512, 512, 512, 512, 512),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "add_adapter": False,
    "adapter_attn_dim": None,
    "classifier_proj_size": 256,
    "use_weighted_layer_sum": False,
}
# HubertConfig: no adapters, ``feat_proj_layer_norm`` and ``conv_pos_batch_norm`` added.
HUBERT_DEFAULTS: dict = {**WAV2VEC2_DEFAULTS, "feat_proj_layer_norm": True, "conv_pos_batch_norm": False}
# WavLMConfig: relative-position buckets; its stable-LN layers have no attention adapters.
WAVLM_DEFAULTS: dict = {**WAV2VEC2_DEFAULTS, "num_buckets": 320, "max_bucket_distance": 800}

def check_feature_encoder_config(cfg: dict) -> dict:
    """In place: the CNN feature encoder's settings (``conv_dim``/``conv_stride``/``conv_kernel`` as int tuples of
    one length, ``feat_extract_norm`` in 'group'/'layer'), which wav2vec2, HuBERT, WavLM and SEW-D read alike."""
    for key in ("conv_dim", "conv_stride", "conv_kernel"):
        cfg[key] = tuple(int(v) for v in cfg[key])
    if not len(cfg["conv_dim"]) == len(cfg["conv_stride"]) == len(cfg["conv_kernel"]):
        raise UnsupportedModelError("config conv_dim, conv_stride and conv_kernel have different lengths")
    if cfg["feat_extract_norm"] not in ("group", "layer"):
        raise UnsupportedModelError(
            f"feat_extract_norm {cfg['feat_extract_norm']!r} is not supported (transformers knows 'group', 'layer')"
        )
    return cfg


def resolve_config(config: dict, defaults: dict) -> dict:
    """``config`` over ``defaults``, list-valued conv settings as tuples, checked for what the rebuild supports."""
    cfg = check_feature_encoder_config({**defaults, **{k: v for k, v in config.items()}})
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise UnsupportedModelError("hidden_size is not divisible by num_attention_heads")
    if cfg.get("add_adapter"):
        raise UnsupportedModelError("add_adapter=True (a post-encoder conv adapter) is not supported")
    activation(cfg["hidden_act"], "hidden_act")
    activation(cfg["feat_extract_activation"], "feat_extract_activation")
    return cfg


def masked_spec_embed(cfg: dict) -> nn.Parameter | None:
    """The SpecAugment vector transformers keeps whenever ``mask_time_prob > 0`` or ``mask_feature_prob > 0``
    (``Wav2Vec2Model.__init__``, ``SEWDModel.__init__``; so it is in the state dict of every default-config
    checkpoint). Unused at eval; kept so strict loading works. None: no such key."""
    if cfg["mask_time_prob"] > 0.0 or cfg["mask_feature_prob"] > 0.0:
        return nn.Parameter(torch.zeros(cfg["hidden_size"]))
    return None


# ---------------------------------------------------------------------------------------------------------------
# frame lengths and the frame mask


def feat_extract_output_lengths(input_lengths, conv_kernel, conv_stride):
    """Frames the CNN feature encoder makes of ``input_lengths`` samples (int or integer tensor): per conv,
    ``floor((n - kernel) / stride) + 1`` -- transformers ``*PreTrainedModel._get_feat_extract_output_lengths``."""
    for k, s in zip(conv_kernel, conv_stride):
        if isinstance(input_lengths, Tensor):
            input_lengths = torch.div(input_lengths - k, s, rounding_mode="floor") + 1
        else:
            input_lengths = (input_lengths - k) // s + 1
    return input_lengths


def feature_vector_mask(num_frames: int, attention_mask: Tensor, conv_kernel, conv_stride) -> Tensor:
    """Sample mask [B, N] -> frame mask [B, T'] (bool), as transformers ``_get_feature_vector_attention_mask``.

    Quirk reproduced: transformers counts the ones of the mask (wherever they are, ``cumsum(-1)[:, -1]``), maps the
    count through the conv length formula, writes a 1 at index ``length - 1`` and reverse-cumsums, so every frame
    before the length is valid. A length <= 0 makes that index negative and Python indexing wraps it: a too-short
    input marks (nearly) every frame valid instead of none. We reproduce the wrap with ``where(idx < 0, idx + T')``
    and a comparison against ``arange`` (no data-dependent control flow; exportable). Where transformers raises
    IndexError (``length > T'`` or ``length < 1 - T'``), the result here is simply all-valid / none-valid.
    """
    counts = attention_mask.sum(-1)
    lengths = feat_extract_output_lengths(counts, conv_kernel, conv_stride).to(torch.long)
    last = lengths - 1
    last = torch.where(last < 0, last + num_frames, last)
    frames = torch.arange(num_frames, device=attention_mask.device)
    return frames[None, :] <= last[:, None]


def additive_key_mask(frame_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Bool frame mask [B, T] -> additive key mask [B, 1, 1, T]: 0 on valid frames, ``finfo(dtype).min`` on padding,
    as transformers ``modeling_attn_mask_utils._prepare_4d_attention_mask`` (eager; the sdpa path builds the same
    values, or none at all when every frame is valid, which adds nothing either way). WavLM instead hands
    ``key_padding_mask`` to ``F.multi_head_attention_forward``, which adds ``-inf``: after softmax both are exactly 0
    weight whenever a row has at least one valid key, which the frame mask guarantees."""
    if frame_mask is None:
        return None
    return (~frame_mask).to(dtype)[:, None, None, :] * torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------------------------------
# CNN feature encoder


class ConvLayer(nn.Module):
    """One feature-encoder conv: ``conv`` -> optional norm -> activation (transformers ``*NoLayerNormConvLayer``,
    ``*GroupNormConvLayer``: GroupNorm with one group per channel, i.e. each channel normalised over time;
    ``*LayerNormConvLayer``: LayerNorm over channels per frame). Both norms use torch's default eps 1e-5, not
    ``layer_norm_eps``, exactly as transformers builds them."""

    def __init__(self, cfg: dict, layer_id: int, norm: str | None):
        super().__init__()
        c_in = cfg["conv_dim"][layer_id - 1] if layer_id > 0 else 1
        c_out = cfg["conv_dim"][layer_id]
        self.conv = nn.Conv1d(
            c_in, c_out, cfg["conv_kernel"][layer_id], stride=cfg["conv_stride"][layer_id], bias=cfg["conv_bias"]
        )
        self.norm = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, elementwise_affine=True)
        self.act = activation(cfg["feat_extract_activation"], "feat_extract_activation")

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        return self.act(x)


class FeatureEncoder(nn.Module):
    """Raw audio [B, N] -> features [B, C, T'] (transformers ``*FeatureEncoder``; ``M.features``).
    ``feat_extract_norm="group"``: GroupNorm on the first conv only; ``"layer"``: LayerNorm on every conv."""

    def __init__(self, cfg: dict):
        super().__init__()
        n = len(cfg["conv_dim"])
        if cfg["feat_extract_norm"] == "group":
            norms = ["group"] + [None] * (n - 1)
        else:
            norms = ["layer"] * n
        self.conv_layers = nn.ModuleList(ConvLayer(cfg, i, norms[i]) for i in range(n))

    def forward(self, input_values: Tensor) -> Tensor:
        x = input_values[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """[B, T', C] -> [B, T', H]: ``layer_norm`` (optional: HuBERT's ``feat_proj_layer_norm``) then ``projection``.
    Only the projected tensor goes on; wav2vec2/WavLM also return the normed features (for quantisation), which
    classification never reads, and HuBERT returns the projection alone (transformers ``HubertFeatureProjection``)."""

    def __init__(self, cfg: dict, with_layer_norm: bool = True):
        super().__init__()
        self.with_layer_norm = with_layer_norm
        if with_layer_norm:
            self.layer_norm = nn.LayerNorm(cfg["conv_dim"][-1], eps=cfg["layer_norm_eps"])
        self.projection = nn.Linear(cfg["conv_dim"][-1], cfg["hidden_size"])

    def forward(self, x: Tensor) -> Tensor:
        if self.with_layer_norm:
            x = self.layer_norm(x)
        return self.projection(x)


class PositionalConvEmbedding(nn.Module):
    """[B, H, T] -> [B, H, T // stride (+1)]: grouped conv over time, ``padding = K // 2``; for even ``K`` that
    yields one frame too many and the last is dropped (transformers ``*SamePadLayer``), then the feature-extract
    activation. In transformers the conv weight is weight-normed over ``dim=2``; here it is the folded plain weight.
    HuBERT's ``conv_pos_batch_norm`` variant has a BatchNorm1d before the conv and no weight norm (transformers
    ``HubertPositionalConvEmbedding``); SEW-D's strides the conv by ``squeeze_factor``
    (``SEWDPositionalConvEmbedding``)."""

    def __init__(self, cfg: dict, batch_norm: bool = False, stride: int = 1):
        super().__init__()
        h, k = cfg["hidden_size"], cfg["num_conv_pos_embeddings"]
        self.conv = nn.Conv1d(h, h, k, stride=stride, padding=k // 2, groups=cfg["num_conv_pos_embedding_groups"])
        if batch_norm:
            self.batch_norm = nn.BatchNorm1d(h)
        self.with_batch_norm = batch_norm
        self.drop_last = k % 2 == 0
        self.act = activation(cfg["feat_extract_activation"], "feat_extract_activation")

    def forward(self, x: Tensor) -> Tensor:
        if self.with_batch_norm:
            x = self.batch_norm(x)
        x = self.conv(x)
        if self.drop_last:
            x = x[:, :, :-1]
        return self.act(x)


# ---------------------------------------------------------------------------------------------------------------
# transformer layers


class SelfAttention(nn.Module):
    """Multi-head self-attention, ``softmax(q k^T * head_dim^-0.5 + mask) v`` (transformers ``Wav2Vec2Attention``).

    Computed with ``F.scaled_dot_product_attention``, the kernel transformers runs by default (``from_pretrained``
    picks ``attn_implementation="sdpa"`` for wav2vec2/HuBERT; WavLM's ``F.multi_head_attention_forward`` calls it
    too): on CPU float32 that makes every stage bitwise equal to the reference, where the written-out eager formula
    is ~1e-6 off (which ``sum`` pooling over hundreds of frames would amplify past 1e-5). The sdpa path passes no
    mask when every frame is valid; the all-zero additive mask we pass instead changes nothing (measured bitwise).
    Run under ``torch.no_grad()`` as the reference is: with autograd on, WavLM's mask (built from parameters)
    requires grad and the CPU sdpa picks another kernel (last-bit differences, measured).
    ``forward`` returns ``(output, position_bias)`` so WavLM's variant fits the same layer loop."""

    def __init__(self, cfg: dict):
        super().__init__()
        h = cfg["hidden_size"]
        self.num_heads = cfg["num_attention_heads"]
        self.head_dim = h // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.q_proj = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)

    def _heads(self, x: Tensor) -> Tensor:
        b, t = x.shape[0], x.shape[1]
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, x: Tensor, bias: Tensor | None) -> Tensor:
        b, t = x.shape[0], x.shape[1]
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scaling)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def forward(self, x: Tensor, key_mask: Tensor | None, position_bias: Tensor | None = None):
        return self._attend(x, key_mask), position_bias


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int) -> Tensor:
    """WavLM's bucket of each relative position ``key - query`` ([Tq, Tk] int64), as transformers
    ``WavLMAttention.compute_bias`` / ``_relative_positions_bucket``: half the buckets per sign (positive offsets
    get ``+num_buckets // 2``); ``|d| < max_exact = num_buckets // 4`` is its own bucket; beyond, a log scale up to
    ``max_distance``, truncated to int64 and capped at ``num_buckets // 2 - 1``.

    The float steps (float32 ``|d| / max_exact``, log, ``/ log(max_distance / max_exact)``, ``* (half - max_exact)``,
    ``max_exact +``, truncation) are taken in transformers' order with the same Python-scalar operands, so the buckets
    are bitwise those of transformers. One deliberate difference: ``|d|`` is clamped to >= 1 inside the log branch so
    the discarded ``d = 0`` lane computes ``log(1)`` instead of casting ``-inf`` to int64 (undefined; exporters differ);
    the selected values are unchanged.
    """
    half = num_buckets // 2
    max_exact = half // 2
    context = torch.arange(query_length, dtype=torch.long)[:, None]
    memory = torch.arange(key_length, dtype=torch.long)[None, :]
    rel = memory - context
    sign_offset = (rel > 0).to(torch.long) * half
    dist = torch.abs(rel)
    far = torch.log(dist.clamp(min=1).float() / max_exact)
    far = far / math.log(max_distance / max_exact)
    far = far * (half - max_exact)
    far = (max_exact + far).to(torch.long).clamp(max=half - 1)
    return sign_offset + torch.where(dist < max_exact, dist, far)


class WavLMSelfAttention(SelfAttention):
    """WavLM attention with gated relative position bias (transformers ``WavLMAttention``).

    Layer 0 owns ``rel_attn_embed`` and computes ``position_bias = rel_attn_embed(buckets)`` [H, T, T]; every layer
    reuses that ungated bias (it is what ``forward`` hands on) and gates it per head and query frame with
    ``gate_a * (gate_b * gru_rel_pos_const - 1) + 2``, where ``(gate_a, gate_b)`` are the sigmoids of
    ``gru_rel_pos_linear`` (head_dim -> 8) applied to the layer input split into heads, summed in pairs of 4.
    transformers repeats the bias over the batch ([B*H, T, T]); we broadcast, elementwise identical.
    """

    def __init__(self, cfg: dict, has_relative_position_bias: bool):
        super().__init__(cfg)
        self.num_buckets = cfg["num_buckets"]
        self.max_distance = cfg["max_bucket_distance"]
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.has_relative_position_bias = has_relative_position_bias
        if has_relative_position_bias:
            self.rel_attn_embed = nn.Embedding(self.num_buckets, self.num_heads)

    def compute_bias(self, length: int) -> Tensor:
        buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance)
        buckets = buckets.to(self.rel_attn_embed.weight.device)
        return self.rel_attn_embed(buckets).permute(2, 0, 1)

    def forward(self, x: Tensor, key_mask: Tensor | None, position_bias: Tensor | None = None):
        b, t = x.shape[0], x.shape[1]
        if position_bias is None:
            position_bias = self.compute_bias(t)
        proj = self.gru_rel_pos_linear(self._heads(x)).view(b, self.num_heads, t, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # [B, H, T, 1]
        bias = gate * position_bias[None]
        if key_mask is not None:
            bias = bias + key_mask
        return self._attend(x, bias), position_bias


class FeedForward(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.output_dense = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])
        self.act = activation(cfg["hidden_act"], "hidden_act")

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class AttnAdapter(nn.Module):
    """MMS attention adapter in pre-LN layers when ``adapter_attn_dim`` is set (transformers
    ``Wav2Vec2AttnAdapterLayer``): LayerNorm (default eps) -> linear_1 -> ReLU -> linear_2, added as a residual."""

    def __init__(self, cfg: dict):
        super().__init__()
        h, d = cfg["hidden_size"], cfg["adapter_attn_dim"]
        self.norm = nn.LayerNorm(h)
        self.linear_1 = nn.Linear(h, d)
        self.linear_2 = nn.Linear(d, h)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.relu(self.linear_1(self.norm(x))))


class EncoderLayer(nn.Module):
    """Post-LN (``x = LN(x + attn(x)); x = FLN(x + ff(x))``) or pre-LN (``x = x + attn(LN(x));
    x = x + ff(FLN(x))`` [+ adapter]) transformer layer (transformers ``*EncoderLayer`` /
    ``*EncoderLayerStableLayerNorm``)."""

    def __init__(self, cfg: dict, attention: nn.Module, pre_ln: bool, adapter: bool = False):
        super().__init__()
        self.pre_ln = pre_ln
        self.attention = attention
        self.layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.adapter_layer = AttnAdapter(cfg) if adapter else None

    def forward(self, x: Tensor, key_mask: Tensor | None, position_bias: Tensor | None):
        if self.pre_ln:
            a, position_bias = self.attention(self.layer_norm(x), key_mask, position_bias)
            x = x + a
            x = x + self.feed_forward(self.final_layer_norm(x))
            if self.adapter_layer is not None:
                x = x + self.adapter_layer(x)
        else:
            a, position_bias = self.attention(x, key_mask, position_bias)
            x = self.layer_norm(x + a)
            x = self.final_layer_norm(x + self.feed_forward(x))
        return x, position_bias


class Encoder(nn.Module):
    """Positional conv + transformer layers; returns all ``hidden_states`` (see the module docstring for which
    tensor each entry is in the post-LN and the pre-LN variant)."""

    def __init__(self, cfg: dict, layers: list[nn.Module], pos_batch_norm: bool = False):
        super().__init__()
        self.transformers_semantics = semantics_of(cfg)
        # 5.x: config.tie_last_hidden_states true puts last_hidden_state back into hidden_states[-1] (capture_outputs)
        self.tie_last_hidden_states = bool(cfg.get("tie_last_hidden_states"))
        self.stable = bool(cfg["do_stable_layer_norm"])
        self.pos_conv_embed = PositionalConvEmbedding(cfg, batch_norm=pos_batch_norm)
        self.layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, frame_mask: Tensor | None) -> tuple[list[Tensor], Tensor | None]:
        """``(hidden_states, last_hidden_state or None when it is hidden_states[-1])``. Pre-LN under 5.x
        semantics: ``hidden_states[-1]`` is the last layer's raw output, ``last_hidden_state`` its final norm."""
        # transformers zeroes padded frames in place (``hidden_states[~mask] = 0``) before the positional conv.
        if frame_mask is not None:
            x = torch.where(frame_mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        key_mask = additive_key_mask(frame_mask, x.dtype)
        x = x + self.pos_conv_embed(x.transpose(1, 2)).transpose(1, 2)
        if not self.stable:
            x = self.layer_norm(x)
        states = []
        position_bias = None
        for layer in self.layers:
            states.append(x)
            x, position_bias = layer(x, key_mask, position_bias)
        if self.stable and self.transformers_semantics >= 5 and not self.tie_last_hidden_states:
            states.append(x)
            return states, self.layer_norm(x)
        if self.stable:
            x = self.layer_norm(x)
        states.append(x)
        return states, None


# ---------------------------------------------------------------------------------------------------------------
# base models


def weight_norm_dims(prefix: str = "", config: dict | None = None) -> dict[str, int]:
    """Module prefixes (under ``prefix``, the base model's key prefix such as ``"wav2vec2"``) whose weight is stored
    weight-normed in checkpoints, with the ``dim`` the norm runs over: the positional conv, ``dim=2``
    (transformers ``*PositionalConvEmbedding``). HuBERT with ``conv_pos_batch_norm`` has none."""
    if config is not None and config.get("conv_pos_batch_norm"):
        return {}
    head = prefix.rstrip(".") + "." if prefix else ""
    return {head + "encoder.pos_conv_embed.conv": 2}


class _SpeechEncoder(nn.Module):
    """Common body: feature encoder -> frame mask -> feature projection -> encoder."""

    defaults: dict = WAV2VEC2_DEFAULTS

    def __init__(self, config: dict):
        super().__init__()
        self.config = cfg = resolve_config(config, self.defaults)
        self.feature_extractor = FeatureEncoder(cfg)
        self.feature_projection = self._projection(cfg)
        self.masked_spec_embed = masked_spec_embed(cfg)
        self.encoder = Encoder(cfg, self._layers(cfg), pos_batch_norm=self._pos_batch_norm(cfg))

    def _projection(self, cfg: dict) -> nn.Module:
        return FeatureProjection(cfg)

    def _layers(self, cfg: dict) -> list[nn.Module]:
        stable = bool(cfg["do_stable_layer_norm"])
        adapter = stable and cfg.get("adapter_attn_dim") is not None
        return [EncoderLayer(cfg, SelfAttention(cfg), stable, adapter) for _ in range(cfg["num_hidden_layers"])]

    def _pos_batch_norm(self, cfg: dict) -> bool:
        return False

    @staticmethod
    def output_lengths(input_lengths, config: dict):
        """Frames per input of ``input_lengths`` samples (transformers ``_get_feat_extract_output_lengths``)."""
        cfg = {**WAV2VEC2_DEFAULTS, **config}
        return feat_extract_output_lengths(input_lengths, cfg["conv_kernel"], cfg["conv_stride"])

    @classmethod
    def weight_norm_dims(cls, config: dict | None = None, prefix: str = "") -> dict[str, int]:
        return weight_norm_dims(prefix, config)

    def frame_mask(self, num_frames: int, attention_mask: Tensor) -> Tensor:
        return feature_vector_mask(num_frames, attention_mask, self.config["conv_kernel"], self.config["conv_stride"])

    def encode(self, input_values: Tensor, attention_mask: Tensor | None = None) -> EncoderOutput:
        features = self.feature_extractor(input_values)
        mask = None if attention_mask is None else self.frame_mask(features.shape[2], attention_mask)
        x = self.feature_projection(features.transpose(1, 2))
        states, last = self.encoder(x, mask)
        return EncoderOutput(features, states, mask, last)

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``last_hidden_state``."""
        return self.encode(input_values, attention_mask).last


class Wav2Vec2Model(_SpeechEncoder):
    """transformers ``Wav2Vec2Model`` (no post-encoder adapter)."""


class HubertModel(_SpeechEncoder):
    """transformers ``HubertModel``: ``feat_proj_layer_norm`` may drop the projection's LayerNorm,
    ``conv_pos_batch_norm`` swaps the positional conv's weight norm for a BatchNorm in front of it."""

    defaults = HUBERT_DEFAULTS

    def _projection(self, cfg: dict) -> nn.Module:
        return FeatureProjection(cfg, with_layer_norm=bool(cfg["feat_proj_layer_norm"]))

    def _pos_batch_norm(self, cfg: dict) -> bool:
        return bool(cfg["conv_pos_batch_norm"])


class WavLMModel(_SpeechEncoder):
    """transformers ``WavLMModel``: gated relative position bias, computed in layer 0 and reused by all layers."""

    defaults = WAVLM_DEFAULTS

    def _layers(self, cfg: dict) -> list[nn.Module]:
        stable = bool(cfg["do_stable_layer_norm"])
        return [
            EncoderLayer(cfg, WavLMSelfAttention(cfg, has_relative_position_bias=(i == 0)), stable)
            for i in range(cfg["num_hidden_layers"])
        ]


BASE_MODELS = {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel, "wavlm": WavLMModel}
