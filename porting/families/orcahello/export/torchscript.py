"""TorchScript artifacts: ``model.torchscript.pt`` and ``pipeline.torchscript.pt`` (``torch.jit.load``).

TorchScript is deprecated in torch 2.13 (torch.export / ``model.pt2`` is the recommended path) but users
still deploy it. Both modules are traced (``torch.jit.trace``) with a dynamic batch:

* the classifier takes the model input AFTER normalization ``[B, 1, 256, 312]`` -> logits ``[B, K]``;
* the pipeline takes stage-A windows ``[B, 40000]`` -> ``(confidence [B], probs [B, K], logits [B, K])``
  and keeps ``torch.stft`` (``Pipeline(dft="fft")``): it runs torch's own CPU FFT, the one legacy ran,
  so on the CPU it stays as close to the goldens as the eager port (golden/README.md §3).

config.json rides along as the extra file ``config.json`` (``torch.jit.load(..., _extra_files=...)``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..pipeline import Classifier, Pipeline
from .onnx import example_inputs

MODEL_FILE = "model.torchscript.pt"
PIPELINE_FILE = "pipeline.torchscript.pt"


def _trace(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings for Python-level shape checks; deprecation notice
        return torch.jit.trace(module.eval(), (example,), check_trace=False)


def export_torchscript(model: torch.nn.Module, config: dict, out_dir: str | Path) -> list[Path]:
    """Write ``model.torchscript.pt`` and ``pipeline.torchscript.pt`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    spec, wave = example_inputs(config)
    model = model.cpu().eval()
    extra = {"config.json": json.dumps(config)}
    paths = [out_dir / MODEL_FILE, out_dir / PIPELINE_FILE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(_trace(Classifier(model), spec), str(paths[0]), _extra_files=extra)
        torch.jit.save(_trace(Pipeline(model, config, dft="fft"), wave), str(paths[1]), _extra_files=extra)
    return paths


