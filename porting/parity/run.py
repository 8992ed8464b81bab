"""Run the port on a golden case's recording and compare every stage (``port parity``).

Two views of each case, both held to 1e-5:

* **chained**: the port end to end from the recording, as a user runs it (A -> B -> C -> X -> Y for the
  stored windows; every window for ``all.*``; then the per-second aggregation);
* **isolated** (``<stage> (golden input)``): each of B, C, X, Y fed the *golden* output of the stage
  before, so a failure points at the stage that introduced it rather than everything downstream.

Stage functions are looked up on their modules at call time (``windows.downmix`` ...), so a test can
perturb one stage in a subprocess and check that the report names it.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import GoldenError, PortingError
from ..golden import Case, case_paths, file_digest, load_case
from .compare import ATOL, ParityReport, StageResult, compare, compare_exact, compare_stage

CHAINED = ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input", "Y.logits", "Y.probs")
ALL = ("all.logits", "all.probs", "all.confidence")
ISOLATED = {  # stage -> the golden stage it is fed
    "B.mel_db": "A.waveform",
    "C.padded": "B.mel_db",
    "X.model_input": "C.padded",
    "Y.logits": "X.model_input",
    "Y.probs": "X.model_input",
}
GOLDEN_INPUT = " (golden input)"
DRAWN = ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input")  # drawn


@dataclass
class CaseRun:
    """One case compared: the verdicts plus what a report draws (worst window of each stage, confidences)."""

    report: ParityReport
    worst: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)  # stage -> (legacy, port, window)
    confidence: tuple[np.ndarray, np.ndarray] | None = None  # (legacy, port) per window


def _modules():
    """The port's stage modules, imported lazily: `port golden verify` needs none of them.

    ``import_module`` by full name: ``porting.convert`` / ``porting.detect`` as attributes of the
    package are the public *functions* of the same names (porting/__init__.py), not the modules.
    """
    names = ("frontend.decode", "frontend.windows", "frontend.mel", "frontend.pad", "frontend.normalize", "convert", "aggregate")
    return tuple(importlib.import_module(f"porting.{n}") for n in names)


def load_port_model(model_path: Path, device: str):
    """(model in eval mode on ``device``, config) through ``porting.convert.load_model``."""
    *_, convert, _ = _modules()
    model, config = convert.load_model(model_path, device)
    model.eval()
    return model, config


def _norm_stats(config: dict) -> tuple[list[float] | None, list[float] | None]:
    stats = config.get("normalize")
    if not stats:
        return None, None
    return list(stats["mean"]), list(stats["std"])


def _forward(model, x: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(x.to(device)).float()
        probs = torch.softmax(logits, dim=-1)  # CrossEntropyFlat's activation (README §4)
    return logits.cpu(), probs.cpu()


def port_outputs(case: Case, model, config: dict, device: str = "cpu", batch_size: int = 16) -> dict[str, object]:
    """Every golden stage computed by the port for ``case`` (chained and isolated)."""
    decode, windows, mel, pad, normalize, _, agg = _modules()
    mean, std = _norm_stats(config)
    pos = int(config.get("positive_index", 1))
    stored = case.stored_windows
    info = decode.probe(case.audio_path)
    sr = info.sample_rate
    n = 2 * sr
    starts = [windows.pydub_frame(w, sr) for w in stored]
    out: dict[str, object] = {}

    out["A.segment"] = seg = decode.read_segments(info, starts, n)
    out["A.downmix"] = dm = windows.downmix(seg)
    out["A.waveform"] = wave = windows.resample(dm, sr)
    out["B.mel_db"] = spec = mel.mel_db(wave.to(device)).cpu()
    out["C.padded"] = padded = pad.crop_pad(spec.to(device)).cpu()
    out["X.model_input"] = x = normalize.normalize(padded.to(device), mean, std).cpu()
    out["Y.logits"], out["Y.probs"] = _forward(model, x, device)

    g = case.tensors
    out["B.mel_db" + GOLDEN_INPUT] = mel.mel_db(g["A.waveform"].to(device)).cpu()
    out["C.padded" + GOLDEN_INPUT] = pad.crop_pad(g["B.mel_db"].to(device)).cpu()
    out["X.model_input" + GOLDEN_INPUT] = normalize.normalize(g["C.padded"].to(device), mean, std).cpu()
    if torch.equal(x, g["X.model_input"]):  # same input, same forward: don't pay for the model twice
        out["Y.logits" + GOLDEN_INPUT], out["Y.probs" + GOLDEN_INPUT] = out["Y.logits"], out["Y.probs"]
    else:
        out["Y.logits" + GOLDEN_INPUT], out["Y.probs" + GOLDEN_INPUT] = _forward(model, g["X.model_input"], device)

    logits = []
    for _, wave_b in windows.iter_windows(info, batch_size):
        spec_b = pad.crop_pad(mel.mel_db(wave_b.to(device)))
        logits.append(_forward(model, normalize.normalize(spec_b, mean, std), device)[0])
    all_logits = torch.cat(logits) if logits else torch.zeros(0, 2)
    all_probs = torch.softmax(all_logits, dim=-1)
    out["all.logits"], out["all.probs"] = all_logits, all_probs
    out["all.confidence"] = all_probs[:, pos]
    out["aggregate"] = agg.aggregate(all_probs[:, pos], case.audio_path.name).to_dict()
    return out


def _aggregate_stages(case: Case, result: dict) -> list[StageResult]:
    """Production's per-second table and decisions (README §5)."""
    meta = case.meta
    legacy_rows = [r["confidence"] for r in meta["submission"]]
    port_rows = [r["confidence"] for r in result["submission"]]
    stages = [compare_stage("agg.confidence", np.array(legacy_rows), np.array(port_rows))]
    borderline = [abs(c - 0.5) <= ATOL for c in legacy_rows]
    stages.append(compare_exact("agg.local_predictions", meta["local_predictions"], result["local_predictions"], borderline))
    stages.append(compare_exact("agg.global_prediction", [meta["global_prediction"]], [result["global_prediction"]]))
    # 100 x a mean of confidences: compared in confidence units, where the 1e-5 contract is stated.
    stages.append(
        compare_stage(
            "agg.global_confidence/100",
            np.array([meta["global_confidence"] / 100.0]),
            np.array([result["global_confidence"] / 100.0]),
        )
    )
    return stages


def worst_arrays(stages: list[StageResult], expected: dict, actual: dict, stored: Sequence[int]) -> dict:
    """Legacy and port tensors of each per-window stage's worst window (what the report draws)."""
    out = {}
    for s in stages:
        base = s.stage.split(" ", 1)[0]
        if s.worst is None or base not in DRAWN or s.stage not in actual:
            continue
        row = list(stored).index(s.worst.window) if s.worst.window in stored else None
        if row is None:
            continue
        e = expected[base][row].detach().cpu().numpy()
        a = actual[s.stage][row].detach().cpu().numpy()
        out[s.stage] = (e, a, s.worst.window)
    return out


def check_case(case: Case, model, config: dict, device: str = "cpu", batch_size: int = 16) -> CaseRun:
    """Run the port on ``case``'s recording and compare every stage with the golden."""
    if case.error:
        return _check_refusal(case, device)
    try:
        actual = port_outputs(case, model, config, device, batch_size)
    except PortingError as err:  # the port refused a recording legacy scored: a failure of this case
        note = f"legacy scored {case.meta.get('n_windows')} windows; port raised {type(err).__name__}: {err}"
        stage = StageResult("port", (), 0.0, False, math.inf, math.inf, math.inf, math.inf, None, [], note)
        return CaseRun(ParityReport(case.name, str(device), [stage]))
    g = case.tensors
    stored = case.stored_windows
    stages = compare(g, actual, stored, stages=CHAINED)
    for stage, _src in ISOLATED.items():
        stages.append(compare_stage(stage + GOLDEN_INPUT, g[stage], actual[stage + GOLDEN_INPUT], stored))
    stages += compare(g, actual, stages=ALL)
    stages += _aggregate_stages(case, actual["aggregate"])
    report = ParityReport(case.name, str(device), stages)
    conf = (g["all.confidence"].numpy().astype(np.float64), actual["all.confidence"].numpy().astype(np.float64))
    return CaseRun(report, worst_arrays(stages, g, actual, stored), conf)


def _check_refusal(case: Case, device: str) -> CaseRun:
    """Legacy crashed on this recording (e.g. shorter than 2 s, README §1); the port must refuse it with
    a typed error instead of producing numbers."""
    decode, windows, *_ = _modules()
    legacy = f"{case.error.get('type')}: {case.error.get('message')}"
    try:
        info = decode.probe(case.audio_path)
        plan = windows.plan_windows(info.duration_s)
    except PortingError as err:
        stage = StageResult("refusal", (), 0.0, True, 0.0, 0.0, 0.0, 0.0, None, [], f"legacy crashed ({legacy}); port refused: {err}")
    else:
        stage = StageResult("refusal", (), 0.0, False, 0.0, 0.0, 0.0, 0.0, None, [], f"legacy crashed ({legacy}) but the port planned {len(plan)} windows")
    return CaseRun(ParityReport(case.name, str(device), [stage]))


def select_cases(golden: Path) -> list[Path]:
    """A case JSON, or every case of a golden store (a dir holding cases/, or the cases/ dir itself)."""
    golden = Path(golden)
    if golden.is_file():
        return [golden]
    if (golden / "cases").is_dir():
        return case_paths(golden)
    if golden.is_dir() and any(golden.glob("*.json")):
        return sorted(golden.glob("*.json"))
    raise GoldenError(f"{golden}: neither a golden case JSON nor a golden store; pass golden/ or golden/cases/<case>.json")


def _model_sha(model_path: Path, config: dict) -> str | None:
    if model_path.is_file():
        return file_digest(model_path)["sha256"]
    source = config.get("source") or {}
    return source.get("sha256") if isinstance(source, dict) else None


def run_parity(
    golden: Path,
    model_path: Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
) -> list[CaseRun]:
    """``port parity``: every selected case, each with its own legacy model from golden/models unless
    ``model_path`` (a .pkl or a converted DIR) is given; then only the cases captured from that model
    (matched by sha256) are run."""
    paths = select_cases(golden)
    loaded: dict[Path, tuple] = {}
    runs = []
    explicit = None
    if model_path is not None:
        model_path = Path(model_path)
        model, config = load_port_model(model_path, device)
        explicit = (model, config, _model_sha(model_path, config))
    for p in paths:
        case = load_case(p)
        if explicit is not None:
            model, config, sha = explicit
            if sha is not None and sha != case.meta["model"]["sha256"]:
                continue
        elif case.error:
            model, config = None, {}
        else:
            mp = case.model_path
            if mp not in loaded:
                if not mp.is_file():
                    raise GoldenError(f"{mp}: model of case {case.name} is missing; restore the golden store (`port golden verify`)")
                loaded[mp] = load_port_model(mp, device)
            model, config = loaded[mp]
        if progress:
            progress(case.name)
        runs.append(check_case(case, model, config, device, batch_size))
    if not runs:
        raise GoldenError(f"{golden}: no golden case was captured from {model_path}; pass that model's cases or omit --model")
    return runs


def reports_json(runs: list[CaseRun]) -> str:
    """Machine-readable verdicts (every stage's statistics), for CI logs."""
    out = []
    for r in runs:
        out.append(
            {
                "case": r.report.case,
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
                        "location": s.location(),
                        "message": s.message(),
                    }
                    for s in r.report.stages
                ],
            }
        )
    return json.dumps(out, indent=1)
