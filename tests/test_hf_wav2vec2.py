"""wav2vec2 / HuBERT / WavLM rebuilds and their classification heads against transformers (the oracle).

Tiny seeded configs; every transformers parameter and buffer is perturbed away from its init (LayerNorm weights 1,
biases 0, gru constants 1, ...) so a swapped or ignored tensor shows. Every stage (``M.features``,
``M.hidden_states.0..L``, ``M.pooled``, ``Y.logits``) must be within 1e-5 max abs of transformers on batch 2, two
input lengths, with and without an attention mask; WavLM's relative-position buckets must be bitwise equal.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is the test oracle for the HF rebuilds (not needed at run time)"
)
from torch import nn  # noqa: E402
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from porting.errors import UnsupportedModelError  # noqa: E402
from porting.families.hf import heads  # noqa: E402
from porting.families.hf.base import FEATURES, LOGITS, POOLED, fold_weight_norm, hidden_name  # noqa: E402
from porting.families.hf.wav2vec2 import (  # noqa: E402
    Wav2Vec2Model,
    feature_vector_mask,
    relative_position_buckets,
)

TOL = 1e-5
LENGTHS = (1203, 1630)  # samples -> 58 and 79 frames with the tiny conv stack below
MEASURED: dict[str, float] = {}  # stage maxima per case; dumped when HF_PARITY_REPORT names a file


def _record(case: str, diffs: dict[str, float]) -> None:
    for stage, d in diffs.items():
        key = f"{case} {stage}"
        MEASURED[key] = max(MEASURED.get(key, 0.0), d)
    path = os.environ.get("HF_PARITY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(MEASURED, f, indent=1, sort_keys=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "conv_dim": [16, 24, 20],
    "conv_kernel": [10, 3, 2],
    "conv_stride": [5, 2, 2],
    "num_conv_pos_embeddings": 16,  # even: the same-pad layer drops the last frame
    "num_conv_pos_embedding_groups": 4,
    "classifier_proj_size": 12,
    "id2label": {"0": "a", "1": "b", "2": "c"},
    "layer_norm_eps": 1e-5,
}

BASES = {
    # wav2vec2-base style: GroupNorm on conv 0, no conv bias, post-LN encoder
    "w2v-base": ("Wav2Vec2", {**TINY}),
    # wav2vec2-large(-lv60) style: LayerNorm on every conv, conv bias, pre-LN ("stable") encoder, odd pos kernel
    "w2v-large": (
        "Wav2Vec2",
        {**TINY, "feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True,
         "num_conv_pos_embeddings": 15, "layer_norm_eps": 1e-6},
    ),
    # MMS-style attention adapters in the pre-LN layers, no SpecAugment vector
    "w2v-mms": (
        "Wav2Vec2",
        {**TINY, "feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True,
         "adapter_attn_dim": 8, "mask_time_prob": 0.0, "hidden_act": "gelu_new"},
    ),
    "hubert-base": ("Hubert", {**TINY}),
    "hubert-large": (
        "Hubert",
        {**TINY, "feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True,
         "feat_proj_layer_norm": False},
    ),
    "hubert-bnpos": ("Hubert", {**TINY, "conv_pos_batch_norm": True, "mask_time_prob": 0.0}),
    # small bucket settings so 58..79 frames reach the log-scale buckets and the cap
    "wavlm-base": ("WavLM", {**TINY, "num_buckets": 32, "max_bucket_distance": 40}),
    "wavlm-large": (
        "WavLM",
        {**TINY, "num_buckets": 32, "max_bucket_distance": 40, "feat_extract_norm": "layer", "conv_bias": True,
         "do_stable_layer_norm": True},
    ),
}
PREFIX = {"Wav2Vec2": "wav2vec2", "Hubert": "hubert", "WavLM": "wavlm"}


def _hf_config(family: str, cfg: dict, **extra):
    c = {**cfg, **extra}
    c["id2label"] = {int(k): v for k, v in c["id2label"].items()}
    return getattr(transformers, f"{family}Config")(**c)


def _perturb(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def _inputs(seed: int):
    """(input_values, attention_mask) pairs: batch 2 at each length; the mask cuts the second row to 60%, the
    padding holding noise (the reference sees the same noise)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in LENGTHS:
        x = torch.randn(2, n, generator=g)
        mask = torch.ones(2, n, dtype=torch.long)
        mask[1, int(n * 0.6):] = 0
        out.append((x, mask))
    return out


def _reference_stages(model, base_attr: str, pooled_module: nn.Module, x, mask):
    grabbed = {}
    h1 = getattr(model, base_attr).feature_extractor.register_forward_hook(
        lambda m, a, o: grabbed.__setitem__(FEATURES, o.detach().clone())
    )
    h2 = pooled_module.register_forward_pre_hook(lambda m, a: grabbed.__setitem__(POOLED, a[0].detach().clone()))
    try:
        with torch.no_grad():
            out = model(x, attention_mask=mask, output_hidden_states=True)
    finally:
        h1.remove()
        h2.remove()
    for i, h in enumerate(out.hidden_states):
        grabbed[hidden_name(i)] = h
    grabbed[LOGITS] = out.logits
    return grabbed


def _compare(case: str, ours: dict, ref: dict) -> dict[str, float]:
    assert set(ours) == set(ref), (sorted(ours), sorted(ref))
    diffs = {}
    for k, r in ref.items():
        o = ours[k]
        assert o.shape == r.shape, (case, k, o.shape, r.shape)
        diffs[k] = (o - r).abs().max().item()
    _record(case, diffs)
    bad = {k: d for k, d in diffs.items() if not d <= TOL}
    assert not bad, f"{case}: stages over {TOL}: {bad}"
    return diffs


def _load(rebuild: nn.Module, ref: nn.Module, architecture: str, cfg: dict, legacy_keys: bool = False):
    state = dict(ref.state_dict())
    if legacy_keys:  # how hub checkpoints saved under torch's old weight_norm store the pair
        state = {
            k.replace(".parametrizations.weight.original0", ".weight_g").replace(
                ".parametrizations.weight.original1", ".weight_v"
            ): v
            for k, v in state.items()
        }
    rebuild.load_state_dict(fold_weight_norm(state, heads.weight_norm_dims(architecture, cfg)), strict=True)
    return rebuild.eval()


# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["last", "weighted"])
@pytest.mark.parametrize("base", list(BASES))
def test_sequence_classification_matches_transformers(base, weighted):
    family, cfg = BASES[base]
    cfg = {**cfg, "use_weighted_layer_sum": weighted}
    arch = f"{family}ForSequenceClassification"
    torch.manual_seed(0)
    ref = _perturb(getattr(transformers, arch)(_hf_config(family, cfg)), seed=1)
    ours = _load(heads.ARCHITECTURES[arch](cfg), ref, arch, cfg)
    assert len(ours.stages(torch.randn(1, 900))) == cfg["num_hidden_layers"] + 4
    for x, mask in _inputs(seed=2):
        for m in (None, mask):
            r = _reference_stages(ref, PREFIX[family], ref.classifier, x, m)
            with torch.no_grad():
                o = ours.stages(x, m)
                assert torch.equal(ours(x, m), o[LOGITS])
            _compare(f"{base}/{'weighted' if weighted else 'last'}/{'mask' if m is not None else 'nomask'}", o, r)


def test_eager_attention_reference_agrees_too():
    """transformers' default attention is sdpa; its eager path (the formula the rebuild writes out) agrees."""
    family, cfg = BASES["w2v-base"]
    torch.manual_seed(0)
    ref = _perturb(
        transformers.Wav2Vec2ForSequenceClassification(_hf_config(family, cfg, attn_implementation="eager")), seed=3
    )
    assert ref.config._attn_implementation == "eager"
    ours = _load(heads.Wav2Vec2ForSequenceClassification(cfg), ref, "Wav2Vec2ForSequenceClassification", cfg)
    for x, mask in _inputs(seed=4):
        r = _reference_stages(ref, "wav2vec2", ref.classifier, x, mask)
        with torch.no_grad():
            _compare("w2v-base/eager/mask", ours.stages(x, mask), r)


# --- the custom head --------------------------------------------------------------------------------------------


class _UserHead(nn.Module):
    """The user class's Wav2Vec2ClassificationHead."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features):
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


class UserWav2Vec2ForSpeechClassification(transformers.Wav2Vec2PreTrainedModel):
    """The widespread user class: transformers' Wav2Vec2Model + merged_strategy pooling + the head above."""

    def __init__(self, config):
        super().__init__(config)
        self.pooling_mode = config.pooling_mode
        self.wav2vec2 = transformers.Wav2Vec2Model(config)
        self.classifier = _UserHead(config)
        self.post_init()

    def forward(self, input_values, attention_mask=None, output_hidden_states=None):
        outputs = self.wav2vec2(input_values, attention_mask=attention_mask, output_hidden_states=output_hidden_states)
        h = outputs[0]
        if self.pooling_mode == "mean":
            pooled = torch.mean(h, dim=1)
        elif self.pooling_mode == "sum":
            pooled = torch.sum(h, dim=1)
        elif self.pooling_mode == "max":
            pooled = torch.max(h, dim=1)[0]
        else:
            raise Exception("The pooling method hasn't been defined!")
        return SequenceClassifierOutput(logits=self.classifier(pooled), hidden_states=outputs.hidden_states)


@pytest.mark.parametrize("base", ["w2v-base", "w2v-large"])
@pytest.mark.parametrize("mode", ["mean", "sum", "max"])
def test_speech_classification_matches_user_class(mode, base):
    _, cfg = BASES[base]
    cfg = {**cfg, "pooling_mode": mode}
    arch = "Wav2Vec2ForSpeechClassification"
    torch.manual_seed(0)
    ref = _perturb(UserWav2Vec2ForSpeechClassification(_hf_config("Wav2Vec2", cfg)), seed=5)
    ours = _load(heads.ARCHITECTURES[arch](cfg), ref, arch, cfg)
    for x, mask in _inputs(seed=6):
        for m in (None, mask):
            r = _reference_stages(ref, "wav2vec2", ref.classifier.dense, x, m)
            with torch.no_grad():
                o = ours.stages(x, m)
            _compare(f"speech-{mode}/{base}/{'mask' if m is not None else 'nomask'}", o, r)


def test_speech_classification_pools_over_padding_like_the_user_class():
    """The quirk is real: with a mask, the pooled vector is NOT the mean over valid frames only."""
    _, cfg = BASES["w2v-base"]
    cfg = {**cfg, "pooling_mode": "mean"}
    torch.manual_seed(0)
    ours = _perturb(heads.Wav2Vec2ForSpeechClassification(cfg), seed=7)
    x, mask = _inputs(seed=8)[0]
    with torch.no_grad():
        s = ours.stages(x, mask)
        frames = feature_vector_mask(s[FEATURES].shape[2], mask, cfg["conv_kernel"], cfg["conv_stride"])
        last = s[hidden_name(cfg["num_hidden_layers"])]
    assert torch.equal(s[POOLED], last.mean(dim=1))
    valid_mean = last[1, frames[1]].mean(dim=0)
    assert (s[POOLED][1] - valid_mean).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["attention", "MEAN", None])
def test_unknown_pooling_mode_is_refused(mode):
    _, cfg = BASES["w2v-base"]
    cfg = {**cfg, "pooling_mode": mode} if mode is not None else dict(cfg)
    with pytest.raises(UnsupportedModelError) as err:
        heads.ARCHITECTURES["Wav2Vec2ForSpeechClassification"](cfg)
    assert "pooling_mode" in str(err.value) and "\n" not in str(err.value)


# --- weight norm, strict loading, defaults ------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["parametrizations", "weight_g_v"])
@pytest.mark.parametrize("base", ["w2v-base", "wavlm-large"])
def test_strict_load_from_both_weight_norm_spellings(base, legacy):
    family, cfg = BASES[base]
    arch = f"{family}ForSequenceClassification"
    torch.manual_seed(0)
    ref = _perturb(getattr(transformers, arch)(_hf_config(family, cfg)), seed=9)
    keys = set(ref.state_dict())
    conv = f"{PREFIX[family]}.encoder.pos_conv_embed.conv"
    assert {conv + ".parametrizations.weight.original0", conv + ".parametrizations.weight.original1"} <= keys
    assert heads.weight_norm_dims(arch, cfg) == {conv: 2}
    ours = _load(heads.ARCHITECTURES[arch](cfg), ref, arch, cfg, legacy_keys=legacy)
    # the folded weight is bitwise the one the reference convolves with
    ref_conv = getattr(ref, PREFIX[family]).encoder.pos_conv_embed.conv
    assert torch.equal(ours.state_dict()[conv + ".weight"], ref_conv.weight.detach())
    x, mask = _inputs(seed=10)[0]
    r = _reference_stages(ref, PREFIX[family], ref.classifier, x, mask)
    with torch.no_grad():
        _compare(f"{base}/load-{'weight_g_v' if legacy else 'parametrizations'}", ours.stages(x, mask), r)


def test_unfolded_checkpoint_is_refused_by_strict_loading():
    family, cfg = BASES["w2v-base"]
    ref = transformers.Wav2Vec2ForSequenceClassification(_hf_config(family, cfg))
    with pytest.raises(RuntimeError, match="pos_conv_embed"):
        heads.Wav2Vec2ForSequenceClassification(cfg).load_state_dict(ref.state_dict(), strict=True)


def test_hubert_batch_norm_positional_conv_has_no_weight_norm():
    family, cfg = BASES["hubert-bnpos"]
    ref = transformers.HubertForSequenceClassification(_hf_config(family, cfg))
    assert not any("parametrizations" in k for k in ref.state_dict())
    assert heads.weight_norm_dims("HubertForSequenceClassification", cfg) == {}


MINIMAL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 40}


@pytest.mark.parametrize("arch", sorted(heads.ARCHITECTURES))
def test_missing_config_keys_take_transformers_defaults(arch):
    """Conv stack, norms, masked_spec_embed presence, projector size and label count from a near-empty config."""
    cfg = {**MINIMAL, "pooling_mode": "mean"}
    family = arch.split("For")[0]
    hf_cfg = getattr(transformers, f"{family}Config")(**cfg)
    if arch == "Wav2Vec2ForSpeechClassification":
        ref = UserWav2Vec2ForSpeechClassification(hf_cfg)
    else:
        ref = getattr(transformers, arch)(hf_cfg)
    expect = {k: v.shape for k, v in fold_weight_norm(ref.state_dict(), heads.weight_norm_dims(arch, cfg)).items()}
    got = {k: v.shape for k, v in heads.ARCHITECTURES[arch](cfg).state_dict().items()}
    assert got == expect


@pytest.mark.parametrize(
    "spec",
    [{"mask_time_prob": 0.0}, {"mask_time_prob": 0.0, "mask_feature_prob": 0.1},
     {"apply_spec_augment": False}, {"apply_spec_augment": False, "mask_time_prob": 0.0}],
)
@pytest.mark.parametrize("family", ["Wav2Vec2", "Hubert", "WavLM"])
def test_masked_spec_embed_key_follows_transformers(family, spec):
    """transformers keeps ``masked_spec_embed`` iff mask_time_prob > 0 or mask_feature_prob > 0 --
    ``apply_spec_augment`` does not matter."""
    cfg = {**TINY, "num_hidden_layers": 1, **spec}
    ref = getattr(transformers, f"{family}Model")(_hf_config(family, cfg))
    ours = getattr(heads, f"{family}ForSequenceClassification").base_model_class(cfg)
    assert ("masked_spec_embed" in ours.state_dict()) == ("masked_spec_embed" in ref.state_dict())


def test_unknown_architecture_and_settings_are_refused():
    with pytest.raises(UnsupportedModelError):
        heads.weight_norm_dims("Wav2Vec2ForCTC", {})
    with pytest.raises(UnsupportedModelError, match="feat_extract_norm"):
        Wav2Vec2Model({**TINY, "feat_extract_norm": "batch"})
    with pytest.raises(UnsupportedModelError, match="activation"):
        Wav2Vec2Model({**TINY, "hidden_act": "xielu"})


# --- frame mask and WavLM buckets ---------------------------------------------------------------------------------


def test_frame_mask_and_lengths_match_transformers():
    family, cfg = BASES["w2v-base"]
    ref = transformers.Wav2Vec2Model(_hf_config(family, cfg))
    n = 1630
    frames = Wav2Vec2Model.output_lengths(n, cfg)
    assert frames == ref._get_feat_extract_output_lengths(n)
    # includes a too-short row (frame length <= 0), where transformers' index -1 wraps to "all frames valid"
    counts = [n, 1203, 900, 20, 14, 9]
    mask = torch.zeros(len(counts), n, dtype=torch.int32)
    for i, c in enumerate(counts):
        mask[i, :c] = 1
    lengths = Wav2Vec2Model.output_lengths(mask.sum(-1), cfg)
    assert torch.equal(lengths, ref._get_feat_extract_output_lengths(mask.sum(-1)))
    ours = feature_vector_mask(frames, mask, cfg["conv_kernel"], cfg["conv_stride"])
    theirs = ref._get_feature_vector_attention_mask(frames, mask)
    assert ours.dtype == theirs.dtype == torch.bool
    assert torch.equal(ours, theirs)
    # the wrap, reproduced: 14 samples -> frame length 0 -> index -1 -> all valid; 9 -> -1 -> index -2
    assert ours[-2].all() and ours[-1].sum() == frames - 1


@pytest.mark.parametrize(
    ("num_buckets", "max_distance", "length"), [(320, 800, 1100), (32, 40, 90), (10, 20, 64)]
)
def test_wavlm_relative_position_buckets_bitwise(num_buckets, max_distance, length):
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    att = WavLMAttention(16, 2, num_buckets=num_buckets, max_distance=max_distance)
    pos = torch.arange(length)
    theirs = att._relative_positions_bucket(pos[None, :] - pos[:, None])
    ours = relative_position_buckets(length, length, num_buckets, max_distance)
    assert ours.dtype == theirs.dtype == torch.long
    assert torch.equal(ours, theirs)
    # the settings reach both the log-scale buckets and their cap, on both signs
    assert ours.max().item() == num_buckets - 1 and (ours == num_buckets // 2 - 1).any()


def test_wavlm_position_bias_bitwise_and_reused():
    family, cfg = BASES["wavlm-base"]
    torch.manual_seed(0)
    ref = _perturb(transformers.WavLMModel(_hf_config(family, cfg)), seed=11)
    ours = heads.WavLMForSequenceClassification(cfg).wavlm
    ours.load_state_dict(fold_weight_norm(ref.state_dict(), ours.weight_norm_dims(cfg)), strict=True)
    bias = ours.encoder.layers[0].attention.compute_bias(77)
    assert torch.equal(bias, ref.encoder.layers[0].attention.compute_bias(77, 77))
    # only layer 0 owns the embedding; later layers gate the bias layer 0 hands on
    assert not hasattr(ours.encoder.layers[1].attention, "rel_attn_embed")
    assert not any("layers.1.attention.rel_attn_embed" in k for k in ref.state_dict())


def test_onnx_export_follows_the_time_axis():
    """Exported (TorchScript-based ONNX exporter, opset 17) at one length and batch, run at others with a mask:
    no frame count (positional conv trim, buckets, frame mask) is baked into the graph."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported graph")
    import io

    family, cfg = BASES["wavlm-base"]
    torch.manual_seed(0)
    ours = _perturb(heads.WavLMForSequenceClassification(cfg), seed=12)
    (x1, m1), (x2, m2) = _inputs(seed=13)
    buf = io.BytesIO()
    axes = {"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}}
    with torch.no_grad():
        torch.onnx.export(ours, (x1, m1), buf, dynamo=False, opset_version=17, dynamic_axes=axes,
                          input_names=["input_values", "attention_mask"], output_names=["logits"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x3 = torch.cat([x2, x2[:1]])
    m3 = torch.cat([m2, torch.ones_like(m2[:1])])
    m3[2, 1000:] = 0
    for x, m in ((x2, m2), (x3, m3)):
        got = session.run(None, {"input_values": x.numpy(), "attention_mask": m.numpy()})[0]
        with torch.no_grad():
            want = ours(x, m).numpy()
        assert abs(got - want).max() <= TOL
