"""Detections as events: the stretches of a recording where the confidence exceeds the threshold.

Moderators listen to intervals, not to 1,800 per-second numbers. An event is a maximal stretch of time covered by
scored intervals whose value is ``> threshold`` (strict, as legacy's ``local_predictions``): the above-threshold
intervals, in start order, are merged while the next one starts at or before the current end (so touching
one-second rows, or overlapping windows, join; a below-threshold row or a gap between windows splits). For each
event: ``start_s``, ``end_s``, ``peak`` (the largest value in it) and ``peak_s`` (the start of the first interval
holding it), ``mean`` (the mean of its above-threshold values, each counted once) and ``n`` (how many intervals).

* OrcaHello: the intervals are the legacy per-second rows (``submission``: row k covers [k, k + 1] s, its value is
  the mean of the two 2-s windows covering that second), so an event's seconds are exactly the rows legacy
  marked ``local_predictions = 1``.
* Hugging Face models: the intervals are the windows ([start_s, end_s], the partial tail included) and the value
  is the probability of one chosen label (``port detect --positive LABEL``).

Pure functions over plain numbers (no torch, no files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

#: CSV columns of ``port detect --csv`` for OrcaHello models, one row per event (README "Output formats").
EVENT_COLUMNS = ("file", "start_s", "end_s", "duration_s", "peak_confidence", "peak_s", "mean_confidence",
                 "n_intervals")


@dataclass(frozen=True)
class Event:
    start_s: float
    end_s: float
    peak: float
    peak_s: float
    mean: float
    n: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"start_s": d["start_s"], "end_s": d["end_s"], "duration_s": self.duration_s,
                "peak_confidence": d["peak"], "peak_s": d["peak_s"], "mean_confidence": d["mean"],
                "n_intervals": d["n"]}


def find_events(starts: Sequence[float], ends: Sequence[float], values: Sequence[float],
                threshold: float = 0.5) -> list[Event]:
    """Events of the intervals ``[starts[i], ends[i]]`` with ``values[i] > threshold`` (see the module doc).

    ``starts`` must be non-decreasing (the window / row order) and ``ends[i] >= starts[i]``. A NaN value is
    never above the threshold.
    """
    if not (len(starts) == len(ends) == len(values)):
        raise ValueError(f"find_events: {len(starts)} starts, {len(ends)} ends and {len(values)} values; "
                         "pass one of each per interval")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"find_events: threshold must be a number, got {threshold!r}")
    above = []
    prev = -math.inf
    for s, e, v in zip(starts, ends, values):
        s, e, v = float(s), float(e), float(v)
        if s < prev or e < s:
            raise ValueError(f"find_events: intervals must be in start order with end >= start, got [{s}, {e}] "
                             f"after a start of {prev}")
        prev = s
        if v > threshold:
            above.append((s, e, v))
    events: list[Event] = []
    run: list[tuple[float, float, float]] = []
    end = -math.inf
    for s, e, v in above:
        if run and s > end:
            events.append(_event(run))
            run = []
        run.append((s, e, v))
        end = e if len(run) == 1 else max(end, e)
    if run:
        events.append(_event(run))
    return events


def _event(run: list[tuple[float, float, float]]) -> Event:
    peak_i = max(range(len(run)), key=lambda i: run[i][2])  # first of equal maxima
    vals = [v for _, _, v in run]
    return Event(start_s=run[0][0], end_s=max(e for _, e, _ in run), peak=run[peak_i][2], peak_s=run[peak_i][0],
                 mean=min(math.fsum(vals) / len(vals), max(vals)), n=len(run))  # never above the peak by a rounding


def second_events(submission: Sequence[dict], threshold: float = 0.5) -> list[Event]:
    """Events of a legacy per-second table (``Aggregate.submission`` rows)."""
    starts = [float(r["start_time_s"]) for r in submission]
    ends = [float(r["start_time_s"]) + float(r["duration_s"]) for r in submission]
    return find_events(starts, ends, [float(r["confidence"]) for r in submission], threshold)


def window_events(result, label: str, threshold: float = 0.5) -> list[Event]:
    """Events of one label over a result's windows (``result``: ``porting.scores.WindowScores``)."""
    classes = list(result.classes)
    if label not in classes:
        raise ValueError(f"window_events: {label!r} is not one of the model's labels {classes}")
    k, rate = classes.index(label), result.sample_rate
    col = [row[k] for row in result.probs.tolist()]
    return find_events([s / rate for s in result.starts], [(s + n) / rate for s, n in zip(result.starts, result.lengths)],
                       col, threshold)
