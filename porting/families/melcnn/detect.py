"""``port detect`` for librosa-mel CNN runs: a long recording -> clip-length windows at the run's rate -> the
librosa mel frontend, each window normalised alone -> body -> head -> softmax over the run's classes per window.

Windows: the run's clip length (``data.audio_clip_duration``), every ``--hop-s`` (default: the clip), read as
``librosa.load(path, sr=rate)`` reads it (``porting.io.stream``); the tail rule is the HF family's (a last window of
at least half a clip is scored, marked partial; it is zero-padded to the clip, as Project-Echo's eval pads a short
clip). ``--window-s`` other than the clip: each window is fitted to the clip as that eval does (a longer one
centre-cropped, a shorter one zero-padded). Every reduction of the frontend is per clip, and the bodies run in eval
(BatchNorm with running statistics), so a window's outputs do not depend on its batch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import UnsupportedModelError
from ...scores import WindowDetector, WindowScores

TOP = 3


class MelCnnResult(WindowScores):
    """Per-window softmax scores of one recording and its terminal line: the classes most often on top."""

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        from ...summary import plural

        if len(self.starts):
            top = self.probs.argmax(1)
            counts = torch.bincount(top, minlength=len(self.classes))
            order = counts.argsort(descending=True)[:TOP].tolist()
            best = ", ".join(f"{self.classes[k]} {int(counts[k])}" for k in order if counts[k])
        else:
            best = "none"
        line = (f"{self.path}: {plural(len(self.starts), 'window')} ({sum(self.partial)} partial); "
                f"top class per window: {best}")
        return line, f"{positive} > {threshold:g}"


class MelCnnDetector(WindowDetector):
    """Softmax over the run's classes, ``MelCnnResult`` per recording (``porting.scores.WindowDetector``)."""

    activation = "softmax"
    result = MelCnnResult


def window_plan(config: dict, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
    rate = int(config["frontend"]["sample_rate"])
    win_s = float(window_s if window_s is not None else config["windows"]["window_s"])
    hop = float(hop_s if hop_s is not None else (win_s if window_s is not None else config["windows"]["hop_s"]))
    w, h = round(win_s * rate), round(hop * rate)
    if w // 2 <= int(config["frontend"]["n_fft"]) // 2:
        raise UnsupportedModelError(f"--window-s {win_s:g}: too short for this model's FFT "
                                    f"({config['frontend']['n_fft']} samples); use a longer window")
    if not 1 <= h <= w:
        raise UnsupportedModelError(f"--hop-s {hop:g}: must be > 0 and at most the window ({win_s:g} s)")
    return w, h


class _OnnxModel(torch.nn.Module):
    """The torch frontend, then ``model.onnx`` (model input -> probs, logits) behind the rebuild's call."""

    def __init__(self, net, path: Path):
        super().__init__()
        from ...export.runners import OnnxRunner

        self.net, self.runner = net, OnnxRunner(path)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.net.model_input(waveform.float())
        return torch.from_numpy(self.runner(x.detach().cpu().numpy())["logits"])


def load_detector(path: Path, *, device: str, backend: str, batch_size: int | None, window_s=None, hop_s=None,
                  **source_options) -> MelCnnDetector:
    from ...convert import load_model
    from ...export import onnx_backend

    device_t = torch.device(device)
    if backend not in ("auto", "torch", "onnx"):
        raise UnsupportedModelError(f"--backend {backend}: librosa-mel CNN models run with auto, torch or onnx")
    model, config = load_model(path, device=device_t, **source_options)
    backend = onnx_backend(path, backend, device_t, "model.onnx")
    if backend == "onnx":
        model = _OnnxModel(model, Path(path) / "model.onnx")
    w, h = window_plan(config, window_s, hop_s)
    return MelCnnDetector(model, config, w, h, device_t, batch_size or 8, backend)
