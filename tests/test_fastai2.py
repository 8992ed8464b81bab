"""fastai 2.8 exports (tests/fixtures/fastai2): model, vocab, Normalize stats, activation, round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES
from porting.convert import convert, load_model
from porting.families.orcahello.layers import build_model
from porting.families.orcahello.learner import read_learner

D = FIXTURES / "fastai2"
NAMES = ["xresnet_norm", "vision_sq"]


@pytest.fixture(scope="module", params=NAMES)
def fx(request):
    name = request.param
    spec = read_learner(D / f"{name}.pkl")
    return {
        "name": name,
        "spec": spec,
        "model": build_model(spec),
        "ref": load_file(str(D / f"{name}.ref.safetensors")),
        "json": json.loads((D / f"{name}.ref.json").read_text()),
    }


def test_kind_and_source(fx):
    assert fx["spec"].source.kind == "fastai2-learner"
    assert fx["spec"].source.sha256 == fx["json"]["sha256"]


def test_logits_and_probs(fx):
    with torch.no_grad():
        logits = fx["model"](fx["ref"]["model_input"])
    assert (logits - fx["ref"]["logits"]).abs().max().item() <= 1e-5
    assert fx["spec"].activation == {"name": "softmax", "dim": -1}  # CrossEntropyLossFlat.activation
    assert (torch.softmax(logits, dim=-1) - fx["ref"]["probs"]).abs().max().item() <= 1e-5
    assert torch.equal(logits.argmax(-1), fx["ref"]["pred_idx"])


def test_state_dict_keys_order_and_shapes(fx):
    want = fx["json"]["state_dict"]
    got = fx["model"].state_dict()
    assert list(got) == list(want) == list(fx["spec"].state_dict)
    for k, v in want.items():
        assert list(got[k].shape) == v["shape"] and str(got[k].dtype) == v["dtype"], k


def test_vocab_and_positive_index(fx):
    spec, ref = fx["spec"], fx["json"]
    assert list(spec.classes) == ref["vocab"]
    if len(ref["vocab"]) == 2:
        assert spec.positive_index == ref["positive_index"] == 1
    else:  # 3 classes, none named 'positive': the rule gives none (the fixture's 'diagonal' is its own label)
        assert spec.positive_index is None


def test_normalize_stats_reproduce_model_input(fx):
    spec, ref = fx["spec"], fx["json"]["normalize"]
    assert spec.normalize == {"mean": ref["mean"], "std": ref["std"]}
    mean = torch.tensor(spec.normalize["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec.normalize["std"]).view(1, -1, 1, 1)
    x = (fx["ref"]["input"] - mean) / std
    assert (x - fx["ref"]["model_input"]).abs().max().item() <= 1e-6


def test_convert_round_trip_is_bitwise(fx, tmp_path):
    out = tmp_path / "conv"
    convert(D / f"{fx['name']}.pkl", out, exports=None)
    from_dir, cfg_dir = load_model(out)
    from_pkl, cfg_pkl = load_model(D / f"{fx['name']}.pkl")
    assert cfg_dir == cfg_pkl
    x = fx["ref"]["model_input"]
    with torch.no_grad():
        assert torch.equal(from_dir(x), from_pkl(x))
    assert cfg_dir["classes"] == fx["json"]["vocab"]
