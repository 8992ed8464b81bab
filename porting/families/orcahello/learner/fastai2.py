"""fastai v2 ``Learner.export()`` files -> ``LearnerSpec``.

fastai 2.x pickles the whole ``Learner`` (``torch.save(learn, f, pickle_module=cloudpickle)``):
the root is a ``fastai.learner.Learner`` record whose BUILD state holds ``model``, ``dls`` and
``loss_func``. The vocab is the ``Categorize`` transform's ``CategoryMap`` and the normalization is
the ``Normalize`` transform in the train loader's ``after_batch`` (tests/fixtures/fastai2/README.md
§3). The cloudpickled code, ``getattr`` bound methods and ``subimport`` records stay inert: the
model, vocab and stats never depend on them (§2, §4).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

from .spec import LearnerSpec, SourceInfo, module_tree, positive_index, require_module, tensor_list
from ....io.unpickle import Call, Record, Unpickled, class_path, plain_value

_MAX_NODES = 1_000_000

# fastai 2.x losses.py: ``activation`` of each loss class; ``BaseLoss.activation`` is ``noops`` and a
# raw torch loss has none, so ``get_preds``/``predict`` return the model output as is.
_LOSS_ACTIVATIONS = {
    "fastai.losses.CrossEntropyLossFlat": "softmax",
    "fastai.losses.FocalLossFlat": "softmax",
    "fastai.losses.LabelSmoothingCrossEntropy": "softmax",
    "fastai.losses.LabelSmoothingCrossEntropyFlat": "softmax",
    "fastai.losses.BCEWithLogitsLossFlat": "sigmoid",
}
_SOFTMAX_LAST = ("fastai.losses.LabelSmoothingCrossEntropy", "fastai.losses.LabelSmoothingCrossEntropyFlat")


def is_fastai2_learner(root: Any) -> bool:
    path = class_path(root) or ""
    return path.startswith("fastai.") and path.endswith(".Learner") and "model" in root.attrs


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield v
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif isinstance(obj, Record):
        if isinstance(obj, Call):
            yield obj.func
        yield from obj.args
        yield from obj.kwargs.values()
        yield obj.state
        yield from obj.items
        for k, v in obj.entries:
            yield k
            yield v


def find_records(start: Any, class_names: tuple[str, ...]) -> Iterator[Record]:
    """Records of the given classes reachable from ``start``, breadth first (train loader first)."""
    seen: set[int] = set()
    queue = deque([start])
    while queue and len(seen) < _MAX_NODES:
        obj = queue.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Record) and class_path(obj) in class_names:
            yield obj
        queue.extend(_children(obj))


def _listify(obj: Any, depth: int = 0) -> list | None:
    """Items of a list, an ``L`` or a ``CategoryMap`` (an ``L`` subclass keeping ``items``)."""
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, Record) and depth < 4:
        if "items" in obj.attrs:
            return _listify(obj.attrs["items"], depth + 1)
        if obj.items:
            return list(obj.items)
    return None


def _vocab(dls: Any) -> tuple[str, ...] | None:
    for cat in find_records(dls, ("fastai.data.transforms.Categorize", "fastai.data.transforms.MultiCategorize")):
        items = _listify(cat.attrs.get("vocab"))
        if items is None:
            continue
        values = [plain_value(v) for v in items]
        if all(v is not None for v in values):
            return tuple(str(v) for v in values)
    return None


def _normalize(dls: Any) -> dict | None:
    for norm in find_records(dls, ("fastai.data.transforms.Normalize",)):
        mean, std = tensor_list(norm.attrs.get("mean")), tensor_list(norm.attrs.get("std"))
        if mean is not None and std is not None:
            return {"mean": mean, "std": std}
    return None


def loss_activation(loss: Any) -> dict:
    path = class_path(loss)
    act = _LOSS_ACTIVATIONS.get(path)
    if act == "softmax":
        axis = -1 if path in _SOFTMAX_LAST else loss.attrs.get("axis", -1)
        return {"name": "softmax", "dim": axis if isinstance(axis, int) else -1}
    return {"name": act} if act else {"name": "identity"}


def spec_from_fastai2(unp: Unpickled, source: SourceInfo) -> LearnerSpec:
    attrs = unp.root.attrs
    model = require_module(attrs.get("model"), source.file, "learn.model")
    tree, state = module_tree(model, source.file)
    dls = attrs.get("dls")
    classes = _vocab(dls)
    return LearnerSpec(
        tree=tree,
        state_dict=state,
        classes=classes,
        positive_index=positive_index(classes),
        normalize=_normalize(dls),
        activation=loss_activation(attrs.get("loss_func")),
        source=source,
        globals=unp.globals,
    )
