"""fastai v1 ``Learner.export()`` files -> ``LearnerSpec``.

The export is ``torch.save(state)`` of a plain dict (fastai 1.0.61 ``Learner.export``): keys
``model``, ``data``, ``loss_func``, ``cls`` (the Learner class), ``opt_func`` (a
``functools.partial``), ... ``data`` is ``LabelList.get_state``: ``y_proc`` holds the
``CategoryProcessor`` whose ``classes`` are numpy ``str_`` scalars, and ``normalize`` is present
when the DataBunch was normalized (golden/README.md §4; golden/models/*.inspect.json).
"""

from __future__ import annotations

import re
from typing import Any

from ....errors import UnsupportedModelError
from .spec import LearnerSpec, SourceInfo, module_tree, positive_index, require_module, tensor_list
from ....io.unpickle import Record, Unpickled, class_path, global_of, plain_value

# fastai 1.0.61 basic_train.loss_func_name2activ, keyed by camel2snake(class name) or __name__.
_LOSS_ACTIVATIONS = {
    "cross_entropy_loss": "softmax",
    "cross_entropy": "softmax",
    "nll_loss": "exp",
    "poisson_nll_loss": "exp",
    "kl_div_loss": "exp",
    "kl_div": "exp",
    "bce_with_logits_loss": "sigmoid",
    "binary_cross_entropy_with_logits": "sigmoid",
}


def is_fastai1_export(root: Any) -> bool:
    if not isinstance(root, dict) or "model" not in root or "data" not in root:
        return False
    g = global_of(root.get("cls"))
    return g is not None and g.normalized.startswith("fastai.")


def _camel2snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _short_name(obj: Any) -> str:
    """Class name of a record, or the name of a global used as a value (a loss *function*)."""
    g = global_of(obj)
    if isinstance(obj, Record) and g is not None:
        return _camel2snake(g.name)
    if g is not None:  # a stubbed global itself, e.g. torch.nn.functional.cross_entropy
        return g.name
    return ""


def _attr(obj: Any, key: str, default: Any = None) -> Any:
    return obj.attrs.get(key, default) if isinstance(obj, Record) else default


def loss_activation(loss: Any) -> dict:
    """What fastai v1 ``Learner.predict`` applies to the model output (basic_train._loss_func2activ):
    ``FlattenedLoss(CrossEntropyLoss)`` -> softmax over ``axis`` (-1); BCE-with-logits -> sigmoid;
    NLL/KL/Poisson -> exp; anything else -> identity (fastai's ``noop``)."""
    if class_path(loss) == "functools.partial":
        state = loss.state if isinstance(loss.state, tuple) else ()
        keywords = state[2] if len(state) > 2 and isinstance(state[2], dict) else {}
        if keywords.get("log_input", True) is False:
            return {"name": "identity"}
    axis = _attr(loss, "axis", -1)
    inner = loss
    for _ in range(2):  # FlattenedLoss.func, possibly a partial inside (fastai duplicates on purpose)
        if class_path(inner) == "functools.partial" and isinstance(inner.state, tuple) and inner.state:
            inner = inner.state[0]
        else:
            inner = _attr(inner, "func", inner)
    name = _short_name(inner)
    if name == "mix_up_loss":
        name = _short_name(_attr(inner, "crit"))
    act = _LOSS_ACTIVATIONS.get(name)
    if act == "exp" and name == "poisson_nll_loss" and _attr(inner, "log_input", True) is False:
        return {"name": "identity"}
    if act == "softmax":
        return {"name": "softmax", "dim": axis if isinstance(axis, int) else -1}
    return {"name": act} if act else {"name": "identity"}


def _classes(data: dict) -> tuple[str, ...] | None:
    for proc in data.get("y_proc") or []:
        classes = _attr(proc, "classes")
        if classes is None:
            continue
        values = plain_value(classes) if isinstance(classes, Record) else [plain_value(c) for c in classes]
        if values is not None and all(v is not None for v in values):
            return tuple(str(v) for v in values)
    return None


def _normalize(data: dict) -> dict | None:
    """``data['normalize']`` = {mean, std, do_x, do_y}: applied as ``(x - mean) / std`` per channel
    before the model when ``do_x`` (golden/README.md §4; fastai vision/data.py normalize)."""
    stats = data.get("normalize")
    if not isinstance(stats, dict) or stats.get("do_x", True) is False:
        return None
    mean, std = tensor_list(stats.get("mean")), tensor_list(stats.get("std"))
    if mean is None or std is None:
        return None
    return {"mean": mean, "std": std}


def spec_from_fastai1(unp: Unpickled, source: SourceInfo) -> LearnerSpec:
    root = unp.root
    fname = source.file
    model = require_module(root.get("model"), fname, "the export's 'model'")
    tree, state = module_tree(model, fname)
    data = root.get("data")
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{fname}: the export's 'data' is not a dict; not a fastai v1 Learner.export()")
    classes = _classes(data)
    return LearnerSpec(
        tree=tree,
        state_dict=state,
        classes=classes,
        positive_index=positive_index(classes),
        normalize=_normalize(data),
        activation=loss_activation(root.get("loss_func")),
        source=source,
        globals=unp.globals,
    )
