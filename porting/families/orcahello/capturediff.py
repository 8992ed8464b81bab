"""Legacy vs legacy: two captures of one golden case, tensor by tensor, through the one comparison engine.

``tools/regenerate_golden --compare DIR`` prints this for every case whose safetensors (or results) differ:
per tensor the max |diff|, where (window, mel bin, frame, class ...), and the tier of the parity contract
the difference would pass in (``strict``: within the strict tier's tolerances; ``portable``: only within
the portable tier's, e.g. the FFT error model; ``neither``), with the fraction of that tier's tolerance used.
The first capture is the reference (its waveform feeds the FFT error model), as a golden is for the port.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...golden import Case
from ...parity.compare import StageResult, compare_exact, compare_rule
from ...parity.contract import ATOL, PORTABLE, STRICT
from .contract import Context

PER_WINDOW = ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input", "Y.logits", "Y.probs")
EVERY_WINDOW = ("all.logits", "all.probs", "all.confidence")


@dataclass(frozen=True)
class TensorDiff:
    stage: str
    strict: StageResult
    portable: StageResult

    @property
    def identical(self) -> bool:
        return self.strict.passed and self.strict.max_abs == 0.0

    @property
    def tier(self) -> str:
        """The tier this difference passes in: ``strict``, ``portable`` or ``neither``."""
        return STRICT if self.strict.passed else PORTABLE if self.portable.passed else "neither"

    def line(self) -> str:
        """``B.mel_db: max|diff| 0.0168 at window 0 (0-2 s), mel bin 203, frame 43 (...) -> portable tier (0.22 of
        its tolerance, FFT error model ...)``. The place is where the strict tier's check is tightest: for the
        constant 1e-5 rules, the largest |diff|."""
        if self.identical:
            return f"{self.stage}: identical"
        s = self.strict
        where = f" at {s.location()}" if s.worst is not None else ""
        head = f"{self.stage}: max|diff| {s.max_abs:.3g}{where}"
        if self.tier == "neither":
            return (f"{head} -> passes neither tier ({s.margin:.3g} of the strict tolerance, "
                    f"{self.portable.margin:.3g} of the portable one){'; ' + s.note if s.note else ''}")
        r = s if self.tier == STRICT else self.portable
        return f"{head} -> {self.tier} tier ({r.margin:.2g} of its tolerance, {r.rule})"


def _rows(t, keep: list[int]):
    return t[keep] if len(keep) != t.shape[0] else t


def diff_cases(reference: Case, other: Case) -> list[TensorDiff]:
    """Every tensor and production result the two captures share, compared in both tiers.

    Per-window tensors are compared on the windows both captures stored (the budget's choice of windows can
    move when a confidence moves); ``agg.*`` are production's per-second table and decisions from the JSON."""
    if reference.error or other.error:
        same = (reference.error or {}).get("type") == (other.error or {}).get("type")
        note = "both crash cases, same error type" if same else "only one of them is a crash case, or the errors differ"
        res = StageResult("error", (), 0.0, same, 0.0, 0.0, 0.0, 0.0, None, [], note)
        return [TensorDiff("error", res, res)]
    a_win, b_win = [int(w) for w in reference.stored_windows], [int(w) for w in other.stored_windows]
    common = [w for w in a_win if w in b_win]
    ia, ib = [a_win.index(w) for w in common], [b_win.index(w) for w in common]
    ra, rb = reference.tensors, other.tensors
    wave = _rows(ra["A.waveform"], ia) if "A.waveform" in ra else None
    ctx = Context(wave, _frontend(), reference.meta["model"].get("normalize"))
    out = []
    for stage in PER_WINDOW + EVERY_WINDOW:
        if stage not in ra or stage not in rb:
            continue
        per_window = stage in PER_WINDOW
        e, a = (_rows(ra[stage], ia), _rows(rb[stage], ib)) if per_window else (ra[stage], rb[stage])
        win = common if per_window else None
        out.append(TensorDiff(stage, compare_rule(stage, e, a, STRICT, ctx, win), compare_rule(stage, e, a, PORTABLE, ctx, win)))
    out += _aggregate(reference.meta, other.meta)
    return out


def _aggregate(a: dict, b: dict) -> list[TensorDiff]:
    """Production's result: per-second confidences and global confidence (1e-5 in both tiers), decisions exact."""
    rows = (np.array([r["confidence"] for r in a["submission"]]), np.array([r["confidence"] for r in b["submission"]]))
    g = (np.array([a["global_confidence"] / 100.0]), np.array([b["global_confidence"] / 100.0]))
    out = []
    for stage, (e, x) in (("agg.confidence", rows), ("agg.global_confidence/100", g)):
        out.append(TensorDiff(stage, compare_rule(stage, e, x, STRICT), compare_rule(stage, e, x, PORTABLE)))
    borderline = [abs(c - 0.5) <= ATOL for c in rows[0]]
    for stage, e, x, tol in (("agg.local_predictions", a["local_predictions"], b["local_predictions"], borderline),
                             ("agg.global_prediction", [a["global_prediction"]], [b["global_prediction"]], None)):
        res = compare_exact(stage, e, x, tol)
        out.append(TensorDiff(stage, res, res))
    return out


def _frontend():
    from .frontend.config import FrontendConfig

    return FrontendConfig()


def format_diff(case: str, diffs: list[TensorDiff], indent: str = "  ") -> list[str]:
    """Lines: the identical tensors in one line, then one line per differing tensor."""
    same = [d.stage for d in diffs if d.identical]
    lines = [f"{indent}identical: {', '.join(same)}"] if same else []
    lines += [indent + d.line() for d in diffs if not d.identical]
    worst = [d for d in diffs if d.tier == "neither"]
    lines.append(f"{indent}=> {case}: " + ("every difference passes the strict tier" if all(d.tier == STRICT for d in diffs)
                                            else "passes the portable tier only" if not worst
                                            else f"{len(worst)} tensor(s) pass neither tier"))
    return lines
