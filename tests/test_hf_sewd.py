"""SEW-D rebuild (porting/hf/sewd.py) against transformers' SEWDModel / SEWDForSequenceClassification.

Tiny seeded configs (hidden 32, 2 layers, 2 heads, 7 conv layers of 32 channels with wav2vec2's kernels/strides),
batch 2, input lengths giving T' both divisible and not divisible by squeeze_factor, with and without an
attention_mask. Every stage must be within 1e-5 max abs of transformers; relative-position buckets and masks
bitwise equal. Transformers is the oracle only: the rebuild never imports it.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the test oracle for the SEW-D rebuild")
from transformers.models.sew_d import modeling_sew_d as hf  # noqa: E402

from porting.families.hf.base import FEATURES, LOGITS, POOLED, fold_weight_norm, hidden_name  # noqa: E402
from porting.families.hf.heads import SEWDForSequenceClassification  # noqa: E402
from porting.families.hf.sewd import (  # noqa: E402
    SEWDModel,
    log_bucket_position,
    relative_position_buckets,
)

TOL = 1e-5
# wav2vec2's 7-layer feature encoder: total stride 320, receptive field 400 -> T' = (S - 400) // 320 + 1.
CONV = dict(conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2])
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, num_labels=3,
            classifier_proj_size=16, **CONV)

CONFIGS = {
    # defaults everywhere else: group norm, share_att_key, p2c|c2p, layer_norm on rel embeddings, gelu_python.
    # position_buckets 8 / max_position_embeddings 16 so T'//2 = 18..19 frames reach the log buckets and the clamp.
    "a_group_shared_even_poskernel": dict(
        TINY, squeeze_factor=2, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        position_buckets=8, max_position_embeddings=16,
    ),
    # layer-norm CNN with bias, projection 24 -> 32, odd positional kernel, separate c2p key, no rel-ebd norm,
    # encoder ConvLayer, no bucketing (raw relative positions clamped at max_relative_positions), squeeze 3,
    # weighted layer sum, no masked_spec_embed.
    "b_layer_c2p_conv_sf3_weighted": dict(
        TINY, conv_dim=[32] * 6 + [24], feat_extract_norm="layer", conv_bias=True, squeeze_factor=3,
        num_conv_pos_embeddings=15, num_conv_pos_embedding_groups=4, share_att_key=False, pos_att_type=["c2p"],
        norm_rel_ebd="none", position_buckets=-1, max_relative_positions=10, conv_kernel_size=3, conv_groups=2,
        conv_act="gelu", hidden_dropout_prob=0.0, hidden_act="gelu_new", use_weighted_layer_sum=True,
        mask_time_prob=0.0,
    ),
    # p2c only with its own query projection; buckets with an explicit max_relative_positions.
    "c_p2c_separate": dict(
        TINY, squeeze_factor=2, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
        share_att_key=False, pos_att_type=["p2c"], position_buckets=6, max_relative_positions=9,
        norm_rel_ebd="layer_norm", hidden_act="gelu",
    ),
    # SEWDConfig turns a string pos_att_type into a list of characters: no c2p/p2c term, scale_factor 1.
    "d_string_pos_att_type": dict(
        TINY, squeeze_factor=2, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        pos_att_type="p2c|c2p", position_buckets=8, max_position_embeddings=16, hidden_act="relu",
    ),
    # no relative attention at all: no rel_embeddings / LayerNorm keys.
    "e_no_relative_attention": dict(
        TINY, squeeze_factor=2, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        relative_attention=False, feat_extract_activation="gelu_new",
    ),
}
# (S divisible case, S not-divisible case) per squeeze factor: sf 2 -> T' 38 / 37; sf 3 -> T' 36 / 37.
LENGTHS = {2: (12320, 12000), 3: (11700, 12000)}


def _pair(name: str, seed: int = 0):
    cfg = CONFIGS[name]
    torch.manual_seed(seed)
    ref = hf.SEWDForSequenceClassification(transformers.SEWDConfig(**cfg)).eval()
    with torch.no_grad():  # move every parameter off its neutral init (zero biases, unit norms, uniform weights)
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = SEWDForSequenceClassification(cfg).eval()
    ours.load_state_dict(fold_weight_norm(ref.state_dict(), ours.weight_norm_dims()), strict=True)
    return ref, ours


def _reference_stages(ref, x, am):
    got = {}
    hooks = [
        ref.sew_d.feature_extractor.register_forward_hook(lambda m, i, o: got.__setitem__(FEATURES, o.clone())),
        ref.classifier.register_forward_pre_hook(lambda m, i: got.__setitem__(POOLED, i[0].clone())),
    ]
    try:
        with torch.no_grad():
            out = ref(x, attention_mask=am, output_hidden_states=True)
            base = ref.sew_d(x, attention_mask=am)
    finally:
        for h in hooks:
            h.remove()
    for i, h in enumerate(out.hidden_states):
        got[hidden_name(i)] = h
    got[LOGITS] = out.logits
    got["last_hidden_state"] = base.last_hidden_state
    return got


def _mask(batch_len: int, valid: list[int]) -> torch.Tensor:
    am = torch.zeros(len(valid), batch_len, dtype=torch.long)
    for b, v in enumerate(valid):
        am[b, :v] = 1
    return am


def _cases(name):
    sf = CONFIGS[name]["squeeze_factor"]
    weighted = CONFIGS[name].get("use_weighted_layer_sum", False)
    for s in LENGTHS[sf]:
        yield s, None
        # weighted layer sum: transformers only returns when every row has <= T'//sf valid frames (quirk test below)
        yield s, _mask(s, [3900, 2500] if weighted else [s, s * 2 // 3])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stages_match_transformers(name):
    torch.set_num_threads(1)
    ref, ours = _pair(name)
    sf = CONFIGS[name]["squeeze_factor"]
    torch.manual_seed(1)
    worst = {}
    seen_rem = set()
    for s, am in _cases(name):
        x = torch.randn(2, s)
        want = _reference_stages(ref, x, am)
        with torch.no_grad():
            got = ours.stages(x, am)
            enc, last = ours.sew_d.encode_full(x, am)
        t = want[FEATURES].shape[-1]
        seen_rem.add(t % sf)
        n_layers = CONFIGS[name]["num_hidden_layers"]
        assert set(got) == {FEATURES, POOLED, LOGITS} | {hidden_name(i) for i in range(n_layers + 1)}
        got["last_hidden_state"] = last
        for key, w in want.items():
            g = got[key]
            assert g.shape == w.shape, (key, g.shape, w.shape)
            d = (g - w).abs().max().item()
            worst[key] = max(worst.get(key, 0.0), d)
            assert d <= TOL, f"{name} S={s} mask={am is not None} {key}: max abs diff {d:.3g}"
        # hidden_states live at the squeezed length; last_hidden_state is upsampled back to T'
        assert want[hidden_name(n_layers)].shape[1] == t // sf and last.shape[1] == t
        if t % sf:  # the tail the upsampling cannot fill is exactly zero in both
            assert torch.all(want["last_hidden_state"][:, (t // sf) * sf :] == 0)
            assert torch.all(last[:, (t // sf) * sf :] == 0)
        if am is None:
            assert enc.frame_mask is None
        else:
            assert torch.equal(enc.frame_mask, ref._get_feature_vector_attention_mask(t, am))
    assert seen_rem == ({0, 1} if sf == 2 else {0, 1}), seen_rem  # divisible and not divisible both exercised
    print(f"{name}: " + ", ".join(f"{k}={v:.2e}" for k, v in sorted(worst.items())))


BUCKET_SETTINGS = [(8, 16), (6, 9), (7, 20), (16, 64), (32, 513), (256, 512), (256, 2048), (3, 40), (-1, 12)]


@pytest.mark.parametrize("bucket_size,max_position", BUCKET_SETTINGS)
def test_relative_position_buckets_bitwise(bucket_size, max_position):
    for n in (1, 2, 5, 17, 64, 129, 300):
        want = hf.build_relative_position(n, n, bucket_size=bucket_size, max_position=max_position)
        got = relative_position_buckets(n, n, bucket_size, max_position)
        assert got.dtype == want.dtype == torch.long
        assert torch.equal(got, want), (bucket_size, max_position, n)
        span = bucket_size if bucket_size > 0 else max_position
        for sgn in (1, -1):  # the c2p / p2c gather indices built from them
            assert torch.equal(torch.clamp(sgn * got + span, 0, 2 * span - 1),
                               torch.clamp(sgn * want + span, 0, 2 * span - 1))
    if bucket_size > 0:
        # the float helper too, on offsets far past max_position (no clamp inside make_log_bucket_position)
        rel = torch.arange(-4 * max_position, 4 * max_position + 1)[None, :].repeat(3, 1)
        want = hf.make_log_bucket_position(rel, bucket_size, max_position)
        got = log_bucket_position(rel, bucket_size, max_position)
        assert got.dtype == want.dtype and torch.equal(got, want)
        mid = bucket_size // 2
        far = rel[0] > mid  # the log branch is really exercised: beyond mid, buckets grow slower than |rel|
        assert torch.all(got[0, far] <= rel[0, far]) and got[0, -1] < rel[0, -1]


def test_hidden_states_entry0_is_squeezed_input_and_last_is_before_upsampling():
    """Pins which tensors transformers calls hidden_states: entry 0 = pool + positional conv (no norm), last =
    final DeBERTa layer output at T'//sf, not last_hidden_state."""
    torch.set_num_threads(1)
    ref, ours = _pair("a_group_shared_even_poskernel")
    x = torch.randn(2, 12000)
    with torch.no_grad():
        out = ref.sew_d(x, output_hidden_states=True)
        enc = ref.sew_d.encoder
        feats = ref.sew_d.layer_norm(ref.sew_d.feature_extractor(x).transpose(1, 2)).transpose(1, 2)
        pooled = enc.pool(feats)
        h0 = (pooled + enc.pos_conv_embed(feats)[..., : pooled.shape[-1]]).transpose(1, 2)
        assert torch.allclose(out.hidden_states[0], h0, atol=1e-6, rtol=0)
        assert torch.allclose(enc.upsample(out.hidden_states[-1]), out.last_hidden_state[:, : 2 * h0.shape[1]],
                              atol=1e-6, rtol=0)
        mine = ours.sew_d.encode(x)
    assert [h.shape[1] for h in mine.hidden_states] == [h0.shape[1]] * 3


def test_weighted_layer_sum_with_long_rows_is_an_index_error_in_transformers():
    """The quirk documented in sewd.py: the weighted head builds its pooling mask at T'//sf from T'-resolution
    lengths. Transformers raises; the rebuild (no data-dependent raise, traceable) returns finite logits."""
    torch.set_num_threads(1)
    ref, ours = _pair("b_layer_c2p_conv_sf3_weighted")
    x, am = torch.randn(2, 12000), _mask(12000, [12000, 6000])
    with torch.no_grad(), pytest.raises(IndexError):
        ref(x, attention_mask=am)
    with torch.no_grad():
        assert torch.isfinite(ours(x, am)).all()


def test_default_config_state_dict_keys_and_shapes():
    """SEWDConfig defaults (12 -> 1 layer to stay fast): position_buckets 256, masked_spec_embed, 13 conv layers."""
    torch.manual_seed(0)
    ref = hf.SEWDForSequenceClassification(transformers.SEWDConfig(num_hidden_layers=1))
    want = fold_weight_norm(ref.state_dict(), SEWDModel.weight_norm_dims("sew_d."))
    got = SEWDForSequenceClassification({"num_hidden_layers": 1}).state_dict()
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert got["sew_d.encoder.encoder.rel_embeddings.weight"].shape == (512, 768)


def test_full_config_json_dict_is_accepted():
    """A config.json as transformers writes it (to_dict, with unrelated keys) builds the same model."""
    cfg = transformers.SEWDConfig(**CONFIGS["c_p2c_separate"]).to_dict()
    ours = SEWDForSequenceClassification(cfg)
    ref = hf.SEWDForSequenceClassification(transformers.SEWDConfig(**CONFIGS["c_p2c_separate"]))
    want = fold_weight_norm(ref.state_dict(), ours.weight_norm_dims())
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in want.items()}


def test_jit_trace_is_not_baked_to_the_traced_length():
    """Traced at a T' divisible by squeeze_factor, run at one that is not (and vice versa): still transformers'
    output, i.e. the squeeze/pad/arange arithmetic follows the input shape. Transformers' own trace at the
    divisible length drops the tail pad (its ``if shape < n: pad`` branch is baked in)."""
    torch.set_num_threads(1)
    ref, ours = _pair("a_group_shared_even_poskernel")
    torch.manual_seed(2)
    x_div, x_odd = torch.randn(2, 12320), torch.randn(2, 12000)  # T' = 38, 37
    with torch.no_grad():
        for a, b in ((x_div, x_odd), (x_odd, x_div)):
            traced = torch.jit.trace(ours, (a,), check_trace=False)
            assert (traced(b) - ref(b).logits).abs().max().item() <= TOL
        base = torch.jit.trace(ours.sew_d, (x_div,), check_trace=False)
        assert base(x_odd).shape[1] == 37

        class Last(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x).last_hidden_state

        ref_traced = torch.jit.trace(Last(ref.sew_d), (x_div,), check_trace=False)
        assert ref_traced(x_odd).shape[1] == 36  # the quirk our docstring names: 36 frames for T' = 37


def test_torch_export_dynamic_batch():
    torch.set_num_threads(1)
    ref, ours = _pair("b_layer_c2p_conv_sf3_weighted")
    x = torch.randn(2, 12000)
    prog = torch.export.export(ours, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    x3 = torch.randn(3, 12000)
    with torch.no_grad():
        assert (prog.module()(x3) - ref(x3).logits).abs().max().item() <= TOL


def test_onnx_dynamic_time_matches_transformers():
    ort = pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    import io

    torch.set_num_threads(1)
    ref, ours = _pair("a_group_shared_even_poskernel")
    buf = io.BytesIO()
    torch.onnx.export(ours, (torch.randn(2, 12320),), buf, dynamo=False, input_names=["input_values"],
                      output_names=["logits"], dynamic_axes={"input_values": {0: "batch", 1: "time"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    torch.manual_seed(3)
    for s in (12000, 12320, 20000):
        x = torch.randn(3, s)
        with torch.no_grad():
            want = ref(x).logits
        got = torch.from_numpy(sess.run(None, {"input_values": x.numpy()})[0])
        assert (got - want).abs().max().item() <= TOL, s
