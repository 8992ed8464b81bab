"""What a learner pickle is reduced to: a module tree, its tensors, and the inference metadata.

``LearnerSpec`` is the stable hand-off between reading (``porting.families.orcahello.learner``) and rebuilding
(``porting.families.orcahello.layers``). ``module_tree`` turns the inert module records of the restricted unpickler
into ``ModuleNode``s: each nn.Module's BUILD state is its ``__dict__`` (``_parameters``,
``_buffers``, ``_modules``, hyper-parameters), so nothing needs to run to read it
(tests/fixtures/fastai2/README.md §3-§4). State-dict order is torch's: a module's parameters,
then its persistent buffers, then its children, depth first.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from ....errors import MalformedModelError, UnsafePickleError, UnsupportedModelError
from ....io.unpickle import Call, Record, TensorRef, class_path, describe, global_of, is_code_global

MAX_DEPTH = 200
MAX_MODULES = 100_000  # a hostile pickle can share one record many times (a DAG that explodes when walked)
POSITIVE_RULE = (
    "index of the class named 'positive' (case-insensitive) if present, else 1 when there are "
    "exactly 2 classes (legacy production takes probs[1]; golden/README.md §4), else none"
)


@dataclass(frozen=True)
class ModuleNode:
    """One module of the recorded tree: its class path, plain hyper-parameters, tensor names, children."""

    cls: str
    hparams: dict = field(default_factory=dict)
    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    children: tuple[tuple[str, "ModuleNode | None"], ...] = ()

    def to_dict(self) -> dict:
        return {
            "class": self.cls,
            "hparams": self.hparams,
            "parameters": list(self.parameters),
            "buffers": list(self.buffers),
            "children": [[name, None if child is None else child.to_dict()] for name, child in self.children],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json", path: str = "model", depth: int = 0) -> "ModuleNode":
        """The tree stored in a converted config.json (``where``); a malformed node is one line naming its path."""
        if depth > MAX_DEPTH:
            raise MalformedModelError(f"{where}: architecture tree deeper than {MAX_DEPTH} at {path}; re-run `port convert`")
        try:
            if not isinstance(d, dict):
                raise TypeError(f"node is {describe(d)}, not an object")
            children = d.get("children", ())
            if not isinstance(children, list | tuple) or not all(isinstance(c, list | tuple) and len(c) == 2
                                                                 for c in children):
                raise TypeError("children is not a list of [name, node] pairs")
            names = [d.get("parameters", ()), d.get("buffers", ())]
            if not all(isinstance(n, list | tuple) and all(isinstance(x, str) for x in n) for n in names):
                raise TypeError("parameters/buffers are not lists of names")
            if not isinstance(d.get("hparams", {}), dict):
                raise TypeError("hparams is not an object")
            return cls(
                cls=str(d["class"]),
                hparams=dict(d.get("hparams", {})),
                parameters=tuple(d.get("parameters", ())),
                buffers=tuple(d.get("buffers", ())),
                children=tuple(
                    (str(name), None if child is None else cls.from_dict(child, where, child_path(path, str(name)),
                                                                         depth + 1))
                    for name, child in children
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedModelError(f"{where}: architecture node {path} is malformed ({type(exc).__name__}: {exc}); "
                                      "re-run `port convert`") from exc

    def walk(self, path: str = "model"):
        """(path, node) for this node and every descendant, depth first, in child order."""
        yield path, self
        for name, child in self.children:
            if child is not None:
                yield from child.walk(child_path(path, name))


@dataclass(frozen=True)
class SourceInfo:
    file: str
    sha256: str
    size_bytes: int
    container: str  # torch-zip | torch-legacy | pickle
    kind: str  # fastai1-learner | fastai2-learner | torch-module


@dataclass(frozen=True)
class LearnerSpec:
    """Everything conversion needs, read without executing the pickle."""

    tree: ModuleNode
    state_dict: "OrderedDict[str, torch.Tensor]" = field(repr=False)
    classes: tuple[str, ...] | None
    positive_index: int | None
    normalize: dict | None  # {"mean": [...], "std": [...]} per channel, applied as (x - mean) / std
    activation: dict  # {"name": "softmax", "dim": -1} | {"name": "sigmoid"} | {"name": "exp"} | {"name": "identity"}
    source: SourceInfo
    globals: tuple[dict, ...] = ()  # {"name", "status": rebuilt|stubbed|refused, "uses"}
    positive_rule: str = POSITIVE_RULE


def child_path(path: str, name: str) -> str:
    """``model[1][3]`` for numbered children (Sequential), ``model[0].conv1`` for named ones."""
    return f"{path}[{name}]" if name.isdigit() else f"{path}.{name}"


def positive_index(classes: tuple[str, ...] | None) -> int | None:
    """See ``POSITIVE_RULE``."""
    if not classes:
        return None
    for i, c in enumerate(classes):
        if c.lower() == "positive":
            return i
    return 1 if len(classes) == 2 else None


_SKIP = object()


def plain(value: Any, depth: int = 0, budget: list | None = None) -> Any:
    """A JSON-safe copy of small plain data (tuples become lists), or ``_SKIP`` for anything else
    (including anything nested deeper than 8 or bigger than 1000 values: hyper-parameters are small)."""
    budget = [1000] if budget is None else budget
    budget[0] -= 1
    if depth > 8 or budget[0] < 0:
        return _SKIP
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _SKIP
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.append(plain(v, depth + 1, budget))
            if out[-1] is _SKIP:
                return _SKIP
        return out
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return _SKIP
        out = {}
        for k, v in value.items():
            out[k] = plain(v, depth + 1, budget)
            if out[k] is _SKIP:
                return _SKIP
        return out
    return _SKIP


def _refuse_or_malformed(where: str, value: Any, expected: str) -> Exception:
    """Error for a slot of the model that does not hold what torch would have put there."""
    g = global_of(value)
    if isinstance(value, Call) or (g is not None and is_code_global(g.normalized)):
        return UnsafePickleError(
            f"{where} is {describe(value)}: obtaining the {expected} would mean executing it; refusing this pickle"
        )
    return MalformedModelError(f"{where} is {describe(value)}, not a {expected}; not a torch module pickle")


def is_module_record(obj: Any) -> bool:
    """A record whose BUILD state looks like an ``nn.Module.__dict__``."""
    if not isinstance(obj, Record) or isinstance(obj, Call):
        return False
    attrs = obj.attrs
    return isinstance(attrs.get("_modules"), dict) and isinstance(attrs.get("_parameters"), dict)


def module_tree(
    record: Any, fname: str, path: str = "model"
) -> tuple[ModuleNode, "OrderedDict[str, torch.Tensor]"]:
    """Walk module records into a ``ModuleNode`` tree and the ordered state dict (torch's key order)."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    node = _walk(record, fname, path, "", state, set(), 0, [MAX_MODULES])
    return node, state


def _tensors(kind: str, table: Any, where: str, fname: str, skip: set) -> list[tuple[str, torch.Tensor | None]]:
    if not isinstance(table, dict):
        raise MalformedModelError(f"{fname}: {where}.{kind} is {describe(table)}, not a dict; not a torch module pickle")
    out = []
    for name, value in table.items():
        if not isinstance(name, str):
            raise MalformedModelError(f"{fname}: {where} has a non-string {kind} name")
        if value is None or name in skip:
            out.append((name, None))
        elif isinstance(value, TensorRef):
            out.append((name, value.tensor))
        else:
            raise _refuse_or_malformed(f"{fname}: {child_path(where, name)}", value, "tensor")
    return out


def _walk(
    record: Any, fname: str, path: str, prefix: str, state: OrderedDict, active: set, depth: int, budget: list
) -> ModuleNode:
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        raise MalformedModelError(f"{fname}: module tree too deep or too large at {path}; not a supported model")
    if not is_module_record(record):
        raise _refuse_or_malformed(f"{fname}: {path}", record, "torch module")
    if id(record) in active:
        raise MalformedModelError(f"{fname}: {path} contains itself; not a supported model")
    active.add(id(record))
    attrs = record.attrs
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    if not isinstance(non_persistent, (set, frozenset, list, tuple)):
        non_persistent = set()
    params = _tensors("_parameters", attrs["_parameters"], path, fname, set())
    buffers = _tensors("_buffers", attrs.get("_buffers", {}), path, fname, set(non_persistent))
    for name, tensor in params + buffers:
        if tensor is not None:
            state[prefix + name] = tensor
    hparams = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or key.startswith("_") or key == "training":
            continue
        value = plain(value)
        if value is not _SKIP:
            hparams[key] = value
    param_names = {n for n, _ in params}
    if "bias" in param_names and "bias" not in hparams and "affine" not in hparams:
        hparams["bias"] = dict(params)["bias"] is not None
    children = []
    for name, child in attrs["_modules"].items():
        if not isinstance(name, str):
            raise MalformedModelError(f"{fname}: {path} has a non-string child name")
        if child is None:
            children.append((name, None))
            continue
        children.append(
            (name, _walk(child, fname, child_path(path, name), f"{prefix}{name}.", state, active, depth + 1, budget))
        )
    active.discard(id(record))
    return ModuleNode(
        cls=class_path(record),
        hparams=hparams,
        parameters=tuple(n for n, t in params if t is not None),
        buffers=tuple(n for n, t in buffers if t is not None),
        children=tuple(children),
    )


def require_module(obj: Any, fname: str, where: str) -> Any:
    """The module record at ``where`` or a typed error saying what is there instead."""
    if obj is None:
        raise UnsupportedModelError(f"{fname}: {where} is missing; the pickle holds no model to convert")
    if not is_module_record(obj):
        raise _refuse_or_malformed(f"{fname}: {where}", obj, "torch module")
    return obj


def tensor_list(value: Any) -> list[float] | None:
    """Flat list of floats of a tensor record (normalization stats), None if not a tensor."""
    if isinstance(value, TensorRef):
        return [float(v) for v in value.tensor.detach().reshape(-1).to(torch.float64).tolist()]
    return None
