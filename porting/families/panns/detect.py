"""``port detect`` for PANNs taggers: a long recording -> windows at the model's rate -> log-mel -> body -> the
sigmoid of every AudioSet (or other) class per window, batched and streamed.

Windows: PANNs clips are scored whole, at any length the body takes (2**poolings frames: CNN14 and the MobileNets
32, CNN10/6 16), so a recording is cut into windows of ``--window-s`` (default 10 s: AudioSet's clip length, what
the published models were trained on) every ``--hop-s`` (default: the window), read as
``librosa.load(path, sr=rate)`` reads it (``porting.io.stream``); the tail rule is the HF family's
(``stream.plan_windows``: a last window of at least half a window scored alone at its own length, marked partial).
Every op is per clip in eval, so a window's outputs do not depend on its batch (reference/panns/README.md, trap 7);
``top_db`` is None in every PANNs model, so the batch-wide ``.max()`` of torchlibrosa never runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...errors import UnsupportedModelError
from ...outputs import spell
from ...scores import WindowScores

DEFAULT_WINDOW_S = 10.0
TOP = 3  # labels named per file in the terminal line


class PannsResult(WindowScores):
    """Per-window outputs of one recording (``porting.scores.WindowScores``; probabilities are independent sigmoids:
    multi-label) and its terminal line: the classes with the highest peaks."""

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        from ...summary import plural

        peak = self.probs.amax(0) if len(self.starts) else torch.zeros(len(self.classes))
        order = peak.argsort(descending=True)[:TOP].tolist()
        top = ", ".join(f"{self.classes[k]} {float(peak[k]):.2f}" for k in order)
        line = (f"{self.path}: {plural(len(self.starts), 'window')} ({sum(self.partial)} partial); "
                f"highest peaks: {top}")
        return line, f"{positive} > {threshold:g}"


@dataclass
class PannsDetector:
    model: torch.nn.Module  # PannsTagger, or an artifact behind its call
    config: dict
    window_samples: int
    hop_samples: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 8
    backend: str = "torch"
    csv_layout = "windows"

    @property
    def sample_rate(self) -> int:
        return int(self.config["frontend"]["sample_rate"])

    @property
    def labels(self) -> list[str]:
        return list(self.config["classes"])

    def check_positive(self, positive: str | None) -> str | None:
        if positive is not None and positive not in self.config["classes"]:
            raise UnsupportedModelError(f"{spell('positive', positive)}: not a label of this model (e.g. "
                                        f"{', '.join(self.config['classes'][:3])}); use one of its labels")
        return positive

    @torch.inference_mode()
    def forward_windows(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(waveform.to(self.device)).float().cpu()
        return {"Y.logits": logits, "Y.probs": torch.sigmoid(logits)}

    def n_windows(self, path) -> int:
        from ...io.stream import n_windows

        return n_windows(path, self.sample_rate, self.window_samples, self.hop_samples)

    def run(self, path, on_batch: Callable[[int], None] | None = None) -> PannsResult:
        from ...detect import stream_stages

        plan, out = stream_stages(path, self.sample_rate, self.window_samples, self.hop_samples, self.batch_size,
                                  self.forward_windows, ("Y.logits", "Y.probs"), on_batch)
        return PannsResult(Path(path), tuple(self.labels), self.sample_rate, [w.start for w in plan],
                           [w.length for w in plan], [w.partial for w in plan], out["Y.logits"], out["Y.probs"],
                           plan.unscored_tail)


def window_plan(config: dict, min_samples: int, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
    """``(window, hop)`` in samples: the options, else config.json's windows; one line if a window (or the shortest
    tail, half a window) is shorter than the body takes."""
    rate = int(config["frontend"]["sample_rate"])
    win_s = float(window_s if window_s is not None else config["windows"]["window_s"])
    hop = float(hop_s if hop_s is not None else (win_s if window_s is not None else config["windows"]["hop_s"]))
    w, h = round(win_s * rate), round(hop * rate)
    if w // 2 < min_samples:
        raise UnsupportedModelError(f"--window-s {win_s:g}: this model needs at least {min_samples / rate:.3f} s per "
                                    f"window, and so {2 * min_samples / rate:.3f} s per window (a tail may be half "
                                    "one); use a longer window")
    if not 1 <= h <= w:
        raise UnsupportedModelError(f"--hop-s {hop:g}: must be > 0 and at most the window ({win_s:g} s)")
    return w, h


class _OnnxPipeline(torch.nn.Module):
    """``pipeline.onnx`` (waveform -> probs, logits) behind the rebuild's call (returns logits)."""

    def __init__(self, path: Path):
        super().__init__()
        from ...export.runners import OnnxRunner

        self.runner = OnnxRunner(path)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(waveform.detach().cpu().float().numpy())["logits"])


def load_detector(path: Path, *, device: str, backend: str, batch_size: int | None, window_s=None, hop_s=None,
                  **source_options) -> PannsDetector:
    from importlib.util import find_spec

    from ...convert import load_model
    from ...export import verified

    device_t = torch.device(device)
    if backend not in ("auto", "torch", "onnx"):
        raise UnsupportedModelError(f"--backend {backend}: PANNs models run with auto, torch or onnx")
    model, config = load_model(path, device=device_t, **source_options)
    onnx = Path(path) / "pipeline.onnx"
    ok = Path(path).is_dir() and verified(Path(path)).get("pipeline.onnx", False) and onnx.is_file()
    if backend == "auto":
        backend = "onnx" if device_t.type == "cpu" and ok and find_spec("onnxruntime") is not None else "torch"
    if backend == "onnx":
        if not onnx.is_file():
            raise UnsupportedModelError(f"{path}: no pipeline.onnx; convert with `port convert MODEL --out DIR --export "
                                        "onnx` or use --backend torch")
        if not ok:
            raise UnsupportedModelError(f"{onnx}: failed this model's verification (parity.json); re-run `port "
                                        "convert` or use --backend torch")
        model = _OnnxPipeline(onnx)
    min_samples = int(config["min_samples"])
    w, h = window_plan(config, min_samples, window_s, hop_s)
    return PannsDetector(model, config, w, h, device_t, batch_size or 8, backend)
