"""Per-window confidences -> the legacy per-second result, with numpy float64 instead of pandas.

Reproduces production ``FastAIModel.predict`` aggregation (golden/README.md §5, pandas 1.5.3):

* confidences are the model's float32 softmax, promoted to float64 (``astype(float)``), ordered by
  window start;
* ``W + 1`` one-second rows: row 0 = ``c[0]``; row k = ``(c[k-1] + c[k]) / 2`` (``rolling(2).mean()``,
  measured bit-identical to this float64 expression); row W = ``c[W-1]``; each interior second is the
  mean of the two 2-s windows that cover it;
* ``local_predictions = conf > threshold`` (strict), ``global_prediction = int(sum >= min_positive_calls)``,
  ``global_confidence = 100 * mean(conf[conf > threshold])`` -- pandas' float64 mean is numpy's pairwise
  ``sum / count`` (bottleneck is bypassed for ``nanmean``) -- or ``0`` (legacy's int) when no row exceeds.

Legacy crashed with ``KeyError: 0`` for zero windows (a recording shorter than 2 s, README §1); here that
is a typed ``AudioError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import AudioError

WINDOW_S = 2  # window i covers [i, i + 2] s (README §1)
ROW_DURATION_S = 1.0  # one submission row per second


@dataclass(frozen=True)
class AggregateConfig:
    """Decision thresholds of production ``predict`` (its defaults: 0.5 and 3)."""

    threshold: float = 0.5
    min_positive_calls: int = 3


@dataclass
class Aggregate:
    """The legacy result, with the golden case JSON's field names and types."""

    windows: list[dict]  # {index, start_s, end_s, confidence}, in start order
    submission: list[dict]  # {wav_filename, start_time_s, duration_s, confidence}, W + 1 rows
    local_predictions: list[int]
    local_confidences: list[float]
    global_prediction: int
    global_confidence: float  # int 0 when no row exceeds the threshold, as legacy returned

    def to_dict(self) -> dict:
        return asdict(self)


def _as_float64(confidences) -> np.ndarray:
    if hasattr(confidences, "detach"):  # a torch tensor, without importing torch here
        confidences = confidences.detach().cpu().numpy()
    arr = np.asarray(confidences)
    if arr.ndim != 1:
        raise ValueError(f"aggregate: confidences must be 1-D (one per window), got shape {arr.shape}")
    # float32 -> float64 is exact: the legacy ``astype(float)``.
    return arr.astype(np.float64)


def _start_order(n: int, window_starts: Sequence[int] | None) -> np.ndarray:
    """Indices that sort the windows by start; starts must be exactly 0..W-1 (the legacy window plan)."""
    if window_starts is None:
        return np.arange(n)
    starts = [int(s) for s in window_starts]
    if sorted(starts) != list(range(n)):
        raise ValueError(f"aggregate: window_starts must be a permutation of 0..{n - 1} (one per confidence)")
    return np.argsort(np.asarray(starts), kind="stable")


def aggregate(
    confidences,
    wav_filename: str,
    cfg: AggregateConfig = AggregateConfig(),
    window_starts: Sequence[int] | None = None,
) -> Aggregate:
    """Legacy aggregation of per-window positive-class confidences (README §5).

    ``confidences``: one per window (tensor, array or list), in window-start order unless
    ``window_starts`` gives each one's start second. ``wav_filename`` is written in every row, as legacy
    wrote ``Path(wav).name``.
    """
    conf = _as_float64(confidences)
    n = conf.shape[0]
    if n == 0:
        raise AudioError(
            f"{wav_filename}: no 2-s window to score (recording shorter than 2 s); use a recording of at least 2 s"
        )
    conf = conf[_start_order(n, window_starts)]

    rows = np.empty(n + 1, dtype=np.float64)
    rows[0] = conf[0]
    rows[1:n] = (conf[:-1] + conf[1:]) / 2.0
    rows[n] = conf[n - 1]

    positive = rows > cfg.threshold
    global_prediction = int(int(positive.sum()) >= cfg.min_positive_calls)
    if positive.any():
        selected = rows[positive]
        global_confidence = float(np.sum(selected) / float(selected.size) * 100.0)
    else:
        global_confidence = 0

    windows = [
        {"index": i, "start_s": i, "end_s": i + WINDOW_S, "confidence": float(conf[i])} for i in range(n)
    ]
    submission = [
        {"wav_filename": wav_filename, "start_time_s": k, "duration_s": ROW_DURATION_S, "confidence": float(rows[k])}
        for k in range(n + 1)
    ]
    return Aggregate(
        windows=windows,
        submission=submission,
        local_predictions=[int(p) for p in positive],
        local_confidences=[float(r) for r in rows],
        global_prediction=global_prediction,
        global_confidence=global_confidence,
    )
