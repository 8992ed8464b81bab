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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...errors import UnsupportedModelError
from ...outputs import spell
from ...scores import WindowScores

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


@dataclass
class MelCnnDetector:
    model: torch.nn.Module  # MelCnnClassifier, or an artifact behind its call
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
        return {"Y.logits": logits, "Y.probs": torch.softmax(logits, dim=1)}

    def n_windows(self, path) -> int:
        from ...io.stream import n_windows

        return n_windows(path, self.sample_rate, self.window_samples, self.hop_samples)

    def run(self, path, on_batch: Callable[[int], None] | None = None) -> MelCnnResult:
        from ...detect import stream_stages

        plan, out = stream_stages(path, self.sample_rate, self.window_samples, self.hop_samples, self.batch_size,
                                  self.forward_windows, ("Y.logits", "Y.probs"), on_batch)
        return MelCnnResult(Path(path), tuple(self.labels), self.sample_rate, [w.start for w in plan],
                            [w.length for w in plan], [w.partial for w in plan], out["Y.logits"], out["Y.probs"],
                            plan.unscored_tail)


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
    from importlib.util import find_spec

    from ...convert import load_model
    from ...export import verified

    device_t = torch.device(device)
    if backend not in ("auto", "torch", "onnx"):
        raise UnsupportedModelError(f"--backend {backend}: librosa-mel CNN models run with auto, torch or onnx")
    model, config = load_model(path, device=device_t, **source_options)
    onnx = Path(path) / "model.onnx"
    ok = Path(path).is_dir() and verified(Path(path)).get("model.onnx", False) and onnx.is_file()
    if backend == "auto":
        backend = "onnx" if device_t.type == "cpu" and ok and find_spec("onnxruntime") is not None else "torch"
    if backend == "onnx":
        if not onnx.is_file():
            raise UnsupportedModelError(f"{path}: no model.onnx; convert with `port convert RUN --out DIR --export "
                                        "onnx` or use --backend torch")
        if not ok:
            raise UnsupportedModelError(f"{onnx}: failed this model's verification (parity.json); re-run `port "
                                        "convert` or use --backend torch")
        model = _OnnxModel(model, onnx)
    w, h = window_plan(config, window_s, hop_s)
    return MelCnnDetector(model, config, w, h, device_t, batch_size or 8, backend)
