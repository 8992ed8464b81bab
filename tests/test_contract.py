"""The parity contract itself: fingerprints, tiers, the FFT error model and the logits row rule.

The portable tier's error model is validated both ways: it must accept what the legacy stack itself does
across CPUs (the Intel capture golden/cases vs the AMD capture golden/captures/amd-epyc-zen4, every public
case) and reject real bugs (a filterbank laid out for 20 kHz, an STFT one hop late, a 1e-3 dB bias on one
mel band, a dropped normalization, logits or probabilities off by more than the contract). Those two captures
are the committed store's (``COMMITTED``); when the tests run against another store (``--golden-dir`` /
``$PORTING_GOLDEN_DIR``: a capture regenerated on this machine), its cases are a third CPU's legacy run and
the acceptance is checked against both committed captures as well.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import COMMITTED, GOLDEN, golden_cases
from porting.families.orcahello.frontend.config import FrontendConfig, MelConfig
from porting.dsp.mel import mel_db
from porting.golden import load_case
from porting.parity.compare import compare, compare_rule
from porting.families.orcahello.contract import Context
from porting.parity.contract import PORTABLE, STRICT, choose_tier, rule_for
from porting.parity.fingerprint import load_fingerprint, machine_fingerprint, match

INTEL = COMMITTED  # golden/cases: the Intel capture
AMD = COMMITTED / "captures" / "amd-epyc-zen4"
CASES = golden_cases(store=COMMITTED)
# Legacy-vs-legacy pairs of captures (reference, other): the committed two, and the store under test against
# each of them when it is not the committed one.
PAIRS = [("intel", "amd-epyc-zen4")] + ([("intel", "golden-dir"), ("amd-epyc-zen4", "golden-dir")]
                                        if GOLDEN.resolve() != COMMITTED.resolve() else [])
CAPTURE_DIRS = {"intel": INTEL, "amd-epyc-zen4": AMD, "golden-dir": GOLDEN}
FFT_STAGES = ["B.mel_db", "C.padded", "X.model_input"]
MODEL_STAGES = ["Y.logits", "Y.probs", "all.logits", "all.probs", "all.confidence"]


@functools.lru_cache(maxsize=None)
def _pair(name: str):
    return _load(INTEL, name), _load(AMD, name)


@functools.lru_cache(maxsize=None)
def _load(capture: Path, name: str):
    return load_case(capture / "cases" / f"{name}.json")


def _ctx(case) -> Context:
    return Context(case.tensors["A.waveform"], FrontendConfig(), case.meta["model"]["normalize"])


def _verdicts(case, actual, stages, tier=PORTABLE):
    return {r.stage: r for r in compare(case.tensors, actual, case.stored_windows, tier, _ctx(case), stages=stages)}


# ------------------------------------------------------------------------------------ fingerprints


def test_both_captures_carry_a_fingerprint_and_differ():
    intel, amd = load_fingerprint(INTEL), load_fingerprint(AMD)
    assert intel["cpu"]["vendor"] == "GenuineIntel" and intel["recorded"] is False
    assert amd["cpu"]["vendor"] == "AuthenticAMD" and (amd["cpu"]["family"], amd["cpu"]["model"]) == (25, 17)
    same, why = match(intel, amd)
    assert not same and "cpu.vendor" in why


def test_match_ignores_fields_a_golden_did_not_record_and_says_so():
    me = machine_fingerprint()
    partial = json.loads(json.dumps(me))
    partial["cpu"]["model"] = None
    same, why = match(me, partial)
    assert same and "cpu.model not recorded" in why
    other = json.loads(json.dumps(me))
    other["isa"] = "NOT-" + str(me["isa"])
    assert match(me, other)[0] is False
    assert choose_tier(me, me).name == STRICT and choose_tier(other, me).name == PORTABLE
    assert choose_tier(None, me).name == PORTABLE


def test_versions_do_not_decide_the_tier():
    """torch 2.9.1 and 2.13.0 give the same bits on one CPU (captures README); the CPU decides."""
    me = machine_fingerprint()
    older = {**json.loads(json.dumps(me)), "torch": "2.9.1+cu128", "fft_version": "2024.0", "numpy": "1.26.4"}
    assert match(me, older)[0]


# ------------------------------------------------------------------------------------ the table


def test_table_keeps_integer_stages_bitwise_and_fft_stages_modelled():
    for tier in (STRICT, PORTABLE):
        for stage in ("A.segment", "A.downmix", "A.waveform"):
            assert rule_for(stage, tier).name.startswith("exact")
        assert rule_for("Y.probs", tier).name == rule_for("all.confidence", tier).name == "abs 1e-05"
        assert rule_for("all.logits", tier).name.startswith("logits")
        assert rule_for("C.padded (golden input)", tier).name == "abs 1e-05"  # crop/pad is exact everywhere
    assert [rule_for(s, STRICT).name for s in FFT_STAGES] == ["abs 1e-05"] * 3
    assert all(rule_for(s, PORTABLE).name.startswith("FFT error model") for s in FFT_STAGES)


# ------------------------------------------------------------------------------------ accepts legacy's own spread


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-vs-{b}" for a, b in PAIRS])
@pytest.mark.parametrize("name", CASES)
def test_portable_tier_accepts_the_legacy_stack_across_cpus(name, pair):
    """Two captures of the same legacy run on two CPUs: every stage passes the portable tier."""
    ref_dir, other_dir = (CAPTURE_DIRS[p] for p in pair)
    if not (other_dir / "cases" / f"{name}.json").is_file():
        pytest.fail(f"{other_dir} has no case {name}: regenerate every public case (reference/README.md)")
    ref, other = _load(ref_dir, name), _load(other_dir, name)
    for s in ("A.segment", "A.downmix", "A.waveform"):
        assert torch.equal(ref.tensors[s], other.tensors[s])
    got = _verdicts(ref, other.tensors, FFT_STAGES + MODEL_STAGES)
    bad = [r.message() for r in got.values() if not r.passed]
    assert not bad, bad
    assert ref.meta["local_predictions"] == other.meta["local_predictions"]
    assert ref.meta["global_prediction"] == other.meta["global_prediction"]


def test_strict_tier_rejects_the_same_spread():
    """The spread the portable tier accepts is far outside 1e-5: the tiers really differ."""
    intel, amd = _pair("rn18__pcm16_8k_2500ms")
    strict = _verdicts(intel, amd.tensors, ["B.mel_db"], STRICT)["B.mel_db"]
    portable = _verdicts(intel, amd.tensors, ["B.mel_db"], PORTABLE)["B.mel_db"]
    assert not strict.passed and strict.max_abs > 0.01
    assert portable.passed and portable.max_abs == strict.max_abs and portable.margin < 1


# ------------------------------------------------------------------------------------ rejects bugs


@pytest.mark.parametrize("name", ["rn18__orca60_pcm16_48k", "rn18__pcm16_8k_2500ms", "rn18__stereo_pcm24_44k1"])
def test_portable_tier_rejects_a_filterbank_laid_out_for_20k(name):
    case, _ = _pair(name)
    wrong = mel_db(case.tensors["A.waveform"], MelConfig(mel_sample_rate=20000))
    assert not _verdicts(case, {"B.mel_db": wrong}, ["B.mel_db"])["B.mel_db"].passed


@pytest.mark.parametrize("name", ["rn18__orca60_pcm16_48k", "rn18__pcm16_16k_short", "rn18__float32_96k"])
def test_portable_tier_rejects_an_stft_one_hop_late(name):
    case, _ = _pair(name)
    w = case.tensors["A.waveform"]
    late = torch.nn.functional.pad(w, (256, 0))[:, : w.shape[1]]  # every frame one hop (256 samples) late
    assert not _verdicts(case, {"B.mel_db": mel_db(late)}, ["B.mel_db"])["B.mel_db"].passed


@pytest.mark.parametrize("name", CASES)
def test_portable_tier_rejects_a_1e3_db_bias_on_one_mel_band(name):
    """On the other CPU's capture (so the rest is the legitimate spread), one mel band 1e-3 dB high."""
    intel, amd = _pair(name)
    biased = amd.tensors["B.mel_db"].clone()
    biased[:, :, 40, :] += 1e-3  # band 40 (~1 kHz) of every stored window
    r = _verdicts(intel, {"B.mel_db": biased}, ["B.mel_db"])["B.mel_db"]
    assert not r.passed and r.worst.where[1] == 40, r.message()


def test_portable_tier_rejects_a_dropped_normalization():
    intel, amd = _pair("sq11-norm__orca60_pcm16_48k")
    r = _verdicts(intel, {"X.model_input": amd.tensors["C.padded"]}, ["X.model_input"])["X.model_input"]
    assert not r.passed


def test_both_tiers_reject_logits_and_probabilities_beyond_the_contract():
    intel, amd = _pair("rn18__orca60_pcm16_48k")
    logits = amd.tensors["all.logits"].clone()
    scale = logits.abs().amax(dim=-1)
    i = int(torch.argmin(scale))
    logits[i, 0] += 1e-5 + 2e-5 * float(scale[i])  # beyond 1e-5 + 1e-5 * max|row| on one window
    probs = amd.tensors["all.probs"].clone()
    probs[3, 1] += 2e-5
    for tier in (STRICT, PORTABLE):
        got = _verdicts(intel, {"all.logits": logits, "all.probs": probs}, ["all.logits", "all.probs"], tier)
        assert not got["all.logits"].passed and got["all.logits"].worst.window == i
        assert not got["all.probs"].passed and got["all.probs"].worst.window == 3


# ------------------------------------------------------------------------------------ the row rule


def test_row_rule_accepts_rounding_on_a_near_zero_logit_that_polygraphy_fails():
    """Measured (held-out squeezenet in onnxruntime): -0.068760 vs -0.068746 beside a logit of 7.5."""
    ref = np.array([[-0.068760, 7.5]])
    got = np.array([[-0.068746, 7.5]])
    d = np.abs(got - ref)
    assert np.any(d > 1e-5 + 1e-5 * np.abs(ref))  # Polygraphy's elementwise rule fails it
    r = compare_rule("all.logits", ref, got, PORTABLE)
    assert r.passed and r.max_rel > 1e-5 and r.max_ulps > 1
    worse = np.array([[-0.068760 + 2e-4, 7.5]])  # 2e-4 > 1e-5 + 1e-5 * 7.5
    assert not compare_rule("all.logits", ref, worse, PORTABLE).passed


# ------------------------------------------------------------------------------------ end to end, simulated machines


@pytest.fixture(scope="module")
def foreign():
    """A running fingerprint that matches no capture (another vendor and ISA)."""
    fp = machine_fingerprint()
    fp["cpu"] = {**fp["cpu"], "vendor": "SimulatedCPU", "family": 99, "model": 99}
    fp["isa"] = "SIMULATED"
    return fp


@pytest.mark.parity
def test_port_parity_on_a_foreign_machine_runs_the_portable_tier_end_to_end(foreign):
    from porting.parity.run import run_parity

    runs = run_parity(GOLDEN / "cases" / "sq11-norm__pcm16_16k_short.json", running=foreign)
    assert [r.tier.name for r in runs] == [PORTABLE]
    stages = {s.stage: s for s in runs[0].report.stages}
    assert stages["B.mel_db"].rule.startswith("FFT error model") and stages["A.waveform"].rule.startswith("exact")
    assert stages["all.logits"].rule.startswith("logits")
    assert runs[0].report.passed, runs[0].report.summary()
    assert "regenerate the goldens" in runs[0].report.note


@pytest.mark.parity
def test_a_capture_with_this_machines_fingerprint_is_held_to_the_strict_tier(tmp_path):
    """A capture folder whose fingerprint is this machine's gets the strict tier (1e-5 on every stage)."""
    from porting.parity.run import run_parity

    store = tmp_path / "golden"
    shutil.copytree(COMMITTED / "models", store / "models")
    shutil.copytree(COMMITTED / "audio", store / "audio")
    (store / "cases").mkdir()
    for ext in ("json", "safetensors"):
        shutil.copy(INTEL / "cases" / f"rn18__pcm16_16k_short.{ext}", store / "cases")
    cap = store / "captures" / "here" / "cases"
    cap.mkdir(parents=True)
    for ext in ("json", "safetensors"):
        shutil.copy(AMD / "cases" / f"rn18__pcm16_16k_short.{ext}", cap)
    (cap.parent / "fingerprint.json").write_text(json.dumps(machine_fingerprint()))
    runs = {r.capture: r for r in run_parity(store)}
    assert set(runs) == {"golden", "here"}
    assert runs["here"].tier.name == STRICT and runs["golden"].tier.name == PORTABLE  # golden/ has no fingerprint here
    stages = {s.stage: s for s in runs["here"].report.stages}
    assert stages["B.mel_db"].rule == "abs 1e-05" and stages["B.mel_db"].tier == STRICT
    assert runs["golden"].report.passed, runs["golden"].report.summary()
