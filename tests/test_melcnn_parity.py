"""The librosa-mel CNN family against golden/melcnn (captured by reference/melcnn_capture.py running Project-Echo's
model classes and dataset code with torchvision 0.24.1 and librosa 0.11.0): every stage of every stored window,
chained and fed the golden model input, plus every window's logits, probabilities and top class, in the tier the
store's fingerprint gives; the same with the kernels forced to other ISAs (portable tier); and the contract failing
a port that is wrong in the ways a port of these runs goes wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from porting.families.melcnn.parity import check_melcnn_case, materialise
from porting.golden import case_paths, load_case
from porting.parity.contract import PORTABLE, STRICT, Tier, choose_tier
from porting.parity.fingerprint import load_fingerprint, machine_fingerprint

STORE = Path(__file__).resolve().parent.parent / "golden" / "melcnn"
CASES = [p for p in case_paths(STORE)]
_CACHE: dict = {}


def _case(model: str):
    for p in CASES:
        c = load_case(p)
        if c.meta["model"]["name"] == model:
            return c
    raise LookupError(model)


def test_store_covers_every_body_and_both_heads():
    cases = [load_case(p) for p in CASES]
    assert {c.meta["model"]["class"] for c in cases} == {"EfficientNetV2ArcFace", "GhostEfficientNetV2",
                                                          "PannsCNN14ArcFace"}
    assert {c.meta["head"]["kind"] for c in cases} == {"linear", "cosine"}
    assert len({(c.meta["frontend"]["sample_rate"], c.meta["frontend"]["n_mels"]) for c in cases}) == 4
    assert all(c.meta["family"] == "melcnn" and c.stored_windows for c in cases)
    assert any(c.window(i)["A.waveform"].shape[-1] < c.meta["windows"]["window_samples"]
               for c in cases for i in c.stored_windows), "no partial (zero-padded) tail window is stored"


@pytest.mark.parity
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_melcnn_case(path):
    case = load_case(path)
    tier = choose_tier(load_fingerprint(STORE), machine_fingerprint())
    report = check_melcnn_case(case, tier, None, cache=_CACHE)
    assert len(report.stages) >= 17, "nothing was compared"
    assert report.passed, report.summary()


FORCED = {"sse41-scalar": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
          "avx2-scalar": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default"}}


@pytest.mark.parity
@pytest.mark.parametrize("isa", sorted(FORCED))
def test_portable_tier_holds_with_kernels_forced_to_other_isas(isa):
    """Another CPU, simulated by forcing oneDNN's conv kernels and ATen's elementwise kernels to other ISAs: every
    case must still pass in the portable tier."""
    script = ("import sys, json\n"
              "from porting.golden import load_case\n"
              "from porting.families.melcnn.parity import check_melcnn_case\n"
              "from porting.parity.contract import Tier\n"
              "out, cache = {}, {}\n"
              "for p in sys.argv[1:]:\n"
              "    r = check_melcnn_case(load_case(p), Tier('portable', 'forced ISA'), None, cache=cache)\n"
              "    out[p] = [r.passed, r.summary() if not r.passed else '', max(s.margin for s in r.stages)]\n"
              "print(json.dumps(out))\n")
    env = {**os.environ, **FORCED[isa]}
    r = subprocess.run([sys.executable, "-c", script, *map(str, CASES)], env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {Path(p).stem: s for p, (ok, s, _) in results.items() if not ok}
    assert not bad, bad


def _perturbed(tmp_path, case, edit) -> Path:
    from porting.convert import convert

    out = tmp_path / "conv"
    convert(materialise(case, _CACHE), out, exports=[])
    cfg = json.loads((out / "config.json").read_text())
    edit(cfg)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("what,edit,stage", [
    ("BatchNorm eps 1e-3 (torchvision's builders) instead of 1e-5 (not in the checkpoint)",
     lambda c: c.update(bn_eps=1e-3), "M.embedding (golden input)"),
    ("top_db 100 instead of 80", lambda c: c["frontend"].update(top_db=100.0), "F.input"),
    ("fmax 14000 instead of 13000", lambda c: c["frontend"].update(fmax=14000.0), "F.mel"),
    ("s 64 instead of the run's 30", lambda c: c["head"].update(s=64.0), "Y.logits (golden input)"),
])
@pytest.mark.parametrize("tier", [STRICT, PORTABLE])
def test_contract_fails_a_wrong_port(tmp_path, what, edit, stage, tier):
    case = _case("effv2_s_cosine")
    out = _perturbed(tmp_path, case, edit)
    report = check_melcnn_case(case, Tier(tier, "test"), out, cache={})
    failed = {s.stage for s in report.stages if not s.passed}
    assert stage in failed, f"{what}: {report.summary()}"


@pytest.mark.parity
def test_exports_verified_on_the_golden_windows(tmp_path):
    """`port convert --golden golden/melcnn`: model.onnx is also checked on every stored window of the run's cases
    (from the golden model input), in the store's tier."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from porting.convert import convert

    case = _case("effv2_s_linear")
    out = tmp_path / "m"
    convert(materialise(case, _CACHE), out, exports=["onnx"], golden=STORE)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"], parity
    golden_rows = [r for r in parity["artifacts"]["model.onnx"]["checks"] if r["against"] == "golden"]
    assert len(golden_rows) >= len(case.stored_windows)
    assert all(r["passed"] for r in golden_rows)


def test_port_parity_cli_on_one_case():
    path = next(p for p in CASES if load_case(p).meta["model"]["name"] == "effv2_s_linear")
    r = subprocess.run([sys.executable, "-m", "porting.cli", "parity", "--golden", str(path)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 of 1 case captures pass" in r.stdout and "all.decisions" in r.stdout
