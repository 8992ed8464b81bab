"""The one comparison engine: port outputs vs golden tensors (or any reference), stage by stage.

Every statistic is computed in float64 on the CPU. A stage passes when the shapes agree and every
element's absolute difference is <= its tolerance, which the contract's table gives per stage and tier
(``porting.parity.contract``: 1e-5 absolute, exact, the logits row rule, or the FFT error model). NaN/Inf
where the golden is finite count as infinite differences. Every result reports max abs, max rel and
float32 ulps, the rule and the tier. The failure message alone says where to look: the stage, the worst window (with its
seconds in the recording), the position inside it (mel bin and frame, class, sample ...), both values,
and how many windows fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .contract import ATOL  # the contract (DESIGN.md "Goldens are the spec"); never loosened

@dataclass(frozen=True)
class WindowStat:
    """Differences inside one window (first-axis entry) of a stage."""

    window: int  # the recording's window index
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    where: tuple[int, ...]  # index of the element nearest its tolerance (inside the window)
    expected: float
    actual: float
    passed: bool
    tol: float = 0.0  # the tolerance at ``where``


@dataclass(frozen=True)
class StageResult:
    stage: str
    shape: tuple[int, ...]
    tol: float  # the tolerance at the worst element (a constant for constant rules)
    passed: bool
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    worst: WindowStat | None
    windows: list[WindowStat] = field(default_factory=list)
    note: str = ""  # shape mismatch, exact-match stages, ...
    rule: str = ""  # porting.parity.contract rule name
    tier: str = ""  # "strict" / "portable" (empty: not compared against a golden)
    max_ulps: float = 0.0  # largest |diff| in float32 ulps of the expected value
    margin: float = 0.0  # largest |diff| / tolerance (> 1 fails)
    family: str = ""  # the family whose stage it is (porting.family; "": the one whose records name none)

    @property
    def n_failed(self) -> int:
        return sum(not w.passed for w in self.windows)

    def location(self) -> str:
        """``window 35 (35-37 s), mel bin 12, frame 80 (0.031 s)``; empty when nothing was compared."""
        if self.worst is None:
            return ""
        from .. import family as registry
        from ..errors import PortingError

        try:  # the family names its axes and windows (``ReportTraits.locate``); else by position
            locate = registry.named(self.family or None).report.locate
        except PortingError:
            locate = None
        if locate is not None:
            return locate(self.stage, self.worst.window, self.worst.where)
        axes = ", ".join(f"dim{k + 1} {i}" for k, i in enumerate(self.worst.where))
        return f"window {self.worst.window}" + (f", {axes}" if axes else "")

    def message(self) -> str:
        """One line: verdict, rule and tier, statistics and where the element nearest its tolerance is."""
        verdict = "ok" if self.passed else "FAIL"
        how = ", ".join(x for x in (self.tier and f"{self.tier} tier", self.rule) if x)
        how = f" [{how}]" if how else ""
        if self.worst is None:
            return f"{self.stage}: {verdict}{how} {self.note}".rstrip()
        w = self.worst
        cmp = "<=" if w.passed else ">"
        msg = (
            f"{self.stage}: {verdict}{how} max|diff| {self.max_abs:.3g}, max rel {self.max_rel:.3g}, "
            f"{self.max_ulps:.3g} ulps; closest to its tolerance: {abs(w.actual - w.expected):.3g} {cmp} {w.tol:.3g} "
            f"at {self.location()} (legacy {w.expected:.9g}, port {w.actual:.9g}); mean {self.mean_abs:.3g}, "
            f"p99 {self.p99_abs:.3g}"
        )
        if self.windows and len(self.windows) > 1:
            msg += f"; {self.n_failed} of {len(self.windows)} windows fail"
        if self.note:
            msg += f"; {self.note}"
        return msg


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


def _ratio(d: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """|diff| / tolerance, with 0/0 = 0 and x/0 = inf (an exact stage)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d / tol
    r[(d == 0)] = 0.0
    return r


def _ulps(d: np.ndarray, expected: np.ndarray) -> float:
    if d.size == 0:
        return 0.0
    finite = np.isfinite(expected)
    spacing = np.spacing(np.abs(np.where(finite, expected, 0.0)).astype(np.float32)).astype(np.float64)
    return float(np.max(d / spacing))


def _window_stat(window: int, e: np.ndarray, a: np.ndarray, tol: np.ndarray) -> WindowStat:
    d = _abs_diff(e, a)
    if d.size == 0:
        return WindowStat(window, 0.0, 0.0, 0.0, 0.0, (), math.nan, math.nan, True)
    r = _ratio(d, tol)
    flat = int(np.argmax(r)) if r.any() else int(np.argmax(d))
    where = tuple(int(i) for i in np.unravel_index(flat, d.shape)) if d.ndim else ()
    return WindowStat(
        window=window,
        max_abs=float(d.max()),
        mean_abs=float(d.mean()),
        p99_abs=float(np.percentile(d, 99)),
        max_rel=_rel(d, e),
        where=where,
        expected=float(e.reshape(-1)[flat]),
        actual=float(a.reshape(-1)[flat]),
        passed=bool(np.all(d <= tol)),
        tol=float(tol.reshape(-1)[flat]),
    )


def compare_stage(
    stage: str,
    expected,
    actual,
    windows: Sequence[int] | None = None,
    tol=ATOL,
    rule: str = "",
    tier: str = "",
) -> StageResult:
    """Compare one stage. The first axis is the window axis; ``windows`` names its entries (the case's
    ``stored_windows`` for per-window stages, default 0..n-1). ``tol`` is a number or an array of
    per-element tolerances broadcastable to the stage (``porting.parity.contract`` computes them);
    an element passes when ``|diff| <= tol``."""
    e, a = _as64(expected), _as64(actual)
    shape = tuple(e.shape)
    if e.shape != a.shape:
        note = f"shape {list(a.shape)} != golden {list(e.shape)}"
        return StageResult(stage, shape, float(np.max(tol)), False, math.inf, math.inf, math.inf, math.inf, None, [], note,
                           rule, tier, math.inf, math.inf)
    if e.ndim == 0:
        e, a = e.reshape(1), a.reshape(1)
    t = np.broadcast_to(np.asarray(tol, dtype=np.float64), e.shape)
    n = e.shape[0]
    names = list(range(n)) if windows is None else [int(w) for w in windows]
    if len(names) != n:
        raise ValueError(f"{stage}: {len(names)} window names for {n} windows")
    if n == 0:
        return StageResult(stage, shape, 0.0, True, 0.0, 0.0, 0.0, 0.0, None, [], "empty", rule, tier)
    if e.ndim == 1:  # one value per window (confidence): per-window stats are single values
        stats = [_window_stat(names[i], e[i : i + 1], a[i : i + 1], t[i : i + 1]) for i in range(n)]
        stats = [WindowStat(s.window, s.max_abs, s.mean_abs, s.p99_abs, s.max_rel, (), s.expected, s.actual, s.passed, s.tol)
                 for s in stats]
    else:
        stats = [_window_stat(names[i], e[i], a[i], t[i]) for i in range(n)]
    d = _abs_diff(e, a)
    r = _ratio(d, t)
    worst = max(stats, key=lambda s: (_ratio(np.array([abs(s.actual - s.expected)]), np.array([s.tol]))[0], s.max_abs))
    return StageResult(
        stage=stage,
        shape=shape,
        tol=worst.tol,
        passed=all(s.passed for s in stats),
        max_abs=float(d.max()),
        mean_abs=float(d.mean()),
        p99_abs=float(np.percentile(d, 99)),
        max_rel=_rel(d, e),
        worst=worst,
        windows=stats,
        rule=rule,
        tier=tier,
        max_ulps=_ulps(d, e),
        margin=float(r.max()),
    )


def compare_rule(stage: str, expected, actual, tier: str, ctx=None, windows: Sequence[int] | None = None,
                 family: str | None = None) -> StageResult:
    """``compare_stage`` with the tolerance the contract's table gives ``stage`` in ``tier`` (``family``: "hf"
    for the Hugging Face family's stages)."""
    from dataclasses import replace

    from .contract import rule_for

    rule = rule_for(stage, tier, family)
    tol = rule.tolerance(_as64(expected), ctx)
    res = compare_stage(stage, expected, actual, windows, tol, rule.name, tier)
    return res if family is None else replace(res, family=family)


def missing_stage(stage: str, shape, tier: str, family: str | None = None) -> StageResult:
    """A golden stage the port did not produce: failed, infinitely far."""
    return StageResult(stage, tuple(shape), 0.0, False, math.inf, math.inf, math.inf, math.inf, None, [],
                       "missing from the port's outputs", tier=tier, family=family or "")


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
    note: str = ""  # the tier and why; e.g. both legacy and port refused the recording
    capture: str = "golden"  # which capture of the case (golden/cases, or golden/captures/<name>)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stages)

    def failures(self) -> list[StageResult]:
        return [s for s in self.stages if not s.passed]

    def summary(self) -> str:
        bad = self.failures()
        head = f"{self.case} ({self.capture}) [{self.device}]"
        tail = f" -- {self.note}" if self.note else ""
        if not bad:
            return f"{head}: ok, {len(self.stages)} stages within tolerance{tail}"
        return f"{head}: FAIL, {len(bad)} of {len(self.stages)} stages: " + " | ".join(s.message() for s in bad) + tail


def compare(
    expected: Mapping[str, object],
    actual: Mapping[str, object],
    stored_windows: Sequence[int] | None = None,
    tier: str = "strict",
    ctx=None,
    stages: Sequence[str] | None = None,
    family: str | None = None,
) -> list[StageResult]:
    """Compare every stage present in both mappings (or the given ``stages``; a stage missing from
    ``actual`` fails), each with its rule from the family's table for ``tier`` (``family``: its name, None: the
    family whose records name none; ``ctx``: the case's
    family's comparison context (``Family.parity_context``), needed by the portable tier's FFT error model). Per-window stages
    (first axis = stored windows) are labelled with ``stored_windows``; ``all.*`` and ``agg.*`` with 0..W-1."""
    from .contract import GOLDEN_INPUT

    names = list(stages) if stages is not None else [k for k in expected if k in actual]
    out = []
    for name in names:
        ref = expected[name.removesuffix(GOLDEN_INPUT)]  # "<stage> (golden input)" is held to the golden <stage>
        if name not in actual:
            out.append(missing_stage(name, np.shape(_as64(ref)), tier))
            continue
        per_window = not (name.startswith("all.") or name.startswith("agg."))
        out.append(compare_rule(name, ref, actual[name], tier, ctx, stored_windows if per_window else None, family))
    return out


def merge_windows(results: list[StageResult]) -> list[StageResult]:
    """One result per stage from per-window results (a family that compares each stored window alone, e.g. because
    a partial tail's shape differs): verdict = all windows pass; statistics = the worst window's, max over windows."""
    from dataclasses import replace

    groups: dict[str, list[StageResult]] = {}
    for r in results:
        groups.setdefault(r.stage, []).append(r)
    out = []
    for stage, rs in groups.items():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        worst = max(rs, key=lambda r: (not r.passed, r.margin, r.max_abs))
        out.append(replace(worst, passed=all(r.passed for r in rs), max_abs=max(r.max_abs for r in rs),
                           max_rel=max(r.max_rel for r in rs), max_ulps=max(r.max_ulps for r in rs),
                           margin=max(r.margin for r in rs), windows=[w for r in rs for w in r.windows],
                           note="; ".join(dict.fromkeys(r.note for r in rs if r.note))))
    return out
