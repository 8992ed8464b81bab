"""`port parity` end to end on the public goldens, a deliberately perturbed port, and the pytest
plugin's ``--parity-report``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import COMMITTED, ROOT
from porting.errors import GoldenError
from porting.parity.run import run_parity

pytest_plugins = ["pytester"]


def _port(*args, timeout=600, code=None):
    cmd = [sys.executable, "-m", "porting", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _png_ok(path) -> tuple[int, int]:
    """The figure opens as a PNG with Pillow (a test dependency); (width, height)."""
    pytest.importorskip("matplotlib", reason="the `report` extra is not installed: no figures")
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
        return im.size


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    done = _port("parity", "--golden", str(COMMITTED), "--report", str(out / "rep"), "--json", str(out / "stats.json"))
    return done, out


def test_port_parity_passes_on_every_public_case(full_run):
    done, out = full_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cases = sorted(p.stem for p in (COMMITTED / "cases").glob("*.json"))
    n = 2 * len(cases)  # every case has its Intel capture (golden/cases) and its AMD one (golden/captures/amd-epyc-zen4)
    assert f"{n} of {n} case captures pass" in done.stdout
    assert "this machine: " in done.stdout and "capture amd-epyc-zen4: " in done.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert sorted((c["case"], c["capture"]) for c in stats) == sorted((k, cap) for k in cases for cap in ("golden", "amd-epyc-zen4"))
    for c in stats:
        assert c["passed"], c["case"]
        assert c["tier"] in ("strict", "portable") and c["tier_reason"] and c["golden_fingerprint"]
        for s in c["stages"]:
            assert s["passed"] and s["margin"] <= 1, (c["case"], s["message"])
            assert s["tier"] == c["tier"] or s["stage"] in ("refusal", "agg.local_predictions", "agg.global_prediction")
            if s["stage"].startswith("A."):
                assert s["max_abs"] == 0.0 and s["rule"] == "exact (bitwise)", s["message"]
            if s["stage"].endswith("probs") or s["stage"].endswith("confidence") or s["stage"].startswith("agg.global_conf"):
                assert s["max_abs"] <= 1e-5 and s["rule"] == "abs 1e-05", s["message"]
        if c["case"] != "rn18__too_short_1500ms":
            names = {s["stage"] for s in c["stages"]}
            assert {"A.segment", "B.mel_db", "C.padded", "X.model_input", "Y.logits", "all.confidence", "agg.confidence"} <= names
    crash = next(c for c in stats if c["case"] == "rn18__too_short_1500ms")
    assert "legacy crashed (KeyError: 0); port refused" in crash["stages"][0]["message"]


def test_port_parity_report_pngs_open(full_run):
    pytest.importorskip("matplotlib", reason="the `report` extra is not installed: no figures")  # before counting links
    _, out = full_run
    text = (out / "rep" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # 7 cases with results x 2 captures x (margins, A.segment, A.waveform, B.mel_db, C.padded, confidence at least;
    # rows that repeat another row's numbers are drawn once)
    assert len(links) >= 2 * 7 * 6
    for rel in links:
        w, h = _png_ok(out / "rep" / rel)
        assert w >= 1000 and h >= 300
    assert sorted(p.relative_to(out / "rep").as_posix() for p in (out / "rep").rglob("*.png")) == sorted(links)
    for case in (p.stem for p in (COMMITTED / "cases").glob("*.json")):
        assert f"## {case} vs golden (cpu)" in text and f"## {case} vs amd-epyc-zen4 (cpu)" in text
    assert "strict" in text and "portable" in text and "this machine's numerics fingerprint" in text


PERTURB = """
import sys, torch
import porting.families.orcahello.frontend.pad as pad
from porting.cli import app
real = pad.crop_pad
def crop_pad(spec, *a, **k):
    out = real(spec, *a, **k)
    if out.shape[0] >= 2:  # the second window of every batch: [window, channel, mel bin, frame]
        out = out.clone()
        out[1, 0, 12, 200] += 1e-3
    return out
pad.crop_pad = crop_pad
app(args=sys.argv[1:], prog_name="port")
"""


def test_perturbed_port_fails_at_the_right_place(tmp_path):
    case = COMMITTED / "cases" / "rn18__pcm16_16k_short.json"  # 2 windows, both stored
    done = _port("parity", "--golden", str(case), "--report", str(tmp_path / "rep"), code=PERTURB)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {  # table columns are separated by 2+ spaces; stage names may hold single spaces
        re.split(r"\s{2,}", line)[3]: line for line in done.stdout.splitlines() if line.startswith("rn18__pcm16_16k_short")
    }
    for stage in ("A.segment", "A.downmix", "A.waveform", "B.mel_db"):
        assert "ok" in rows[stage].split() and "FAIL" not in rows[stage], rows[stage]
    where = "window 1 (1-3 s), mel bin 12, frame 200"
    for stage in ("C.padded", "X.model_input", "C.padded (golden input)"):
        assert "FAIL" in rows[stage] and where in rows[stage], rows[stage]
    msg = next(line for line in done.stderr.splitlines() if line.startswith("FAIL rn18__pcm16_16k_short (golden): C.padded:"))
    # a pad frame (200 >= 157): 1e-5 in the strict tier, and nothing in the portable one (the FFT error model
    # gives pad frames tolerance 0): which applies depends on this machine's fingerprint
    assert re.search(rf"0\.001 > (0|1e-05) at {re.escape(where)}", msg) and "(legacy 0, port 0.00100000005)" in msg
    assert "1 of 2 windows fail" in msg and " tier" in msg
    assert any(line.startswith("FAIL rn18__pcm16_16k_short (golden): C.padded (golden input): FAIL") and where in line
               for line in done.stderr.splitlines())
    assert done.stderr.rstrip().splitlines()[-1].startswith(
        "error: parity failed for 1 of 1 case capture: rn18__pcm16_16k_short (golden)")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "**FAIL**" in report and where in report
    assert _png_ok(tmp_path / "rep" / "rn18__pcm16_16k_short__golden__cpu" / "C.padded.png") == (1600, 560)


def test_port_parity_errors_are_one_line(tmp_path):
    with pytest.raises(GoldenError, match="neither a golden case JSON nor a golden store"):
        run_parity(tmp_path / "nothing.json")
    case = COMMITTED / "cases" / "rn18__pcm16_8k_2500ms.json"
    done = _port("parity", "--golden", str(case), "--model", str(COMMITTED / "models" / "sq11-norm.pkl"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no golden case was captured from" in last


PLUGIN_TESTS = """
import torch

def test_identity(parity_case, parity_check):
    parity_check(parity_case, dict(parity_case.tensors))

def test_perturbed(parity_case, parity_check):
    actual = dict(parity_case.tensors)
    b = actual["B.mel_db"].clone()
    b[-1, 0, 100, 3] += 0.5
    actual["B.mel_db"] = b
    parity_check(parity_case, actual, stages=["B.mel_db"])

def test_crash_cases(parity_error_case):
    assert parity_error_case.error["type"] == "KeyError"
"""


def test_plugin_fixtures_and_parity_report(pytester, tmp_path):
    store = tmp_path / "store"
    (store / "cases").mkdir(parents=True)
    for name in ("rn18__pcm16_8k_2500ms.json", "rn18__pcm16_8k_2500ms.safetensors", "rn18__too_short_1500ms.json"):
        shutil.copy(COMMITTED / "cases" / name, store / "cases" / name)
    pytester.makepyfile(test_inner=PLUGIN_TESTS)
    rep = tmp_path / "rep"
    # plugin: entry point. A subprocess: an in-process run drops the modules first imported inside it (matplotlib,
    # drawing the report), and a later import in this session would then mix two copies of them.
    result = pytester.runpytest_subprocess(f"--golden-dir={store}", f"--parity-report={rep}")
    result.assert_outcomes(passed=2, failed=1)
    # no fingerprint beside this store's cases/: the portable tier, said in the header and the failure
    result.stdout.fnmatch_lines(["porting parity: capture golden: portable tier (the golden has no fingerprint)",
                                 "*B.mel_db: FAIL*portable tier*max|diff| 0.5,*0.5 > *window 0 (0-2 s), mel bin 100, frame 3*"])
    text = (rep / "report.md").read_text()
    assert "rn18__pcm16_8k_2500ms vs golden (cpu)" in text and "**FAIL**" in text
    assert _png_ok(rep / "rn18__pcm16_8k_2500ms__golden__cpu" / "B.mel_db.png") == (1600, 560)


def test_a_port_refusal_of_a_scored_recording_is_a_failure(monkeypatch):
    import porting.families.orcahello.detect  # noqa: F401  imported before the patch: it binds `probe` by name, and a
    import porting.io.decode as decode  # first import under the patch would keep the refusing one for the session
    from porting.errors import AudioError
    from porting.golden import load_case
    from porting.families.orcahello.parity import check_case

    def refuse(path):
        raise AudioError(f"{path}: refused for the test")

    monkeypatch.setattr(decode, "probe", refuse)
    from porting.parity.contract import PORTABLE, Tier

    run = check_case(load_case(COMMITTED / "cases" / "rn18__pcm16_8k_2500ms.json"), None, Tier(PORTABLE, "test"))
    assert not run.report.passed
    assert "legacy scored 1 windows; port raised AudioError: " in run.report.stages[0].message()
