"""porting.parity.compare / report: statistics, locations, messages, the report's files.

Port outputs are simulated by perturbing golden tensors at known places, so every expected location
and difference is known independently of the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import GOLDEN
from porting.golden import load_case
from porting.parity import compare as compare_fn
from porting.parity.compare import ATOL, ParityReport, compare_exact, compare_stage
from porting.parity.report import format_table, write_report
from porting.parity.run import CaseRun

ORCA = GOLDEN / "cases" / "rn18__orca60_pcm16_48k.json"  # stored windows [0, 1, 2, 35, 57, 58]


@pytest.fixture(scope="module")
def orca():
    return load_case(ORCA)


def _bump(t: torch.Tensor, index: tuple, delta: float) -> tuple[torch.Tensor, float]:
    """A copy of t with one element moved by delta, and the float32 difference that really results."""
    out = t.clone()
    out[index] = out[index] + delta
    return out, abs(float(out[index]) - float(t[index]))


def test_identical_outputs_pass_with_zero_difference(orca):
    results = compare_fn(orca.tensors, {k: v.clone() for k, v in orca.tensors.items()}, orca.stored_windows)
    assert {r.stage for r in results} == set(orca.tensors)
    for r in results:
        assert r.passed and r.max_abs == 0.0 and r.mean_abs == 0.0 and r.max_rel == 0.0, r.message()


def test_mel_perturbation_is_located_by_window_bin_and_frame(orca):
    g = orca.tensors["B.mel_db"]
    port, real = _bump(g, (3, 0, 12, 80), 3e-4)  # row 3 = window 35
    r = compare_stage("B.mel_db", g, port, orca.stored_windows)
    assert not r.passed
    assert r.max_abs == pytest.approx(real, rel=0, abs=0)
    assert r.worst.window == 35 and r.worst.where == (0, 12, 80)
    assert r.n_failed == 1 and [w.window for w in r.windows if not w.passed] == [35]
    assert r.worst.expected == float(g[3, 0, 12, 80]) and r.worst.actual == float(port[3, 0, 12, 80])
    msg = r.message()
    for part in ("B.mel_db: FAIL", "window 35 (35-37 s)", "mel bin 12", "frame 80", "1 of 6 windows fail"):
        assert part in msg, msg
    n = g.numel()
    assert r.mean_abs == pytest.approx(real / n, rel=1e-12)
    assert r.p99_abs == 0.0  # one element in 964,608
    assert r.max_rel == pytest.approx(real / abs(float(g[3, 0, 12, 80])), rel=1e-12)


def test_tolerance_is_inclusive_and_absolute(orca):
    g = orca.tensors["Y.logits"]
    port, real = _bump(g, (1, 1), 5e-6)
    assert real <= ATOL
    r = compare_stage("Y.logits", g, port, orca.stored_windows)
    assert r.passed and r.max_abs == real and r.worst.window == 1 and r.worst.where == (1,)
    port, real = _bump(g, (5, 0), 4e-5)
    r = compare_stage("Y.logits", g, port, orca.stored_windows)
    assert not r.passed and r.worst.window == 58 and "class 0" in r.message()


def test_locations_name_the_axes_of_each_stage():
    seg = torch.zeros(2, 2, 100)
    port = seg.clone()
    port[1, 1, 42] = 1.0
    r = compare_stage("A.segment", seg, port, [4, 5])
    assert "window 5 (5-7 s), channel 1, sample 42" in r.message()
    wave = torch.zeros(3, 40000)
    port = wave.clone()
    port[2, 39999] = -0.5
    r = compare_stage("A.waveform", wave, port, [0, 1, 2])
    assert r.location() == "window 2 (2-4 s), sample 39999"
    conf = torch.tensor([0.1, 0.9, 0.5])
    r = compare_stage("all.confidence", conf, conf + torch.tensor([0.0, 0.0, 1e-3]))
    assert r.location() == "window 2 (2-4 s)" and r.n_failed == 1


def test_statistics_on_a_known_difference_pattern():
    expected = np.zeros((1, 100))
    expected[0, :] = 1.0
    actual = expected + np.arange(100)[None, :] * 1e-7  # diffs 0, 1e-7, ..., 9.9e-6
    r = compare_stage("A.downmix", expected, actual)
    assert r.passed
    assert r.max_abs == pytest.approx(9.9e-6, rel=1e-9)
    assert r.mean_abs == pytest.approx(4.95e-6, rel=1e-9)
    assert r.p99_abs == pytest.approx(98.01e-7, rel=1e-9)  # linear interpolation between the 99th and 100th
    assert r.max_rel == pytest.approx(9.9e-6, rel=1e-9)
    assert r.worst.where == (99,)


def test_relative_difference_skips_zero_golden_values():
    r = compare_stage("Y.probs", np.array([[2.0, 0.0]]), np.array([[2.5, 0.0]]))
    assert r.max_rel == pytest.approx(0.25) and not r.passed


def test_shape_mismatch_and_nan_fail(orca):
    g = orca.tensors["C.padded"]
    r = compare_stage("C.padded", g, g[:, :, :, :311], orca.stored_windows)
    assert not r.passed and "shape [6, 1, 256, 311] != golden [6, 1, 256, 312]" in r.message()
    port = g.clone()
    port[0, 0, 0, 0] = float("nan")
    r = compare_stage("C.padded", g, port, orca.stored_windows)
    assert not r.passed and math.isinf(r.max_abs) and r.worst.where == (0, 0, 0)


def test_missing_stage_fails(orca):
    results = compare_fn(orca.tensors, {"Y.logits": orca.tensors["Y.logits"]}, orca.stored_windows, stages=["Y.logits", "Y.probs"])
    assert [r.passed for r in results] == [True, False]
    assert "missing from the port's outputs" in results[1].message()


def test_exact_comparison_allows_only_borderline_flips():
    r = compare_exact("agg.local_predictions", [0, 1, 1], [0, 1, 0])
    assert not r.passed and "first at row 2: legacy 1, port 0" in r.message()
    r = compare_exact("agg.local_predictions", [0, 1, 1], [0, 1, 0], tolerated=[False, False, True])
    assert r.passed and "borderline" in r.message()


def test_report_table_and_files(orca, tmp_path):
    g = orca.tensors
    port = {k: v.clone() for k, v in g.items()}
    port["B.mel_db"], _ = _bump(g["B.mel_db"], (3, 0, 12, 80), 3e-4)
    port["A.waveform"], _ = _bump(g["A.waveform"], (0, 1234), 1e-3)
    stages = compare_fn(g, port, orca.stored_windows)
    worst = {
        "B.mel_db": (g["B.mel_db"][3].numpy(), port["B.mel_db"][3].numpy(), 35),
        "A.waveform": (g["A.waveform"][0].numpy(), port["A.waveform"][0].numpy(), 0),
    }
    conf = g["all.confidence"].numpy().astype(np.float64)
    run = CaseRun(ParityReport(orca.name, "cpu", stages), worst, (conf, conf + 1e-9))
    table = format_table([run])
    assert "B.mel_db" in table and "FAIL" in table and "window 35 (35-37 s), mel bin 12, frame 80" in table
    assert "0 of 1 case captures pass; failing: rn18__orca60_pcm16_48k (golden)" in table

    md = write_report([run], tmp_path / "rep")
    text = md.read_text()
    assert "**FAIL**" in text and "`B.mel_db`" in text and "window 35 (35-37 s), mel bin 12, frame 80" in text
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # temp dir cleaned up
    pytest.importorskip("matplotlib", reason="the `report` extra is not installed: no figures")
    from PIL import Image  # a test dependency (dev extra)

    pngs = sorted((tmp_path / "rep").rglob("*.png"))
    assert [p.name for p in pngs] == ["A.waveform.png", "B.mel_db.png", "confidence.png", "margins.png"]
    for p in pngs:
        assert f"]({p.relative_to(tmp_path / 'rep').as_posix()})" in text
        with Image.open(p) as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB" and im.size[0] >= 1000 and im.size[1] >= 300
    with Image.open(tmp_path / "rep" / "rn18__orca60_pcm16_48k__golden__cpu" / "B.mel_db.png") as im:
        assert im.size == (1600, 560)  # 16 x 5.6 in at 100 dpi: three panels, two colour bars
