"""The plain-torch AST (porting/hf/ast.py) against transformers' ASTForAudioClassification as the oracle.

Tiny seeded configs, CPU float32, eval. transformers initialises cls/distillation tokens and position embeddings
to zero and every LayerNorm to (1, 0); a rebuild that dropped or misordered them would still agree, so those
parameters are re-drawn at random before the comparison.

Measured (torch 2.13 CPU, transformers 4.57.1): every stage of the sdpa rebuild is bitwise equal to transformers'
default (sdpa) path, and the eager rebuild bitwise equal to transformers' eager path; across paths (eager vs sdpa)
the hidden states differ by <= 4.8e-7 on these configs (4.8e-6 on the full 768x12 / 1024-frame config).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is the oracle for the AST rebuild (a test-only dependency)"
)

from porting.errors import UnsupportedModelError  # noqa: E402
from porting.families.hf.ast import ASTForAudioClassification, ASTModel  # noqa: E402
from porting.families.hf.base import ACTIVATIONS, FEATURES, LOGITS, POOLED, Activation, hidden_name  # noqa: E402

TOL = 1e-5

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONFIGS = {
    "strides10x10": dict(TINY, num_mel_bins=128, max_length=100, frequency_stride=10, time_stride=10),
    "strides12x7": dict(TINY, num_mel_bins=128, max_length=100, frequency_stride=12, time_stride=7),
    "bins64_gelu_new_noqkvbias_5labels": dict(
        TINY, num_mel_bins=64, max_length=120, frequency_stride=16, time_stride=8, hidden_act="gelu_new",
        qkv_bias=False, layer_norm_eps=1e-6, num_labels=5,
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _hf(kwargs: dict, attn: str = "sdpa"):
    """A seeded transformers model with every zero/one-initialised parameter re-drawn at random.

    Each model gets its own config object: ``ASTSelfAttention`` reads ``config._attn_implementation`` at call
    time, so two models sharing one config would silently run the same attention path.
    """
    cfg = transformers.ASTConfig(**kwargs)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(copy.deepcopy(cfg)).eval()
    assert model.config._attn_implementation == attn
    g = torch.Generator().manual_seed(1)
    state = model.state_dict()
    for k, v in state.items():
        if "token" in k or "position_embeddings" in k or "layernorm" in k:
            state[k] = torch.randn(v.shape, generator=g) * 0.5 + (1.0 if k.endswith("layernorm.weight") else 0.0)
    model.load_state_dict(state)
    return model


def _config_json(model, tmp_path) -> dict:
    """The config.json transformers writes for the model (the only thing the rebuild is built from)."""
    model.config.save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def _input(model, batch: int = 2, seed: int = 2) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.max_length, c.num_mel_bins, generator=torch.Generator().manual_seed(seed))


def _reference_stages(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        base = model.audio_spectrogram_transformer
        ref = {FEATURES: base.embeddings(x), POOLED: model.classifier.layernorm(base(x).pooler_output), LOGITS: out.logits}
    ref.update({hidden_name(i): h for i, h in enumerate(out.hidden_states)})
    return ref


def _diffs(ours: dict, ref: dict) -> dict[str, float]:
    assert set(ours) == set(ref), (sorted(ours), sorted(ref))
    for k in ref:
        assert ours[k].shape == ref[k].shape, (k, ours[k].shape, ref[k].shape)
    return {k: (ours[k] - ref[k]).abs().max().item() for k in ref}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_stage_matches_transformers(name, attn, tmp_path):
    hf = _hf(CONFIGS[name], attn)
    ours = ASTForAudioClassification(_config_json(hf, tmp_path), attn_implementation=attn).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    x = _input(hf)
    with torch.no_grad():
        got = ours.stages(x)
        logits = ours(x)
    ref = _reference_stages(hf, x)
    d = _diffs(got, ref)
    print(name, attn, {k: f"{v:.3g}" for k, v in d.items()})
    assert max(d.values()) <= TOL, d
    assert torch.equal(logits, got[LOGITS])
    n_layers = CONFIGS[name]["num_hidden_layers"]
    hidden_keys = sorted(k for k in got if k.startswith("M.hidden_states."))
    assert hidden_keys == sorted(hidden_name(i) for i in range(n_layers + 1))


def test_default_attention_is_the_one_transformers_runs(tmp_path):
    """transformers defaults to sdpa; the default rebuild matches it, eager math differs by float rounding only."""
    kwargs = CONFIGS["strides12x7"]
    plain = transformers.ASTForAudioClassification(transformers.ASTConfig(**kwargs))
    assert plain.config._attn_implementation == "sdpa"
    hf = _hf(kwargs)  # sdpa
    x = _input(hf)
    ref = _reference_stages(hf, x)
    out = {}
    for attn in ("sdpa", "eager"):
        m = ASTForAudioClassification(_config_json(hf, tmp_path), attn_implementation=attn).eval()
        m.load_state_dict(hf.state_dict(), strict=True)
        with torch.no_grad():
            out[attn] = _diffs(m.stages(x), ref)
    default = ASTForAudioClassification(_config_json(hf, tmp_path)).eval()
    default.load_state_dict(hf.state_dict(), strict=True)
    with torch.no_grad():
        assert _diffs(default.stages(x), ref) == out["sdpa"]
    print("vs transformers sdpa:", {a: max(d.values()) for a, d in out.items()})
    assert max(out["sdpa"].values()) <= max(out["eager"].values()) <= TOL


def test_hidden_states_layout(tmp_path):
    """hidden_states[0] is the embeddings output; the last one is after the final layernorm (not the raw layer)."""
    hf = _hf(CONFIGS["strides10x10"])
    x = _input(hf)
    base = hf.audio_spectrogram_transformer
    with torch.no_grad():
        emb = base.embeddings(x)
        raw_last = base.encoder(emb).last_hidden_state
        normed = base.layernorm(raw_last)
    ours = ASTForAudioClassification(_config_json(hf, tmp_path)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    with torch.no_grad():
        s = ours.stages(x)
    assert torch.equal(s[FEATURES], s[hidden_name(0)])
    assert (s[hidden_name(0)] - emb).abs().max().item() <= TOL
    assert (s[hidden_name(2)] - normed).abs().max().item() <= TOL
    assert (s[hidden_name(2)] - raw_last).abs().max().item() > 1e-2
    # N + 2 tokens: ((128 - 16) // 10 + 1) * ((100 - 16) // 10 + 1) = 12 * 9 patches + cls + distillation.
    assert s[FEATURES].shape == (2, 12 * 9 + 2, 32)
    assert torch.equal(s[POOLED], ours.classifier.layernorm((s[hidden_name(2)][:, 0] + s[hidden_name(2)][:, 1]) / 2))


@pytest.mark.parametrize("num_labels", [0, 3])
def test_state_dict_keys_and_shapes_are_transformers(num_labels, tmp_path):
    hf = _hf(dict(CONFIGS["strides12x7"], num_labels=num_labels))
    ours = ASTForAudioClassification(_config_json(hf, tmp_path))
    theirs = hf.state_dict()
    mine = ours.state_dict()
    assert list(mine) == list(theirs)
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert ("classifier.dense.weight" in mine) == (num_labels > 0)
    ours.load_state_dict(theirs, strict=True)
    x = _input(hf)
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() <= TOL
    assert isinstance(ours.audio_spectrogram_transformer, ASTModel)


def test_missing_keys_take_astconfig_defaults():
    """A config.json naming only a few keys: the rest are ASTConfig's defaults (768 x 12, 1024 x 128, ...)."""
    hf_cfg = transformers.ASTConfig(num_hidden_layers=1)
    hf_shapes = {k: tuple(v.shape) for k, v in transformers.ASTForAudioClassification(hf_cfg).state_dict().items()}
    ours = ASTForAudioClassification({"num_hidden_layers": 1})
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == hf_shapes
    assert ours.cfg["layer_norm_eps"] == hf_cfg.layer_norm_eps and ours.cfg["hidden_act"] == hf_cfg.hidden_act


def test_wrong_input_shape_is_refused_in_one_line(tmp_path):
    hf = _hf(CONFIGS["strides10x10"])
    ours = ASTForAudioClassification(_config_json(hf, tmp_path)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    for shape in [(2, 120, 128), (2, 101, 128), (2, 100, 64), (100, 128), (2, 1, 100, 128)]:
        with pytest.raises(UnsupportedModelError) as err:
            ours(torch.randn(*shape))
        msg = str(err.value)
        assert "\n" not in msg and "[batch, 100, 128]" in msg and str(list(shape)) in msg, msg
    # The oracle fails on a patch grid the position table does not fit ...
    with pytest.raises(RuntimeError):
        hf(torch.randn(2, 120, 128))
    # ... but silently accepts a few extra frames that leave the grid unchanged (ASTEmbeddings.get_shape floors);
    # we refuse those too rather than drop frames.
    assert hf(torch.randn(2, 101, 128)).logits.shape == (2, 2)


def test_attention_mask_is_refused_in_one_line(tmp_path):
    hf = _hf(CONFIGS["strides10x10"])
    ours = ASTForAudioClassification(_config_json(hf, tmp_path)).eval()
    x = _input(hf)
    with pytest.raises(UnsupportedModelError) as err:
        ours.stages(x, torch.ones(2, 100, dtype=torch.long))
    assert "\n" not in str(err.value) and "attention_mask" in str(err.value)
    assert ours(x, None).shape == (2, 2)


def test_bad_configs_are_refused():
    with pytest.raises(UnsupportedModelError, match="hidden_act"):
        ASTForAudioClassification(dict(TINY, hidden_act="not_an_activation"))
    # num_labels disagreeing with id2label: transformers warns and goes with id2label; so does the port
    cfg = dict(TINY, num_labels=3, id2label={"0": "a", "1": "b"})
    ref = transformers.ASTConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    assert ASTForAudioClassification(cfg).classifier.dense.out_features == ref.num_labels == 2
    with pytest.raises(UnsupportedModelError, match="attn_implementation"):
        ASTForAudioClassification(dict(TINY), attn_implementation="flash_attention_2")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_table_matches_act2fn(name):
    x = torch.randn(4096, generator=torch.Generator().manual_seed(3)) * 6
    assert torch.equal(Activation(name)(x), transformers.activations.ACT2FN[name](x))


def test_jit_trace_and_export_reproduce_eager(tmp_path):
    hf = _hf(CONFIGS["strides12x7"])
    ours = ASTForAudioClassification(_config_json(hf, tmp_path)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    x, x2 = _input(hf), _input(hf, seed=5)
    with torch.no_grad():
        traced = torch.jit.trace(ours, (x,))
        exported = torch.export.export(ours, (x,)).module()
        want = hf(x2).logits
        assert (traced(x2) - want).abs().max().item() <= TOL
        assert (exported(x2) - want).abs().max().item() <= TOL
