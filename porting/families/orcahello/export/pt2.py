"""torch.export artifacts: ``model.pt2`` and ``pipeline.pt2`` (``torch.export.load(path).module()``).

The recommended path in torch 2.13. Same graphs and signatures as the TorchScript artifacts (classifier:
normalized model input -> logits; pipeline: stage-A windows -> (confidence, probs, logits) with
``torch.stft``, the CPU FFT legacy ran), exported with a dynamic batch dimension (1..65536).
config.json rides along as the extra file ``config.json`` (``torch.export.load(..., extra_files=...)``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..pipeline import Classifier, Pipeline
from .onnx import example_inputs

MODEL_FILE = "model.pt2"
PIPELINE_FILE = "pipeline.pt2"
MAX_BATCH = 65536


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, extra: dict) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path), extra_files=extra)  # warns about CPU weight grouping: all are CPU


def export_pt2(model: torch.nn.Module, config: dict, out_dir: str | Path) -> list[Path]:
    """Write ``model.pt2`` and ``pipeline.pt2`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    spec, wave = example_inputs(config)
    model = model.cpu().eval()
    extra = {"config.json": json.dumps(config)}
    paths = [out_dir / MODEL_FILE, out_dir / PIPELINE_FILE]
    _export(Classifier(model), spec, paths[0], extra)
    _export(Pipeline(model, config, dft="fft"), wave, paths[1], extra)
    return paths


