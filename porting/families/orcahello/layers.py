"""Rebuild the recorded module tree as plain ``torch.nn`` modules.

``build_model(spec)`` / ``build_module(tree, state_dict)`` give an eval-mode ``nn.Module`` whose
``state_dict()`` keys are those of the legacy ``learn.model`` (same child names, same order).
torch.nn layers are constructed from their recorded hyper-parameters. fastai and torchvision
blocks are re-implemented here with the forward semantics of the library that wrote the pickle
(fastai 1.0.61 / 2.8 ``layers.py``, torchvision ``models/*.py``); their children are rebuilt
generically, so only the forward lives in these classes. Anything else raises
``UnsupportedLayerError`` naming the class and its path in the tree.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MalformedModelError, UnsupportedLayerError, UnsupportedModelError
from .learner.spec import LearnerSpec, ModuleNode, child_path

# --------------------------------------------------------------------------- blocks


class _Block(nn.Module):
    """A container whose children are added by the builder; ``REQUIRED`` names the ones forward uses."""

    REQUIRED: tuple[str, ...] = ()

    def _child(self, name: str) -> nn.Module | None:
        return self._modules.get(name)


class AdaptiveConcatPool2d(_Block):
    """fastai ``AdaptiveConcatPool2d``: ``cat([adaptive_max(x), adaptive_avg(x)], 1)``, max first
    (fastai 1.0.61 layers.py:176-184; same in 2.x)."""

    REQUIRED = ("ap", "mp")

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


class Flatten(nn.Module):
    """fastai ``Flatten(full=False)``: ``x.view(x.size(0), -1)``, or ``x.view(-1)`` when ``full``."""

    def __init__(self, full: bool = False):
        super().__init__()
        self.full = full

    def forward(self, x):
        return x.view(-1) if self.full else x.view(x.size(0), -1)

    def extra_repr(self) -> str:
        return f"full={self.full}"


class ResBlock(_Block):
    """fastai 2.x ``ResBlock`` (xresnet): ``act(convpath(x) + idpath(x))``."""

    REQUIRED = ("convpath", "idpath", "act")

    def forward(self, x):
        return self.act(self.convpath(x) + self.idpath(x))


class BasicBlock(_Block):
    """torchvision ``resnet.BasicBlock``: conv-bn-relu-conv-bn, plus identity (or ``downsample(x)``), relu."""

    REQUIRED = ("conv1", "bn1", "relu", "conv2", "bn2")

    def forward(self, x):
        down = self._child("downsample")
        identity = x if down is None else down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(_Block):
    """torchvision ``resnet.Bottleneck``: 1x1, 3x3 (stride/groups), 1x1 convs with BN, residual, relu."""

    REQUIRED = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu")

    def forward(self, x):
        down = self._child("downsample")
        identity = x if down is None else down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(_Block):
    """torchvision ``ResNet``: stem, layer1-4, avgpool, ``flatten(x, 1)``, fc."""

    REQUIRED = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Fire(_Block):
    """torchvision ``squeezenet.Fire``: squeeze, then ``cat([expand1x1, expand3x3], 1)``."""

    REQUIRED = ("squeeze", "squeeze_activation", "expand1x1", "expand1x1_activation", "expand3x3", "expand3x3_activation")

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


class FeaturesClassifier(_Block):
    """torchvision ``SqueezeNet``: ``flatten(classifier(features(x)), 1)``."""

    REQUIRED = ("features", "classifier")

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class FeaturesPoolClassifier(_Block):
    """torchvision ``VGG`` / ``AlexNet`` / ``MobileNetV3``: features, avgpool, ``flatten(x, 1)``, classifier."""

    REQUIRED = ("features", "avgpool", "classifier")

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class MobileNetV2(_Block):
    """torchvision ``MobileNetV2``: features, ``adaptive_avg_pool2d(1)``, ``flatten(x, 1)``, classifier."""

    REQUIRED = ("features", "classifier")

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class InvertedResidualV2(_Block):
    """torchvision ``mobilenetv2.InvertedResidual``: ``x + conv(x)`` when ``use_res_connect``."""

    REQUIRED = ("conv",)

    def __init__(self, use_res_connect: bool):
        super().__init__()
        self.use_res_connect = bool(use_res_connect)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class InvertedResidualV3(_Block):
    """torchvision ``mobilenetv3.InvertedResidual``: ``block(x)``, ``+= x`` when ``use_res_connect``."""

    REQUIRED = ("block",)

    def __init__(self, use_res_connect: bool):
        super().__init__()
        self.use_res_connect = bool(use_res_connect)

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class SqueezeExcitation(_Block):
    """torchvision ``ops.SqueezeExcitation``: ``x * scale_activation(fc2(activation(fc1(avgpool(x)))))``."""

    REQUIRED = ("avgpool", "fc1", "fc2", "activation", "scale_activation")

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class DenseLayer(_Block):
    """torchvision ``densenet._DenseLayer`` in eval mode: BN-ReLU-conv1x1-BN-ReLU-conv3x3 on the
    concatenation of all previous features (dropout is a no-op in eval)."""

    REQUIRED = ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2")

    def __init__(self, drop_rate: float = 0.0):
        super().__init__()
        self.drop_rate = float(drop_rate)

    def forward(self, x):
        features = [x] if isinstance(x, torch.Tensor) else x
        out = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(_Block):
    """torchvision ``densenet._DenseBlock`` (a ModuleDict): each layer sees all previous features."""

    def forward(self, x):
        features = [x]
        for layer in self._modules.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(_Block):
    """torchvision ``DenseNet``: features, relu, ``adaptive_avg_pool2d(1)``, ``flatten(x, 1)``, classifier."""

    REQUIRED = ("features", "classifier")

    def forward(self, x):
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(out, 1))


# --------------------------------------------------------------------------- torch.nn leaves


def _t(v):
    return tuple(v) if isinstance(v, list) else v


def _conv(cls):
    def make(h: dict, node: ModuleNode):
        return cls(
            h["in_channels"], h["out_channels"], _t(h["kernel_size"]), stride=_t(h["stride"]),
            padding=_t(h["padding"]), dilation=_t(h["dilation"]), groups=h["groups"],
            bias="bias" in node.parameters, padding_mode=h.get("padding_mode", "zeros"),
        )
    return make


def _bn(cls):
    def make(h: dict, node: ModuleNode):
        return cls(h["num_features"], eps=h["eps"], momentum=h["momentum"], affine=h["affine"],
                   track_running_stats=h["track_running_stats"])
    return make


def _inplace(cls):
    return lambda h, node: cls(inplace=h.get("inplace", False))


def _plain(cls):
    return lambda h, node: cls()


_LEAVES: dict[str, Callable[[dict, ModuleNode], nn.Module]] = {
    "torch.nn.modules.conv.Conv1d": _conv(nn.Conv1d),
    "torch.nn.modules.conv.Conv2d": _conv(nn.Conv2d),
    "torch.nn.modules.conv.Conv3d": _conv(nn.Conv3d),
    "torch.nn.modules.batchnorm.BatchNorm1d": _bn(nn.BatchNorm1d),
    "torch.nn.modules.batchnorm.BatchNorm2d": _bn(nn.BatchNorm2d),
    "torch.nn.modules.batchnorm.BatchNorm3d": _bn(nn.BatchNorm3d),
    "torch.nn.modules.normalization.GroupNorm": lambda h, n: nn.GroupNorm(
        h["num_groups"], h["num_channels"], eps=h["eps"], affine=h["affine"]),
    "torch.nn.modules.normalization.LayerNorm": lambda h, n: nn.LayerNorm(
        _t(h["normalized_shape"]), eps=h["eps"], elementwise_affine=h["elementwise_affine"], bias="bias" in n.parameters),
    "torch.nn.modules.linear.Linear": lambda h, n: nn.Linear(h["in_features"], h["out_features"], bias="bias" in n.parameters),
    "torch.nn.modules.linear.Identity": _plain(nn.Identity),
    "torch.nn.modules.activation.ReLU": _inplace(nn.ReLU),
    "torch.nn.modules.activation.ReLU6": _inplace(nn.ReLU6),
    "torch.nn.modules.activation.SiLU": _inplace(nn.SiLU),
    "torch.nn.modules.activation.Hardswish": _inplace(nn.Hardswish),
    "torch.nn.modules.activation.Hardsigmoid": _inplace(nn.Hardsigmoid),
    "torch.nn.modules.activation.Mish": _inplace(nn.Mish),
    "torch.nn.modules.activation.Sigmoid": _plain(nn.Sigmoid),
    "torch.nn.modules.activation.Tanh": _plain(nn.Tanh),
    "torch.nn.modules.activation.LeakyReLU": lambda h, n: nn.LeakyReLU(h["negative_slope"], inplace=h.get("inplace", False)),
    "torch.nn.modules.activation.ELU": lambda h, n: nn.ELU(h["alpha"], inplace=h.get("inplace", False)),
    "torch.nn.modules.activation.GELU": lambda h, n: nn.GELU(approximate=h.get("approximate", "none")),
    "torch.nn.modules.activation.Softmax": lambda h, n: nn.Softmax(dim=h["dim"]),
    "torch.nn.modules.activation.LogSoftmax": lambda h, n: nn.LogSoftmax(dim=h["dim"]),
    "torch.nn.modules.pooling.MaxPool1d": lambda h, n: nn.MaxPool1d(
        _t(h["kernel_size"]), _t(h["stride"]), _t(h["padding"]), _t(h["dilation"]), ceil_mode=h["ceil_mode"]),
    "torch.nn.modules.pooling.MaxPool2d": lambda h, n: nn.MaxPool2d(
        _t(h["kernel_size"]), _t(h["stride"]), _t(h["padding"]), _t(h["dilation"]), ceil_mode=h["ceil_mode"]),
    "torch.nn.modules.pooling.AvgPool1d": lambda h, n: nn.AvgPool1d(
        _t(h["kernel_size"]), _t(h["stride"]), _t(h["padding"]), h["ceil_mode"], h["count_include_pad"]),
    "torch.nn.modules.pooling.AvgPool2d": lambda h, n: nn.AvgPool2d(
        _t(h["kernel_size"]), _t(h["stride"]), _t(h["padding"]), h["ceil_mode"], h["count_include_pad"],
        h.get("divisor_override")),
    "torch.nn.modules.pooling.AdaptiveAvgPool1d": lambda h, n: nn.AdaptiveAvgPool1d(_t(h["output_size"])),
    "torch.nn.modules.pooling.AdaptiveAvgPool2d": lambda h, n: nn.AdaptiveAvgPool2d(_t(h["output_size"])),
    "torch.nn.modules.pooling.AdaptiveMaxPool1d": lambda h, n: nn.AdaptiveMaxPool1d(_t(h["output_size"])),
    "torch.nn.modules.pooling.AdaptiveMaxPool2d": lambda h, n: nn.AdaptiveMaxPool2d(_t(h["output_size"])),
    "torch.nn.modules.dropout.Dropout": lambda h, n: nn.Dropout(h["p"], inplace=h.get("inplace", False)),
    "torch.nn.modules.dropout.Dropout1d": lambda h, n: nn.Dropout1d(h["p"], inplace=h.get("inplace", False)),
    "torch.nn.modules.dropout.Dropout2d": lambda h, n: nn.Dropout2d(h["p"], inplace=h.get("inplace", False)),
    "torch.nn.modules.flatten.Flatten": lambda h, n: nn.Flatten(h["start_dim"], h["end_dim"]),
    "torch.nn.modules.padding.ZeroPad2d": lambda h, n: nn.ZeroPad2d(_t(h["padding"])),
    # fastai leaves
    "fastai.layers.Flatten": lambda h, n: Flatten(full=bool(h.get("full", False))),
}

_SEQUENTIAL = lambda h, n: nn.Sequential()  # noqa: E731 - forward is Sequential's: children in order

# Containers: children are rebuilt generically and added in recorded order.
_CONTAINERS: dict[str, Callable[[dict, ModuleNode], nn.Module]] = {
    "torch.nn.modules.container.Sequential": _SEQUENTIAL,
    "fastai.layers.ConvLayer": _SEQUENTIAL,  # fastai 2.x: nn.Sequential subclass (conv, norm, act)
    "fastai.vision.models.xresnet.XResNet": _SEQUENTIAL,  # fastai 2.x: nn.Sequential subclass
    "fastai.layers.AdaptiveConcatPool2d": lambda h, n: AdaptiveConcatPool2d(),
    "fastai.layers.ResBlock": lambda h, n: ResBlock(),
    "torchvision.models.resnet.BasicBlock": lambda h, n: BasicBlock(),
    "torchvision.models.resnet.Bottleneck": lambda h, n: Bottleneck(),
    "torchvision.models.resnet.ResNet": lambda h, n: ResNet(),
    "torchvision.models.squeezenet.Fire": lambda h, n: Fire(),
    "torchvision.models.squeezenet.SqueezeNet": lambda h, n: FeaturesClassifier(),
    "torchvision.models.vgg.VGG": lambda h, n: FeaturesPoolClassifier(),
    "torchvision.models.alexnet.AlexNet": lambda h, n: FeaturesPoolClassifier(),
    "torchvision.models.mobilenetv3.MobileNetV3": lambda h, n: FeaturesPoolClassifier(),
    "torchvision.models.mobilenetv2.MobileNetV2": lambda h, n: MobileNetV2(),
    "torchvision.models.mobilenetv2.InvertedResidual": lambda h, n: InvertedResidualV2(h["use_res_connect"]),
    "torchvision.models.mobilenetv3.InvertedResidual": lambda h, n: InvertedResidualV3(h["use_res_connect"]),
    "torchvision.ops.misc.SqueezeExcitation": lambda h, n: SqueezeExcitation(),
    "torchvision.ops.misc.Conv2dNormActivation": _SEQUENTIAL,
    "torchvision.ops.misc.ConvNormActivation": _SEQUENTIAL,
    "torchvision.models.densenet._DenseLayer": lambda h, n: DenseLayer(h.get("drop_rate", 0.0)),
    "torchvision.models.densenet._DenseBlock": lambda h, n: DenseBlock(),
    "torchvision.models.densenet._Transition": _SEQUENTIAL,
    "torchvision.models.densenet.DenseNet": lambda h, n: DenseNet(),
}

SUPPORTED = frozenset(_LEAVES) | frozenset(_CONTAINERS)


def unsupported_layers(tree: ModuleNode) -> list[tuple[str, str]]:
    """(path, class) of every node without a plain-torch rebuild."""
    return [(path, node.cls) for path, node in tree.walk() if node.cls not in SUPPORTED]


# Sizes a recorded layer may declare: a hostile pickle's Linear(10**6, 10**6) would ask for 4 TB (the build runs on
# the meta device, so that alone costs nothing, and every parameter's shape is then checked against the stored
# tensor), but a pooling kernel or padding has no tensor to check: it is bounded here instead.
SIZE_KEYS = ("in_features", "out_features", "in_channels", "out_channels", "num_features", "num_channels",
             "num_groups", "groups")
MAX_HPARAM_INT = 1 << 24


def _check_hparams(node: ModuleNode, path: str, where: str) -> None:
    """Every integer a leaf declares within +-MAX_HPARAM_INT, and its sizes >= 1: one line naming the module."""
    def ints(v):
        if isinstance(v, bool):
            return
        if isinstance(v, int):
            yield v
        elif isinstance(v, list | tuple):
            for x in v:
                yield from ints(x)

    for key, value in node.hparams.items():
        for v in ints(value):
            if abs(v) > MAX_HPARAM_INT:
                raise MalformedModelError(f"{where}: {path} ({node.cls}) declares {key} = {value}; must be at most "
                                          f"{MAX_HPARAM_INT:,} in magnitude: not a model porting can rebuild")
        if key in SIZE_KEYS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise MalformedModelError(f"{where}: {path} ({node.cls}) declares {key} = {value!r}; must be an integer >= 1: "
                                      "the pickle is corrupt")


def _build(node: ModuleNode, path: str, where: str = "model") -> nn.Module:
    leaf = _LEAVES.get(node.cls)
    factory = leaf or _CONTAINERS.get(node.cls)
    at = "" if where == "model" else f"{where}: "  # the file, when the caller knows it
    if factory is None:
        raise UnsupportedLayerError(
            f"{at}{path} is {node.cls}, which has no plain-torch rebuild; supported layers are listed in porting.families.orcahello.layers"
        )
    if leaf is not None:
        _check_hparams(node, path, where)
    try:
        module = factory(node.hparams, node)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise UnsupportedLayerError(
            f"{at}{path} ({node.cls}) has unusable hyper-parameters ({type(exc).__name__}: {why}); the file is corrupt "
            "or the layer too new for porting"
        ) from exc
    if leaf is not None:
        if any(child is not None for _, child in node.children):
            raise UnsupportedLayerError(f"{at}{path} ({node.cls}) has child modules torch's layer never has; "
                                        "the file is corrupt or edited")
        return module
    for name, child in node.children:
        module.add_module(name, None if child is None else _build(child, child_path(path, name), where))
    for name in getattr(module, "REQUIRED", ()):
        if module._modules.get(name) is None:
            raise UnsupportedLayerError(f"{at}{path} ({node.cls}) lacks its child '{name}'; the file is corrupt or edited")
    return module


def _module_path(key: str) -> str:
    """``model[1].conv1`` for the state-dict key ``1.conv1.weight``: where the tensor's module sits in the tree."""
    path = "model"
    for part in key.split(".")[:-1]:
        path = child_path(path, part)
    return path


def build_module(tree: ModuleNode, state_dict: Mapping[str, torch.Tensor], where: str = "model",
                 input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """The module for ``tree`` with ``state_dict`` loaded (strict, same keys), in eval mode. Built on the meta
    device first, so a layer declaring sizes its tensors do not have is refused (one line naming ``where``, the
    module path and both shapes) before anything is allocated; with ``input_shape``, ``check_input`` too."""
    with torch.device("meta"):
        model = _build(tree, "model", where)
    expected = model.state_dict()
    if set(expected) != set(state_dict.keys()):
        missing = [k for k in expected if k not in state_dict]
        extra = [k for k in state_dict if k not in set(expected)]
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise MalformedModelError(f"{where}: recorded tensors do not match the rebuilt layers ({detail}); cannot convert")
    classes = {p: n.cls for p, n in tree.walk()}
    for key, want in expected.items():
        got = state_dict[key]
        if tuple(got.shape) != tuple(want.shape):
            node_path = _module_path(key)
            raise MalformedModelError(
                f"{where}: tensors do not fit the rebuilt layers: {node_path} ({classes.get(node_path, '?')}) declares "
                f"{key} of shape {list(want.shape)} but the stored tensor has shape {list(got.shape)}; the module's "
                "attributes do not match its weights (a corrupt or edited file)")
    if input_shape is not None:
        check_input(model, input_shape, where)
    model = model.to_empty(device="cpu")
    floats = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if len(floats) == 1:
        model.to(floats.pop())  # keep the legacy precision (a float16 export runs in float16)
    try:
        model.load_state_dict(OrderedDict(state_dict), strict=True)
    except RuntimeError as exc:
        last = (str(exc).strip().splitlines() or [""])[-1].strip()
        raise MalformedModelError(f"{where}: tensors do not fit the rebuilt layers ({last})") from exc
    return model.eval()


def check_input(meta_model: nn.Module, shape: tuple[int, ...], where: str) -> None:
    """Refuse, in one line, a module that cannot map the detector's input ``shape`` (``[1, 1, n_mels, frames]``)
    to ``[1, K]`` logits: a plain ``nn.Module`` such as ``Linear(3, 3)`` converted and then failed every probe and
    recording with a shape error. ``meta_model`` lives on the meta device (shapes only: no memory, no arithmetic);
    an op without a meta kernel skips the check (the real forward then decides)."""
    x = torch.empty(shape, device="meta")
    try:
        with torch.no_grad():
            y = meta_model.eval()(x)
    except NotImplementedError:
        return
    except Exception as exc:  # a shape error of the module itself
        why = (" ".join(str(exc).split()) or type(exc).__name__)[:160]
        raise UnsupportedModelError(
            f"{where}: the model does not take the detector's input {list(shape)} (a mel spectrogram) ({why}); "
            "porting converts audio classifiers of mel spectrograms, not arbitrary modules") from exc
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != shape[0]:
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UnsupportedModelError(
            f"{where}: the model maps the detector's input {list(shape)} to {got}, not to [batch, classes] logits; "
            "porting converts audio classifiers of mel spectrograms, not arbitrary modules")


def model_input_shape(frontend: dict | None = None) -> tuple[int, int, int, int]:
    """``[1, 1, n_mels, frames]``: what stage C hands the model (``porting.families.orcahello.frontend.config``)."""
    from .frontend.config import FrontendConfig

    cfg = FrontendConfig.from_dict(frontend) if frontend else FrontendConfig()
    return (1, 1, cfg.mel.n_mels, cfg.pad.frames)


def build_model(spec: LearnerSpec, check: bool = False) -> nn.Module:
    """The eval-mode plain-torch equivalent of the legacy ``learn.model`` (normalization not folded in); ``check``
    (what ``port convert`` asks): proven first to take the detector's input (``check_input``; ~0.3 s the first time
    a process runs a meta forward; the library API also rebuilds modules of other inputs, e.g. torchvision's)."""
    return build_module(spec.tree, spec.state_dict, spec.source.file, model_input_shape() if check else None)
