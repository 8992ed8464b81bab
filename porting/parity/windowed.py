"""The parity steps every window-scoring family repeats (HF, PANNs, librosa-mel CNNs): the stored windows read as
``port detect`` reads them, one stored window's stages against the golden's, the portable tier's first-order
prediction, every window's logits and probabilities, and the window plan.

Why a prediction: on another CPU a chained frontend stage ``F`` legitimately differs from the golden one (FFT or
conv summation order, held to the family's derived error model), and the model amplifies that difference past the
row rule, which bounds the model's own rounding only. The original fed the same ``F`` would move the same way, to
first order ``J dF`` (forward-mode derivative of the float64 model at the golden input). So each chained stage after
``F`` is held to its own rule around ``golden + J dF``: what is left is the port's own rounding plus a second-order
term; a model bug moves the output off the prediction and still fails. Probabilities, decisions and every
golden-input stage are compared with the golden directly. The families' docstrings carry their measurements.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from .compare import StageResult, compare_rule, missing_stage
from .contract import GOLDEN_INPUT

PROPAGATED = "portable tier: vs golden + J*dF, the golden's first-order response to this machine's F difference"


def chained_windows(case, rate: int, window_samples: int, hop_samples: int, batch_size: int) -> dict:
    """``{stored window: waveform [1, N]}`` read exactly as ``port detect`` reads the recording (the detector's plan
    checked against the golden's first: a different plan is a ``GoldenError``, not a stage failure)."""
    import torch

    from ..errors import GoldenError
    from ..io.stream import iter_windows

    meta_w = case.meta["windows"]
    if (window_samples, hop_samples) != (meta_w["window_samples"], meta_w["hop_samples"]):
        raise GoldenError(f"{case.name}: window plan {window_samples}/{hop_samples} samples differs from the "
                          f"golden's {meta_w['window_samples']}/{meta_w['hop_samples']}")
    wanted, out, index = set(case.stored_windows), {}, 0
    for batch in iter_windows(case.audio_path, rate, window_samples, hop_samples, batch_size):
        for row in range(batch.waveforms.shape[0]):
            if index in wanted:
                out[index] = torch.from_numpy(batch.waveforms[row:row + 1].copy())
            index += 1
    return out


def noted(r: StageResult, text: str) -> StageResult:
    return dataclasses.replace(r, note=f"{r.note}; {text}" if r.note else text)


def differs(f_gold, f_port) -> bool:
    """Whether the port's frontend output differs from the golden one (same shape): something to propagate."""
    import torch

    return (f_gold is not None and f_port is not None and f_port.shape == f_gold.shape
            and not torch.equal(f_port.float(), f_gold.float()))


def first_order(stages: Callable, f_gold, f_port, gold: dict, names: list[str]) -> dict:
    """``{stage: golden + J(f_gold) . (f_port - f_gold)}`` for ``names``, in float64 through ``stages`` (a float64
    model's ``f -> {stage: tensor}``); empty when the port's ``F`` equals the golden one (nothing to propagate)."""
    import torch
    from torch.func import jvp

    if not differs(f_gold, f_port):
        return {}
    f0 = f_gold.double()
    with torch.inference_mode(False), torch.no_grad():
        _, tangent = jvp(lambda f: tuple(stages(f)[k] for k in names), (f0,), (f_port.double().cpu() - f0,))
    return {k: (gold[k].double() + t).float() for k, t in zip(names, tangent)}


def compare_window(gold: dict, actual: dict, isolated: dict, shifted: dict, tier: str, window: int, family: str,
                   ctx=None, ctx_isolated=None, chained_only: tuple[str, ...] = ()) -> list[StageResult]:
    """Every golden stage of one stored window: the chained port's (around its prediction where ``shifted`` has
    one), then the same stage fed golden inputs (``isolated``; not for ``chained_only`` stages)."""
    out = []
    for name, ref in gold.items():
        got = actual.get(name)
        if got is None:
            out.append(missing_stage(name, ref.shape, tier, family))
            continue
        if name in shifted:
            out.append(noted(compare_rule(name, shifted[name], got, tier, ctx, [window], family), PROPAGATED))
        else:
            out.append(compare_rule(name, ref, got, tier, ctx, [window], family))
        if name in isolated and name not in chained_only:
            out.append(compare_rule(name + GOLDEN_INPUT, ref, isolated[name], tier, ctx_isolated, [window], family))
    return out


def compare_all(expected: dict, got: dict, logit_shift: dict, tier: str, family: str) -> list[StageResult]:
    """``all.logits`` / ``all.probs`` of every window; the logits of the windows in ``logit_shift`` (window ->
    ``J dF`` of its logits) around their prediction, the others as captured."""
    out = []
    for name, actual in got.items():
        if name not in expected:
            continue
        want = expected[name]
        if name == "all.logits" and logit_shift and want.shape[0] == actual.shape[0]:
            want = want.double().clone()
            for i, dz in logit_shift.items():
                want[i] += dz[0]
            r = compare_rule(name, want.float(), actual, tier, None, None, family)
            out.append(noted(r, f"{PROPAGATED} (windows {sorted(logit_shift)}; the others as captured)"))
            continue
        out.append(compare_rule(name, want, actual, tier, None, None, family))
    return out


def compare_plan(run, windows_meta: dict, tier: str, family: str) -> list[StageResult]:
    """The window plan (starts, partial) of a detector run against the golden's: a failed ``windows`` row if not equal."""
    plan = {"starts": run.starts, "partial": run.partial}
    gold_plan = {"starts": windows_meta["starts"], "partial": windows_meta["partial"]}
    if plan == gold_plan:
        return []
    return [StageResult("windows", (len(windows_meta["starts"]),), 0.0, False, 1.0, 1.0, 1.0, 0.0, None, [],
                        f"window plan {plan} != golden {gold_plan}", tier=tier, family=family)]


def check_each(captures: list, model_path, backend: str, family: str, check: Callable) -> list:
    """``Family.check_case``'s loop: each capture of one case (``(capture, case, tier)``; crash cases are ``port
    detect``'s, skipped) through ``check(case, tier, label) -> (ParityReport, probs for the report or None)``."""
    from ..errors import GoldenError
    from .run import CaseRun

    if backend != "torch" and model_path is None:
        raise GoldenError(f"--backend {backend}: pass --model DIR (converted with `port convert --export onnx`)")
    runs = []
    for cap, case, tier in captures:
        if case.error:
            continue
        label = f"golden/{case.root.name}" if cap.name == "golden" else cap.name
        report, probs = check(case, tier, label)
        runs.append(CaseRun(report, tier=tier, capture=label, golden_fingerprint=cap.fingerprint, family=family,
                            probs=probs))
    return runs
