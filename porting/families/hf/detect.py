"""``port detect`` for the HF family: a long recording -> windows at the feature extractor's rate -> features ->
model -> probabilities per window, batched and streamed.

The recording is read as ``librosa.load(path, sr=rate)`` reads it (``porting.io.stream``), in blocks, so
memory is bounded by the batch whatever the length. Windows start at ``k * hop`` and hold exactly
``round(window_s * rate)`` samples; the tail policy (a shorter last window scored alone at its own length, as a
per-window loop over the clips would, and marked ``partial``) is ``stream.plan_windows``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...errors import UnsupportedModelError
from ...outputs import spell
from ...scores import WindowScores
from .graph import HFStageGraph


class HFFileResult(WindowScores):
    """Per-window outputs of one recording (``porting.scores.WindowScores``) and its terminal line."""

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for pr in self.probs.argmax(-1).tolist():
            counts[self.classes[pr]] = counts.get(self.classes[pr], 0) + 1
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        n = len(self.starts)
        from ...summary import plural

        return f"{self.path}: {plural(n, 'window')} ({sum(self.partial)} partial); top label per window: {top}"

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        return self.summary_line(), f"{positive} > {threshold:g}"


def _onnx_passed(path: Path) -> bool:
    """A converted DIR whose model.onnx passed its verification (parity.json) and onnxruntime to run it."""
    from importlib.util import find_spec

    from ...export import verified as _verified

    return (_verified(path).get("model.onnx", False) and (path / "model.onnx").is_file()
            and find_spec("onnxruntime") is not None)


def _onnx_path(path: Path) -> Path:
    from ...export import verified as _verified

    onnx = path / "model.onnx"
    if not onnx.is_file():
        raise UnsupportedModelError(f"{path}: no model.onnx; convert with `port convert HF_DIR --out DIR --export onnx` "
                                    "or use --backend torch")
    if _verified(path).get("model.onnx") is False:
        raise UnsupportedModelError(f"{onnx}: failed this model's verification (parity.json); re-run `port convert` "
                                    "or use --backend torch")
    return onnx


class OnnxHFModel(torch.nn.Module):
    """``model.onnx`` (input_values -> logits, batch and time dynamic) behind the rebuild's call. It takes no
    attention mask: ``port detect`` feeds whole utterances (a mask of ones), which the conversion verified."""

    def __init__(self, path: Path):
        super().__init__()
        from ...export.runners import OnnxRunner

        self.runner = OnnxRunner(path)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None and not bool(attention_mask.all()):
            raise UnsupportedModelError("model.onnx takes no attention mask and this batch is padded; use --backend torch")
        return torch.from_numpy(self.runner(input_values.detach().cpu().float().numpy())["logits"])


@dataclass
class HFDetector:
    """A rebuilt HF classifier and its stage graph, run over recordings."""

    model: torch.nn.Module
    config: dict
    graph: HFStageGraph
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 16
    backend: str = "torch"

    @classmethod
    def load(cls, model_path: str | Path, device: str | torch.device = "cpu", backend: str = "torch",
             window_s: float | None = None, hop_s: float | None = None, fbank_backend: str | None = None,
             batch_size: int = 16, transformers_semantics=None) -> "HFDetector":
        from ...convert import load_model

        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedModelError(f"--device {device}: no CUDA device on this machine; use --device cpu")
        if backend not in ("auto", "torch", "onnx"):
            raise UnsupportedModelError(f"--backend {backend}: unknown backend; use auto, torch or onnx")
        path = Path(model_path)
        if backend == "auto":
            backend = "onnx" if device.type == "cpu" and _onnx_passed(path) else "torch"
        model, config = load_model(model_path, device=device, transformers_semantics=transformers_semantics)
        if backend == "onnx":
            model = OnnxHFModel(_onnx_path(path))
        graph = HFStageGraph.from_config(config, fbank_backend=fbank_backend).with_windows(window_s, hop_s)
        return cls(model, config, graph, device, batch_size, backend)

    csv_layout = "windows"  # --csv: one row per window, a column per label

    @property
    def labels(self) -> list[str]:
        return list(self.graph.classes)

    def check_positive(self, positive: str | None) -> str | None:
        """No label is scored unless named (``--positive``): then it must be one of the model's."""
        if positive is not None and positive not in self.graph.classes:
            raise UnsupportedModelError(f"{spell('positive', positive)}: not a label of this model; use one of "
                                        f"{', '.join(self.graph.classes)}")
        return positive

    @torch.inference_mode()
    def forward_windows(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Windows ``[B, N]`` -> ``{F.input_values[, F.attention_mask], Y.logits, Y.probs}``."""
        feats = self.graph.features(waveform, lengths)
        mask = feats.get("F.attention_mask")
        logits = self.model(feats["F.input_values"].to(self.device),
                            None if mask is None else mask.to(self.device)).float().cpu()
        return {**feats, "Y.logits": logits, "Y.probs": self.graph.activate(logits)}

    def n_windows(self, path: str | Path) -> int:
        from ...io.stream import n_windows

        g = self.graph
        return n_windows(path, g.sample_rate, g.window_samples, g.hop_samples)

    def run(self, path: str | Path, on_batch: Callable[[int], None] | None = None) -> HFFileResult:
        from ...detect import stream_stages

        g = self.graph
        plan, out = stream_stages(path, g.sample_rate, g.window_samples, g.hop_samples, self.batch_size,
                                  self.forward_windows, ("Y.logits", "Y.probs"), on_batch)
        return HFFileResult(Path(path), g.classes, g.sample_rate, [w.start for w in plan], [w.length for w in plan],
                            [w.partial for w in plan], out["Y.logits"], out["Y.probs"], plan.unscored_tail)
