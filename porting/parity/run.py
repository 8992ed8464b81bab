"""Parity runs, engine side: the result of comparing one golden case with one capture (``CaseRun``), the store's
cases and captures (``select_cases``, ``tier_for``), the loop of ``port parity`` over them, and the JSON every run is
reported in. What a family runs per case is its ``check_case`` (``porting.families.<name>.parity``); the comparison
is ``porting.parity.compare``'s, for every family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import family as registry
from ..errors import GoldenError
from ..golden import Capture, Case, captures, case_paths, load_case
from .compare import ParityReport, StageResult
from .contract import Tier, choose_tier

@dataclass
class CaseRun:
    """One case compared with one capture: the verdicts plus what a report draws."""

    report: ParityReport
    worst: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)  # stage -> (legacy, port, window)
    confidence: tuple[np.ndarray, np.ndarray] | None = None  # (legacy, port) per window
    tier: Tier | None = None
    capture: str = "golden"
    golden_fingerprint: dict | None = None
    probs: tuple | None = None  # drawn over time where a family keeps them: (golden [W, K], port [W, K], labels, window starts in s) of all.probs
    family: str | None = None  # the family whose case it is (porting.family; None: the one whose records name none)


def worst_arrays(stages: list[StageResult], expected: dict, actual: dict, stored: Sequence[int],
                 drawn: Sequence[str] = ()) -> dict:
    """Golden and port tensors of the worst window of each stage in ``drawn`` (what the report draws; the family
    names its drawable stages)."""
    out = {}
    for s in stages:
        base = s.stage.split(" ", 1)[0]
        if s.worst is None or base not in drawn or s.stage not in actual:
            continue
        row = list(stored).index(s.worst.window) if s.worst.window in stored else None
        if row is None:
            continue
        e = expected[base][row].detach().cpu().numpy()
        a = actual[s.stage][row].detach().cpu().numpy()
        out[s.stage] = (e, a, s.worst.window)
    return out


def tier_for(case: Case, running: dict | None = None) -> tuple[Tier, Capture]:
    """The tier ``case`` is held to on this machine (or on ``running``), and the capture it belongs to."""
    from .fingerprint import machine_fingerprint

    cap = _capture_of(case.dir)
    return choose_tier(cap.fingerprint, machine_fingerprint() if running is None else running), cap


def _capture_of(cases_dir: Path) -> Capture:
    from .fingerprint import load_fingerprint

    root = cases_dir.parent
    name = root.name if root.parent.name == "captures" else "golden"
    return Capture(name, root, load_fingerprint(root))


def select_cases(golden: Path) -> dict[str, list[tuple[Capture, Path]]]:
    """Case name -> its captures to compare with: a case JSON (that capture only), a cases/ folder, or a
    golden store (every capture of every case: ``cases/`` and ``captures/*/cases/``)."""
    golden = Path(golden)
    out: dict[str, list[tuple[Capture, Path]]] = {}
    if golden.is_file():
        pairs = [(_capture_of(golden.parent), golden)]
    elif (golden / "cases").is_dir():
        pairs = [(cap, p) for cap in captures(golden) for p in case_paths(cap.dir)]
    elif golden.is_dir() and any(golden.glob("*.json")):
        pairs = [(_capture_of(golden), p) for p in sorted(golden.glob("*.json"))]
    else:
        raise GoldenError(f"{golden}: neither a golden case JSON nor a golden store; pass golden/ or golden/cases/<case>.json")
    for cap, p in pairs:
        out.setdefault(p.stem, []).append((cap, p))
    return dict(sorted(out.items()))


def run_parity(
    golden: Path,
    model_path: Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
    backend: str = "torch",
    running: dict | None = None,
) -> list[CaseRun]:
    """``port parity``: every selected case of the golden store (or case JSON) ``golden`` and every capture of it,
    each capture in its tier (its numerics fingerprint against ``running``, this machine's by default; tests pass a
    foreign one to force the portable tier). The family the cases name (``porting.family``) runs each case through
    its stage graph and compares every stage by ``porting.parity``. ``model_path`` (a source model or a converted
    DIR): only the cases captured from that model, run with it. ``backend`` is ``port detect``'s."""
    from .fingerprint import machine_fingerprint

    fam = registry.for_store(golden)
    running = machine_fingerprint() if running is None else running
    model_path = None if model_path is None else Path(model_path)
    runs: list[CaseRun] = []
    cache: dict = {}
    for name, pairs in select_cases(golden).items():
        cases = [(cap, load_case(p)) for cap, p in pairs]
        if model_path is not None and not fam.captured_from(cases[0][1], model_path):
            continue
        if progress:
            progress(name)
        runs += fam.check_case([(cap, c, choose_tier(cap.fingerprint, running)) for cap, c in cases], model_path,
                               device=device, batch_size=batch_size, backend=backend, cache=cache)
    if not runs:
        raise GoldenError(f"{golden}: no golden case was captured from {model_path}; pass that model's cases or omit "
                          "--model" if model_path is not None else f"{golden}: no golden case to check")
    return runs


def reports_json(runs: list[CaseRun]) -> str:
    """Machine-readable verdicts (every stage's statistics), for CI logs."""
    out = []
    for r in runs:
        out.append(
            {
                "case": r.report.case,
                "capture": r.capture,
                "tier": r.tier.name if r.tier else None,
                "tier_reason": r.tier.why if r.tier else None,
                "golden_fingerprint": r.golden_fingerprint,
                "device": r.report.device,
                "passed": r.report.passed,
                "stages": [
                    {
                        "stage": s.stage,
                        "passed": s.passed,
                        "max_abs": s.max_abs,
                        "mean_abs": s.mean_abs,
                        "p99_abs": s.p99_abs,
                        "max_rel": s.max_rel,
                        "tol": s.tol,
                        "rule": s.rule,
                        "tier": s.tier,
                        "max_ulps": s.max_ulps,
                        "margin": s.margin,
                        "location": s.location(),
                        "message": s.message(),
                    }
                    for s in r.report.stages
                ],
            }
        )
    return json.dumps(out, indent=1)
