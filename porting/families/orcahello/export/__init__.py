"""Verified exports of a converted model: ONNX, TorchScript, torch.export (pt2), LiteRT (TFLite).

Each artifact is a declaration (``declare``: ``porting.export.declared.Artifact``) that the engine builds, loads back
in its own runtime and verifies, as for every family:

* ``model.*`` (classifier): input ``spectrogram`` ``[B, 1, 256, 312]`` = the model input AFTER normalization
  (golden ``X.model_input``; the stats are in config.json and the ONNX metadata, not in the graph) -> ``logits``.
* ``pipeline.*``: input ``waveform`` ``[B, 40000]`` (stage A's window) -> ``confidence``, ``probs``, ``logits``; stages
  B, C, normalization, model and softmax inside. TorchScript and pt2 keep ``torch.stft`` (the CPU FFT legacy ran:
  ``Pipeline(dft="fft")``); ONNX and LiteRT take the conv1d DFT (onnxruntime's STFT op is ~2e-4 relative off at
  n_fft 2560; ``porting.families.orcahello.pipeline``).
* ``detector.onnx``: ``model.onnx``'s input and output for 2-s windows, whose frames from 157 on are stage C's pad:
  the pad-folded twin (``porting.families.orcahello.padfold``) that ``port detect --backend onnx`` runs. Written
  only where the model folds.
* ``winograd``: no file; the backend ``port detect --backend winograd`` builds from model.safetensors
  (``porting.families.orcahello.winograd``), checked like the others.

Batch is dynamic (traced at batch 2, verified at the probe's 4 windows, so a batch baked in fails). ONNX is exported
with torch's TorchScript-based exporter (opset 17): measured 0.6 s vs 4.7 s for the dynamo exporter on sq11-norm,
one self-contained file. LiteRT needs fixed shapes: one signature per batch size (``batch_1``, ``batch_8``;
``TFLiteRunner`` splits a batch over them); its builtin kernels stay within 1e-5, the default XNNPACK delegate
differs by ~1-2e-5, so the gate runs the builtin resolver and XNNPACK is reported beside it (``gating: false``).
litert-torch has no lowering for ``adaptive_max_pool2d`` and lowers ``MaxPool2d(ceil_mode=True)`` to a wrong output
shape; ``porting.families.orcahello.pipeline.export_ready`` swaps both for identical forms. config.json rides inside
the TorchScript and pt2 files (extra file ``config.json``).

Every artifact is checked by the parity contract against the eager port on a probe batch and, with a golden store,
on every capture of the cases of the same pickle (``verify``); then ``parity.json`` and the HF-style
``preprocessor_config.json`` + ``README.md`` are written. ``port convert`` runs this inside its temp dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ....errors import ExportError, PortingError
from ....export import FORMATS, PARITY_NAME, first_line as _first_line, format_parity, require  # noqa: F401 (format_parity: re-exported)
from ....export.declared import Artifact
from ..graph import StageGraph
from ..winograd import NAME as WINOGRAD  # not a file: rebuilt from model.safetensors at load (port detect --backend)
from .artifacts import DERIVED, OUTPUTS, _confidence, _io, build_all, declare, stages_of

FAMILY = "orcahello"
ARTIFACTS = {
    "onnx": ("model.onnx", "pipeline.onnx", "detector.onnx"),  # detector.onnx only where the model folds
    "torchscript": ("model.torchscript.pt", "pipeline.torchscript.pt"),
    "pt2": ("model.pt2", "pipeline.pt2"),
    "tflite": ("model.tflite", "pipeline.tflite"),
}

__all__ = ["ARTIFACTS", "declare", "export_all", "load_artifact"]


def _format_of(path: Path) -> str:
    for fmt, names in ARTIFACTS.items():
        if path.name in names:
            return fmt
    raise ExportError(f"{path}: not an artifact name porting writes ({', '.join(n for v in ARTIFACTS.values() for n in v)})")


def _kind(path: Path) -> str:
    """"pipeline" (input: stage-A waveform) or "model" (input: model input; detector.onnx too)."""
    return "pipeline" if path.name.startswith("pipeline.") else "model"


def load_artifact(path: str | Path, resolver: str = "builtin"):
    """Load one artifact in its own runtime; returns ``runner(x: np.ndarray) -> {output: array}``.

    Classifier artifacts return ``logits``; pipeline artifacts ``confidence``, ``probs``, ``logits``.
    ``resolver`` ("builtin" | "xnnpack") only matters for TFLite.
    """
    from ....export.runners import load

    path = Path(path)
    return load(_format_of(path), path, OUTPUTS[_kind(path)], resolver)


def _exporter(fmt: str) -> Callable:
    """What writes ``fmt``'s declared artifacts into a folder (a test swaps it for one that fails)."""
    return build_all


class _WinogradRunner:
    """The winograd backend as ``port detect`` builds it (``winograd_model``, pad-folded where the model folds)."""

    def __init__(self, model: torch.nn.Module, config: dict):
        from ..padfold import fold_pad
        from ..winograd import describe, winograd_model

        fast = winograd_model(model)
        self.model = fold_pad(fast, config) or fast
        self.runtime, layers = describe(fast)
        self.entry = {"layers": layers}

    def __call__(self, x) -> dict:
        with torch.inference_mode():
            return {"logits": self.model(torch.from_numpy(x)).float().numpy()}


def _winograd(model, config: dict, probe: dict) -> Artifact:
    """parity.json's entry for ``--backend winograd``: the same checks as the classifier artifacts."""
    return Artifact(WINOGRAD, WINOGRAD, "model", None, "spectrogram", ("logits",), ("Y.logits",), {0: "batch"}, [],
                    [probe["model_input"]], lambda x: stages_of(probe), "X.model_input", derive=_confidence(config),
                    derive_note=DERIVED, io=_io("model", WINOGRAD, config, "detector."),
                    runner=lambda: _WinogradRunner(model, config))


def export_all(
    model: torch.nn.Module,
    config: dict,
    out_dir: str | Path,
    formats: list[str] | tuple[str, ...] = FORMATS,
    golden_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Export ``formats`` into ``out_dir``, verify every artifact, write parity.json + HF files; returns parity.

    Raises ``ExportError`` only for a request that cannot start (unknown/unavailable format, unreadable
    golden dir); an export or verification failure is recorded in parity.json as a failed artifact.
    """
    from ....export.declared import parity_document, verify_artifact
    from ..card import write_hf_files
    from .verify import PROBE_DESCRIPTION, RULES, TOLERANCE, case_label, eager_reference, golden_cases_for, \
        golden_windows, probe_waveforms

    out_dir = Path(out_dir)
    log = log or (lambda msg: None)
    for fmt in formats:
        require(fmt, "export")
    cases = []
    if golden_dir is not None:
        if not (Path(golden_dir) / "cases").is_dir():
            raise ExportError(f"--golden {golden_dir}: not a golden store (no cases/ folder); pass the golden/ directory")
        cases = golden_cases_for(config, golden_dir)
    model = model.cpu().eval()
    probe_wave = probe_waveforms(StageGraph.from_config(config).frontend.windows)
    probe = eager_reference(model, config, probe_wave)
    windows = golden_windows(cases, config)

    artifacts: dict[str, dict] = {}
    for fmt in formats:
        log(f"exporting {fmt} ...")
        try:
            arts = declare(fmt, model, config, probe, probe_wave)
            paths = _exporter(fmt)(arts, out_dir)
        except PortingError:
            raise
        except Exception as exc:  # exporters raise many error types; the artifact is reported failed
            for name in ARTIFACTS[fmt]:
                (out_dir / name).unlink(missing_ok=True)
                artifacts[name] = {"format": fmt, "passed": False, "error": f"export failed: {_first_line(exc)}"}
            continue
        written = {p.name for p in paths}
        for art in arts:
            if art.name in written:
                log(f"verifying {art.name} ...")
                artifacts[art.name] = verify_artifact(art, out_dir / art.name, FAMILY, windows)

    log("verifying the winograd backend ...")
    artifacts[WINOGRAD] = verify_artifact(_winograd(model, config, probe), None, FAMILY, windows)

    parity = parity_document(
        FAMILY, artifacts, RULES, tolerance=TOLERANCE,
        model={"file": config.get("source", {}).get("file"), "sha256": config.get("source", {}).get("sha256")},
        reference="the eager port (porting.detect's path: CPU torch.stft, per-window mel GEMM, crop/pad, normalize, "
                  "model one window per forward, softmax)",
        probe={"description": PROBE_DESCRIPTION, "windows": int(probe_wave.shape[0])},
        golden=None if golden_dir is None else {"dir": str(golden_dir), "cases": [case_label(c) for c in cases],
                                                "windows": int(sum(len(c.stored_windows) for c in cases))})
    (out_dir / PARITY_NAME).write_text(json.dumps(parity, indent=1) + "\n")
    write_hf_files(config, parity, out_dir)
    return parity
