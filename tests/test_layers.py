"""Plain-torch rebuilds: fastai layers, torchvision blocks (vs torchvision's own outputs), errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import FIXTURES
from porting.errors import MalformedModelError, UnsupportedLayerError
from porting.families.orcahello.layers import SUPPORTED, AdaptiveConcatPool2d, Flatten, build_model, build_module, unsupported_layers
from porting.families.orcahello.learner import ModuleNode, read_learner

TV = FIXTURES / "torchvision"
TV_MODELS = sorted(p.name for p in TV.glob("*.pt"))


def test_adaptive_concat_pool_is_max_then_avg():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    pool = AdaptiveConcatPool2d()
    pool.add_module("ap", nn.AdaptiveAvgPool2d(1))
    pool.add_module("mp", nn.AdaptiveMaxPool2d(1))
    want = torch.cat([x.amax(dim=(2, 3), keepdim=True), x.mean(dim=(2, 3), keepdim=True)], dim=1)
    got = pool(x)
    assert got.shape == (2, 6, 1, 1)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert torch.equal(got[:, :3], want[:, :3])  # max half is exact and comes first


def test_fastai_flatten():
    x = torch.arange(24.0).view(2, 3, 2, 2)
    assert torch.equal(Flatten()(x), x.reshape(2, 12))
    assert torch.equal(Flatten(full=True)(x), x.reshape(24))


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_blocks_match_torchvision(name):
    """Tiny torchvision models saved by tests/fixtures/torchvision/make_fixtures.py; outputs computed
    by torchvision itself (ResNet/BasicBlock/Bottleneck, SqueezeNet/Fire, DenseNet, MobileNetV2/V3 with
    SqueezeExcitation, VGG, AlexNet; resnet_tiny also in the legacy non-zip format)."""
    spec = read_learner(TV / name)
    model = build_model(spec)
    ref = load_file(str(TV / (name.replace("_legacy", "").replace(".pt", ".ref.safetensors"))))
    with torch.no_grad():
        out = model(ref["input"])
    assert out.shape == ref["output"].shape
    assert (out - ref["output"]).abs().max().item() <= 1e-5
    assert list(model.state_dict()) == list(spec.state_dict)
    assert not model.training
    assert any(cls.startswith("torchvision.") for _, cls in ((p, n.cls) for p, n in spec.tree.walk()))


def test_unsupported_layer_names_class_and_path(tmp_path):
    torch.save(nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.LSTM(3, 3))), tmp_path / "m.pt")
    spec = read_learner(tmp_path / "m.pt")
    assert unsupported_layers(spec.tree) == [("model[1][1]", "torch.nn.modules.rnn.LSTM")]
    with pytest.raises(UnsupportedLayerError, match=r"model\[1\]\[1\] is torch\.nn\.modules\.rnn\.LSTM"):
        build_model(spec)


def _conv(cin, cout):
    return ModuleNode(
        "torch.nn.modules.conv.Conv2d",
        {"in_channels": cin, "out_channels": cout, "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1],
         "dilation": [1, 1], "groups": 1, "padding_mode": "zeros"},
        parameters=("weight",),
    )


def test_block_missing_a_child_is_refused():
    node = ModuleNode("torchvision.models.resnet.BasicBlock", {}, children=(("conv1", _conv(2, 2)),))
    with pytest.raises(UnsupportedLayerError, match="lacks its child 'bn1'"):
        build_module(node, {"conv1.weight": torch.zeros(2, 2, 3, 3)})


def test_tensors_that_do_not_fit_are_malformed():
    node = ModuleNode("torch.nn.modules.container.Sequential", {}, children=(("0", _conv(2, 4)),))
    with pytest.raises(MalformedModelError, match="do not fit"):
        build_module(node, {"0.weight": torch.zeros(4, 2, 5, 5)})
    with pytest.raises(MalformedModelError, match="missing"):
        build_module(node, {})


def test_leaf_with_bad_hparams_is_refused():
    node = ModuleNode("torch.nn.modules.linear.Linear", {"in_features": 3}, parameters=("weight",))
    with pytest.raises(UnsupportedLayerError, match=r"model \(torch\.nn\.modules\.linear\.Linear\) has unusable"):
        build_module(node, {"weight": torch.zeros(2, 3)})


def test_tree_round_trips_through_json_dict():
    spec = read_learner(TV / "densenet_tiny.pt")
    assert ModuleNode.from_dict(spec.tree.to_dict()) == spec.tree


def test_every_fixture_class_is_supported():
    classes = {n.cls for name in TV_MODELS for _, n in read_learner(TV / name).tree.walk()}
    assert classes <= SUPPORTED
    assert {"torchvision.models.resnet.Bottleneck", "torchvision.models.densenet._DenseBlock",
            "torchvision.ops.misc.SqueezeExcitation", "torchvision.models.mobilenetv2.InvertedResidual"} <= classes
