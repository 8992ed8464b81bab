"""The PANNs family against golden/panns (captured by reference/panns_capture.py running audioset_tagging_cnn's model
classes with torchlibrosa 0.1.0): every stage of every stored window, chained and fed the golden log-mel, plus every
window's logits, probabilities and decisions, in the tier the store's fingerprint gives; the same cases with the
conv and elementwise kernels forced to other ISAs (the portable tier's model must hold there); and the contract
failing a port that is wrong in the ways a PANNs port goes wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from porting.families.panns.parity import check_panns_case, materialise
from porting.golden import case_paths, load_case
from porting.parity.contract import PORTABLE, STRICT, Tier, choose_tier
from porting.parity.fingerprint import load_fingerprint, machine_fingerprint

STORE = Path(__file__).resolve().parent.parent / "golden" / "panns"
CASES = [p for p in case_paths(STORE)]
BODIES = {"Cnn14", "Cnn10", "Cnn6", "MobileNetV1", "MobileNetV2"}
_CACHE: dict = {}  # materialised checkpoints, shared by the tests of this module


def test_store_covers_every_body_and_both_presets():
    cases = [load_case(p) for p in CASES]
    assert {c.meta["model"]["class"] for c in cases} >= BODIES | {"Cnn14_16k"}
    assert {c.meta["frontend"]["sample_rate"] for c in cases} == {16000, 32000}
    assert all(c.meta["family"] == "panns" and c.stored_windows for c in cases)


@pytest.mark.parity
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_panns_case(path):
    case = load_case(path)
    tier = choose_tier(load_fingerprint(STORE), machine_fingerprint())
    report = check_panns_case(case, tier, None, cache=_CACHE)
    assert len(report.stages) >= 17, "nothing was compared"
    assert report.passed, report.summary()


FORCED = {"sse41-scalar": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
          "avx2-scalar": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default"}}


@pytest.mark.parity
@pytest.mark.parametrize("isa", sorted(FORCED))
def test_portable_tier_holds_with_kernels_forced_to_other_isas(isa, tmp_path):
    """Another CPU is simulated by forcing oneDNN's conv kernels and ATen's elementwise kernels to other ISAs (the
    AVX-512 ones where the machine has them are what an Intel server runs; these are what an older CPU runs): the
    log-mel moves (measured 6e-4 dB in quiet bins), and every case must still pass in the portable tier."""
    script = ("import sys, json\n"
              "from porting.golden import load_case\n"
              "from porting.families.panns.parity import check_panns_case\n"
              "from porting.parity.contract import Tier\n"
              "out, cache = {}, {}\n"
              "for p in sys.argv[1:]:\n"  # one cache for every case, as `port parity` shares it
              "    r = check_panns_case(load_case(p), Tier('portable', 'forced ISA'), None, cache=cache)\n"
              "    out[p] = [r.passed, r.summary() if not r.passed else '',"
              " max(s.margin for s in r.stages)]\n"
              "print(json.dumps(out))\n")
    env = {**os.environ, **FORCED[isa]}
    r = subprocess.run([sys.executable, "-c", script, *map(str, CASES)], env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {Path(p).stem: s for p, (ok, s, _) in results.items() if not ok}
    assert not bad, bad


def _perturbed(tmp_path, edit) -> Path:
    """The cnn6 case's checkpoint converted, then ``edit(config, state)`` applied to the converted folder."""
    from porting.convert import convert
    from safetensors.torch import load_file, save_file

    case = load_case(STORE / "cases" / "cnn6__mix44k1.json")
    out = tmp_path / "conv"
    convert(materialise(case, _CACHE), out, exports=[])
    cfg = json.loads((out / "config.json").read_text())
    state = load_file(str(out / "model.safetensors"))
    edit(cfg, state)
    (out / "config.json").write_text(json.dumps(cfg))
    save_file(state, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("what,edit,stage", [
    ("hop 321 instead of 320", lambda c, s: c["frontend"].update(hop_size=321), "F.logmel"),
    ("bn0 eps 1e-3 instead of 1e-5 (the value is not in the checkpoint)", None, "M.bn0 (golden input)"),
    ("one mel band's filter scaled by 1.001", lambda c, s: s["logmel_extractor.melW"][:, 20].mul_(1.001), "F.logmel"),
])
@pytest.mark.parametrize("tier", [STRICT, PORTABLE])
def test_contract_fails_a_wrong_port(tmp_path, monkeypatch, what, edit, stage, tier):
    case = load_case(STORE / "cases" / "cnn6__mix44k1.json")
    if edit is None:
        out = _perturbed(tmp_path, lambda c, s: None)
        monkeypatch.setattr(torch.nn, "BatchNorm2d", _Eps1e3)
    else:
        out = _perturbed(tmp_path, edit)
    report = check_panns_case(case, Tier(tier, "test"), out, cache={})
    failed = {s.stage for s in report.stages if not s.passed}
    assert stage in failed, f"{what}: {report.summary()}"


class _Eps1e3(torch.nn.BatchNorm2d):
    """torchvision's builders' BatchNorm eps (1e-3) where PANNs uses torch's default 1e-5: not in the checkpoint."""

    def __init__(self, n, **kw):
        super().__init__(n, **{**kw, "eps": 1e-3})


@pytest.mark.parity
def test_exports_verified_on_the_golden_windows(tmp_path):
    """`port convert --golden golden/panns`: each ONNX artifact is also checked on every stored window of the model's
    cases (model.onnx from the golden log-mel, pipeline.onnx from the golden waveform), in the store's tier."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from porting.convert import convert

    case = load_case(STORE / "cases" / "mobilenetv1__mix44k1.json")
    out = tmp_path / "m"
    convert(materialise(case, _CACHE), out, exports=["onnx"], golden=STORE)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"], parity
    for name in ("model.onnx", "pipeline.onnx"):
        golden_rows = [r for r in parity["artifacts"][name]["checks"] if r["against"] == "golden"]
        assert len(golden_rows) >= len(case.stored_windows), name
        assert all(r["passed"] for r in golden_rows)


def test_port_parity_cli_on_one_case():
    r = subprocess.run([sys.executable, "-m", "porting.cli", "parity", "--golden",
                        str(STORE / "cases" / "cnn10__mix44k1.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 of 1 case captures pass" in r.stdout and "all.decisions" in r.stdout
