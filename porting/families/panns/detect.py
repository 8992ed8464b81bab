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

from pathlib import Path

import torch

from ...errors import UnsupportedModelError
from ...scores import WindowDetector, WindowScores

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


class PannsDetector(WindowDetector):
    """Sigmoid per class (multi-label), ``PannsResult`` per recording (``porting.scores.WindowDetector``)."""

    activation = "sigmoid"
    result = PannsResult


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
    from ...convert import load_model
    from ...export import onnx_backend

    device_t = torch.device(device)
    if backend not in ("auto", "torch", "onnx"):
        raise UnsupportedModelError(f"--backend {backend}: PANNs models run with auto, torch or onnx")
    model, config = load_model(path, device=device_t, **source_options)
    backend = onnx_backend(path, backend, device_t, "pipeline.onnx")
    if backend == "onnx":
        model = _OnnxPipeline(Path(path) / "pipeline.onnx")
    min_samples = int(config["min_samples"])
    w, h = window_plan(config, min_samples, window_s, hop_s)
    return PannsDetector(model, config, w, h, device_t, batch_size or 8, backend)
