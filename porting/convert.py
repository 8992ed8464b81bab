"""``port convert``: pickle -> ``model.safetensors`` + ``config.json``, and ``load_model`` for both.

The output directory is written atomically: everything goes into a temp dir beside ``out`` which is
renamed into place only when complete, so a failure leaves nothing behind. ``config.json`` carries
what the pickle knew besides the weights (architecture tree, classes, positive index and its rule,
normalization, output activation) and the legacy preprocessing config (golden/README.md §1-§3).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ExportError, MalformedModelError, UnsupportedModelError
from .families.orcahello.frontend.config import FrontendConfig
from .families.orcahello.layers import build_model, build_module
from .families.orcahello.learner import LearnerSpec, read_learner
from .families.orcahello.learner.spec import ModuleNode
from .outputs import check_name, check_not_inputs, check_output_dir, spell

CONFIG_FORMAT = "porting.model/1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def make_config(spec: LearnerSpec) -> dict:
    """The config.json dict for a spec (plain JSON types only, so a round trip gives the same dict)."""
    from . import __version__

    cfg = {
        "format": CONFIG_FORMAT,
        "porting_version": __version__,
        "source": {
            "file": spec.source.file,
            "sha256": spec.source.sha256,
            "size_bytes": spec.source.size_bytes,
            "container": spec.source.container,
            "kind": spec.source.kind,
        },
        "classes": list(spec.classes) if spec.classes is not None else None,
        "positive_index": spec.positive_index,
        "positive_rule": spec.positive_rule,
        "normalize": spec.normalize,
        "normalize_rule": "x = (x - mean[c]) / std[c] per channel c, before the model (golden/README.md §4)",
        "activation": spec.activation,
        "frontend": FrontendConfig().to_dict(),
        "architecture": spec.tree.to_dict(),
        "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                       for k, t in spec.state_dict.items()},
    }
    return json.loads(json.dumps(cfg))


def _write_atomically(out: Path, overwrite: bool, fill) -> None:
    """Create ``out`` by filling a temp dir beside it (``fill(tmp)``) and renaming it into place: a failure
    leaves nothing behind, and an existing ``out`` (with ``overwrite``) is replaced only once all is written.

    The old ``out`` is first renamed to a hidden sibling (one atomic rename, no directory created for it), then the
    new one renamed into place; if that second rename fails the old one is renamed back. SIGTERM reaches here as
    ``SystemExit`` (porting.cli), so the ``finally`` cleans up as for Ctrl-C."""
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`; only the final rename makes `out` appear
    except OSError as exc:
        raise ExportError(f"{out}: cannot create parent directory {parent} ({exc.strerror}); choose another "
                          f"{spell('out')}") from exc
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}.", suffix=".tmp", dir=parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the result should look like any new directory
        fill(tmp)
        if out.exists():
            old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                old = None
                raise
        else:
            os.rename(tmp, out)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the converted model ({exc.strerror or exc}); check the directory") from exc
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _write_model(tmp: Path, state: dict, config: dict, sha256: str) -> None:
    save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "source_sha256": sha256})
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
    for f in (WEIGHTS_NAME, CONFIG_NAME):
        os.chmod(tmp / f, 0o644)


def _formats(exports) -> list[str] | None:
    """``exports`` as ``port convert --export`` takes it: "all" (every format whose runtime is installed),
    "none", a comma list or a list of names; None: no export step at all (weights and config.json only)."""
    if exports is None:
        return None
    from .export import parse_formats

    if isinstance(exports, str):
        return parse_formats(exports)
    return list(exports)


def convert(model: str | Path, out: str | Path, overwrite: bool = False, exports: str | list[str] | None = "all",
            golden: str | Path | None = None, log=None, strict: bool = True, transformers_semantics=None) -> dict:
    """Read ``model`` without executing it, rebuild and check the network, write ``out`` atomically.

    ``model`` is a learner pickle or a Hugging Face model folder (``porting.families.hf``). ``exports``: what
    ``port convert --export`` takes, with the same default (``"all"``: every format whose runtime is installed;
    ``"none"`` or ``[]``: no artifact, but parity.json and the model card; ``None``: weights and config.json
    only); they are written and verified into the same temp dir, so they appear atomically too; ``golden`` adds
    the golden cases of this model to the checks. ``out`` must not exist unless ``overwrite``.
    Returns a summary dict (see ``format_summary``; ``exports`` holds parity.json). Raises typed ``PortingError``s;
    when an artifact misses the parity contract, ``out`` is still written (the artifact marked FAILED in
    parity.json) and ``ExportError`` is raised, unless ``strict=False`` (then check ``summary["exports"]["passed"]``).
    ``transformers_semantics`` (HF folders: 4 or 5) overrides the transformers major whose semantics the port
    follows (default: the one in the folder's config.json, ``porting.families.hf.semantics``).
    """
    check_name(model, "model", MalformedModelError)
    model, out = Path(model), Path(out)
    check_output_dir(out, "out", exists_ok=overwrite, replace=True)  # before reading anything
    check_not_inputs(out, "out", [(model, "model")])  # `--out d --force` on d/m.pkl would delete the source
    if golden is not None and not (Path(golden) / "cases").is_dir():
        raise ExportError(f"{spell('golden', golden)}: not a golden store (no cases/ folder); pass golden/ (learners) "
                          "or golden/hf (Hugging Face folders), or drop the option")
    exports = _formats(exports)
    from .families.hf.folder import is_hf_folder

    if model.is_dir() and is_hf_folder(model):
        return _convert_hf(model, out, overwrite, exports, log, strict, golden, transformers_semantics)
    if transformers_semantics is not None:
        raise UnsupportedModelError(f"{model}: --transformers-semantics applies to Hugging Face model folders only")
    spec = read_learner(model)
    net = build_model(spec, check=True)  # proves the tree is rebuildable and takes the detector's input, first
    config = make_config(spec)
    state = {k: t.detach().to("cpu").contiguous().clone() for k, t in spec.state_dict.items()}
    parity = None

    def fill(tmp: Path) -> None:
        nonlocal parity
        _write_model(tmp, state, config, spec.source.sha256)
        if exports is not None:  # verified exports + parity.json + HF files, inside the temp dir (porting.export)
            from .export import export_all

            parity = export_all(net, config, tmp, exports, golden_dir=golden, log=log)

    _write_atomically(out, overwrite, fill)
    summary = {
        "out": str(out),
        "source": spec.source.file,
        "sha256": spec.source.sha256,
        "kind": spec.source.kind,
        "container": spec.source.container,
        "modules": sum(1 for _ in spec.tree.walk()),
        "tensors": len(state),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "bytes": int(sum(t.numel() * t.element_size() for t in state.values())),
        "classes": config["classes"],
        "positive_index": config["positive_index"],
        "normalize": config["normalize"],
        "activation": config["activation"],
        "stubbed": sum(1 for g in spec.globals if g["status"] == "stubbed"),
        "exports": parity,
    }
    if strict and parity is not None and not parity["passed"]:
        raise ExportError(failed_artifacts_message(out, parity))
    return summary


def _convert_hf(model: Path, out: Path, overwrite: bool, exports, log, strict: bool, golden=None,
                transformers_semantics=None) -> dict:
    """An HF folder -> the rebuild's (weight-norm folded) safetensors, porting's config.json, the preprocessor."""
    from .families.hf.folder import PREPROCESSOR, read_hf_folder
    from .families.hf.model import make_config as hf_config, rebuild

    spec = read_hf_folder(model, transformers_semantics)
    net, state = rebuild(spec)
    config = hf_config(spec, state)
    state = {k: t.detach().to("cpu").contiguous().clone() for k, t in state.items()}
    parity = None

    def fill(tmp: Path) -> None:
        nonlocal parity
        _write_model(tmp, state, config, spec.sha256[spec.weights_file])
        (tmp / PREPROCESSOR).write_text(json.dumps(spec.preprocessor, indent=1) + "\n")
        os.chmod(tmp / PREPROCESSOR, 0o644)
        if exports is not None:
            from .families.hf.export import export_hf

            parity = export_hf(net, config, tmp, exports, log=log, golden=golden)
        from .families.hf.model import model_card

        (tmp / "README.md").write_text(model_card(config, parity))
        os.chmod(tmp / "README.md", 0o644)

    _write_atomically(out, overwrite, fill)
    summary = {
        "out": str(out), "source": spec.dir.name, "sha256": spec.sha256[spec.weights_file], "kind": "hf-folder",
        "container": spec.weights_file, "modules": sum(1 for _ in net.modules()), "tensors": len(state),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "bytes": int(sum(t.numel() * t.element_size() for t in state.values())), "classes": config["classes"],
        "positive_index": None, "normalize": None, "activation": config["activation"], "stubbed": 0,
        "architecture": spec.architecture, "exports": parity, "transformers_semantics": spec.semantics,
    }
    if strict and parity is not None and not parity["passed"]:
        raise ExportError(failed_artifacts_message(out, parity))
    return summary


def _n(count: int, word: str) -> str:
    """``1 module``, ``2 modules``, ``1,234 parameters``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def failed_artifacts_message(out: Path, parity: dict) -> str:
    bad = [name for name, art in parity["artifacts"].items() if not art["passed"]]
    return (f"{Path(out) / 'parity.json'}: {_n(len(bad), 'artifact')} failed verification by the parity contract: "
            f"{', '.join(bad)}; do not deploy them (numbers in parity.json)")


def format_summary(summary: dict) -> str:
    """Short human summary printed by ``port convert``."""
    return "\n".join(
        [
            f"converted {summary['source']} ({summary['kind']}, {summary['container']}) -> {summary['out']}",
            f"  {_n(summary['modules'], 'module')}, {_n(summary['tensors'], 'tensor')}, "
            f"{_n(summary['parameters'], 'parameter')}, {_n(summary['bytes'], 'byte')}",
            f"  classes {summary['classes']}, positive index {summary['positive_index']}",
            f"  normalize {summary['normalize']}, activation {summary['activation']}",
            f"  {_n(summary['stubbed'], 'pickle global')} kept as inert records (nothing executed)",
        ]
        + ([f"  follows transformers {summary['transformers_semantics']['major']}.x semantics "
            f"({summary['transformers_semantics']['note']})"] if summary.get("transformers_semantics") else [])
    )


def _load_dir(path: Path) -> tuple[torch.nn.Module, dict]:
    """A folder ``port convert`` wrote: config.json checked by ``porting.schema.check_converted`` (against the
    tensors the weights hold) and the weights by ``porting.io.weights``, both before anything is built."""
    from .io import files
    from .schema import check_converted
    from .io.weights import check_weights, read_safetensors

    if not files.exists(path / CONFIG_NAME):
        raise MalformedModelError(f"{path}: no {CONFIG_NAME}; pass a folder written by `port convert`, a learner .pkl, "
                                  "or an HF model folder (config.json + model.safetensors)")
    raw = files.read_json(path / CONFIG_NAME, "the converted model config", fix="re-run `port convert`")
    check_converted(raw, path / CONFIG_NAME)  # layout first: a non-porting folder is named before its weights
    state = check_weights(read_safetensors(path / WEIGHTS_NAME, "re-run `port convert`"), path / WEIGHTS_NAME)
    config = check_converted(raw, path / CONFIG_NAME, elements=sum(t.numel() for t in state.values()))
    if config.get("family") == "hf":
        from .families.hf.model import load_converted

        return load_converted(path, config, state), config
    order = list(config["state_dict"]) or sorted(state)
    if set(order) != set(state):
        extra = sorted(set(state) - set(order))[:1] or sorted(set(order) - set(state))[:1]
        raise MalformedModelError(f"{path / WEIGHTS_NAME}: tensors do not match config.json (first difference: "
                                  f"{extra[0]}); re-run `port convert`")
    ordered = {k: state[k] for k in order}
    where = str(path / CONFIG_NAME)
    tree = ModuleNode.from_dict(config["architecture"], where)
    return build_module(tree, ordered, where), config  # check_input ran when `port convert` wrote it


def load_model(path: str | Path, device: str | torch.device = "cpu",
               transformers_semantics=None) -> tuple[torch.nn.Module, dict]:
    """``(model, config)`` from a learner ``.pkl`` or a directory written by ``convert``.

    ``model`` is in eval mode and equals the legacy ``learn.model`` (normalization is NOT folded in:
    ``config['normalize']`` carries it); both paths give bitwise-identical outputs. ``transformers_semantics``
    (HF models, 4 or 5): for an HF folder, overrides what its config.json says; a converted folder follows what it
    was converted with, and a different value is refused (re-convert instead).
    """
    from .families.hf.folder import is_hf_folder

    path = Path(path)
    if path.is_dir() and is_hf_folder(path):
        from .families.hf.model import load_hf

        model, config = load_hf(path, transformers_semantics)
    elif path.is_dir():
        model, config = _load_dir(path)
        if transformers_semantics is not None:
            from .families.hf.model import check_converted_semantics

            check_converted_semantics(config, path, transformers_semantics)
    elif transformers_semantics is not None:
        raise UnsupportedModelError(f"{path}: --transformers-semantics applies to Hugging Face models only")
    else:
        spec = read_learner(path)
        model, config = build_model(spec), make_config(spec)
    return model.to(device), config
