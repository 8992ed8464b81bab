"""ONNX artifacts: ``model.onnx`` (classifier) and ``pipeline.onnx`` (waveform -> confidence), run by onnxruntime.

* ``model.onnx``: input ``spectrogram`` float32 ``[B, 1, 256, 312]`` = the model input AFTER normalization
  (golden ``X.model_input``; the stats are in config.json / the graph's metadata, not in the graph),
  output ``logits`` ``[B, K]``.
* ``pipeline.onnx``: input ``waveform`` float32 ``[B, 40000]`` (stage A output), outputs ``confidence``
  ``[B]``, ``probs`` ``[B, K]``, ``logits`` ``[B, K]``; normalization is inside. The STFT is a conv1d DFT
  (``porting.families.orcahello.pipeline.DFTMelDB``): onnxruntime's STFT op is ~2e-4 relative off at n_fft 2560.
* ``detector.onnx``: ``model.onnx``'s input and output, for inputs whose frames from 157 on are stage C's
  pad (every 2-s window): the pad-folded twin (``porting.families.orcahello.padfold``), which reads only the first 157 frames
  and is what ``port detect --backend onnx`` runs. Written only where the model can be folded.

Batch is dynamic in both. Exported with torch's TorchScript-based exporter (``dynamo=False``, opset 17):
measured 0.6 s vs 4.7 s for the dynamo exporter on sq11-norm, one self-contained file (no external data,
no onnxscript needed), same tolerance class. It is deprecated upstream; ``dynamo=True`` is a parameter away.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ....errors import ExportError, MalformedModelError
from ....export.runners import OnnxRunner, onnx_missing as missing
from ..graph import StageGraph
from ..padfold import fold_pad
from ..pipeline import Classifier, Pipeline

MODEL_FILE = "model.onnx"
PIPELINE_FILE = "pipeline.onnx"
DETECTOR_FILE = "detector.onnx"
OPSET = 17


def example_inputs(config: dict, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic example (spectrogram ``[B, 1, n_mels, frames]``, waveform ``[B, N]``) used for tracing."""
    fe = StageGraph.from_config(config).frontend
    g = torch.Generator().manual_seed(0)
    spec = torch.randn(batch, 1, fe.mel.n_mels, fe.pad.frames, generator=g)
    wave = 0.1 * torch.randn(batch, fe.windows.window_samples, generator=g)
    return spec, wave


def _metadata(config: dict, kind: str) -> dict[str, str]:
    norm = config.get("normalize")
    if kind == "model":
        io = "input spectrogram [B,1,256,312] = model input after normalization (normalization NOT in this graph)"
    elif kind == "detector":
        io = ("input spectrogram [B,1,256,312] as model.onnx, for 2-s windows only: frames 157.. must be stage C's "
              "pad (they are not read; the pad is built in)")
    else:
        io = "input waveform [B,40000] float32 20 kHz mono stage-A window; stages B, C, normalization, model, softmax inside"
    return {
        "porting.kind": kind,
        "porting.io": io,
        "porting.source_sha256": str(config.get("source", {}).get("sha256")),
        "porting.classes": json.dumps(config.get("classes")),
        "porting.positive_index": str(config.get("positive_index")),
        "porting.normalize": json.dumps(norm),
    }


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str],
            meta: dict[str, str], dynamo: bool) -> None:
    import onnx

    axes = {name: {0: "batch"} for name in inputs + outputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(module, (example,), str(path), input_names=inputs, output_names=outputs,
                              dynamo=True, external_data=False, verbose=False,  # its own default opset (18+)
                              dynamic_shapes=({0: batch},))
        else:
            torch.onnx.export(module, (example,), str(path), input_names=inputs, output_names=outputs,
                              opset_version=OPSET, dynamo=False, dynamic_axes=axes)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(model: torch.nn.Module, config: dict, out_dir: str | Path, dynamo: bool = False) -> list[Path]:
    """Write ``model.onnx``, ``pipeline.onnx`` and (where the model folds) ``detector.onnx``; returns their paths."""
    reason = missing()
    if reason:
        raise ExportError(f"--export onnx: {reason}")
    out_dir = Path(out_dir)
    spec, wave = example_inputs(config)
    model = model.cpu().eval()
    paths = [out_dir / MODEL_FILE, out_dir / PIPELINE_FILE]
    with torch.no_grad():
        _export(Classifier(model).eval(), spec, paths[0], ["spectrogram"], ["logits"], _metadata(config, "model"), dynamo)
        _export(Pipeline(model, config, dft="matmul").eval(), wave, paths[1], ["waveform"],
                ["confidence", "probs", "logits"], _metadata(config, "pipeline"), dynamo)
        twin = fold_pad(model, config)
        if twin is not None:
            paths.append(out_dir / DETECTOR_FILE)
            _export(Classifier(twin).eval(), spec, paths[2], ["spectrogram"], ["logits"], _metadata(config, "detector"),
                    dynamo)
    return paths


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
