"""SEW-D (``SEWDModel``) rebuilt in plain torch; its ``SEWDForSequenceClassification`` is the generic head of
``porting.families.hf.heads`` (importable from here too). The CNN feature encoder, the frame-length formula, the frame mask
and the positional conv are wav2vec2's (``porting.families.hf.wav2vec2``), as in transformers.

Mirrors ``transformers/models/sew_d/modeling_sew_d.py`` (transformers 4.57) module for module, so a transformers
``state_dict()`` loads with ``strict=True`` once the positional conv's weight norm is folded
(``porting.families.hf.base.fold_weight_norm`` with ``SEWDModel.weight_norm_dims``). Data flow of ``SEWDModel.forward``:

    wav [B, S] -> feature_extractor (wav2vec2 CNN) [B, C, T'] -> layer_norm (+ feature_projection) [B, T', H]
      -> SEWDEncoder: zero padded frames; pos_conv_embed (strided by squeeze_factor) + AvgPool1d squeeze
         [B, T'//sf, H] -> DeBERTa-v2 encoder (disentangled attention) [B, T'//sf, H]
         -> upsample (linear H -> H*sf, reshape) [B, (T'//sf)*sf, H] -> zero-pad to [B, T', H]

Quirks of the reference reproduced here (each tested in ``tests/test_hf_sewd.py``):

* ``hidden_states`` (``SEWDTransformerEncoder.forward``) are collected INSIDE the DeBERTa encoder, at the squeezed
  length T'//sf: entry 0 is the encoder input (pooled features + positional conv, no layer norm), entry i the
  output of layer i (entry 1 after the optional ``conv`` module), entry L the last layer's output BEFORE
  upsampling. ``SEWDModel``'s ``last_hidden_state`` is the upsampled [B, T', H] tensor, which is therefore NOT
  ``hidden_states[-1]`` (different length, and an extra linear + activation). ``EncoderOutput.hidden_states``
  holds transformers' entries, ``EncoderOutput.last_hidden_state`` the upsampled tensor (what a head pools).
* Squeeze lengths (``SEWDEncoder.forward``): the pool gives T'//sf frames; the strided positional conv gives
  T'//sf (even kernel, after ``SEWDSamePadLayer`` drops one) or ceil(T'/sf) (odd kernel) frames, so
  ``min_length`` is always T'//sf. The upsampled sequence has (T'//sf)*sf frames; when T' is not a multiple of sf
  transformers zero-pads the last T' % sf frames (``if hidden_states.shape[1] < n_input_timesteps: pad``), so
  those output frames are exactly 0 whatever the input. That ``if`` is a Python branch on a shape: a
  ``torch.jit.trace`` of transformers' SEWDModel made at a T' divisible by sf has no pad op and returns
  (T'//sf)*sf frames at any other T' (measured: traced at T'=38, run at T'=37 -> 36 frames instead of 37; traced
  at a non-divisible T' it generalises, the pad width being traced). Here the pad width ``T' % sf`` is always
  applied (zero-width when divisible), so one trace / ONNX graph serves every length (tested).
* Masks (``SEWDEncoder.forward``, ``SEWDTransformerEncoder.get_attention_mask``): with an attention_mask, the
  frames outside the per-frame mask are zeroed before the squeeze (the positional conv sees those zeros), and the
  squeezed mask keeps ``frames_valid // sf`` frames, so a squeezed frame mixing real and padded frames is masked
  out. The attention mask is the pairwise product m_i * m_j, so padded QUERY rows are fully masked too;
  ``XSoftmax`` fills with ``finfo.min``, softmaxes, then zeroes the masked entries, so those rows attend to
  nothing (context 0) but still get dense bias + residual + LayerNorm. Without an attention_mask every squeezed
  frame is valid.
* Disentangled attention scale (``DisentangledSelfAttention.forward``): ``scale_factor = 1 + ('c2p' in
  pos_att_type) + ('p2c' in pos_att_type)``; scale = sqrt(float32(head_dim) * scale_factor). The key is divided by
  the scale BEFORE the content matmul (q @ (k^T / scale)); the c2p and p2c terms are divided after their gather.
  p2c gathers ``bmm(k, pos_q^T)`` at clamp(-rel + span) and transposes.
* Relative-position buckets (``make_log_bucket_position``): computed from int64 q-k differences through float
  space in the DEFAULT float dtype (float32): ``abs_pos / mid`` (true division of int64), ``torch.log``,
  division by ``torch.log(torch.tensor((max_position - 1) / mid))`` (a Python double rounded to a float32 0-d
  tensor), ``* (mid - 1)``, ``torch.ceil``, ``+ mid``, times ``sign``, then ``.to(long)`` (truncation of an
  integer-valued float). |rel| <= mid keeps rel itself. The buckets are NOT clamped to max_position; the clamp to
  [0, 2*span-1] happens at the c2p/p2c gather. ``relative_position_buckets`` runs exactly these ops on a tensor of
  exactly the reference's shape, so even a log kernel that differed between vectorised body and scalar tail
  (ATen runs the tail of a CPU loop, and of each thread's chunk, through the scalar op) would round identically
  here. Measured on this CPU: both log paths agree for every |rel| up to 4*max(max_position, bucket_size) over
  bucket_size 4..512 x max_position 8..4096, so thread count does not move any bucket either.
* ``max_relative_positions`` is not a ``SEWDConfig`` field: transformers reads it with ``getattr(config, ..., -1)``
  and falls back to ``max_position_embeddings``; likewise ``attention_head_size``, ``conv_kernel_size`` (0: no
  conv module), ``conv_groups``, ``conv_act`` ('tanh'). The rel-embedding table has 2*position_buckets rows
  (2*max_relative_positions when position_buckets <= 0). Transformers' ``ConvLayer`` also reads
  ``config.hidden_dropout_prob``, which SEWDConfig lacks: with ``conv_kernel_size > 0`` transformers only builds
  when config.json carries that key (AttributeError otherwise); a dropout rate, so not needed here.
* ``pos_att_type`` goes through ``list(...)`` in ``SEWDConfig.__init__``: a string such as ``"p2c|c2p"`` becomes
  a list of characters, which disables both relative terms (but keeps scale_factor 1). Reproduced as is.
* The encoder ``conv`` module (``ConvLayer``) convolves the encoder INPUT (hidden_states[0]), not the layer-0
  output, masks it, applies ``conv_act``, adds the layer-0 output, LayerNorms and multiplies by the mask.
  transformers 4.x appends the layer-0 output AFTER that conv to ``hidden_states`` (``SEWDTransformerEncoder.forward``
  builds the tuple itself); 5.x records ``hidden_states`` with output-capturing hooks on each ``SEWDLayer``
  (``_can_record_outputs``, ``utils/output_capturing.py``), i.e. entry 1 is the layer-0 output BEFORE the conv,
  while the conv'd tensor still feeds layer 1. With ``use_weighted_layer_sum`` the logits differ
  (``SEWDTransformerEncoder.transformers_semantics``, ``porting.families.hf.semantics``).
* ``pos_att_type`` as a string under 5.x: ``SEWDConfig`` is a strict dataclass (huggingface_hub
  ``StrictDataclassFieldValidationError``: "expected a list, got str"), so transformers 5.25 refuses to load such a
  config at all; the port refuses it too under 5.x semantics (``pos_att_types``).
* Classification head (``SEWDForSequenceClassification.forward``): without ``use_weighted_layer_sum`` it reads the
  upsampled last_hidden_state, so with T' % sf != 0 the zero-padded tail frames enter the mean as
  ``projector.bias`` (also under an attention_mask, for rows whose valid length reaches them). With
  ``use_weighted_layer_sum`` it stacks the squeezed hidden_states (T'//sf frames) but builds the pooling mask
  with ``_get_feature_vector_attention_mask(T'//sf, attention_mask)`` from lengths at the T' resolution: any row
  whose valid length exceeds T'//sf makes transformers raise IndexError. Here the same one-hot-cumsum mask is
  built without indexing (``porting.families.hf.wav2vec2.feature_vector_mask``), equal wherever transformers returns. The
  generic head (``porting.families.hf.heads.SequenceClassificationHead``) does exactly this for every base model: it
  builds the pooling mask at the length of what it pools, as transformers' heads do.

Export (tested in ``tests/test_hf_sewd.py``): ``torch.jit.trace`` and ``torch.onnx.export(dynamo=False)`` with
dynamic batch and time axes follow the input length (ONNX Runtime within 1.1e-7 of transformers at three lengths).
``torch.export`` works with a dynamic batch at a fixed length; with a dynamic time axis torch 2.13's shape solver
fails on guards it cannot prove through the conv stack's floor divisions (e.g. ``Mod(2, 2*n + 2) != 0`` from the
Linear reshapes), unless the length is restricted to a residue class (its own suggestion ``T = 960*k - 480``).

Eval semantics only: no dropout, SpecAugment or layerdrop (``masked_spec_embed`` is kept as a parameter for
state-dict parity and never read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.errors import UnsupportedModelError
from porting.families.hf.base import Activation, EncoderOutput, Intermediate
from porting.families.hf.semantics import SEMANTICS_KEY, of as semantics_of
from porting.families.hf.wav2vec2 import (
    FeatureEncoder,
    PositionalConvEmbedding,
    check_feature_encoder_config,
    feature_vector_mask,
    masked_spec_embed,
    weight_norm_dims,
)

# Defaults of transformers' SEWDConfig (configuration_sew_d.py) for keys a config.json may omit, plus the
# attributes modeling_sew_d.py reads with getattr(config, key, default) although SEWDConfig does not define them.
SEWD_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "squeeze_factor": 2,
    "max_position_embeddings": 512,
    "position_buckets": 256,
    "share_att_key": True,
    "relative_attention": True,
    "pos_att_type": ("p2c", "c2p"),
    "norm_rel_ebd": "layer_norm",
    "hidden_act": "gelu_python",
    "layer_norm_eps": 1e-7,
    "feature_layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (64, 128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512),
    "conv_stride": (5, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1),
    "conv_kernel": (10, 3, 1, 3, 1, 3, 1, 3, 1, 2, 1, 2, 1),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "use_weighted_layer_sum": False,
    "classifier_proj_size": 256,
    # getattr-only attributes (DisentangledSelfAttention, SEWDTransformerEncoder, ConvLayer)
    "max_relative_positions": -1,
    "attention_head_size": None,  # None: hidden_size // num_attention_heads
    "conv_kernel_size": 0,
    "conv_groups": 1,
    "conv_act": "tanh",
}


def pos_att_types(value, semantics: int = 4) -> list[str]:
    """The relative terms ``DisentangledSelfAttention`` tests with ``"c2p" in pos_att_type``. 4.x:
    ``SEWDConfig.__init__`` does ``list(pos_att_type)``, so a string becomes its characters (no term matches).
    5.x: the strict dataclass config refuses a string when it loads (measured, transformers 5.25.0), so do we."""
    if value is None:
        return []
    if isinstance(value, str) and semantics >= 5:
        raise UnsupportedModelError(
            f"SEW-D config pos_att_type={value!r} is a string: transformers 5.x refuses to load it (its SEWDConfig "
            "wants a list such as [\"p2c\", \"c2p\"]); 4.x reads it as a list of characters, i.e. both relative "
            "terms off: pass --transformers-semantics 4 for that, or fix config.json")
    return list(value)


def sewd_config(config: dict) -> dict:
    """The HF config dict completed with SEWDConfig's defaults, normalised as ``SEWDConfig.__init__`` does (the
    CNN settings checked as wav2vec2's, ``porting.families.hf.wav2vec2.check_feature_encoder_config``). ``pos_att_type`` is
    kept as given; ``pos_att_types`` reads it under the semantics in force."""
    cfg = dict(SEWD_DEFAULTS)
    keep = set(SEWD_DEFAULTS) | {"add_adapter", SEMANTICS_KEY, "tie_last_hidden_states"}
    cfg.update({k: v for k, v in config.items() if k in keep})
    check_feature_encoder_config(cfg)
    pat = cfg["pos_att_type"]
    if pat is not None and not (isinstance(pat, str) or (isinstance(pat, (list, tuple)) and all(isinstance(t, str) for t in pat))):
        raise UnsupportedModelError(f"SEW-D config pos_att_type={pat!r}: expected a list of 'p2c'/'c2p'")
    cfg["pos_att_type"] = pat if isinstance(pat, str) or pat is None else list(pat)
    if cfg["attention_head_size"] is None:
        if cfg["hidden_size"] % cfg["num_attention_heads"]:
            raise UnsupportedModelError("SEW-D config: hidden_size is not a multiple of num_attention_heads")
        cfg["attention_head_size"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if int(cfg["max_relative_positions"]) < 1:
        cfg["max_relative_positions"] = cfg["max_position_embeddings"]
    return cfg


# --- relative positions ----------------------------------------------------------------------------------------------


def log_bucket_position(relative_pos: Tensor, bucket_size: int, max_position: int) -> Tensor:
    """``make_log_bucket_position`` op for op (float result, integer-valued), see the module docstring.

    |rel| < mid is first replaced by mid - 1 (so its log is finite) and then discarded by the final where, which
    keeps rel for |rel| <= mid; beyond, ceil(log(|rel| / mid) / log((max_position - 1) / mid) * (mid - 1)) + mid,
    signed. All float math is in the default dtype, as in transformers (int64 / int true division).
    """
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    inside = (relative_pos < mid) & (relative_pos > -mid)
    abs_pos = torch.where(inside, torch.tensor(mid - 1).type_as(relative_pos), torch.abs(relative_pos))
    log_base = torch.log(torch.tensor((max_position - 1) / mid))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / log_base * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative_pos.type_as(log_pos), log_pos * sign)


def relative_position_buckets(
    query_size: int, key_size: int, bucket_size: int = -1, max_position: int = -1, device=None
) -> Tensor:
    """``build_relative_position``: int64 [1, query_size, key_size], q_i - k_j, log-bucketed when both > 0."""
    rel = torch.arange(query_size, device=device)[:, None] - torch.arange(key_size, device=device)[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = log_bucket_position(rel, bucket_size, max_position)
    return rel.to(torch.long).unsqueeze(0)


# --- SEW-D encoder ---------------------------------------------------------------------------------------------------


class DisentangledSelfAttention(nn.Module):
    """DeBERTa-v2 disentangled attention (``DisentangledSelfAttention``), eval path, query = key/value input."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.heads = cfg["num_attention_heads"]
        self.head_size = cfg["attention_head_size"]
        all_head = self.heads * self.head_size
        h = cfg["hidden_size"]
        self.query_proj = nn.Linear(h, all_head)
        self.key_proj = nn.Linear(h, all_head)
        self.value_proj = nn.Linear(h, all_head)
        self.share_att_key = bool(cfg["share_att_key"])
        self.pos_att_type = pos_att_types(cfg["pos_att_type"], semantics_of(cfg))
        self.c2p, self.p2c = "c2p" in self.pos_att_type, "p2c" in self.pos_att_type
        self.relative_attention = bool(cfg["relative_attention"])
        self.scale_factor = 1 + int(self.c2p) + int(self.p2c)
        if self.relative_attention:
            self.position_buckets = int(cfg["position_buckets"])
            self.max_relative_positions = int(cfg["max_relative_positions"])
            self.pos_ebd_size = self.position_buckets if self.position_buckets > 0 else self.max_relative_positions
            if not self.share_att_key:
                if self.c2p:
                    self.pos_key_proj = nn.Linear(h, all_head)
                if self.p2c:
                    self.pos_query_proj = nn.Linear(h, all_head)

    def _split(self, x: Tensor) -> Tensor:
        # transpose_for_scores: [B, N, heads*d] -> [B*heads, N, d]
        # explicit sizes, no -1: torch.export cannot prove the divisibility a -1 implies on a dynamic time axis
        b, n, d = x.shape[0], x.shape[1], self.head_size
        return x.view(b, n, self.heads, d).permute(0, 2, 1, 3).contiguous().view(b * self.heads, n, d)

    def _scale(self, head_dim: int) -> Tensor:
        # torch.sqrt(torch.tensor(d, dtype=torch.float) * scale_factor): a float32 0-d CPU tensor, as in the reference
        return torch.sqrt(torch.tensor(head_dim, dtype=torch.float) * self.scale_factor)

    def _relative_bias(self, q: Tensor, k: Tensor, rel_pos: Tensor, rel_emb: Tensor) -> Tensor | None:
        """``disentangled_attention_bias`` for q_len == k_len; rel_pos is int64 [1, N, N]."""
        span = self.pos_ebd_size
        rel_emb = rel_emb[0 : span * 2, :].unsqueeze(0)
        reps = q.shape[0] // self.heads
        if self.share_att_key:
            pos_q = self._split(self.query_proj(rel_emb)).repeat(reps, 1, 1)
            pos_k = self._split(self.key_proj(rel_emb)).repeat(reps, 1, 1)
        else:
            pos_k = self._split(self.pos_key_proj(rel_emb)).repeat(reps, 1, 1) if self.c2p else None
            pos_q = self._split(self.pos_query_proj(rel_emb)).repeat(reps, 1, 1) if self.p2c else None
        score = None
        if self.c2p:
            scale = self._scale(pos_k.shape[-1])
            att = torch.bmm(q, pos_k.transpose(-1, -2))
            idx = torch.clamp(rel_pos + span, 0, span * 2 - 1)
            att = torch.gather(att, -1, idx.squeeze(0).expand([q.shape[0], q.shape[1], rel_pos.shape[-1]]))
            score = att / scale.to(dtype=att.dtype)
        if self.p2c:
            scale = self._scale(pos_q.shape[-1])
            idx = torch.clamp(-rel_pos + span, 0, span * 2 - 1)
            att = torch.bmm(k, pos_q.transpose(-1, -2))
            att = torch.gather(att, -1, idx.squeeze(0).expand([q.shape[0], k.shape[-2], k.shape[-2]])).transpose(-1, -2)
            att = att / scale.to(dtype=att.dtype)
            score = att if score is None else score + att
        return score

    def forward(self, x: Tensor, mask4: Tensor, rel_pos: Tensor | None, rel_emb: Tensor | None) -> Tensor:
        q = self._split(self.query_proj(x))
        k = self._split(self.key_proj(x))
        v = self._split(self.value_proj(x))
        scale = self._scale(q.shape[-1])
        scores = torch.bmm(q, k.transpose(-1, -2) / scale.to(dtype=q.dtype))
        if self.relative_attention:
            bias = self._relative_bias(q, k, rel_pos, rel_emb)
            if bias is not None:
                scores = scores + bias
        b, n = x.shape[0], x.shape[1]
        scores = scores.view(b, self.heads, n, n)
        # XSoftmax: fill masked with finfo.min, softmax, then zero the masked entries.
        rmask = ~mask4.to(torch.bool)
        probs = torch.softmax(scores.masked_fill(rmask, torch.finfo(scores.dtype).min), -1).masked_fill(rmask, 0)
        ctx = torch.bmm(probs.view(b * self.heads, n, n), v)
        ctx = ctx.view(b, self.heads, n, self.head_size).permute(0, 2, 1, 3).contiguous()
        return ctx.view(b, n, self.heads * self.head_size)


class _DenseLayerNorm(nn.Module):
    """``SEWDSelfOutput`` / ``SEWDOutput``: LayerNorm(dense(x) + residual)."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.self = DisentangledSelfAttention(cfg)
        self.output = _DenseLayerNorm(cfg["num_attention_heads"] * cfg["attention_head_size"], cfg["hidden_size"],
                                      cfg["layer_norm_eps"])

    def forward(self, x, mask4, rel_pos, rel_emb):
        return self.output(self.self(x, mask4, rel_pos, rel_emb), x)


class SEWDLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = _DenseLayerNorm(cfg["intermediate_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

    def forward(self, x, mask4, rel_pos, rel_emb):
        a = self.attention(x, mask4, rel_pos, rel_emb)
        return self.output(self.intermediate(a), a)


class EncoderConv(nn.Module):
    """``ConvLayer`` (only when ``conv_kernel_size > 0``): applied once, after layer 0, see the module docstring.
    Its padding is (k-1)//2, so only odd kernels keep the length (transformers fails on even ones too)."""

    def __init__(self, cfg: dict):
        super().__init__()
        k = int(cfg["conv_kernel_size"])
        h = cfg["hidden_size"]
        self.conv = nn.Conv1d(h, h, k, padding=(k - 1) // 2, groups=int(cfg["conv_groups"]))
        self.LayerNorm = nn.LayerNorm(h, cfg["layer_norm_eps"])
        self.conv_act = Activation(cfg["conv_act"], "conv_act")

    def forward(self, hidden_states: Tensor, residual: Tensor, input_mask: Tensor) -> Tensor:
        out = self.conv(hidden_states.permute(0, 2, 1).contiguous()).permute(0, 2, 1).contiguous()
        rmask = (1 - input_mask).bool()
        out = self.conv_act(out.masked_fill(rmask.unsqueeze(-1).expand(out.size()), 0))
        out = self.LayerNorm(residual + out)
        return out * input_mask.unsqueeze(2).to(out.dtype)


class SEWDTransformerEncoder(nn.Module):
    """The DeBERTa-v2 encoder (``SEWDTransformerEncoder``) at the squeezed resolution; returns all hidden states."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList([SEWDLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.relative_attention = bool(cfg["relative_attention"])
        self.max_relative_positions = int(cfg["max_relative_positions"])
        self.position_buckets = int(cfg["position_buckets"])
        if self.relative_attention:
            rows = 2 * (self.position_buckets if self.position_buckets > 0 else self.max_relative_positions)
            self.rel_embeddings = nn.Embedding(rows, cfg["hidden_size"])
        self.norm_rel_ebd = [x.strip() for x in str(cfg["norm_rel_ebd"]).lower().split("|")]
        if "layer_norm" in self.norm_rel_ebd:
            self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], cfg["layer_norm_eps"], elementwise_affine=True)
        self.conv = EncoderConv(cfg) if int(cfg["conv_kernel_size"]) > 0 else None
        self.transformers_semantics = semantics_of(cfg)

    def rel_embedding(self) -> Tensor | None:
        if not self.relative_attention:
            return None
        emb = self.rel_embeddings.weight
        return self.LayerNorm(emb) if "layer_norm" in self.norm_rel_ebd else emb

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], Tensor]:
        """x [B, N, H], mask int64 [B, N] -> ([x, layer_1, ..., layer_L] (transformers' ``hidden_states``), the
        encoder's output). Entry 1 is after the conv module under 4.x semantics, before it under 5.x."""
        mask4 = mask[:, None, None, :] * mask[:, None, :, None]  # get_attention_mask: pairwise [B, 1, N, N]
        rel_pos = None
        if self.relative_attention:
            rel_pos = relative_position_buckets(
                x.shape[-2], x.shape[-2], self.position_buckets, self.max_relative_positions, device=x.device
            )
        rel_emb = self.rel_embedding()
        states = [x]
        h = x
        for i, layer in enumerate(self.layer):
            h = layer(h, mask4, rel_pos, rel_emb)
            if i == 0 and self.conv is not None:
                if self.transformers_semantics >= 5:
                    states.append(h)  # 5.x: the hook on SEWDLayer records the output before the conv
                h = self.conv(x, h, mask)
                if self.transformers_semantics < 5:
                    states.append(h)
                continue
            states.append(h)
        return states, h


class Upsampling(nn.Module):
    """``SEWDUpsampling``: linear H -> H*sf, activation, [B, N, sf*H] -> [B, N*sf, H] (channel blocks become
    consecutive frames)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.squeeze_factor = int(cfg["squeeze_factor"])
        self.projection = nn.Linear(cfg["hidden_size"], cfg["hidden_size"] * self.squeeze_factor)
        self.activation = Activation(cfg["feat_extract_activation"], "feat_extract_activation")

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.projection(x))
        if self.squeeze_factor > 1:
            b, n, d = x.shape
            x = x.reshape(b, n, self.squeeze_factor, d // self.squeeze_factor)
            x = x.reshape(b, n * self.squeeze_factor, d // self.squeeze_factor)
        return x


class SEWDEncoder(nn.Module):
    """``SEWDEncoder``: mask, squeeze (pool + positional conv), DeBERTa encoder, upsample, zero-pad to T'."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.squeeze_factor = int(cfg["squeeze_factor"])
        # SEWDPositionalConvEmbedding: wav2vec2's, strided by squeeze_factor: T'//sf frames for an even kernel,
        # ceil(T'/sf) for an odd one (trimmed to T'//sf below). It runs with the reference's own padding: an
        # equivalent explicit pad that yields only the kept frames was measured to move results by ~1e-6 (oneDNN
        # picks another algorithm), so the reference's shapes are kept for bitwise parity.
        self.pos_conv_embed = PositionalConvEmbedding(cfg, stride=self.squeeze_factor)
        self.pool = nn.AvgPool1d(self.squeeze_factor, self.squeeze_factor)
        self.encoder = SEWDTransformerEncoder(cfg)
        self.upsample = Upsampling(cfg)

    def forward(self, x: Tensor, frame_mask: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """x [B, T', H], frame_mask bool [B, T'] or None -> (hidden_states at T'//sf, last_hidden_state [B, T', H])."""
        b, t = x.shape[0], x.shape[1]
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask.bool().unsqueeze(-1), 0.0)  # "make sure padded tokens output 0"
        xt = x.transpose(1, 2)
        # min_length: the pool yields T'//sf frames, the positional conv T'//sf or T'//sf + 1 (never fewer), so
        # the reference's min() is always the pooled length; n is read off the pooled tensor.
        pooled = self.pool(xt)
        n = pooled.shape[-1]
        h = (pooled + self.pos_conv_embed(xt)[..., :n]).transpose(1, 2)
        if frame_mask is None:
            mask = torch.ones((b, n), dtype=torch.long, device=x.device)
        else:
            valid = frame_mask.long().sum(-1) // self.squeeze_factor
            mask = (torch.arange(n, device=x.device)[None, :] < valid[:, None]).long()
        states, out = self.encoder(h, mask)
        up = self.upsample(out)
        up = F.pad(up, (0, 0, 0, t % self.squeeze_factor))  # T' - (T'//sf)*sf zero frames; none when sf | T'
        return states, up


class SEWDModel(nn.Module):
    """``SEWDModel`` (base, eval): the classification head (``porting.families.hf.heads.SEWDForSequenceClassification``)
    holds it under ``sew_d``."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = sewd_config(config)  # idempotent, so a normalised dict may be passed too
        self.config = cfg
        if cfg.get("tie_last_hidden_states") and cfg["use_weighted_layer_sum"] and semantics_of(cfg) >= 5:
            raise UnsupportedModelError("SEW-D with tie_last_hidden_states and use_weighted_layer_sum: transformers 5.x "
                                        "stacks hidden states of two lengths (it fails); nothing to port")
        self.masked_spec_embed = masked_spec_embed(cfg)
        self.feature_extractor = FeatureEncoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg["conv_dim"][-1], eps=cfg["feature_layer_norm_eps"])
        self.project_features = cfg["conv_dim"][-1] != cfg["hidden_size"]
        if self.project_features:
            self.feature_projection = nn.Linear(cfg["conv_dim"][-1], cfg["hidden_size"])
        self.feature_dropout = nn.Identity()
        self.encoder = SEWDEncoder(cfg)

    @staticmethod
    def weight_norm_dims(prefix: str = "", config: dict | None = None) -> dict[str, int]:
        """Weight-normed module prefixes (under ``prefix``, e.g. ``"sew_d"``) -> weight_norm's dim, for
        ``porting.families.hf.base.fold_weight_norm``: the positional conv, ``weight_norm(conv, dim=2)``
        (``SEWDPositionalConvEmbedding``), whatever the config (so ``config`` is not read)."""
        return weight_norm_dims(prefix)

    def frame_mask(self, length: int, attention_mask: Tensor) -> Tensor:
        return feature_vector_mask(length, attention_mask, self.config["conv_kernel"], self.config["conv_stride"])

    def encode(self, input_values: Tensor, attention_mask: Tensor | None = None) -> EncoderOutput:
        """transformers' hidden_states at T'//sf; ``last_hidden_state`` set: the upsampled [B, T', H] tensor, which
        is not ``hidden_states[-1]`` (the pre-upsampling [B, T'//sf, H] one)."""
        features = self.feature_extractor(input_values)
        x = self.layer_norm(features.transpose(1, 2))
        if self.project_features:
            x = self.feature_projection(x)
        mask = None if attention_mask is None else self.frame_mask(x.shape[1], attention_mask)
        states, last = self.encoder(x, mask)
        if self.config.get("tie_last_hidden_states") and semantics_of(self.config) >= 5:
            # 5.x capture_outputs with the config's tie: hidden_states[-1] becomes SEWDModel's last_hidden_state,
            # the UPSAMPLED [B, T', H] tensor (a weighted layer sum then cannot stack: refused in __init__)
            states = states[:-1] + [last]
        return EncoderOutput(features, states, mask, last)

    def encode_full(self, input_values: Tensor, attention_mask: Tensor | None = None) -> tuple[EncoderOutput, Tensor]:
        """``(encode(...), its last_hidden_state)``."""
        enc = self.encode(input_values, attention_mask)
        return enc, enc.last

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``last_hidden_state`` [B, T', H]."""
        return self.encode(input_values, attention_mask).last
