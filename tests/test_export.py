"""Verified exports (issue 5): each artifact loaded in its OWN runtime (onnxruntime, torch.jit.load,
torch.export.load, the LiteRT interpreter; not through porting's runners) and run on the golden
``X.model_input`` / ``A.waveform`` of every stored public window: logits and confidence within 1e-5 of the
goldens. Plus parity.json, the HF-style files, ``port detect --backend onnx|torch`` and the failure paths.

One ``port convert sq11-norm.pkl --golden golden`` (every available format) is shared by the module; rn18
(47 MB) only gets the ONNX artifacts. A test skips only when its runtime's extra is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import GOLDEN, ROOT, capture_names, golden_cases, testing_committed_store
from porting.errors import ExportError, MalformedModelError, UnsupportedModelError
from porting.golden import load_case

TOL = 1e-5
SQ = "sq11-norm"
POS = 1  # positive index of both public models ('positive' of ['negative', 'positive'])
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _cases(model: str) -> list:
    """Every capture of the model's public cases (golden/cases, then golden/captures/*/cases)."""
    from porting.golden import captures, case_paths

    return [load_case(p) for cap in captures(GOLDEN) for p in case_paths(cap.dir)
            if p.stem.startswith(model + "__") and p.stem in golden_cases()]


def _softmax_pos(logits) -> np.ndarray:
    return torch.softmax(torch.as_tensor(np.asarray(logits, np.float32)), dim=-1)[:, POS].numpy()


def _assert_outputs(name: str, case, logits, probs=None, conf=None) -> None:
    """An artifact's outputs vs the capture, by the contract in the capture's tier (porting.parity.contract):
    logits by the row rule, probabilities and confidence within 1e-5 absolute."""
    from porting.families.orcahello.export.verify import case_label
    from porting.parity.compare import compare_rule
    from porting.parity.run import tier_for

    tier, _ = tier_for(case)
    t = case.tensors
    conf = _softmax_pos(logits) if conf is None else conf
    checks = [compare_rule("Y.logits", t["Y.logits"], np.asarray(logits), tier.name),
              compare_rule("Y.probs", t["Y.probs"][:, POS], np.asarray(conf), tier.name)]
    if probs is not None:
        checks.append(compare_rule("Y.probs", t["Y.probs"], np.asarray(probs), tier.name))
    bad = [c.message() for c in checks if not c.passed]
    assert not bad, f"{name} on {case_label(case)}, {tier.line()}: {bad}"


def _gate(stage: str, want, got, case=None) -> None:
    """One stage by the contract: the capture's tier for a golden ``case``, strict (same machine) otherwise."""
    from porting.parity.compare import compare_rule
    from porting.parity.run import tier_for

    tier = tier_for(case)[0].name if case is not None else "strict"
    r = compare_rule(stage, np.asarray(want, np.float64), np.asarray(got, np.float64), tier)
    assert r.passed, r.message()


def _assert_model_outputs(name: str, logits, case) -> None:
    _assert_outputs(name, case, logits)


def _assert_pipeline_outputs(name: str, conf, probs, logits, case) -> None:
    _assert_outputs(name, case, logits, probs, conf)


@pytest.fixture(scope="module")
def sq_dir(tmp_path_factory):
    """`port convert` through the CLI, default formats (every available one), goldens included."""
    out = tmp_path_factory.mktemp("export") / SQ
    proc = subprocess.run([sys.executable, "-m", "porting", "convert", str(GOLDEN / "models" / f"{SQ}.pkl"),
                           "--out", str(out), "--golden", str(GOLDEN)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="module")
def sq_cases():
    cases = _cases(SQ)
    assert len(cases) == 2 * len(capture_names()) and all(c.stored_windows for c in cases)  # two cases per capture
    if testing_committed_store():
        assert sum(len(c.stored_windows) for c in cases) == 16  # two captures
    return cases


# ----------------------------------------------------------------------------- the conversion itself


@pytest.mark.parity
def test_cli_convert_writes_every_available_artifact_atomically(sq_dir):
    from porting.export import available_formats
    from porting.families.orcahello.export import ARTIFACTS

    out, proc = sq_dir
    expected = {"model.safetensors", "config.json", "parity.json", "preprocessor_config.json", "README.md"}
    for fmt in available_formats():
        expected |= set(ARTIFACTS[fmt])
    assert {p.name for p in out.iterdir()} == expected
    assert [p.name for p in out.parent.iterdir()] == [SQ]  # no temp dir left beside it
    assert "Traceback" not in proc.stderr
    for name in expected - {"model.safetensors", "config.json", "parity.json", "preprocessor_config.json", "README.md"}:
        assert f"PASS {name}" in proc.stdout


# ----------------------------------------------------------------------------- each artifact, own runtime


@pytest.mark.parity
def test_onnx_artifacts_in_onnxruntime(sq_dir, sq_cases):
    ort = pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    out, _ = sq_dir
    model = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    pipe = ort.InferenceSession(str(out / "pipeline.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in model.get_inputs()] == [("spectrogram", ["batch", 1, 256, 312])]
    assert [o.name for o in model.get_outputs()] == ["logits"]
    assert [(i.name, i.shape) for i in pipe.get_inputs()] == [("waveform", ["batch", 40000])]
    assert [o.name for o in pipe.get_outputs()] == ["confidence", "probs", "logits"]
    for case in sq_cases:
        t = case.tensors
        (logits,) = model.run(["logits"], {"spectrogram": t["X.model_input"].numpy()})
        _assert_model_outputs("model.onnx", logits, case)
        conf, probs, logits = pipe.run(None, {"waveform": t["A.waveform"].numpy()})
        _assert_pipeline_outputs("pipeline.onnx", conf, probs, logits, case)


@pytest.mark.parity
def test_onnx_metadata_says_normalization_is_outside_the_classifier(sq_dir):
    onnx = pytest.importorskip("onnx", reason="the `onnx` extra is not installed")
    out, _ = sq_dir
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    cfg = json.loads((out / "config.json").read_text())
    assert meta["porting.kind"] == "model" and "NOT in this graph" in meta["porting.io"]
    assert json.loads(meta["porting.normalize"]) == cfg["normalize"]
    assert meta["porting.source_sha256"] == cfg["source"]["sha256"]


@pytest.mark.parity
def test_torchscript_artifacts_in_torch_jit(sq_dir, sq_cases):
    out, _ = sq_dir
    extra = {"config.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; users still load it
        model = torch.jit.load(str(out / "model.torchscript.pt"), map_location="cpu", _extra_files=extra)
        pipe = torch.jit.load(str(out / "pipeline.torchscript.pt"), map_location="cpu")
    assert json.loads(extra["config.json"])["positive_index"] == POS
    with torch.inference_mode():
        for case in sq_cases:
            t = case.tensors
            _assert_model_outputs("model.torchscript.pt", model(t["X.model_input"]), case)
            _assert_pipeline_outputs("pipeline.torchscript.pt", *pipe(t["A.waveform"]), case)


@pytest.mark.parity
def test_pt2_artifacts_in_torch_export(sq_dir, sq_cases):
    out, _ = sq_dir
    model = torch.export.load(str(out / "model.pt2")).module()
    pipe = torch.export.load(str(out / "pipeline.pt2")).module()
    with torch.inference_mode():
        for case in sq_cases:
            t = case.tensors
            _assert_model_outputs("model.pt2", model(t["X.model_input"]), case)
            _assert_pipeline_outputs("pipeline.pt2", *pipe(t["A.waveform"]), case)


@pytest.mark.parity
def test_tflite_artifacts_in_the_litert_interpreter_builtin_resolver(sq_dir, sq_cases):
    interp = pytest.importorskip("ai_edge_litert.interpreter", reason="the `tflite` extra is not installed")
    out, _ = sq_dir
    builtin = interp.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    model = interp.Interpreter(model_path=str(out / "model.tflite"), experimental_op_resolver_type=builtin)
    pipe = interp.Interpreter(model_path=str(out / "pipeline.tflite"), experimental_op_resolver_type=builtin)
    assert model.get_signature_list() == {f"batch_{n}": {"inputs": ["spectrogram"], "outputs": ["logits"]} for n in (1, 8)}
    assert set(pipe.get_signature_list()) == {"batch_1", "batch_8"}
    # the 8 stored windows of both cases of each capture at once, through the batch-8 signatures
    for group in (sq_cases[:2], sq_cases[2:]):
        x = torch.cat([c.tensors["X.model_input"] for c in group]).numpy()
        w = torch.cat([c.tensors["A.waveform"] for c in group]).numpy()
        assert len(x) == 8
        logits8 = model.get_signature_runner("batch_8")(spectrogram=x)["logits"]
        p8 = pipe.get_signature_runner("batch_8")(waveform=w)
        bounds = np.cumsum([0] + [len(c.stored_windows) for c in group])
        for case, lo, hi in zip(group, bounds[:-1], bounds[1:]):
            sl = slice(int(lo), int(hi))
            _assert_model_outputs("model.tflite[batch_8]", logits8[sl], case)
            _assert_pipeline_outputs("pipeline.tflite[batch_8]", p8["confidence"][sl], p8["probs"][sl], p8["logits"][sl], case)
    # and one case window by window through the batch-1 signatures (the builtin DFT conv is slow: ~0.7 s/window)
    m1, p1 = model.get_signature_runner("batch_1"), pipe.get_signature_runner("batch_1")
    case = sq_cases[1]
    logits = np.concatenate([m1(spectrogram=x[None].numpy())["logits"] for x in case.tensors["X.model_input"]])
    _assert_model_outputs("model.tflite[batch_1]", logits, case)
    outs = [p1(waveform=w[None].numpy()) for w in case.tensors["A.waveform"]]
    _assert_pipeline_outputs("pipeline.tflite[batch_1]", *(np.concatenate([o[k] for o in outs])
                                                           for k in ("confidence", "probs", "logits")), case)


@pytest.mark.parity
def test_rn18_onnx_artifacts_on_every_stored_window(tmp_path):
    """rn18 (47 MB): only the core ONNX pair. Its pipeline is the tightest case (see the report)."""
    ort = pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    from porting.convert import load_model
    from porting.families.orcahello.export.onnx import export_onnx

    model, config = load_model(GOLDEN / "models" / "rn18.pkl")
    export_onnx(model, config, tmp_path)
    cls = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    pipe = ort.InferenceSession(str(tmp_path / "pipeline.onnx"), providers=["CPUExecutionProvider"])
    cases = _cases("rn18")
    assert len(cases) == 5 * len(capture_names()) and all(c.stored_windows for c in cases)  # five result cases per capture
    if testing_committed_store():
        assert sum(len(c.stored_windows) for c in cases) == 36  # 18 windows, two captures
    for case in cases:
        t = case.tensors
        _assert_model_outputs("rn18 model.onnx", cls.run(None, {"spectrogram": t["X.model_input"].numpy()})[0], case)
        _assert_pipeline_outputs("rn18 pipeline.onnx", *pipe.run(None, {"waveform": t["A.waveform"].numpy()}), case)


# ----------------------------------------------------------------------------- parity.json and HF files


@pytest.mark.parity
def test_parity_json_records_every_check(sq_dir, sq_cases):
    from porting.export import available_formats
    from porting.families.orcahello.export import ARTIFACTS

    out, _ = sq_dir
    parity = json.loads((out / "parity.json").read_text())
    assert parity["format"] == "porting.parity/2" and parity["family"] == "orcahello"
    assert parity["tolerance"] == TOL and parity["passed"] is True
    from porting.families.orcahello.export.verify import case_label

    labels = [case_label(c) for c in sq_cases]
    assert parity["golden"]["cases"] == labels and parity["golden"]["windows"] == sum(len(c.stored_windows) for c in sq_cases)
    assert "row" in parity["rules"] and parity["fingerprint"]["cpu"]["vendor"]
    assert parity["probe"]["windows"] == 4 and "PCM_16" in parity["probe"]["description"]
    assert parity["versions"]["torch"] == torch.__version__
    names = [n for f in available_formats() for n in ARTIFACTS[f]]
    assert list(parity["artifacts"]) == names + ["winograd"]  # the winograd backend: checked like one, no file
    for name, art in parity["artifacts"].items():
        outputs = {"logits", "confidence"} if not name.startswith("pipeline.") else {"logits", "probs", "confidence"}
        data = {r["data"] for r in art["checks"]}
        assert data == {"probe"} | set(labels), name
        assert {r["output"] for r in art["checks"]} == outputs, name
        for r in art["checks"]:
            assert r["gating"] and r["tier"] in ("strict", "portable")
            assert r["rule"].startswith("logits") if r["output"] == "logits" else r["rule"] == "abs 1e-05"
            assert r["passed"] == (r["margin"] is not None and r["margin"] <= 1), (name, r)
            if r["output"] != "logits":
                assert r["passed"] == (r["max_abs_diff"] <= TOL), (name, r)
        assert art["passed"] == all(r["passed"] for r in art["checks"]) is True, name
        if name != "winograd":
            assert (out / name).stat().st_size == art["bytes"]
    if "tflite" in available_formats():
        for name in ARTIFACTS["tflite"]:
            info = parity["artifacts"][name]["informational"]
            assert len(info) == 1 and "XNNPACK" in info[0]["runtime"]
            assert all(not r["gating"] for r in info[0]["checks"])
            assert parity["versions"]["litert-torch"] and parity["versions"]["ai-edge-litert"]


@pytest.mark.parity
def test_preprocessor_config_and_model_card(sq_dir):
    out, _ = sq_dir
    cfg = json.loads((out / "config.json").read_text())
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["sampling_rate"] == 20000
    assert (pre["mel"]["n_fft"], pre["mel"]["hop_length"], pre["mel"]["n_mels"]) == (2560, 256, 256)
    assert pre["mel"]["mel_sample_rate"] == 16000 and pre["mel"]["top_db"] == 100.0
    assert any("16000" in q and "all-zero" in q for q in pre["mel"]["quirks"])
    assert pre["pad"] == {**pre["pad"], "frames": 312, "pad_value_db": 0.0, "position": "after"}
    assert pre["normalize"]["mean"] == cfg["normalize"]["mean"] and pre["normalize"]["std"] == cfg["normalize"]["std"]
    assert pre["model_input_shape"] == [1, 256, 312] and pre["positive_index"] == POS
    card = (out / "README.md").read_text()
    assert "['negative', 'positive']" in card and cfg["source"]["sha256"] in card
    parity = json.loads((out / "parity.json").read_text())
    for name in parity["artifacts"]:
        assert f"| {name} |" in card and name.split(".")[0] in card
    assert "laid out for 16000 Hz" in card and "0.0 dB appended" in card and "## How to run" in card


# ----------------------------------------------------------------------------- port detect --backend


@pytest.mark.parity
def test_detector_onnx_backend_matches_goldens_and_torch_backend(sq_dir):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    from porting.families.orcahello.detect import Detector

    out, _ = sq_dir
    case = load_case(GOLDEN / "cases" / f"{SQ}__orca60_pcm16_48k.json")
    onnx_det = Detector.load(out, backend="onnx", batch_size=16)
    torch_det = Detector.load(out, backend="torch", batch_size=16)
    assert onnx_det.backend == "onnx" and torch_det.backend == "torch"
    got = onnx_det.run(case.audio_path)
    ref = torch_det.run(case.audio_path)
    assert got.confidence.shape == case.tensors["all.confidence"].shape == (59,)
    _gate("all.confidence", case.tensors["all.confidence"], got.confidence, case)
    _gate("all.logits", case.tensors["all.logits"], got.logits, case)
    _gate("all.confidence", ref.confidence, got.confidence)
    _gate("all.logits", ref.logits, got.logits)
    assert got.table.to_dict()["local_predictions"] == case.meta["local_predictions"]


@pytest.mark.parity
def test_cli_detect_backend_onnx_gives_the_torch_backends_windows(sq_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    from porting.families.orcahello.detect import Detector

    out, _ = sq_dir
    wav = GOLDEN / "audio" / "pcm16_16k_short.wav"
    js = tmp_path / "onnx.json"
    proc = subprocess.run([sys.executable, "-m", "porting", "detect", str(wav), "--model", str(out), "--backend",
                           "onnx", "--json", str(js), "--no-progress"], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [w["confidence"] for w in json.loads(js.read_text())["files"][0]["windows"]]
    ref = Detector.load(out, backend="torch").run(wav).confidence  # what `--backend torch` prints
    case = load_case(GOLDEN / "cases" / f"{SQ}__pcm16_16k_short.json")
    assert len(got) == len(ref) == 2
    _gate("all.confidence", ref, got)
    _gate("all.confidence", case.tensors["all.confidence"], got, case)


@pytest.mark.parity
def test_port_parity_checks_what_the_onnx_backend_ships(sq_dir):
    """`port parity --backend onnx --model DIR`: detector.onnx in onnxruntime, every stage, every capture."""
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    from porting.parity.run import run_parity

    out, _ = sq_dir
    runs = run_parity(GOLDEN, model_path=out, backend="onnx")
    assert sorted((r.report.case, r.capture) for r in runs) == sorted(
        (f"{SQ}__{rec}", cap) for rec in ("orca60_pcm16_48k", "pcm16_16k_short") for cap in capture_names())
    for r in runs:
        assert r.report.passed, r.report.summary()
        assert {"Y.logits", "all.logits", "all.confidence", "agg.local_predictions"} <= {s.stage for s in r.report.stages}


@pytest.mark.parity
def test_auto_backend_picks_onnx_for_a_converted_dir_and_torch_for_a_pickle(sq_dir):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    from porting.families.orcahello.detect import Detector

    out, _ = sq_dir
    assert Detector.load(out, backend="auto").backend == "onnx"
    assert Detector.load(GOLDEN / "models" / f"{SQ}.pkl", backend="auto").backend == "torch"


@pytest.mark.parity
def test_auto_backend_skips_and_onnx_backend_refuses_an_artifact_that_failed_verification(sq_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    import shutil

    from porting.families.orcahello.detect import Detector

    out = tmp_path / "failed"
    shutil.copytree(sq_dir[0], out)
    parity = json.loads((out / "parity.json").read_text())
    for name in ("detector.onnx", "model.onnx"):
        parity["artifacts"][name]["passed"] = False
    (out / "parity.json").write_text(json.dumps(parity))
    assert Detector.load(out, backend="auto").backend == "winograd"  # the next verified backend
    parity["artifacts"]["winograd"]["passed"] = False
    (out / "parity.json").write_text(json.dumps(parity))
    assert Detector.load(out, backend="auto").backend == "torch"
    with pytest.raises(UnsupportedModelError, match="detector.onnx: failed this model's verification"):
        Detector.load(out, backend="onnx")


def test_onnx_backend_needs_a_converted_dir_with_model_onnx(tmp_path):
    from porting.families.orcahello.detect import Detector

    with pytest.raises(MalformedModelError, match="model.onnx") as info:
        Detector.load(GOLDEN / "models" / f"{SQ}.pkl", backend="onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(UnsupportedModelError, match="backend='tensorrt'"):  # the API's own parameter name
        Detector.load(GOLDEN / "models" / f"{SQ}.pkl", backend="tensorrt")
    proc = subprocess.run([sys.executable, "-m", "porting", "detect", str(GOLDEN / "audio" / "pcm16_16k_short.wav"),
                           "--model", str(tmp_path), "--backend", "onnx", "--no-progress"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


# ----------------------------------------------------------------------------- failures are reported


@pytest.fixture(scope="module")
def sq_model():
    from porting.convert import load_model

    return load_model(GOLDEN / "models" / f"{SQ}.pkl")


def test_an_artifact_off_by_more_than_the_tolerance_fails(sq_model, tmp_path):
    """A classifier exported from a slightly perturbed model must be reported failed against the real one."""
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    import copy

    from porting.families.orcahello.export import load_artifact
    from porting.families.orcahello.export.onnx import export_onnx
    from porting.families.orcahello.export.verify import check_runner, eager_reference, probe_waveforms

    model, config = sq_model
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad[1][8].bias += 1e-4  # the last Linear: every logit moves by 1e-4
    export_onnx(bad, config, tmp_path)
    wave = probe_waveforms()
    rows = check_runner(load_artifact(tmp_path / "model.onnx"), "model", config, eager_reference(model, config, wave), wave, [])
    logits = next(r for r in rows if r["output"] == "logits")
    assert not logits["passed"] and 5e-5 < logits["max_abs_diff"] < 2e-4


def test_an_export_that_raises_is_reported_failed_not_skipped(sq_model, tmp_path, monkeypatch):
    import porting.families.orcahello.export as ex

    def broken(*args, **kwargs):
        raise RuntimeError("lowering failed\nsecond line")

    monkeypatch.setattr(ex, "_exporter", lambda fmt: broken)
    parity = ex.export_all(sq_model[0], sq_model[1], tmp_path, ["pt2"])
    assert parity["passed"] is False
    for name in ex.ARTIFACTS["pt2"]:
        art = parity["artifacts"][name]
        assert art["passed"] is False and art["error"] == "export failed: RuntimeError: lowering failed"
        assert not (tmp_path / name).exists()
    assert json.loads((tmp_path / "parity.json").read_text())["passed"] is False
    assert "**FAILED**" in (tmp_path / "README.md").read_text()
    assert "FAIL model.pt2" in ex.format_parity(parity)


def test_parse_formats():
    from porting.export import FORMATS, available_formats, parse_formats

    assert parse_formats(None) == parse_formats("all") == available_formats()
    assert set(available_formats()) <= set(FORMATS) and {"torchscript", "pt2"} <= set(available_formats())
    assert parse_formats("none") == []
    assert parse_formats("pt2, torchscript,pt2") == ["pt2", "torchscript"]
    with pytest.raises(ExportError, match="unknown format 'coreml'") as info:
        parse_formats("onnx,coreml")
    assert "\n" not in str(info.value)


def test_cli_convert_rejects_an_unknown_format_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "porting", "convert", str(GOLDEN / "models" / f"{SQ}.pkl"), "--out",
                           str(tmp_path / "out"), "--export", "coreml"], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith("error: --export coreml: unknown format")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- graph building blocks


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 3, 1), (5, 2, 2)])
@pytest.mark.parametrize("size", [(7, 7), (8, 9), (125, 155), (31, 62)])
def test_ceil_mode_maxpool_swap_is_identical(kernel, stride, padding, size):
    from porting.families.orcahello.pipeline import CeilMaxPool2d

    g = torch.Generator().manual_seed(size[0] * 100 + size[1])
    x = torch.randn(2, 3, *size, generator=g)
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=True)
    assert torch.equal(CeilMaxPool2d(pool)(x), pool(x))


def test_export_ready_model_is_bitwise_the_port(sq_model):
    """sq11-norm has both swapped layers (ceil-mode MaxPool2d x3, AdaptiveMaxPool2d(1)); max is exact."""
    from porting.families.orcahello.pipeline import CeilMaxPool2d, GlobalMaxPool2d, export_ready

    model, _ = sq_model
    ready = export_ready(model)
    kinds = [type(m) for m in ready.modules()]
    assert kinds.count(CeilMaxPool2d) == 3 and kinds.count(GlobalMaxPool2d) == 1
    assert not any(isinstance(m, nn.AdaptiveMaxPool2d) for m in ready.modules())
    assert any(isinstance(m, nn.AdaptiveMaxPool2d) for m in model.modules())  # the original is untouched
    x = load_case(GOLDEN / "cases" / f"{SQ}__pcm16_16k_short.json").tensors["X.model_input"]
    with torch.inference_mode():
        assert torch.equal(ready(x), model(x))


def test_dft_kernels_compute_the_windowed_rfft():
    from porting.families.orcahello.frontend.config import MelConfig
    from porting.dsp.mel import _build_window
    from porting.families.orcahello.pipeline import dft_kernels

    cfg = MelConfig()
    k = dft_kernels(cfg).to(torch.float64)[:, 0]  # [2K, N]
    assert k.shape == (2 * (cfg.n_fft // 2 + 1), cfg.n_fft) and dft_kernels(cfg).dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, cfg.n_fft, generator=g, dtype=torch.float64)
    want = torch.fft.rfft(frames * _build_window(cfg).to(torch.float64))
    got = frames @ k.T
    bins = want.shape[-1]
    scale = want.abs().max()
    assert (got[:, :bins] - want.real).abs().max() / scale < 1e-6
    assert (got[:, bins:] - want.imag).abs().max() / scale < 1e-6


def test_pipeline_graph_matches_the_eager_port_on_the_probe(sq_model):
    """The exportable Pipeline (both STFT forms) against the exact eager path, before any exporter runs."""
    from porting.families.orcahello.export.verify import eager_reference, probe_waveforms
    from porting.families.orcahello.pipeline import Pipeline

    model, config = sq_model
    wave = probe_waveforms()
    ref = eager_reference(model, config, wave)
    assert wave.shape == (4, 40000) and torch.equal(wave, probe_waveforms())  # deterministic
    for dft in ("fft", "matmul"):
        with torch.inference_mode():
            conf, probs, logits = Pipeline(model, config, dft=dft)(wave)
        _gate("Y.logits", ref["logits"], logits)
        _gate("Y.probs", ref["confidence"], conf)
        _gate("Y.probs", ref["probs"], probs)


def test_nan_or_wrong_shape_outputs_fail_the_check(sq_model):
    from porting.families.orcahello.export.verify import check_runner, eager_reference, probe_waveforms

    model, config = sq_model
    wave = probe_waveforms()
    probe = eager_reference(model, config, wave)
    nan_logits = probe["logits"].numpy().copy()
    nan_logits[0, 0] = np.nan
    rows = check_runner(lambda x: {"logits": nan_logits}, "model", config, probe, wave, [])
    assert [r["passed"] for r in rows] == [False, False] and rows[0]["max_abs_diff"] is None
    rows = check_runner(lambda x: {"logits": probe["logits"].numpy()[:3]}, "model", config, probe, wave, [])
    assert not any(r["passed"] for r in rows)
