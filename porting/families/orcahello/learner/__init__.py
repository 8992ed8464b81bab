"""Reading learner pickles without trusting them.

``read_learner(path) -> LearnerSpec`` reads a fastai v1 ``Learner.export()``, a fastai v2 exported
``Learner`` or a ``torch.save``d ``nn.Module`` (torch zip or legacy stream) with nothing the pickle
names imported or executed (see ``unpickle``). ``inspect_pickle`` reports what a pickle holds,
including what was refused, without failing on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ....errors import PortingError, UnsafePickleError, UnsupportedModelError
from .fastai1 import is_fastai1_export, spec_from_fastai1
from .fastai2 import is_fastai2_learner, spec_from_fastai2
from .spec import LearnerSpec, ModuleNode, SourceInfo, is_module_record, module_tree, positive_index
from ....io.unpickle import STUBBED, GlobalName, TensorRef, Unpickled, describe, is_code_global, read_file, unpickle

__all__ = [
    "LearnerSpec",
    "ModuleNode",
    "SourceInfo",
    "read_learner",
    "inspect_pickle",
    "format_report",
]


def _kind(root: Any) -> str:
    if is_fastai1_export(root):
        return "fastai1-learner"
    if is_fastai2_learner(root):
        return "fastai2-learner"
    if is_module_record(root):
        return "torch-module"
    return "unknown"


def _no_model(root: Any, fname: str) -> UnsupportedModelError:
    if isinstance(root, dict) and root and all(isinstance(v, TensorRef) for v in root.values()):
        return UnsupportedModelError(
            f"{fname}: holds only a state_dict (no module tree); export the whole Learner or nn.Module instead"
        )
    return UnsupportedModelError(
        f"{fname}: root object is {describe(root)}, not a fastai Learner export or nn.Module; nothing to convert"
    )


def _refusal(unp: Unpickled, fname: str) -> UnsafePickleError | None:
    if not unp.refused:
        return None
    names = ", ".join(unp.refused)
    return UnsafePickleError(f"{fname}: refused dangerous globals {names} (nothing was executed); do not load this file")


def _spec(unp: Unpickled, source: SourceInfo) -> LearnerSpec:
    root = unp.root
    if source.kind == "fastai1-learner":
        return spec_from_fastai1(unp, source)
    if source.kind == "fastai2-learner":
        return spec_from_fastai2(unp, source)
    if source.kind == "torch-module":
        tree, state = module_tree(root, source.file)
        return LearnerSpec(
            tree=tree,
            state_dict=state,
            classes=None,
            positive_index=positive_index(None),
            normalize=None,
            activation={"name": "identity"},
            source=source,
            globals=unp.globals,
        )
    raise _no_model(root, source.file)


def _read(path: str | Path) -> tuple[Unpickled, SourceInfo]:
    src = read_file(path)
    unp = unpickle(src)
    info = SourceInfo(
        file=src.path.name,
        sha256=src.sha256,
        size_bytes=len(src.data),
        container=unp.container,
        kind=_kind(unp.root),
    )
    return unp, info


def read_learner(path: str | Path) -> LearnerSpec:
    """Read a learner/module pickle into a ``LearnerSpec`` without executing it.

    Raises ``MalformedModelError`` (unreadable), ``UnsafePickleError`` (dangerous globals, or a model
    that only exists by executing code), ``UnsupportedModelError`` (no model inside).
    """
    unp, info = _read(path)
    refusal = _refusal(unp, info.file)
    if refusal is not None:
        raise refusal
    spec = _spec(unp, info)
    from ....io.weights import check_weights

    check_weights(spec.state_dict, info.file)
    return spec


def inspect_pickle(path: str | Path) -> dict:
    """JSON-safe report of a pickle: globals (rebuilt/stubbed/refused), tree, tensors, classes,
    normalization, activation, and the problems that would stop ``convert``. Writes nothing."""
    from ..layers import unsupported_layers  # local: layers imports torch.nn (fine) but keep this module light

    unp, info = _read(path)
    report: dict = {
        "file": info.file,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "container": info.container,
        "kind": info.kind,
        "globals": [
            dict(g, code=bool(g["status"] == STUBBED and is_code_global(_normalized(g["name"])))) for g in unp.globals
        ],
        "refused": list(unp.refused),
        "storages": {"count": unp.storage_count, "bytes": unp.storage_bytes},
        "problems": [],
    }
    refusal = _refusal(unp, info.file)
    if refusal is not None:
        report["problems"].append(f"{type(refusal).__name__}: {refusal}")
    try:
        spec = _spec(unp, info)
    except PortingError as err:
        report["problems"].append(f"{type(err).__name__}: {err}")
        return report
    report.update(
        modules=[{"path": p, "class": n.cls, "hparams": n.hparams} for p, n in spec.tree.walk()],
        tensors={
            "count": len(spec.state_dict),
            "elements": int(sum(t.numel() for t in spec.state_dict.values())),
            "bytes": int(sum(t.numel() * t.element_size() for t in spec.state_dict.values())),
        },
        classes=list(spec.classes) if spec.classes is not None else None,
        positive_index=spec.positive_index,
        normalize=spec.normalize,
        activation=spec.activation,
    )
    for where, cls in unsupported_layers(spec.tree):
        report["problems"].append(f"UnsupportedLayerError: {where} has class {cls}, which has no plain-torch rebuild")
    return report


def _normalized(raw: str) -> str:
    module, _, name = raw.rpartition(".")
    return GlobalName(module, name).normalized


def format_report(report: dict) -> str:
    """Human-readable ``port inspect`` output."""
    lines = [
        f"file: {report['file']} ({report['size_bytes']:,} bytes, sha256 {report['sha256'][:16]}...)",
        f"container: {report['container']}  kind: {report['kind']}",
    ]
    if "modules" in report:
        lines.append(f"modules ({len(report['modules'])}):")
        for m in report["modules"]:
            hp = ", ".join(f"{k}={v}" for k, v in m["hparams"].items())
            lines.append(f"  {m['path']}: {m['class']}" + (f" ({hp})" if hp else ""))
        t = report["tensors"]
        lines.append(f"tensors: {t['count']} in the state dict, {t['elements']:,} elements, {t['bytes']:,} bytes")
        lines.append(f"classes: {report['classes']}  positive index: {report['positive_index']}")
        lines.append(f"normalization: {report['normalize']}")
        lines.append(f"output activation: {report['activation']}")
    s = report["storages"]
    lines.append(f"storages: {s['count']} ({s['bytes']:,} bytes)")
    lines.append(f"globals ({len(report['globals'])}):")
    for g in report["globals"]:
        note = " (carries code; never executed)" if g.get("code") else ""
        lines.append(f"  {g['status']:8s} {g['name']}{note}")
    lines.append("refused: " + (", ".join(report["refused"]) if report["refused"] else "nothing"))
    for p in report["problems"]:
        lines.append(f"problem: {p}")
    return "\n".join(lines)
