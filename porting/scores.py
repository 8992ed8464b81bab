"""Per-window scores of one recording: the ``porting.family.Result`` of families whose windows each get a row of
class scores (the HF, PANNs and librosa-mel CNN families). A family subclasses it for its own terminal line
(``headline``); ``WindowDetector`` is the detector that makes them from a model returning logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch


@dataclass
class WindowScores:
    """Rows in window order, columns in ``classes`` order."""

    path: Path
    classes: tuple[str, ...]
    sample_rate: int
    starts: list[int]  # first sample of each window, at ``sample_rate``
    lengths: list[int]
    partial: list[bool]
    logits: torch.Tensor  # [W, K] float32
    probs: torch.Tensor  # [W, K] float32
    unscored_tail_samples: int = 0

    def to_dict(self) -> dict:
        rate = self.sample_rate
        rows = []
        for s, n, part, lg, pr in zip(self.starts, self.lengths, self.partial, self.logits.tolist(), self.probs.tolist()):
            top = max(range(len(pr)), key=pr.__getitem__)
            rows.append({"start_s": s / rate, "end_s": (s + n) / rate, "partial": part, "label": self.classes[top],
                         "logits": lg, "probs": pr})
        return {"file": str(self.path), "n_windows": len(rows), "labels": list(self.classes),
                "unscored_tail_s": self.unscored_tail_samples / rate, "windows": rows}

    def events_for(self, threshold: float, positive: str | None):
        """The stretches of windows whose ``positive`` probability is above ``threshold`` (none unless named)."""
        from .events import window_events

        return None if positive is None else window_events(self, positive, threshold)


@dataclass
class WindowDetector:
    """``port detect`` of a family whose windows each get a row of class scores from ``model(waveform [B, N])``
    (logits): streamed windows of ``window_samples`` every ``hop_samples`` at ``config["frontend"]["sample_rate"]``,
    batched, the ``activation`` of the logits per window, one ``result`` per recording (``WindowScores`` or a
    family's subclass with its terminal line)."""

    model: Any  # the rebuild, or an artifact behind its call (returns logits)
    config: dict
    window_samples: int
    hop_samples: int
    device: Any = field(default_factory=lambda: _cpu())
    batch_size: int = 8
    backend: str = "torch"
    csv_layout = "windows"
    activation = "sigmoid"  # or "softmax" (over the classes)
    result = WindowScores  # a class attribute (not a field): the family's subclass

    @property
    def sample_rate(self) -> int:
        return int(self.config["frontend"]["sample_rate"])

    @property
    def labels(self) -> list[str]:
        return list(self.config["classes"])

    def check_positive(self, positive: str | None) -> str | None:
        from .errors import UnsupportedModelError
        from .outputs import spell

        if positive is not None and positive not in self.config["classes"]:
            raise UnsupportedModelError(f"{spell('positive', positive)}: not a label of this model (e.g. "
                                        f"{', '.join(self.config['classes'][:3])}); use one of its labels")
        return positive

    def activate(self, logits):
        import torch

        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)

    def forward_windows(self, waveform) -> dict:
        import torch

        with torch.inference_mode():
            logits = self.model(waveform.to(self.device)).float().cpu()
        return {"Y.logits": logits, "Y.probs": self.activate(logits)}

    def n_windows(self, path) -> int:
        from .io.stream import n_windows

        return n_windows(path, self.sample_rate, self.window_samples, self.hop_samples)

    def run(self, path, on_batch: Callable[[int], None] | None = None):
        from .detect import stream_stages

        plan, out = stream_stages(path, self.sample_rate, self.window_samples, self.hop_samples, self.batch_size,
                                  self.forward_windows, ("Y.logits", "Y.probs"), on_batch)
        return self.result(Path(path), tuple(self.labels), self.sample_rate, [w.start for w in plan],
                           [w.length for w in plan], [w.partial for w in plan], out["Y.logits"], out["Y.probs"],
                           plan.unscored_tail)


def _cpu():
    import torch

    return torch.device("cpu")
