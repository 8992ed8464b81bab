"""Held-out learner variety: conversion and detection on models other than the two bundled ones.

``tests/fixtures/heldout/make_heldout.py`` generates (seeded, in a subprocess, into a tmp dir; nothing is
committed as a binary) four fastai v1 learner exports built from stand-in classes with the legacy global names
(ResNet50-class Bottleneck body at width 16 with and without normalization / ``lin_ftrs`` head, ResNet34-style
BasicBlock body in torch's legacy container, squeezenet1_0-style Fire body with a custom head) and three
recordings (22050 Hz mono PCM_16, 32000 Hz stereo PCM_24, 44100 Hz mono FLOAT).

The detection checks compare ``port detect`` (torch, onnx and winograd backends) with an eager reference computed here,
independently of the detector's own batching and pad folding: the unfolded model of the converted DIR, run one
window at a time on the stage-graph model input of every stage-A window. Gates are the contract's: probabilities
within 1e-5 absolute, logits within the row rule ``|d| <= ATOL + RTOL * max|row|``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tests" / "fixtures" / "heldout" / "make_heldout.py"
VARIANTS = ("rn50w16", "rn50w16-norm", "rn34w16-norm", "sq10-custom")
CONVERTED = ("rn50w16", "sq10-custom")  # the ResNet50-class and the squeezenet variants
EXPORTS = "onnx,torchscript,pt2"  # tflite left out to keep CI time down
RECORDING = "chirps_32000_stereo_pcm24.wav"  # stereo, 24-bit, resampled: the longest decode path
PROB_ATOL = 1e-5


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _port(*args: str) -> subprocess.CompletedProcess:
    """The installed ``port`` CLI (as ``python -m porting`` of this interpreter)."""
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    proc = subprocess.run([sys.executable, str(GENERATOR), str(out)], capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def manifest(heldout) -> dict:
    return json.loads((heldout / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def converted(heldout, tmp_path_factory) -> dict:
    """variant -> (``port convert`` result, output DIR); converted once per module, lazily per variant."""
    root = tmp_path_factory.mktemp("heldout-converted")
    done: dict = {}

    def get(variant: str):
        if variant not in done:
            out = root / variant
            proc = _port("convert", str(heldout / f"{variant}.pkl"), "--out", str(out), "--force", "--export", EXPORTS)
            done[variant] = (proc, out)
        return done[variant]

    return get


def test_generator_writes_every_variant_and_recording(heldout, manifest):
    import soundfile as sf

    assert set(manifest["models"]) == set(VARIANTS)
    for name, rec in manifest["recordings"].items():
        info = sf.info(str(heldout / name))
        assert (info.samplerate, info.channels, info.subtype) == (rec["sample_rate"], rec["channels"], rec["subtype"])
        assert 5.0 <= info.duration <= 8.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_model_reads_every_variant(heldout, manifest, variant):
    import porting

    meta = manifest["models"][variant]
    model, config = porting.load_model(heldout / meta["file"])
    assert config["source"]["kind"] == "fastai1-learner"
    assert config["source"]["container"] == ("torch-zip" if meta["container"] == "zip" else "torch-legacy")
    assert config["classes"] == ["negative", "positive"] and config["positive_index"] == 1
    assert config["activation"] == {"name": "softmax", "dim": -1}
    if meta["normalize"] is None:
        assert config["normalize"] is None
    else:
        np.testing.assert_allclose(config["normalize"]["mean"], meta["normalize"]["mean"], rtol=1e-6)
        np.testing.assert_allclose(config["normalize"]["std"], meta["normalize"]["std"], rtol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == meta["parameters"]
    with torch.inference_mode():
        out = model(torch.zeros(1, 1, 256, 312))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


# float32 vs float64 of the same weights, in units of the row rule: inside the contract, or no runtime could be held
# to it. Measured: < 0.5 on Intel Xeon (AVX-512, AMX), 0.76 for sq10-custom on an AMD Zen 5 (oneDNN's blocking there).
FIXTURE_RATIO = 1.0
FIXTURE_PROB_ATOL = 2e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixture_is_conditioned_like_a_trained_net(heldout, manifest, variant):
    """Why the held-out fixtures are a fair test: each model's own float32 eager forward is inside the
    contract of its float64 forward (same weights) on the port's probe batch, as a trained net's is (a real
    ResNet50's confidences agree within 1.7e-6 across runtimes). A model whose float32 evaluation is itself
    outside the contract could be held to it by no runtime; that would be a fault of the fixture, not the port."""
    import copy

    import porting
    from porting.families.orcahello.export.verify import model_input, probe_waveforms
    from porting.parity.contract import ATOL, RTOL

    model, config = porting.load_model(heldout / manifest["models"][variant]["file"])
    model.eval()
    x = model_input(probe_waveforms(), config)
    with torch.inference_mode():
        lg32 = torch.cat([model(x[i:i + 1]) for i in range(len(x))]).float()  # one window per forward, as eager
        p32 = torch.softmax(lg32, dim=-1).double().numpy()
    m64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        lg64 = m64(x.double())
        p64 = torch.softmax(lg64, dim=-1).numpy()
    lg32, lg64 = lg32.double().numpy(), lg64.numpy()
    ratio = np.abs(lg32 - lg64) / (ATOL + RTOL * np.abs(lg64).max(axis=-1, keepdims=True))
    dprob = np.abs(p32 - p64)
    detail = (f"{variant}: float32 vs float64 row-rule ratio {ratio.max():.3f}, max|dprob| {dprob.max():.2e}, "
              f"logits {np.round(lg64, 2).tolist()}")
    assert ratio.max() <= FIXTURE_RATIO, detail
    assert dprob.max() <= FIXTURE_PROB_ATOL, detail


def _parity_summary(parity: dict) -> str:
    lines = []
    for name, art in parity["artifacts"].items():
        worst = ", ".join(f"{c['output']} {c['max_abs_diff']:.2e} (tol {c['tolerance_at_worst']:.2e})"
                          for c in art["checks"] if not c["passed"])
        lines.append(f"{'PASS' if art['passed'] else 'FAIL'} {name}" + (f": {worst}" if worst else ""))
    return "\n".join(lines)


@pytest.mark.parametrize("variant", CONVERTED)
def test_convert_exports_pass_parity(converted, variant):
    proc, out = converted(variant)
    parity_file = out / "parity.json"
    assert parity_file.is_file(), f"port convert wrote no parity.json (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    parity = json.loads(parity_file.read_text())
    formats = {a["format"] for a in parity["artifacts"].values()}
    assert formats == set(EXPORTS.split(",")) | {"winograd"}, formats  # winograd: the backend with no file
    assert parity["passed"], f"{variant}: parity.json failed\n{_parity_summary(parity)}"
    assert proc.returncode == 0, proc.stderr[-3000:]


def _eager_reference(model_dir: Path, recording: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-window (logits, probs) of the unfolded eager model, one window per forward."""
    from porting.convert import load_model
    from porting.families.orcahello.detect import Detector
    from porting.io.decode import probe
    from porting.families.orcahello.frontend.windows import iter_windows

    model, config = load_model(model_dir)
    assert config["activation"] == {"name": "softmax", "dim": -1}
    graph = Detector.load(model_dir, backend="torch").graph
    logits = []
    with torch.inference_mode():
        for _, wave in iter_windows(probe(recording), 8, graph.frontend.windows):
            x = graph.model_input(wave)
            logits += [model(x[i:i + 1]) for i in range(len(x))]
    lg = torch.cat(logits).float()
    return lg.double().numpy(), torch.softmax(lg, dim=-1).double().numpy()


@pytest.fixture(scope="module")
def reference(heldout, converted) -> dict:
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            _, out = converted(variant)
            cache[variant] = _eager_reference(out, heldout / RECORDING)
        return cache[variant]

    return get


@pytest.mark.parametrize("backend", ("torch", "onnx", "winograd"))
@pytest.mark.parametrize("variant", CONVERTED)
def test_detect_matches_eager_reference(heldout, converted, reference, tmp_path, variant, backend):
    from porting.parity.contract import ATOL, RTOL

    _, out = converted(variant)
    assert (out / "model.onnx").is_file(), f"{variant}: port convert wrote no model.onnx"
    report = tmp_path / f"{variant}.{backend}.json"
    proc = _port("detect", str(heldout / RECORDING), "--model", str(out), "--backend", backend, "--json", str(report),
                 "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(report.read_text())
    assert payload["model"]["backend"] == backend
    rows = payload["files"][0]["windows"]
    ref_logits, ref_probs = reference(variant)
    logits = np.array([r["logits"] for r in rows], dtype=np.float64)
    probs = np.array([r["probs"] for r in rows], dtype=np.float64)
    assert logits.shape == ref_logits.shape and probs.shape == ref_probs.shape

    dprob = np.abs(probs - ref_probs)
    dlogit = np.abs(logits - ref_logits)
    tol = ATOL + RTOL * np.abs(ref_logits).max(axis=-1, keepdims=True)  # the row rule
    ratio = dlogit / tol
    detail = (f"{variant}/{backend}: max|dprob| {dprob.max():.2e}, max|dlogit| {dlogit.max():.2e}, "
              f"row-rule ratio {ratio.max():.2f} (window {int(ratio.max(axis=-1).argmax())}, "
              f"max|logit| {np.abs(ref_logits).max():.1f})")
    assert dprob.max() <= PROB_ATOL, detail
    assert ratio.max() <= 1.0, detail
