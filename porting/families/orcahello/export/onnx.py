"""ONNX in onnxruntime: ``export_onnx`` writes the declared ONNX artifacts (``porting.families.orcahello.export``);
``OnnxClassifier`` / ``load_onnx_model`` run ``model.onnx`` or ``detector.onnx`` behind the eager model's interface
(``port detect --backend onnx``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ....errors import ExportError, MalformedModelError
from ....export.runners import OnnxRunner, onnx_missing as missing

MODEL_FILE = "model.onnx"
DETECTOR_FILE = "detector.onnx"


def export_onnx(model: torch.nn.Module, config: dict, out_dir: str | Path) -> list[Path]:
    """Write ``model.onnx``, ``pipeline.onnx`` and (where the model folds) ``detector.onnx``; returns their paths."""
    from .artifacts import build_format

    return build_format("onnx", model, config, out_dir)


class OnnxClassifier(torch.nn.Module):
    """``model.onnx`` behind the eager model's interface (``Detector(backend="onnx")``): tensor in, logits out.

    onnxruntime runs on the CPU; the logits come back on the input's device.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.runner = OnnxRunner(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.runner(x.detach().to("cpu", torch.float32).numpy())["logits"]
        return torch.from_numpy(logits).to(x.device)


def load_onnx_model(path: str | Path, name: str = MODEL_FILE) -> tuple[OnnxClassifier, dict]:
    """``(OnnxClassifier, config)`` from a directory written by ``port convert --export onnx``; ``name`` is
    ``model.onnx`` or ``detector.onnx`` (same input and output)."""
    from ....io.weights import CONFIG_FORMAT, CONFIG_NAME

    path = Path(path)
    reason = missing()
    if reason:
        raise ExportError(f"{path}: --backend onnx needs onnxruntime: {reason}")
    if not (path / name).is_file():
        raise MalformedModelError(f"{path}: no {name}; convert with `port convert MODEL.pkl --out DIR --export onnx` or use --backend torch")
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise MalformedModelError(f"{path / CONFIG_NAME}: cannot read ({exc}); re-run `port convert`") from exc
    if config.get("format") != CONFIG_FORMAT:
        raise MalformedModelError(f"{path / CONFIG_NAME}: not a porting model config; re-run `port convert`")
    return OnnxClassifier(path / name), config
