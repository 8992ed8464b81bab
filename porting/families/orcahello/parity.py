"""OrcaHello's parity run: the port on a golden case's recording, every stage compared (``port parity``, the
pytest plugin). The case format, captures and tiers are the engine's (``porting.golden``, ``porting.parity``).

What is checked is what ``port detect`` ships: the ``Detector`` of the chosen backend (the pad-folded
eager model, or ``detector.onnx`` in onnxruntime) runs the model stage; the frontend is the stage graph
(``porting.families.orcahello.graph``). Two views of each case:

* **chained**: the port end to end from the recording, as a user runs it (A -> B -> C -> X -> Y for the
  stored windows; every window for ``all.*``, through ``Detector.run``; then the per-second aggregation);
* **isolated** (``<stage> (golden input)``): each of B, C, X, Y fed the *golden* output of the stage
  before, so a failure points at the stage that introduced it rather than everything downstream.

Each case may have several captures (``golden/cases`` and ``golden/captures/<machine>/cases``). The port
runs once per case and is compared with every capture, each in its own tier: strict where the capture's
numerics fingerprint matches this machine's, portable otherwise (``porting.parity.contract``).

Stage functions are looked up on their modules at call time (``windows.downmix`` ...), so a test can
perturb one stage in a subprocess and check that the report names it.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import GoldenError, PortingError
from ...golden import Capture, Case
from ...parity.compare import ATOL, ParityReport, StageResult, compare, compare_exact, compare_rule
from ...parity.contract import GOLDEN_INPUT, REGENERATE, STRICT, Tier
from .contract import Context
from ...parity.run import CaseRun
from ...parity.run import worst_arrays as _worst_arrays

CHAINED = ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input", "Y.logits", "Y.probs")
ALL = ("all.logits", "all.probs", "all.confidence")
ISOLATED = {  # stage -> the golden stage it is fed
    "B.mel_db": "A.waveform",
    "C.padded": "B.mel_db",
    "X.model_input": "C.padded",
    "Y.logits": "X.model_input",
    "Y.probs": "X.model_input",
}
DRAWN = ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input")  # what a report draws


def _modules():
    """The port's stage modules, imported lazily: `port golden verify` needs none of them.

    ``import_module`` by full name: ``porting.convert`` / ``porting.detect`` as attributes of the
    package are the public *functions* of the same names (porting/__init__.py), not the modules; and a test can
    perturb one stage function on its module.
    """
    names = ("io.decode", "families.orcahello.frontend.windows", "dsp.mel", "families.orcahello.frontend.pad",
             "families.orcahello.frontend.normalize", "families.orcahello.detect", "families.orcahello.aggregate")
    return tuple(importlib.import_module(f"porting.{n}") for n in names)


def load_detector(model_path: Path, device: str, backend: str = "torch", batch_size: int = 16):
    """The ``Detector`` that ``port detect`` would run for ``model_path`` and ``backend``."""
    *_, detect, _ = _modules()
    return detect.Detector.load(model_path, device=device, backend=backend, batch_size=batch_size)


def port_outputs(case: Case, det) -> dict[str, object]:
    """Every chained stage the port computes for ``case``'s recording (the same for every capture)."""
    decode, windows, mel, pad, normalize, _, agg = _modules()
    info = decode.probe(case.audio_path)
    g = det.graph
    fe = g.frontend
    sr = info.sample_rate
    starts = [windows.pydub_frame(w, sr) for w in case.stored_windows]
    out: dict[str, object] = {}
    out["A.segment"] = seg = decode.read_segments(info, starts, fe.windows.window_s * sr)
    out["A.downmix"] = dm = windows.downmix(seg)
    out["A.waveform"] = wave = windows.resample(dm, sr)
    dev = det.device
    out["B.mel_db"] = spec = mel.mel_db(wave.to(dev), fe.mel).cpu()
    out["C.padded"] = padded = pad.crop_pad(spec.to(dev), fe.pad).cpu()
    out["X.model_input"] = x = g.normalized(padded.to(dev)).cpu()
    out["Y.logits"] = logits = det.logits_of(x).cpu()
    out["Y.probs"] = det.activate(logits)
    res = det.run(case.audio_path)  # every window, exactly as `port detect` runs them
    out["all.logits"], out["all.probs"], out["all.confidence"] = res.logits, res.probs, res.confidence
    out["aggregate"] = res.table.to_dict()
    return out


def isolated_outputs(case: Case, det) -> dict[str, object]:
    """Each of B, C, X, Y fed this capture's golden input."""
    _, _, mel, pad, _, _, _ = _modules()
    g, t, dev = det.graph, case.tensors, det.device
    out: dict[str, object] = {}
    out["B.mel_db" + GOLDEN_INPUT] = mel.mel_db(t["A.waveform"].to(dev), g.frontend.mel).cpu()
    out["C.padded" + GOLDEN_INPUT] = pad.crop_pad(t["B.mel_db"].to(dev), g.frontend.pad).cpu()
    out["X.model_input" + GOLDEN_INPUT] = g.normalized(t["C.padded"].to(dev)).cpu()
    logits = det.logits_of(t["X.model_input"]).cpu()
    out["Y.logits" + GOLDEN_INPUT], out["Y.probs" + GOLDEN_INPUT] = logits, det.activate(logits)
    return out


def _aggregate_stages(case: Case, result: dict, tier: str) -> list[StageResult]:
    """Production's per-second table and decisions (README §5): confidences 1e-5, decisions exact."""
    meta = case.meta
    legacy_rows = [r["confidence"] for r in meta["submission"]]
    port_rows = [r["confidence"] for r in result["submission"]]
    stages = [compare_rule("agg.confidence", np.array(legacy_rows), np.array(port_rows), tier)]
    borderline = [abs(c - 0.5) <= ATOL for c in legacy_rows]
    stages.append(compare_exact("agg.local_predictions", meta["local_predictions"], result["local_predictions"], borderline))
    stages.append(compare_exact("agg.global_prediction", [meta["global_prediction"]], [result["global_prediction"]]))
    # 100 x a mean of confidences: compared in confidence units, where the 1e-5 contract is stated.
    stages.append(compare_rule("agg.global_confidence/100", np.array([meta["global_confidence"] / 100.0]),
                               np.array([result["global_confidence"] / 100.0]), tier))
    return stages

def worst_arrays(stages: list[StageResult], expected: dict, actual: dict, stored: Sequence[int]) -> dict:
    """``porting.parity.run.worst_arrays`` over OrcaHello's drawable stages (``DRAWN``)."""
    return _worst_arrays(stages, expected, actual, stored, DRAWN)


def context_of(case: Case, det) -> Context:
    """What the portable tier's error model needs about ``case`` (porting.dsp.errormodel)."""
    g = det.graph
    return Context(case.tensors["A.waveform"], g.frontend, g.normalize)


def compare_case(case: Case, actual: dict, det, tier: Tier, capture: Capture | None = None) -> CaseRun:
    """Compare the port's outputs for ``case`` with one capture of it, in ``tier``."""
    actual = {**actual, **isolated_outputs(case, det)}
    g = case.tensors
    stored = case.stored_windows
    ctx = context_of(case, det)
    stages = compare(g, actual, stored, tier.name, ctx, stages=CHAINED)
    for stage in ISOLATED:
        stages.append(compare_rule(stage + GOLDEN_INPUT, g[stage], actual[stage + GOLDEN_INPUT], tier.name, ctx, stored))
    stages += compare(g, actual, tier=tier.name, stages=ALL)
    stages += _aggregate_stages(case, actual["aggregate"], tier.name)
    note = tier.line() + ("" if tier.name == STRICT else f"; {REGENERATE}")
    report = ParityReport(case.name, str(det.device), stages, note=note, capture=capture.name if capture else "golden")
    conf = (g["all.confidence"].numpy().astype(np.float64), actual["all.confidence"].numpy().astype(np.float64))
    return CaseRun(report, worst_arrays(stages, g, actual, stored), conf, tier,
                   capture.name if capture else "golden", capture.fingerprint if capture else None)


def check_case(case: Case, det, tier: Tier, capture: Capture | None = None) -> CaseRun:
    """Run the port on ``case``'s recording and compare every stage with the golden, in ``tier``."""
    if case.error:
        return _check_refusal(case, str(det.device) if det is not None else "cpu", tier, capture)
    try:
        actual = port_outputs(case, det)
    except PortingError as err:  # the port refused a recording legacy scored: a failure of this case
        note = f"legacy scored {case.meta.get('n_windows')} windows; port raised {type(err).__name__}: {err}"
        stage = StageResult("port", (), 0.0, False, math.inf, math.inf, math.inf, math.inf, None, [], note)
        name = capture.name if capture else "golden"
        device = str(det.device) if det is not None else "cpu"
        return CaseRun(ParityReport(case.name, device, [stage], capture=name), tier=tier, capture=name,
                       golden_fingerprint=capture.fingerprint if capture else None)
    return compare_case(case, actual, det, tier, capture)


def _check_refusal(case: Case, device: str, tier: Tier, capture: Capture | None = None) -> CaseRun:
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
    name = capture.name if capture else "golden"
    return CaseRun(ParityReport(case.name, device, [stage], capture=name), tier=tier, capture=name,
                   golden_fingerprint=capture.fingerprint if capture else None)


def captured_from(case: Case, model_path: Path) -> bool:
    """``port parity --model``: the case's pickle sha256 against the model's (a pickle's own, or the one a converted
    DIR's config.json records); True where the model's is unknown."""
    from ...golden import file_digest
    from ...io import files

    try:
        if model_path.is_file():
            sha = file_digest(model_path)["sha256"]
        else:
            source = files.read_json(model_path / "config.json", "the model config").get("source") or {}
            sha = source.get("sha256") if isinstance(source, dict) else None
    except (PortingError, AttributeError):
        return True  # the detector's loader says what is wrong, in one line
    return sha is None or sha == case.meta["model"]["sha256"]


def check_captures(captures: list, model_path: Path | None, device: str, batch_size: int, backend: str,
                   cache: dict) -> list[CaseRun]:
    """One case, every capture of it (``Family.check_case``): with its own legacy model from golden/models unless
    ``model_path`` (a .pkl or a converted DIR) is given. The port runs once; each capture is compared in its tier.
    ``backend`` is ``port detect``'s (torch: the pad-folded eager model; onnx: ``detector.onnx`` of a converted DIR;
    winograd: ``porting.families.orcahello.winograd``, pad-folded)."""
    if backend not in ("torch", "auto", "winograd") and model_path is None:
        raise GoldenError(f"--backend {backend}: the golden models are pickles; pass --model DIR (converted with "
                          "`port convert --export onnx`) to check that backend")
    first = captures[0][1]
    if first.error:
        return [_check_refusal(c, device, tier, cap) for cap, c, tier in captures]
    mp = model_path or first.model_path
    if mp not in cache:
        if model_path is None and not mp.is_file():
            raise GoldenError(f"{mp}: model of case {first.name} is missing; restore the golden store (`port golden verify`)")
        cache[mp] = load_detector(mp, device, backend, batch_size)
    det = cache[mp]
    try:
        actual = port_outputs(first, det)
    except PortingError:
        return [check_case(c, det, tier, cap) for cap, c, tier in captures]
    return [compare_case(c, actual, det, tier, cap) for cap, c, tier in captures]
