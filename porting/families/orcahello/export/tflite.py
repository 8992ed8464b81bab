"""LiteRT (TFLite) artifacts: ``model.tflite`` and ``pipeline.tflite`` (extra ``tflite``: litert-torch).

Same graphs as the ONNX artifacts (classifier on the normalized model input -> ``logits``; pipeline on
stage-A windows -> ``confidence``, ``probs``, ``logits`` with the conv1d DFT), with two LiteRT facts
measured on these machines:

* the batch must be fixed: each file holds one signature per batch size, ``batch_1``, ``batch_8``
  (input ``spectrogram`` / ``waveform``); ``TFLiteRunner`` splits a batch over them;
* numerics depend on the op resolver: the builtin kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) stay
  within 1e-5, the default XNNPACK delegate differs by ~1-2e-5. Verification gates on the builtin
  resolver and reports XNNPACK beside it (parity.json, ``gating: false``).

litert-torch has no lowering for ``adaptive_max_pool2d`` and lowers ``MaxPool2d(ceil_mode=True)`` to a
wrong output shape; ``porting.families.orcahello.pipeline.export_ready`` swaps both for identical forms.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ....errors import ExportError
from ....export.runners import tflite_missing as missing
from ..pipeline import Classifier, Pipeline
from .onnx import example_inputs

MODEL_FILE = "model.tflite"
PIPELINE_FILE = "pipeline.tflite"
BATCH_SIZES = (1, 8)


class _NamedClassifier(torch.nn.Module):
    """Keyword input ``spectrogram`` and a dict output, so LiteRT names them (not ``args_0``/``output_0``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.classifier = Classifier(model)

    def forward(self, spectrogram: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.classifier(spectrogram)}


class _NamedPipeline(torch.nn.Module):
    """Keyword input ``waveform`` and named outputs ``confidence``, ``probs``, ``logits``."""

    def __init__(self, model: torch.nn.Module, config: dict):
        super().__init__()
        self.pipeline = Pipeline(model, config, dft="matmul")

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        confidence, probs, logits = self.pipeline(waveform)
        return {"confidence": confidence, "probs": probs, "logits": logits}


def _convert(module: torch.nn.Module, input_name: str, example: torch.Tensor, batch_sizes, path: Path) -> None:
    import litert_torch

    litert_torch.config.show_progress = False
    converter = litert_torch
    for n in batch_sizes:
        converter = converter.signature(f"batch_{n}", module, sample_kwargs={input_name: example[:n]})
    converter.convert().export(str(path))


def export_tflite(model: torch.nn.Module, config: dict, out_dir: str | Path, batch_sizes=BATCH_SIZES) -> list[Path]:
    """Write ``model.tflite`` and ``pipeline.tflite`` into ``out_dir``; returns their paths."""
    reason = missing()
    if reason:
        raise ExportError(f"--export tflite: {reason}")
    out_dir = Path(out_dir)
    batch_sizes = tuple(sorted(set(int(n) for n in batch_sizes) | {1}))
    spec, wave = example_inputs(config, batch=max(batch_sizes))
    model = model.cpu().eval()
    paths = [out_dir / MODEL_FILE, out_dir / PIPELINE_FILE]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        _convert(_NamedClassifier(model).eval(), "spectrogram", spec, batch_sizes, paths[0])
        _convert(_NamedPipeline(model, config).eval(), "waveform", wave, batch_sizes, paths[1])
    return paths


