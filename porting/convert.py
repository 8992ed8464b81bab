"""``port convert``: a source model -> ``model.safetensors`` + ``config.json`` (+ verified exports), and
``load_model`` for sources and converted folders; the family (``porting.family``) reads, rebuilds and exports.

The output directory is written atomically: everything goes into a temp dir beside ``out`` which is
renamed into place only when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from . import family as registry
from .errors import ExportError, MalformedModelError
from .outputs import check_name, check_not_inputs, check_output_dir, spell


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
            golden: str | Path | None = None, log=None, strict: bool = True, **options) -> dict:
    """Read ``model`` without executing it, rebuild and check the network, write ``out`` atomically.

    ``model`` is a source model of a registered family (``porting.family``: a learner pickle, a Hugging Face model
    folder, ...). ``exports``: what ``port convert --export`` takes, with the same default (``"all"``: every
    format whose runtime is installed; ``"none"`` or ``[]``: no artifact, but parity.json and the model card;
    ``None``: weights and config.json only); they are written and verified into the same temp dir, so they appear atomically too; ``golden`` adds
    the golden cases of this model to the checks. ``out`` must not exist unless ``overwrite``.
    Returns a summary dict (see ``format_summary``; ``exports`` holds parity.json). Raises typed ``PortingError``s;
    when an artifact misses the parity contract, ``out`` is still written (the artifact marked FAILED in
    parity.json) and ``ExportError`` is raised, unless ``strict=False`` (then check ``summary["exports"]["passed"]``).
    ``options`` are the family's own (``Family.options``, e.g. ``transformers_semantics=5`` for a Hugging Face
    folder); None means not given, and a family refuses those it does not take.
    """
    check_name(model, "model", MalformedModelError)
    model, out = Path(model), Path(out)
    check_output_dir(out, "out", exists_ok=overwrite, replace=True)  # before reading anything
    check_not_inputs(out, "out", [(model, "model")])  # `--out d --force` on d/m.pkl would delete the source
    if golden is not None and not (Path(golden) / "cases").is_dir():
        raise ExportError(f"{spell('golden', golden)}: not a golden store (no cases/ folder); pass the store of this "
                          "model's family (golden/, golden/hf, ...), or drop the option")
    exports = _formats(exports)
    options = registry.given(options)
    fam = registry.for_model(model, converted=False)
    summary = fam.convert(model, lambda fill: _write_atomically(out, overwrite, fill), exports=exports,
                          golden=None if golden is None else Path(golden), log=log, **options)
    summary = {"out": str(out), **summary}
    parity = summary.get("exports")
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


def _classes(classes) -> str:
    """The class list, or its first few and the count where it is long (AudioSet's 527)."""
    if not isinstance(classes, list) or len(classes) <= 12:
        return str(classes)
    return f"{len(classes)}: {', '.join(map(repr, classes[:5]))}, ..., {classes[-1]!r}"


def format_summary(summary: dict) -> str:
    """Short human summary printed by ``port convert``."""
    return "\n".join(
        [
            f"converted {summary['source']} ({summary['kind']}, {summary['container']}) -> {summary['out']}",
            f"  {_n(summary['modules'], 'module')}, {_n(summary['tensors'], 'tensor')}, "
            f"{_n(summary['parameters'], 'parameter')}, {_n(summary['bytes'], 'byte')}",
            f"  classes {_classes(summary['classes'])}, positive index {summary['positive_index']}",
            f"  normalize {summary['normalize']}, activation {summary['activation']}",
            f"  {_n(summary['stubbed'], 'pickle global')} kept as inert records (nothing executed)",
        ]
        + [f"  {line}" for line in summary.get("notes", ())]  # the family's own lines
    )


def load_model(path: str | Path, device: str | torch.device = "cpu", **options) -> tuple[torch.nn.Module, dict]:
    """``(model, config)`` from a source model (a learner ``.pkl``, an HF folder, ...) or a directory written by
    ``convert``, through its family (``porting.family``).

    ``model`` is in eval mode and equals the original (OrcaHello: ``learn.model``, normalization NOT folded in:
    ``config['normalize']`` carries it); the source and the converted folder give bitwise-identical outputs.
    ``options`` are the family's own (``Family.options``; e.g. ``transformers_semantics``, 4 or 5: for an HF folder,
    overrides what its config.json says; a converted folder follows what it was converted with, and a different
    value is refused: re-convert instead).
    """
    path = Path(path)
    model, config = registry.for_model(path).load(path, **registry.given(options))
    return model.to(device), config
