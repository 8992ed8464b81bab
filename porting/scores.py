"""Per-window scores of one recording: the ``porting.family.Result`` of families whose windows each get a row of
class scores (the HF and PANNs families). A family subclasses it for its own terminal line (``headline``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
