"""Legacy vs legacy, per tensor (porting.families.orcahello.capturediff; `tools/regenerate_golden --compare`).

The expected numbers are the committed captures' own: golden/captures/amd-epyc-zen4/README.md measured the
Intel-vs-Zen 4 differences of every case (max |diff| and where) when that capture was made.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import shutil

import pytest

from conftest import COMMITTED, ROOT
from porting.golden import load_case
from porting.families.orcahello.capturediff import diff_cases, format_diff

AMD = COMMITTED / "captures" / "amd-epyc-zen4"


def _pair(name):
    return load_case(COMMITTED / "cases" / f"{name}.json"), load_case(AMD / "cases" / f"{name}.json")


def _regen():
    loader = importlib.machinery.SourceFileLoader("regenerate_golden", str(ROOT / "tools" / "regenerate_golden"))
    spec = importlib.util.spec_from_loader("regenerate_golden", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# README of the Zen 4 capture: B.mel_db max |diff| and (window, mel bin, frame), Y.logits max |diff|
ZEN4_README = {
    "rn18__pcm16_8k_2500ms": (1.7e-2, (0, 203, 43), 1.7e-5),
    "rn18__pcm16_16k_short": (7.9e-3, (0, 237, 37), 5.7e-6),
    "rn18__orca60_pcm16_48k": (1.4e-4, (35, 237, 4), 2.9e-6),
    "sq11-norm__pcm16_16k_short": (7.9e-3, (0, 237, 37), 1.5e-5),
}


@pytest.mark.parametrize("name", sorted(ZEN4_README))
def test_diff_reproduces_the_zen4_readme(name):
    mel, (w, row, col), logits = ZEN4_README[name]
    got = {d.stage: d for d in diff_cases(*_pair(name))}
    for s in ("A.segment", "A.downmix", "A.waveform", "agg.local_predictions", "agg.global_prediction"):
        assert got[s].identical, s
    b = got["B.mel_db"]
    assert b.tier == "portable" and not b.strict.passed
    assert abs(b.strict.max_abs - mel) <= 0.05 * mel
    assert b.strict.worst.window == w and b.strict.worst.where[1:] == (row, col)
    assert abs(got["Y.logits"].strict.max_abs - logits) <= 0.05 * logits and got["Y.logits"].tier == "strict"
    text = "\n".join(format_diff(name, list(got.values())))
    assert f"B.mel_db: max|diff| {b.strict.max_abs:.3g} at window {w} ({w}-{w + 2} s), mel bin {row}, frame {col}" in text
    assert "-> portable tier (" in text and "FFT error model" in text
    assert text.endswith("passes the portable tier only")


def test_identical_captures_and_a_real_bug():
    intel, _ = _pair("rn18__pcm16_16k_short")
    same = diff_cases(intel, intel)
    assert all(d.identical for d in same) and format_diff("x", same)[-1].endswith("every difference passes the strict tier")
    _, amd = _pair("rn18__pcm16_16k_short")
    biased = dict(amd.tensors)
    biased["B.mel_db"] = amd.tensors["B.mel_db"].clone()
    biased["B.mel_db"][:, :, 40, :] += 1e-3  # one mel band 1e-3 dB high: a bug, not FFT rounding
    got = {d.stage: d for d in diff_cases(intel, dataclasses.replace(amd, tensors=biased))}
    assert got["B.mel_db"].tier == "neither" and "passes neither tier" in got["B.mel_db"].line()
    assert format_diff("x", list(got.values()))[-1].endswith("1 tensor(s) pass neither tier")


def test_stored_windows_that_moved_are_compared_on_the_common_ones():
    intel, amd = _pair("rn18__orca60_pcm16_48k")
    keep = [0, 2, 3]  # the other capture stored fewer windows
    fewer = {k: (v[keep] if k in ("A.segment", "A.downmix", "A.waveform", "B.mel_db", "C.padded", "X.model_input",
                                   "Y.logits", "Y.probs") else v) for k, v in amd.tensors.items()}
    other = dataclasses.replace(amd, tensors=fewer, meta={**amd.meta, "stored_windows": [amd.stored_windows[i] for i in keep]})
    got = {d.stage: d for d in diff_cases(intel, other)}
    assert [w.window for w in got["B.mel_db"].strict.windows] == [int(intel.stored_windows[i]) for i in keep]


def test_regenerate_compare_prints_per_tensor_lines(tmp_path):
    regen = _regen()
    new = tmp_path / "new"
    (new / "cases").mkdir(parents=True)
    for name in ("rn18__pcm16_8k_2500ms", "rn18__too_short_1500ms"):
        for p in AMD.glob(f"cases/{name}.*"):
            shutil.copy(p, new / "cases")
    lines = regen.compare_case("rn18__pcm16_8k_2500ms", new, COMMITTED)
    text = "\n".join(lines)
    assert "rn18__pcm16_8k_2500ms.safetensors: DIFFERS" in text
    assert "identical: A.segment, A.downmix, A.waveform" in text
    assert "B.mel_db: max|diff| 0.0168 at window 0 (0-2 s), mel bin 203, frame 43" in text
    assert "Y.logits: max|diff| 1.72e-05 at window 0 (0-2 s), class 1 -> strict tier" in text
    crash = regen.compare_case("rn18__too_short_1500ms", new, COMMITTED)
    assert not [line for line in crash if "per tensor" in line]  # JSON differs only in provenance: no tensor block
