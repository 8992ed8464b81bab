"""The pad fold (porting/padfold.py): the column arithmetic, exactness against the full model, and the goldens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import GOLDEN, golden_cases
from porting.families.orcahello import layers as L
from porting.convert import load_model
from porting.golden import load_case
from porting.families.orcahello.padfold import PadFolded, columns, fold_pad, needed

TOL = 1e-5
MODELS = ("rn18.pkl", "sq11-norm.pkl")
_loaded: dict[str, tuple[nn.Module, dict]] = {}


def _model(name: str) -> tuple[nn.Module, dict]:
    if name not in _loaded:
        _loaded[name] = load_model(GOLDEN / "models" / name)
    return _loaded[name]


def _block(cls, **children) -> nn.Module:
    block = cls()
    for name, child in children.items():
        block.add_module(name, child)
    return block


def _small_ops() -> list[nn.Module]:
    """One of each layer kind the fold reasons about, with odd kernels, strides and paddings."""
    g = torch.Generator().manual_seed(1)

    def conv(cin, cout, k, s, p):
        c = nn.Conv2d(cin, cout, k, s, p)
        with torch.no_grad():
            c.weight.copy_(torch.randn(c.weight.shape, generator=g))
        return c

    basic = _block(L.BasicBlock, conv1=conv(4, 4, 3, 2, 1), bn1=nn.BatchNorm2d(4), relu=nn.ReLU(),
                   conv2=conv(4, 4, 3, 1, 1), bn2=nn.BatchNorm2d(4),
                   downsample=nn.Sequential(conv(4, 4, 1, 2, 0), nn.BatchNorm2d(4)))
    fire = _block(L.Fire, squeeze=conv(4, 2, 1, 1, 0), squeeze_activation=nn.ReLU(), expand1x1=conv(2, 2, 1, 1, 0),
                  expand1x1_activation=nn.ReLU(), expand3x3=conv(2, 2, 3, 1, 1), expand3x3_activation=nn.ReLU())
    return [conv(1, 4, 7, 2, 3), nn.MaxPool2d(3, 2, 0, ceil_mode=True), conv(4, 4, (3, 5), 1, (1, 2)),
            nn.AvgPool2d(2), basic, fire, nn.MaxPool2d(3, 2, 1)]


@pytest.mark.parametrize("index", range(7))
def test_columns_and_needed_agree_with_perturbation(index):
    """Which output columns a change in input column j reaches, found by brute force, is what the formulas say."""
    op = _small_ops()[index].eval()
    cin = 1 if index == 0 else 4
    x = torch.randn(1, cin, 6, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = op(x)
        for n in (1, 7, 20):
            changed = torch.zeros(base.shape[-1], dtype=torch.bool)
            for j in range(n):
                for step in (10.0, -10.0):  # both signs: a ReLU or a max may hide one of them
                    y = x.clone()
                    y[..., j] += step
                    changed |= (op(y) - base).abs().amax(dim=(0, 1, 2)) > 0
            reach = int(changed.nonzero().max()) + 1
            assert reach == columns(op, n), (index, n)
            # the first m outputs never read input columns from needed(op, m) on
            m = columns(op, n)
            y = x.clone()
            y[..., needed(op, m):] = 1e3
            assert torch.equal(op(y)[..., :m], base[..., :m]), (index, m)
            last = needed(op, m) - 1  # ... but they do read the one before
            hit = []
            for step in (1e3, -1e3):
                z = x.clone()
                z[..., last] += step
                hit.append(not torch.equal(op(z)[..., :m], base[..., :m]))
            assert any(hit), (index, m)


def _padded_inputs(config: dict) -> torch.Tensor:
    """Realistic model inputs: the converter's synthetic probe windows through the exact frontend."""
    from porting.families.orcahello.export.verify import model_input, probe_waveforms

    return model_input(probe_waveforms(), config)


@pytest.mark.parametrize("name", MODELS)
def test_fold_is_the_full_model_on_padded_windows(name):
    model, config = _model(name)
    folded = fold_pad(model, config)
    assert isinstance(folded, PadFolded) and folded.n_data == 157 and len(folded.segments) >= 1
    x = _padded_inputs(config)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("name", MODELS)
def test_fold_never_reads_the_pad_frames(name):
    """Garbage in frames 157.. changes the full model's logits, not the folded one's: the pad is built in."""
    model, config = _model(name)
    folded = fold_pad(model, config)
    x = _padded_inputs(config)
    y = x.clone()
    y[..., 157:] = 5.0
    with torch.no_grad():
        assert torch.equal(folded(y), folded(x))
        assert not torch.allclose(model(y), model(x), atol=1e-3)


def test_fold_computes_fewer_columns():
    """rn18: the first segments run on fewer columns than the full 312-frame map."""
    model, config = _model("rn18.pkl")
    folded = fold_pad(model, config)
    assert folded.widths[0] < 312 and folded.keeps[0] < folded.widths[0]


def test_nothing_to_fold_gives_none():
    _, config = _model("rn18.pkl")
    head_only = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2)).eval()
    assert fold_pad(head_only, config) is None
    longer = {**config, "frontend": {**config["frontend"], "pad": {**config["frontend"]["pad"], "duration_ms": 2000}}}
    model, _ = _model("rn18.pkl")
    assert fold_pad(model, longer) is None  # the window fills the whole input: no pad to fold


@pytest.mark.parity
def test_folded_model_matches_golden_logits(parity_case, parity_check):
    model, config = _model(parity_case.meta["model"]["file"])
    with torch.no_grad():
        logits = fold_pad(model, config)(parity_case.tensors["X.model_input"])
    parity_check(parity_case, {"Y.logits (golden input)": logits, "Y.probs (golden input)": torch.softmax(logits, -1)},
                 stages=["Y.logits (golden input)", "Y.probs (golden input)"])


def test_detector_runs_the_folded_model_and_refuses_other_window_lengths():
    from porting.families.orcahello.detect import Detector

    det = Detector.load(GOLDEN / "models" / "rn18.pkl")
    assert det.folded and isinstance(det.model, PadFolded)
    with pytest.raises(ValueError, match="40000-sample"):
        det.forward_windows(torch.zeros(1, 30000))
