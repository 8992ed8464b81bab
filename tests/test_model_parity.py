"""Gate: the rebuilt model reproduces the legacy ``learn.model`` on every stored golden window.

``X.model_input`` is already normalized for sq11-norm (golden/README.md §4), so it goes straight
into the model. Batched forwards differ from the per-window legacy run by < 4e-6 (README §6).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, GOLDEN, golden_cases
from porting.golden import load_case
from porting.families.orcahello.layers import build_model
from porting.families.orcahello.learner import read_learner

CASES = golden_cases()

_models: dict[str, torch.nn.Module] = {}


def _model(file: str) -> torch.nn.Module:
    if file not in _models:
        _models[file] = build_model(read_learner(GOLDEN / "models" / file))
    return _models[file]


@pytest.mark.parity
def test_logits_and_probs_match_golden(parity_case, parity_check, device):
    model = _model(parity_case.meta["model"]["file"]).to(device)
    x = parity_case.tensors["X.model_input"].to(device)
    with torch.no_grad():
        logits = model(x).cpu()
    parity_check(parity_case, {"Y.logits (golden input)": logits, "Y.probs (golden input)": torch.softmax(logits, dim=-1)},
                 device, stages=["Y.logits (golden input)", "Y.probs (golden input)"])


@pytest.mark.parity
def test_every_stored_window_is_covered():
    stored = sum(len(load_case(GOLDEN / "cases" / f"{c}.json").stored_windows) for c in CASES)
    assert len(CASES) == 7 and stored > 0


@pytest.fixture(scope="module")
def sq11_legacy(tmp_path_factory):
    """sq11-norm re-saved in the legacy non-zip torch format with stand-in fastai/torchvision classes."""
    out = tmp_path_factory.mktemp("legacy") / "sq11-norm-legacy.pkl"
    subprocess.run([sys.executable, str(FIXTURES / "make_v1_export.py"), str(GOLDEN / "models" / "sq11-norm.pkl"),
                    str(out), "legacy"], check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parity
def test_legacy_container_gives_the_same_model(sq11_legacy):
    legacy = read_learner(sq11_legacy)
    zipped = read_learner(GOLDEN / "models" / "sq11-norm.pkl")
    assert legacy.source.container == "torch-legacy" and legacy.source.kind == "fastai1-learner"
    assert list(legacy.state_dict) == list(zipped.state_dict)
    assert all(torch.equal(legacy.state_dict[k], v) for k, v in zipped.state_dict.items())
    assert (legacy.classes, legacy.positive_index, legacy.activation) == (("negative", "positive"), 1,
                                                                          {"name": "softmax", "dim": -1})
    assert legacy.normalize == zipped.normalize == {"mean": [pytest.approx(-1.93582249, abs=1e-7)],
                                                    "std": [pytest.approx(13.33877945, abs=1e-7)]}
    case = load_case(GOLDEN / "cases" / "sq11-norm__pcm16_16k_short.json")
    with torch.no_grad():  # same weights, same machine: the same numbers, bit for bit
        x = case.tensors["X.model_input"]
        assert torch.equal(build_model(legacy)(x), build_model(zipped)(x))
