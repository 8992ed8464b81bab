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
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ExportError, MalformedModelError
from ..families.orcahello.pipeline import Classifier, Pipeline
from .onnx import example_inputs

MODEL_FILE = "model.tflite"
PIPELINE_FILE = "pipeline.tflite"
BATCH_SIZES = (1, 8)
INSTALL_HINT = "pip install 'porting[tflite]'"
RESOLVERS = ("builtin", "xnnpack")


def missing() -> str | None:
    """Why TFLite export/run is unavailable (a one-line hint), or None when litert-torch is installed."""
    from importlib.util import find_spec

    for module in ("litert_torch", "ai_edge_litert"):
        if find_spec(module) is None:  # found without importing it (litert_torch takes seconds to import)
            return f"{module} is not installed; {INSTALL_HINT}"
    return None


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


class TFLiteRunner:
    """The LiteRT interpreter with the builtin kernels (default) or the XNNPACK delegate.

    ``runner(x)`` splits ``x`` greedily over the fixed-batch signatures (largest first) and concatenates.
    """

    def __init__(self, path: str | Path, resolver: str = "builtin", threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if resolver not in RESOLVERS:
            raise ValueError(f"TFLiteRunner: resolver must be one of {RESOLVERS}, got {resolver!r}")
        kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if resolver == "builtin" else OpResolverType.AUTO
        try:
            self.interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=kind,
                                           num_threads=threads or torch.get_num_threads())
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError with multi-line text
            raise MalformedModelError(f"{path}: the LiteRT interpreter cannot load it ({str(exc).splitlines()[0]}); re-run `port convert`") from exc
        self.signatures = {}
        for name, sig in self.interpreter.get_signature_list().items():
            m = re.fullmatch(r"batch_(\d+)", name)
            if m:
                self.signatures[int(m.group(1))] = (self.interpreter.get_signature_runner(name), sig["inputs"][0])
        if 1 not in self.signatures:
            raise MalformedModelError(f"{path}: no batch_1 signature; re-run `port convert`")
        from importlib import metadata

        label = "builtin resolver (no default delegates)" if resolver == "builtin" else "default XNNPACK delegate"
        self.runtime = f"ai-edge-litert {metadata.version('ai-edge-litert')} {label}"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {}
        i = 0
        while i < len(x):
            n = max(s for s in self.signatures if s <= len(x) - i)
            run, input_name = self.signatures[n]
            for key, value in run(**{input_name: x[i:i + n]}).items():
                parts.setdefault(key, []).append(np.array(value))
            i += n
        return {k: np.concatenate(v) for k, v in parts.items()}
