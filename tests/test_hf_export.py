"""HF exports: every artifact verified at two input lengths against the eager rebuild and on the golden windows;
the two-length check is what catches a trace that baked a length in; porting.load_model of HF folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from porting import convert, load_model
from porting.export import missing
from porting.families.hf.graph import HFStageGraph
from porting.families.hf.export import _check, _Pipeline, conv_frames, probe_lengths, probe_waves
from porting.golden import load_case

HF = ROOT / "golden" / "hf"
needs_onnx = pytest.mark.skipif(missing("onnx") is not None, reason=f"ONNX export unavailable: {missing('onnx')}")


@pytest.fixture(scope="module", params=["sewd", "ast"])
def converted(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("hfexp") / request.param
    # LiteRT conversion of SEW-D at 5-s windows takes ~80 s on 2 cores: TFLite is checked on AST here
    formats = ["torchscript", "pt2"] + [f for f in ("onnx", "tflite") if missing(f) is None
                                        and (f != "tflite" or request.param == "ast")]
    summary = convert(HF / "models" / request.param, out, exports=formats, golden=HF)
    return request.param, out, summary


def test_every_artifact_passes_at_two_lengths_and_on_the_goldens(converted):
    name, out, summary = converted
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and summary["exports"]["passed"]
    for art, entry in parity["artifacts"].items():
        assert (out / art).is_file() and entry["passed"], (art, entry.get("error"))
        eager = [r for r in entry["checks"] if r["against"] == "eager"]
        shapes = {tuple(r["input_shape"]) for r in eager}
        assert len(shapes) == 2, (art, shapes)  # two lengths (wav2vec2 family) or two batch sizes (AST)
        if entry["format"] != "tflite" or name == "ast":
            # every artifact also meets the goldens, except fixed-shape TFLite ones of a 5-s-window model (the
            # goldens' windows are 1 s)
            assert any(r["against"] == "golden" for r in entry["checks"]), art
    kinds = {e["kind"] for e in parity["artifacts"].values()}
    assert kinds == ({"model"} if name == "ast" else {"model", "pipeline"})


def test_probe_lengths_cover_both_frame_parities():
    cfg = json.loads((HF / "models" / "sewd" / "config.json").read_text())
    graph = HFStageGraph(kind="wav2vec2", feature_config=None, window_s=1.0, hop_s=1.0)
    full, tail = probe_lengths(graph, cfg)
    assert full == 16000 and tail < full
    assert conv_frames(full, cfg) % 2 != conv_frames(tail, cfg) % 2  # SEW-D squeezes odd and even lengths apart


def test_two_length_check_catches_a_trace_that_baked_its_length():
    """The exact feature extractor replays numpy's summation order for one length: traced at one length, it is wrong
    at another -- and the second verification length says so (the shipped pipeline uses float64 sums instead)."""
    model, config = load_model(HF / "models" / "w2v2-base")
    graph = HFStageGraph.from_config(config).with_windows(1.0)
    ref = _Pipeline(model, graph, exact=True).eval()  # port detect's exact feature extractor
    waves = [probe_waves(n, 2, 16000, i) for i, n in enumerate(probe_lengths(graph, config["hf_config"]))]
    with torch.no_grad():
        traced = torch.jit.trace(ref, (waves[0],), check_trace=False)

    def run(x):
        with torch.no_grad():
            return [t.numpy() for t in traced(torch.from_numpy(x))]

    assert all(r["passed"] for r in _check("pipeline", run, ref, waves[:1]))
    try:  # export_hf counts an artifact that raises at a verification input as failed, like a mismatch
        second_ok = all(r["passed"] for r in _check("pipeline", run, ref, waves[1:]))
    except RuntimeError:
        second_ok = False
    assert not second_ok


@pytest.mark.parametrize("name", ["custom-max", "w2v2-large"])
def test_load_model_of_a_folder_and_of_its_conversion_agree(name, tmp_path):
    raw, cfg_raw = load_model(HF / "models" / name)
    convert(HF / "models" / name, tmp_path / "c", exports=None)
    conv, cfg_conv = load_model(tmp_path / "c")
    assert cfg_conv["hf_architecture"] == cfg_raw["hf_architecture"]
    case = load_case(HF / "cases" / f"{name}__tones16k.json")
    w = case.window(case.stored_windows[0])
    with torch.no_grad():
        a = raw(w["F.input_values"], w.get("F.attention_mask"))
        b = conv(w["F.input_values"], w.get("F.attention_mask"))
    assert torch.equal(a, b)  # the same rebuild from the same (folded) weights
    assert np.abs(a.numpy() - w["Y.logits"].numpy()).max() <= 1e-5 + 1e-5 * np.abs(w["Y.logits"].numpy()).max()


@needs_onnx
def test_onnx_backend_meets_the_goldens_and_auto_picks_it(converted):
    from porting.detect import load_detector
    from porting.parity.run import run_parity

    name, out, _ = converted
    runs = run_parity(HF, out, "cpu", backend="onnx")
    assert runs and all(r.report.passed for r in runs), [r.report.summary() for r in runs if not r.report.passed]
    assert {r.report.case.split("__")[0] for r in runs} == {name}
    assert load_detector(out).backend == "onnx"  # parity.json says model.onnx passed
    assert load_detector(HF / "models" / name).backend == "torch"  # an HF folder has no verified artifact
