"""Artifacts by declaration, in the manner of optimum's ``OnnxConfig``: a family says, per artifact, which module,
its named input with dynamic axes, its named outputs (and the golden stage each is), the probe inputs that catch
shapes baked in by a trace, and the eager reference; this module exports it to any format, loads it back in that
format's runtime (``porting.export.runners``), checks it by the parity contract against the reference on every probe
and against golden windows, and returns its parity.json entry. An artifact that fails to export, load or match is
marked failed; nothing passes with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..parity.compare import compare_rule
from ..parity.contract import STRICT

TFLITE_BATCHES = (1, 8)  # LiteRT needs fixed shapes: one signature per batch size
OPSET = 17


@dataclass
class Artifact:
    """One artifact: ``module(input) -> outputs`` exported as ``name`` in ``fmt``."""

    name: str
    fmt: str
    kind: str  # parity.json's "kind": "model", "pipeline", ...
    module: torch.nn.Module
    input: str  # the input's name
    outputs: tuple[str, ...]  # output names, in the module's order
    stages: tuple[str, ...]  # the golden stage each output is (e.g. "Y.logits")
    axes: dict  # the input's dynamic axes: {0: "B", 1: "T"}
    shape: list  # the input's declared shape for parity.json
    probes: list  # inputs it is verified on (two lengths / batch sizes: traces bake shapes in)
    reference: torch.nn.Module | None = None  # the eager reference (default: ``module``)
    golden_input: str | None = None  # the golden stage fed to it on golden windows
    extra: dict = field(default_factory=dict)  # files stored inside TorchScript / pt2 artifacts
    tflite_batches: tuple[int, ...] = TFLITE_BATCHES


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
    """Export ``art`` to ``path`` in its format (traced on its first probe)."""
    module, example, names, axes = art.module.eval(), art.probes[0], (art.input, *art.outputs), art.axes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if art.fmt == "tflite":
            import litert_torch

            litert_torch.config.show_progress = False
            named = _Named(module, names).eval()
            conv = litert_torch
            for n in art.tflite_batches:
                conv = conv.signature(f"batch_{n}", named, sample_kwargs={names[0]: example[:1].expand(n, *example.shape[1:])
                                                                           .contiguous()})
            conv.convert().export(str(path))
        elif art.fmt == "onnx":
            torch.onnx.export(module, (example,), str(path), input_names=[names[0]], output_names=list(names[1:]),
                              dynamic_axes={names[0]: axes, **{o: {0: "B"} for o in names[1:]}}, opset_version=OPSET,
                              dynamo=False)
        elif art.fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), str(path), _extra_files=art.extra)
        else:
            # Dim.AUTO: a named Dim(min, max) on the samples axis is rejected, the exporter cannot prove the
            # guards of the CNN's floor divisions (measured, torch 2.13); AUTO lets it derive them.
            dims = {0: torch.export.Dim.AUTO}
            if 1 in axes:
                dims[1] = torch.export.Dim.AUTO
            program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
            torch.export.save(program, str(path), extra_files=art.extra)


def load(fmt: str, path: Path) -> tuple[Callable, str]:
    """``(run, runtime)``: the artifact loaded back in its own runtime; ``run(x: ndarray)`` -> its outputs."""
    if fmt == "tflite":
        from .runners import TFLiteRunner

        r = TFLiteRunner(path)
        return (lambda x: r(x)), r.runtime
    if fmt == "onnx":
        from .runners import OnnxRunner

        r = OnnxRunner(path)
        return (lambda x: r(x)), r.runtime
    if fmt == "torchscript":
        m = torch.jit.load(str(path), map_location="cpu")
        rt = f"torch.jit {torch.__version__} CPU"
    else:
        m = torch.export.load(str(path)).module()
        rt = f"torch.export {torch.__version__} CPU"

    def run(x):
        with torch.inference_mode():
            out = m(torch.from_numpy(np.ascontiguousarray(x)))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in out]

    return run, rt


def by_stage(art: Artifact, got) -> dict:
    """A runner's outputs (named, as ONNX and LiteRT give them, or in order) by golden stage name."""
    if isinstance(got, dict) and all(o in got for o in art.outputs):
        return {s: got[o] for o, s in zip(art.outputs, art.stages)}
    vals = list(got.values()) if isinstance(got, dict) else list(got)
    return dict(zip(art.stages, vals))


def check_eager(art: Artifact, run: Callable, family: str | None) -> list[dict]:
    """The artifact against its eager reference on every probe, by the contract (strict tier: same machine)."""
    ref_module = art.reference if art.reference is not None else art.module
    rows = []
    for x in art.probes:
        with torch.inference_mode():
            ref = ref_module(x)
        ref = by_stage(art, ref if isinstance(ref, (tuple, list)) else (ref,))
        got = by_stage(art, run(x.numpy()))
        for stage, want in ref.items():
            res = compare_rule(stage, want.numpy(), np.asarray(got[stage]), STRICT, None, None, family=family)
            rows.append({"against": "eager", "input_shape": list(x.shape), "stage": stage, "rule": res.rule,
                         "max_abs_diff": res.max_abs if np.isfinite(res.max_abs) else None, "max_rel": res.max_rel,
                         "max_ulps": res.max_ulps, "margin": res.margin, "passed": res.passed, "gating": True})
    return rows


def check_golden(art: Artifact, run: Callable, windows: list[tuple[str, dict]], tier: str,
                 family: str | None) -> list[dict]:
    """The artifact on each golden window's ``golden_input`` against the original stack's outputs."""
    rows = []
    for label, t in windows:
        x = t[art.golden_input]
        got = by_stage(art, run(x.float().numpy()))
        for stage in got:
            if stage not in t:
                continue
            res = compare_rule(stage, t[stage].numpy(), np.asarray(got[stage]), tier, None, None, family=family)
            rows.append({"against": "golden", "window": label, "input_shape": list(x.shape), "stage": stage,
                         "rule": res.rule, "tier": tier, "max_abs_diff": res.max_abs if np.isfinite(res.max_abs) else None,
                         "max_rel": res.max_rel, "max_ulps": res.max_ulps, "margin": res.margin, "passed": res.passed,
                         "gating": True})
    return rows


def export_artifact(art: Artifact, out_dir: Path, family: str | None, windows: list[tuple[str, dict]] = (),
                    tier: str = STRICT, log=None) -> dict:
    """Build, load back and verify one artifact; its parity.json entry (``passed`` false with the reason on any
    failure; the file is then removed)."""
    from . import first_line, sha256

    log = log or (lambda msg: None)
    path = Path(out_dir) / art.name
    log(f"exporting {art.name} ...")
    entry = {"format": art.fmt, "kind": art.kind, "inputs": {art.input: {"shape": art.shape, "dtype": "float32"}},
             "outputs": {o: ["B", "K"] for o in art.outputs}}
    if art.fmt == "tflite":
        entry["signatures"] = [f"batch_{n}" for n in art.tflite_batches]
    try:
        build(art, path)
        run, entry["runtime"] = load(art.fmt, path)
        entry.update(bytes=path.stat().st_size, sha256=sha256(path))
        log(f"verifying {art.name} at input shapes {[list(x.shape) for x in art.probes]} ...")
        entry["checks"] = check_eager(art, run, family) + check_golden(art, run, list(windows), tier, family)
        entry["passed"] = all(r["passed"] for r in entry["checks"])
    except Exception as exc:  # any exporter/runtime failure fails the artifact; reported, never skipped
        path.unlink(missing_ok=True)
        entry.update(passed=False, error=f"export or verification failed: {first_line(exc)}")
    return entry
