"""Verified exports of a converted model: ONNX, TorchScript, torch.export (pt2), LiteRT (TFLite).

``export_all(model, config, out_dir, formats)`` writes, for each format, the classifier artifact
(``model.*``: normalized model input ``[B, 1, 256, 312]`` -> logits) and the pipeline artifact
(``pipeline.*``: stage-A windows ``[B, 40000]`` -> confidence, probs, logits); for ONNX also the
pad-folded classifier ``detector.onnx`` that ``port detect`` runs (``porting.families.orcahello.padfold``); and, with no file of its
own, the ``winograd`` backend (``porting.families.orcahello.winograd``). It loads each back in its own runtime, checks it by the parity contract against the eager port on a probe batch and against the goldens of the same
pickle when a golden store is given (``verify``), then writes ``parity.json`` and the HF-style
``preprocessor_config.json`` + ``README.md``. An artifact that misses the tolerance, or fails to export or
load, is marked failed; nothing passes with a warning. ``port convert`` runs this inside its temp dir, so
the whole output appears atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ....errors import ExportError, PortingError
from ....export import FORMATS, PARITY_NAME, first_line as _first_line, format_parity, require, sha256  # noqa: F401 (format_parity: re-exported)
from ..graph import StageGraph
from ..winograd import NAME as WINOGRAD  # not a file: rebuilt from model.safetensors at load (port detect --backend)

ARTIFACTS = {
    "onnx": ("model.onnx", "pipeline.onnx", "detector.onnx"),  # detector.onnx only where the model folds
    "torchscript": ("model.torchscript.pt", "pipeline.torchscript.pt"),
    "pt2": ("model.pt2", "pipeline.pt2"),
    "tflite": ("model.tflite", "pipeline.tflite"),
}

__all__ = ["ARTIFACTS", "export_all", "load_artifact"]


def _exporter(fmt: str) -> Callable:
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx
    if fmt == "torchscript":
        from .torchscript import export_torchscript

        return export_torchscript
    if fmt == "pt2":
        from .pt2 import export_pt2

        return export_pt2
    from .tflite import export_tflite

    return export_tflite


def _format_of(path: Path) -> str:
    for fmt, names in ARTIFACTS.items():
        if path.name in names:
            return fmt
    raise ExportError(f"{path}: not an artifact name porting writes ({', '.join(n for v in ARTIFACTS.values() for n in v)})")


def load_artifact(path: str | Path, resolver: str = "builtin"):
    """Load one artifact in its own runtime; returns ``runner(x: np.ndarray) -> {output: array}``.

    Classifier artifacts return ``logits``; pipeline artifacts ``confidence``, ``probs``, ``logits``.
    ``resolver`` ("builtin" | "xnnpack") only matters for TFLite.
    """
    path = Path(path)
    fmt = _format_of(path)
    kind = _kind(path)
    if fmt == "onnx":
        from ....export.runners import OnnxRunner

        return OnnxRunner(path)
    if fmt == "torchscript":
        from ....export.runners import load_torchscript

        return load_torchscript(path, kind)
    if fmt == "pt2":
        from ....export.runners import load_pt2

        return load_pt2(path, kind)
    from ....export.runners import TFLiteRunner

    return TFLiteRunner(path, resolver=resolver)


def _kind(path: Path) -> str:
    """"pipeline" (input: stage-A waveform) or "model" (input: model input; detector.onnx too)."""
    return "pipeline" if path.name.startswith("pipeline.") else "model"


def _io(kind: str, fmt: str, config: dict, name: str = "") -> dict:
    fe = StageGraph.from_config(config).frontend
    if kind == "model":
        meaning = "model input AFTER normalization (golden X.model_input)"
        if name.startswith("detector."):
            meaning += "; 2-s windows only: frames from 157 on must be stage C's pad (not read, built in)"
        return {"inputs": {"spectrogram": {"shape": ["B", 1, fe.mel.n_mels, fe.pad.frames], "dtype": "float32",
                                           "meaning": meaning}},
                "outputs": {"logits": ["B", "K"]}}
    stft = "torch.stft (CPU FFT)" if fmt in ("torchscript", "pt2") else "conv1d DFT"
    return {"inputs": {"waveform": {"shape": ["B", fe.windows.window_samples], "dtype": "float32",
                                    "meaning": f"stage-A window at {fe.windows.sample_rate} Hz (golden A.waveform)"}},
            "outputs": {"confidence": ["B"], "probs": ["B", "K"], "logits": ["B", "K"]}, "stft": stft}


def _checked(entry: dict, load: Callable, kind: str, config: dict, probe: dict, probe_wave: torch.Tensor, cases: list,
             more: Callable[[object, dict], None] | None = None) -> dict:
    """Load a runner (``load()``), run every check into ``entry``, then ``more(runner, entry)``; any failure fails
    the entry, reported, never skipped."""
    from .verify import check_runner

    try:
        runner = load()
        entry["runtime"] = runner.runtime
        entry["checks"] = check_runner(runner, kind, config, probe, probe_wave, cases)
        if more is not None:
            more(runner, entry)
    except Exception as exc:  # any runtime failure fails the artifact
        entry.update(passed=False, error=f"verification failed: {_first_line(exc)}")
        return entry
    entry["passed"] = all(r["passed"] for r in entry["checks"] if r["gating"])
    return entry


def _verify_one(path: Path, fmt: str, config: dict, probe: dict, probe_wave: torch.Tensor, cases: list) -> dict:
    from .verify import check_runner

    kind = _kind(path)
    entry = {"format": fmt, "kind": kind, "bytes": path.stat().st_size, "sha256": sha256(path),
             **_io(kind, fmt, config, path.name)}

    def xnnpack(runner, entry: dict) -> None:  # TFLite: XNNPACK's numbers too, reported, not gating
        entry["signatures"] = sorted(runner.signatures)
        xnn = load_artifact(path, resolver="xnnpack")
        rows = check_runner(xnn, kind, config, probe, probe_wave, cases, gating=False)
        entry["informational"] = [{"runtime": xnn.runtime, "checks": rows, "passed": all(r["passed"] for r in rows)}]

    return _checked(entry, lambda: load_artifact(path), kind, config, probe, probe_wave, cases,
                    xnnpack if fmt == "tflite" else None)


class _WinogradRunner:
    """The winograd backend as ``port detect`` builds it (``winograd_model``, pad-folded where the model folds)."""

    def __init__(self, model: torch.nn.Module, config: dict):
        from ..padfold import fold_pad
        from ..winograd import describe, winograd_model

        fast = winograd_model(model)
        self.model = fold_pad(fast, config) or fast
        self.runtime, self.layers = describe(fast)

    def __call__(self, x) -> dict:
        with torch.inference_mode():
            return {"logits": self.model(torch.from_numpy(x)).float().numpy()}


def _verify_winograd(model, config: dict, probe: dict, probe_wave: torch.Tensor, cases: list) -> dict:
    """parity.json's entry for ``--backend winograd``: the same checks as the model artifacts (probe and goldens)."""
    entry = {"format": WINOGRAD, "kind": "model", **_io("model", WINOGRAD, config, "detector.")}
    return _checked(entry, lambda: _WinogradRunner(model, config), "model", config, probe, probe_wave, cases,
                    lambda runner, e: e.update(layers=runner.layers))


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
    from ..card import write_hf_files
    from ....parity.fingerprint import machine_fingerprint
    from .verify import (PARITY_FORMAT, PROBE_DESCRIPTION, RULES, TOLERANCE, case_label, eager_reference,
                         golden_cases_for, probe_waveforms)
    from ....export.runners import runtime_versions

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
    fe = StageGraph.from_config(config).frontend
    probe_wave = probe_waveforms(fe.windows)
    probe = eager_reference(model, config, probe_wave)

    artifacts: dict[str, dict] = {}
    for fmt in formats:
        log(f"exporting {fmt} ...")
        try:
            paths = _exporter(fmt)(model, config, out_dir)
        except PortingError:
            raise
        except Exception as exc:  # exporters raise many error types; the artifact is reported failed
            for name in ARTIFACTS[fmt]:
                (out_dir / name).unlink(missing_ok=True)
                artifacts[name] = {"format": fmt, "passed": False, "error": f"export failed: {_first_line(exc)}"}
            continue
        for path in paths:
            log(f"verifying {path.name} ...")
            artifacts[path.name] = _verify_one(path, fmt, config, probe, probe_wave, cases)

    log("verifying the winograd backend ...")
    artifacts[WINOGRAD] = _verify_winograd(model, config, probe, probe_wave, cases)

    parity = {
        "format": PARITY_FORMAT,
        "tolerance": TOLERANCE,
        "rules": RULES,
        "fingerprint": machine_fingerprint(),
        "passed": all(a["passed"] for a in artifacts.values()),
        "model": {"file": config.get("source", {}).get("file"), "sha256": config.get("source", {}).get("sha256")},
        "reference": "the eager port (porting.detect's path: CPU torch.stft, per-window mel GEMM, crop/pad, "
                     "normalize, model one window per forward, softmax)",
        "probe": {"description": PROBE_DESCRIPTION, "windows": int(probe_wave.shape[0])},
        "golden": None if golden_dir is None else {"dir": str(golden_dir), "cases": [case_label(c) for c in cases],
                                                   "windows": int(sum(len(c.stored_windows) for c in cases))},
        "versions": runtime_versions(),
        "artifacts": artifacts,
    }
    (out_dir / PARITY_NAME).write_text(json.dumps(parity, indent=1) + "\n")
    write_hf_files(config, parity, out_dir)
    return parity
