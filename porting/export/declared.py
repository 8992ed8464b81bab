"""Artifacts by declaration, in the manner of optimum's ``OnnxConfig``: a family says, per artifact, which module,
its named input with dynamic axes, its named outputs (and the golden stage each is), the probe inputs that catch
shapes baked in by a trace, and the eager reference; this module exports it to any format, loads it back in that
format's runtime (``porting.export.runners``), checks it by the parity contract against the reference on every probe
and against golden windows, and returns its parity.json entry. An artifact that fails to export, load or match is
marked failed; nothing passes with a warning. Every family's artifacts go through here (``export_artifact``, or
``build`` then ``verify_artifact``), and so does a backend that has no file (``Artifact.runner``).

Every check is one row of parity.json (``row``): what it was against (``eager``: the reference on a probe, this
machine, strict tier; ``golden``: a golden window or case, in that capture's tier), the data, the input shape, the
stage and output, the contract's rule and verdict with max abs, max rel, ulps and margin.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..parity.compare import compare_rule
from ..parity.contract import STRICT, Tier

PARITY_FORMAT = "porting.parity/2"  # /1 (OrcaHello's before issue 22) lacked "family" and per-row stage/input_shape
TFLITE_BATCHES = (1, 8)  # LiteRT needs fixed shapes: one signature per batch size
OPSET = 17
EAGER = Tier(STRICT, "the eager port on this machine")


@dataclass
class Artifact:
    """One artifact: ``module(input) -> outputs`` exported as ``name`` in ``fmt``."""

    name: str
    fmt: str
    kind: str  # parity.json's "kind": "model", "pipeline", ...
    module: torch.nn.Module | None  # None: a backend with no file (``runner``)
    input: str  # the input's name
    outputs: tuple[str, ...]  # output names, in the module's order
    stages: tuple[str, ...]  # the golden stage each output is (e.g. "Y.logits")
    axes: dict  # the input's dynamic axes: {0: "B", 1: "T"}; outputs share the batch axis's name
    shape: list  # the input's declared shape for parity.json
    probes: list  # inputs it is verified on (two lengths / batch sizes: traces bake shapes in)
    #: the eager reference: a module, or ``x -> outputs`` (by stage, or in ``outputs`` order); default ``module``
    reference: Callable | None = None
    golden_input: str | None = None  # the golden stage fed to it on golden windows
    extra: dict = field(default_factory=dict)  # files stored inside TorchScript / pt2 artifacts
    tflite_batches: tuple[int, ...] = TFLITE_BATCHES
    example: torch.Tensor | None = None  # the trace input (default: the first probe); another batch size than the
    #                                      probes' makes a batch baked in by the trace fail verification
    metadata: dict = field(default_factory=dict)  # ONNX metadata_props (key -> text)
    #: stages computed outside the artifact from its outputs (e.g. a confidence from the logits), checked as well
    derive: Callable[[dict], dict] | None = None
    derive_note: str = ""  # parity.json's note on the derived rows
    io: dict | None = None  # parity.json's "inputs" / "outputs" (and more) of this artifact; default from the above
    informational: tuple[str, ...] = ()  # runtimes reported beside the gate, not gating: "xnnpack" (TFLite)
    #: a backend with no file: ``runner()`` gives ``run(x: ndarray) -> outputs`` with ``run.runtime`` (and
    #: ``run.entry``: more parity.json fields of it, optional)
    runner: Callable[[], Callable] | None = None


class _Named(torch.nn.Module):
    """Keyword input and a dict of named outputs, so LiteRT names its signature's tensors."""

    def __init__(self, module: torch.nn.Module, names: tuple):
        super().__init__()
        self.module, self.names = module, names

    def forward(self, **kw):
        out = self.module(kw[self.names[0]])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.names[1:], out))


def build(art: Artifact, path: Path) -> None:
    """Export ``art`` to ``path`` in its format (traced on its ``example``, else its first probe)."""
    module, names, axes = art.module.eval(), (art.input, *art.outputs), art.axes
    example = art.example if art.example is not None else art.probes[0]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings, the TorchScript-based ONNX exporter's deprecation
        if art.fmt == "tflite":
            import os

            import litert_torch

            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            litert_torch.config.show_progress = False
            named = _Named(module, names).eval()
            conv = litert_torch
            for n in art.tflite_batches:
                conv = conv.signature(f"batch_{n}", named, sample_kwargs={names[0]: example[:1].expand(n, *example.shape[1:])
                                                                           .contiguous()})
            conv.convert().export(str(path))
        elif art.fmt == "onnx":
            batch = axes.get(0, "B")
            torch.onnx.export(module, (example,), str(path), input_names=[names[0]], output_names=list(names[1:]),
                              dynamic_axes={names[0]: axes, **{o: {0: batch} for o in names[1:]}}, opset_version=OPSET,
                              dynamo=False)
            if art.metadata:
                import onnx

                proto = onnx.load(str(path))
                for key, value in art.metadata.items():
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = key, value
                onnx.save(proto, str(path))
        elif art.fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), str(path), _extra_files=art.extra)
        else:
            # Dim.AUTO: a named Dim(min, max) on the samples axis is rejected, the exporter cannot prove the
            # guards of the CNN's floor divisions (measured, torch 2.13); AUTO lets it derive them.
            dims = {i: torch.export.Dim.AUTO for i in {0, *axes}}  # every declared axis (a [B, 1, T, M] input: 2)
            program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
            torch.export.save(program, str(path), extra_files=art.extra)


def load(art: Artifact, path: Path, resolver: str = "builtin") -> Callable:
    """The artifact loaded back in its own runtime (``porting.export.runners.load``)."""
    from .runners import load as load_format

    return load_format(art.fmt, path, art.outputs, resolver)


def by_stage(art: Artifact, got) -> dict:
    """Outputs by golden stage name: named as the artifact's outputs (ONNX, LiteRT, the runners), keyed by stage
    already (a reference may give more stages), or in the declared order."""
    if isinstance(got, dict):
        if all(o in got for o in art.outputs):
            return {s: got[o] for o, s in zip(art.outputs, art.stages)}
        if any(s in got for s in art.stages):
            return dict(got)
        got = list(got.values())
    elif not isinstance(got, (tuple, list)):
        got = (got,)
    return dict(zip(art.stages, got))


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _outputs(art: Artifact, got) -> dict:
    """The artifact's outputs by stage, plus the stages it derives from them."""
    out = by_stage(art, got)
    if art.derive is not None:
        out.update(art.derive({k: torch.as_tensor(np.asarray(v)) for k, v in out.items()}))
    return out


def _output_name(art: Artifact, stage: str) -> str:
    return dict(zip(art.stages, art.outputs)).get(stage, stage.rsplit(".", 1)[-1])


def row(against: str, data: str, x, stage: str, output: str, want, got, tier: Tier, family: str | None,
        gating: bool = True, note: str = "") -> dict:
    """One row of parity.json: the one comparison engine's verdict on one output (``compare_rule``)."""
    r = compare_rule(stage, _numpy(want), _numpy(got), tier.name, None, None, family=family)
    finite = math.isfinite(r.max_abs)
    out = {"against": against, "data": data, "input_shape": list(np.shape(x)), "windows": int(np.shape(x)[0]),
           "stage": stage, "output": output, "rule": r.rule, "tier": tier.name, "tier_reason": tier.why,
           "max_abs_diff": r.max_abs if finite else None, "max_rel": r.max_rel if finite else None,
           "max_ulps": r.max_ulps if finite else None, "margin": r.margin if finite else None,
           "tolerance_at_worst": r.tol, "passed": bool(r.passed), "gating": gating}
    if note or r.note:
        out["note"] = "; ".join(n for n in (note, r.note) if n)
    return out


def _rows(art: Artifact, against: str, data: str, x, got: dict, want: dict, tier: Tier, family, gating) -> list[dict]:
    derived = set(got) - set(art.stages)
    return [row(against, data, x, stage, _output_name(art, stage), want[stage], value, tier, family, gating,
                art.derive_note if stage in derived else "")
            for stage, value in got.items() if stage in want]


def check_eager(art: Artifact, run: Callable, family: str | None, gating: bool = True) -> list[dict]:
    """The artifact against its eager reference on every probe, by the contract (strict tier: same machine)."""
    reference = art.reference if art.reference is not None else art.module
    rows = []
    for x in art.probes:
        with torch.inference_mode():
            ref = reference(x)
        want = by_stage(art, ref)
        if art.derive is not None and not set(want) - set(art.stages):
            want.update(art.derive(want))
        rows += _rows(art, "eager", "probe", x, _outputs(art, run(_numpy(x))), want, EAGER, family, gating)
    return rows


def check_golden(art: Artifact, run: Callable, windows: list, tier: str | Tier, family: str | None,
                 gating: bool = True) -> list[dict]:
    """The artifact on the ``golden_input`` of each golden window (or case: a batch of windows) against the original
    stack's outputs. ``windows``: ``(label, tensors)`` held to ``tier``, or ``(label, tensors, Tier)`` each held to
    its own (a store's captures from several machines)."""
    rows = []
    for label, t, *own in windows:
        held = own[0] if own else tier if isinstance(tier, Tier) else Tier(tier, "the golden store's capture")
        x = t[art.golden_input]
        got = _outputs(art, run(_numpy(x).astype(np.float32)))
        rows += _rows(art, "golden", label, x, got, t, held, family, gating)
    return rows


def _entry(art: Artifact) -> dict:
    entry = {"format": art.fmt, "kind": art.kind}
    entry.update(art.io if art.io is not None else
                 {"inputs": {art.input: {"shape": art.shape, "dtype": "float32"}},
                  "outputs": {o: ["B", "K"] for o in art.outputs}})
    if art.fmt == "tflite":
        entry["signatures"] = [f"batch_{n}" for n in art.tflite_batches]
    return entry


def verify_artifact(art: Artifact, path: Path | None, family: str | None, windows: list = (), tier: str | Tier = STRICT,
                    log=None) -> dict:
    """Load ``path`` (or take ``art.runner``) and run every check: the parity.json entry (``passed`` false with the
    reason on any failure, never skipped)."""
    from . import first_line, sha256

    log = log or (lambda msg: None)
    entry = _entry(art)
    if path is not None:
        entry.update(bytes=path.stat().st_size, sha256=sha256(path))
    try:
        run = art.runner() if art.runner is not None else load(art, path)
        entry["runtime"] = run.runtime
        entry.update(getattr(run, "entry", {}))
        log(f"verifying {art.name} at input shapes {[list(x.shape) for x in art.probes]} ...")
        entry["checks"] = check_eager(art, run, family) + check_golden(art, run, list(windows), tier, family)
        for resolver in art.informational if art.fmt == "tflite" else ():
            other = load(art, path, resolver=resolver)
            rows = check_eager(art, other, family, False) + check_golden(art, other, list(windows), tier, family, False)
            entry.setdefault("informational", []).append({"runtime": other.runtime, "checks": rows,
                                                          "passed": all(r["passed"] for r in rows)})
    except Exception as exc:  # any runtime failure fails the artifact, reported
        entry.update(passed=False, error=f"verification failed: {first_line(exc)}")
        return entry
    entry["passed"] = all(r["passed"] for r in entry["checks"] if r["gating"])
    return entry


def export_artifact(art: Artifact, out_dir: Path, family: str | None, windows: list = (), tier: str | Tier = STRICT,
                    log=None) -> dict:
    """Build, load back and verify one artifact; its parity.json entry (``passed`` false with the reason on any
    failure; the file is then removed)."""
    from ..errors import PortingError
    from . import first_line

    log = log or (lambda msg: None)
    path = Path(out_dir) / art.name
    log(f"exporting {art.name} ...")
    try:
        build(art, path)
    except PortingError:
        raise
    except Exception as exc:  # exporters raise many error types; the artifact is reported failed
        path.unlink(missing_ok=True)
        return {**_entry(art), "passed": False, "error": f"export failed: {first_line(exc)}"}
    entry = verify_artifact(art, path, family, windows, tier, log)
    if not entry["passed"] and "error" in entry:
        path.unlink(missing_ok=True)
    return entry


def golden_windows(golden: str | Path | None, same_model: Callable) -> tuple[list[tuple[str, dict]], str]:
    """``([(label, tensors) of every stored window of the golden cases ``same_model(case)`` accepts], tier)`` for
    ``--golden``: the tier the store's fingerprint gives this machine (strict with no store)."""
    if golden is None:
        return [], STRICT
    from ..golden import case_paths, load_case
    from ..parity.contract import choose_tier
    from ..parity.fingerprint import load_fingerprint, machine_fingerprint

    out = []
    for p in case_paths(golden):
        case = load_case(p)
        if not case.error and same_model(case):
            out += [(f"{case.name} window {i}", case.window(i)) for i in case.stored_windows]
    return out, choose_tier(load_fingerprint(golden), machine_fingerprint()).name


def parity_document(family: str, artifacts: dict, rules: str, **fields) -> dict:
    """parity.json: the family, the rules, this machine's fingerprint, the runtimes' versions, every artifact's
    entry and verdict, and the family's own fields (model, reference, probe, golden ...)."""
    from ..parity.fingerprint import machine_fingerprint
    from .runners import runtime_versions

    return {"format": PARITY_FORMAT, "family": family, "rules": rules, "fingerprint": machine_fingerprint(),
            "passed": all(a["passed"] for a in artifacts.values()), **fields, "versions": runtime_versions(),
            "artifacts": artifacts}

