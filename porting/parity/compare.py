"""Stage-by-stage comparison of port outputs with golden tensors, at 1e-5 absolute.

Every statistic is computed in float64 on the CPU. A stage passes when the shapes agree and the largest
absolute difference is <= its tolerance (NaN/Inf where the golden is finite count as infinite
differences). The failure message alone says where to look: the stage, the worst window (with its
seconds in the recording), the position inside it (mel bin and frame, class, sample ...), both values,
and how many windows fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

ATOL = 1e-5  # the contract (DESIGN.md "Goldens are the spec"); never loosened

# Names of the axes after the window axis, per golden tensor (golden/README.md "Case format").
AXES: dict[str, tuple[str, ...]] = {
    "A.segment": ("channel", "sample"),
    "A.downmix": ("sample",),
    "A.waveform": ("sample",),
    "B.mel_db": ("channel", "mel bin", "frame"),
    "C.padded": ("channel", "mel bin", "frame"),
    "X.model_input": ("channel", "mel bin", "frame"),
    "Y.logits": ("class",),
    "Y.probs": ("class",),
    "all.logits": ("class",),
    "all.probs": ("class",),
    "all.confidence": (),
    "agg.confidence": (),
}
HOP_S = 256 / 20000  # one mel frame of the 20 kHz waveform (README §3), to print frames as seconds


@dataclass(frozen=True)
class WindowStat:
    """Differences inside one window (first-axis entry) of a stage."""

    window: int  # the recording's window index (covers [window, window + 2] s)
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    where: tuple[int, ...]  # index of the max inside the window (axes of AXES[stage])
    expected: float
    actual: float
    passed: bool


@dataclass(frozen=True)
class StageResult:
    stage: str
    shape: tuple[int, ...]
    tol: float
    passed: bool
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    worst: WindowStat | None
    windows: list[WindowStat] = field(default_factory=list)
    note: str = ""  # shape mismatch, exact-match stages, ...

    @property
    def n_failed(self) -> int:
        return sum(not w.passed for w in self.windows)

    def location(self) -> str:
        """``window 35 (35-37 s), mel bin 12, frame 80 (0.031 s)``; empty when nothing was compared."""
        if self.worst is None:
            return ""
        return describe_location(self.stage, self.worst.window, self.worst.where)

    def message(self) -> str:
        """One line: verdict, statistics and where the largest difference is, with both values."""
        verdict = "ok" if self.passed else "FAIL"
        if self.worst is None:
            return f"{self.stage}: {verdict} {self.note}".rstrip()
        w = self.worst
        cmp = "<=" if self.passed else ">"
        msg = (
            f"{self.stage}: {verdict} max|diff| {self.max_abs:.3g} {cmp} {self.tol:g} at {self.location()}"
            f" (legacy {w.expected:.9g}, port {w.actual:.9g}); mean {self.mean_abs:.3g}, p99 {self.p99_abs:.3g},"
            f" max rel {self.max_rel:.3g}"
        )
        if self.windows and len(self.windows) > 1:
            msg += f"; {self.n_failed} of {len(self.windows)} windows fail"
        if self.note:
            msg += f"; {self.note}"
        return msg


def describe_location(stage: str, window: int, where: Sequence[int]) -> str:
    base = stage.split(" ", 1)[0]  # "B.mel_db (golden input)" -> "B.mel_db"
    parts = [f"window {window} ({window}-{window + 2} s)" if not base.startswith("agg.") else f"row {window}"]
    for axis, i in zip(AXES.get(base, tuple(f"dim{k + 1}" for k in range(len(where)))), where):
        if axis == "channel" and base != "A.segment":
            continue  # always 0 for the mono spectrogram
        text = f"{axis} {i}"
        if axis == "frame":
            text += f" ({i * HOP_S:.3f} s into the window)"
        parts.append(text)
    return ", ".join(parts)


def _as64(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor (torch is not imported here: the plugin loads this module)
        import torch

        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _abs_diff(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    d = np.abs(actual - expected)
    # NaN in the port where the golden has a number (or vice versa) is an infinite difference.
    bad = np.isnan(d) & ~(np.isnan(actual) & np.isnan(expected))
    d[bad] = np.inf
    d[np.isnan(d)] = 0.0  # NaN in both: equal
    return d


def _rel(d: np.ndarray, expected: np.ndarray) -> float:
    nz = expected != 0
    if not nz.any():
        return 0.0 if not d.any() else math.inf
    return float(np.max(d[nz] / np.abs(expected[nz])))


def _window_stat(window: int, e: np.ndarray, a: np.ndarray, tol: float) -> WindowStat:
    d = _abs_diff(e, a)
    if d.size == 0:
        return WindowStat(window, 0.0, 0.0, 0.0, 0.0, (), math.nan, math.nan, True)
    flat = int(np.argmax(d))
    where = tuple(int(i) for i in np.unravel_index(flat, d.shape)) if d.ndim else ()
    mx = float(d.reshape(-1)[flat])
    return WindowStat(
        window=window,
        max_abs=mx,
        mean_abs=float(d.mean()),
        p99_abs=float(np.percentile(d, 99)),
        max_rel=_rel(d, e),
        where=where,
        expected=float(e.reshape(-1)[flat]),
        actual=float(a.reshape(-1)[flat]),
        passed=mx <= tol,
    )


def compare_stage(
    stage: str,
    expected,
    actual,
    windows: Sequence[int] | None = None,
    tol: float = ATOL,
) -> StageResult:
    """Compare one stage. The first axis is the window axis; ``windows`` names its entries
    (the case's ``stored_windows`` for per-window stages, default 0..n-1)."""
    e, a = _as64(expected), _as64(actual)
    shape = tuple(e.shape)
    if e.shape != a.shape:
        note = f"shape {list(a.shape)} != golden {list(e.shape)}"
        return StageResult(stage, shape, tol, False, math.inf, math.inf, math.inf, math.inf, None, [], note)
    if e.ndim == 0:
        e, a = e.reshape(1), a.reshape(1)
    n = e.shape[0]
    names = list(range(n)) if windows is None else [int(w) for w in windows]
    if len(names) != n:
        raise ValueError(f"{stage}: {len(names)} window names for {n} windows")
    if n == 0:
        return StageResult(stage, shape, tol, True, 0.0, 0.0, 0.0, 0.0, None, [], "empty")
    if e.ndim == 1:  # one value per window (confidence): per-window stats are single values
        stats = [_window_stat(names[i], e[i : i + 1], a[i : i + 1], tol) for i in range(n)]
        stats = [WindowStat(s.window, s.max_abs, s.mean_abs, s.p99_abs, s.max_rel, (), s.expected, s.actual, s.passed) for s in stats]
    else:
        stats = [_window_stat(names[i], e[i], a[i], tol) for i in range(n)]
    d = _abs_diff(e, a)
    worst = max(stats, key=lambda s: s.max_abs)
    return StageResult(
        stage=stage,
        shape=shape,
        tol=tol,
        passed=all(s.passed for s in stats),
        max_abs=float(d.max()),
        mean_abs=float(d.mean()),
        p99_abs=float(np.percentile(d, 99)),
        max_rel=_rel(d, e),
        worst=worst,
        windows=stats,
    )


def compare_exact(stage: str, expected: Sequence, actual: Sequence, tolerated: Sequence[bool] | None = None) -> StageResult:
    """Integer/boolean results (local/global predictions) must be equal. ``tolerated[i]`` excuses a
    mismatch whose golden confidence lies within 1e-5 of the threshold (a legitimate flip)."""
    e, a = list(expected), list(actual)
    if len(e) != len(a):
        note = f"length {len(a)} != golden {len(e)}"
        return StageResult(stage, (len(e),), 0.0, False, math.inf, math.inf, math.inf, math.inf, None, [], note)
    bad = [i for i, (x, y) in enumerate(zip(e, a)) if x != y and not (tolerated and tolerated[i])]
    excused = [i for i, (x, y) in enumerate(zip(e, a)) if x != y and tolerated and tolerated[i]]
    note = "exact"
    if bad:
        i = bad[0]
        note = f"exact; {len(bad)} differ, first at row {i}: legacy {e[i]!r}, port {a[i]!r}"
    elif excused:
        note = f"exact; {len(excused)} borderline rows (|conf-0.5| <= 1e-5) differ, allowed"
    stats = [
        WindowStat(i, float(x != y), float(x != y), float(x != y), 0.0, (), float(x), float(y), i not in bad)
        for i, (x, y) in enumerate(zip(e, a))
    ]
    worst = next((s for s in stats if not s.passed), None)
    return StageResult(stage, (len(e),), 0.0, not bad, float(len(bad) > 0), 0.0, 0.0, 0.0, worst, stats, note)


@dataclass(frozen=True)
class ParityReport:
    """All stage results of one case (a port run compared with one golden case)."""

    case: str
    device: str
    stages: list[StageResult]
    note: str = ""  # e.g. both legacy and port refused the recording

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stages)

    def failures(self) -> list[StageResult]:
        return [s for s in self.stages if not s.passed]

    def summary(self) -> str:
        bad = self.failures()
        if not bad:
            return f"{self.case} [{self.device}]: ok, {len(self.stages)} stages within tolerance"
        return f"{self.case} [{self.device}]: FAIL, {len(bad)} of {len(self.stages)} stages: " + " | ".join(s.message() for s in bad)


def compare(
    expected: Mapping[str, object],
    actual: Mapping[str, object],
    stored_windows: Sequence[int] | None = None,
    tol: float | Mapping[str, float] = ATOL,
    stages: Sequence[str] | None = None,
) -> list[StageResult]:
    """Compare every stage present in both mappings (or the given ``stages``; a stage missing from
    ``actual`` fails). Per-window stages (first axis = stored windows) are labelled with
    ``stored_windows``; ``all.*`` and ``agg.*`` with 0..W-1."""
    names = list(stages) if stages is not None else [k for k in expected if k in actual]
    out = []
    for name in names:
        t = tol.get(name, ATOL) if isinstance(tol, Mapping) else tol
        if name not in actual:
            out.append(StageResult(name, tuple(np.shape(_as64(expected[name]))), t, False, math.inf, math.inf, math.inf, math.inf, None, [], "missing from the port's outputs"))
            continue
        per_window = not (name.startswith("all.") or name.startswith("agg."))
        out.append(compare_stage(name, expected[name], actual[name], stored_windows if per_window else None, t))
    return out
