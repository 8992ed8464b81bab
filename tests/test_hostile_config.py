"""Hostile configs, weights, modules, FIFOs and devices through the real CLI (issue 19): every case exits non-zero
with exactly one ``error: <file>: <what>; <fix>`` line, no traceback, its inputs unchanged and nothing written.

Each case is a real file the tester fed ``port``; the expected fragments name the file and the field or tensor.
FIFO cases also bound the time (a hang is a ``TimeoutExpired`` failure).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import GOLDEN, ROOT

HF = GOLDEN / "hf" / "models"
REC = GOLDEN / "audio" / "pcm16_16k_short.wav"
HF_REC = GOLDEN / "hf" / "audio" / "short16k.wav"
TIMEOUT = 60  # a normal case takes ~3 s (importing torch); a FIFO case gets FIFO_TIMEOUT
FIFO_TIMEOUT = 20


def _port(args: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: regular files by sha256, anything else (FIFOs, dirs) by its kind."""
    out = {}
    for p in sorted(root.rglob("*")):
        mode = os.lstat(p).st_mode
        if stat.S_ISREG(mode):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[p.relative_to(root).as_posix()] = stat.filemode(mode)
    return out


def _hf(tmp: Path, name: str, model: str = "w2v2-base") -> Path:
    d = tmp / name
    shutil.copytree(HF / model, d)
    return d


def _edit(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _edit_tensors(path: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    fn(state)
    save_file(state, str(path))


def _cfg(**changes):
    return lambda d: _edit(d / "config.json", **changes)


def _pre(**changes):
    return lambda d: _edit(d / "preprocessor_config.json", **changes)


# name -> (model folder, mutation of the copied folder, file the error must name, fragments)
HF_CASES = {
    "architectures_dict": ("w2v2-base", _cfg(architectures={"a": 1}), "config.json", ["architectures", "must be"]),
    "architectures_int": ("w2v2-base", _cfg(architectures=5), "config.json", ["architectures = 5"]),
    "architectures_str": ("w2v2-base", _cfg(architectures="Wav2Vec2ForSequenceClassification"), "config.json",
                          ["architectures", "a list of"]),
    "id2label_list": ("w2v2-base", _cfg(id2label=["a", "b", "c"]), "config.json", ["id2label", '"0"']),
    "zero_labels": ("w2v2-base", _cfg(id2label={}, label2id={}), "config.json", ["id2label", "a classifier needs a label"]),
    "heads_zero": ("w2v2-base", _cfg(num_attention_heads=0), "config.json",
                   ["num_attention_heads = 0", "divides hidden_size"]),
    "heads_not_dividing": ("w2v2-base", _cfg(num_attention_heads=3), "config.json",
                           ["num_attention_heads = 3", "divides hidden_size (32)"]),
    "hidden_1e9": ("w2v2-base", _cfg(hidden_size=1_000_000_000), "config.json", ["hidden_size = 1000000000"]),
    "hidden_float": ("w2v2-base", _cfg(hidden_size=1e9), "config.json", ["hidden_size = 1000000000.0", "an integer"]),
    "layers_100000": ("w2v2-base", _cfg(num_hidden_layers=100_000), "config.json", ["num_hidden_layers = 100000"]),
    "layers_within_limit_beyond_weights": ("w2v2-base", _cfg(num_hidden_layers=256, intermediate_size=65536),
                                           "config.json", ["imply at least", "the weights hold"]),
    "conv_lengths": ("w2v2-base", _cfg(conv_kernel=[10, 3]), "config.json", ["conv_kernel", "as long as conv_dim"]),
    "layer_norm_eps_nan_string": ("w2v2-base", _cfg(layer_norm_eps="NaN"), "config.json", ["layer_norm_eps"]),
    "activation_unknown": ("w2v2-base", _cfg(hidden_act="swiglu"), "config.json", ["hidden_act", "one of"]),
    "add_adapter": ("w2v2-base", _cfg(add_adapter=True), "config.json", ["add_adapter = true"]),
    "deep_json": ("w2v2-base", lambda d: (d / "config.json").write_text("[" * 100_000 + "]" * 100_000), "config.json",
                  ["nests deeper"]),
    "config_nan_token": ("w2v2-base", lambda d: (d / "config.json").write_text('{"hidden_size": NaN}'), "config.json",
                         ["not valid JSON"]),
    "rate_string": ("w2v2-base", _pre(sampling_rate="16000"), "preprocessor_config.json", ["sampling_rate"]),
    "rate_null": ("w2v2-base", _pre(sampling_rate=None), "preprocessor_config.json", ["sampling_rate = null"]),
    "rate_zero": ("w2v2-base", _pre(sampling_rate=0), "preprocessor_config.json", ["sampling_rate = 0", "1,000"]),
    "rate_negative": ("w2v2-base", _pre(sampling_rate=-16000), "preprocessor_config.json", ["sampling_rate = -16000"]),
    "rate_1e12": ("w2v2-base", _pre(sampling_rate=10**12), "preprocessor_config.json", ["sampling_rate"]),
    "feature_size_2": ("w2v2-base", _pre(feature_size=2), "preprocessor_config.json", ["feature_size = 2"]),
    "padding_left": ("w2v2-base", _pre(padding_side="left"), "preprocessor_config.json", ["padding_side", '"right"']),
    "preprocessor_array": ("w2v2-base", lambda d: (d / "preprocessor_config.json").write_text("[1, 2]"),
                           "preprocessor_config.json", ["not a JSON object"]),
    "ast_mel_bins_zero": ("ast", _cfg(num_mel_bins=0), "config.json", ["num_mel_bins = 0"]),
    "ast_mel_bins_below_patch": ("ast", _cfg(num_mel_bins=8), "config.json", ["num_mel_bins = 8", "patch_size (16)"]),
    "ast_std_zero": ("ast", _pre(std=0), "preprocessor_config.json", ["std = 0"]),
    "missing_projector": ("w2v2-base", lambda d: _edit_tensors(d / "model.safetensors",
                                                               lambda s: s.pop("projector.weight")),
                          "config.json", ["projector.weight"]),
    "int8_weights": ("w2v2-base", lambda d: _edit_tensors(
        d / "model.safetensors", lambda s: s.update({"projector.weight": s["projector.weight"].to(torch.int8)})),
        "model.safetensors", ["projector.weight", "int8"]),
    "nan_weights": ("w2v2-base", lambda d: _edit_tensors(
        d / "model.safetensors", lambda s: s["classifier.weight"].view(-1).__setitem__(0, float("nan"))),
        "model.safetensors", ["classifier.weight", "NaN"]),
    "inf_weights_bin": ("custom-max", lambda d: _bin_with_inf(d / "pytorch_model.bin"), "pytorch_model.bin",
                        ["classifier.out_proj.weight", "NaN/Inf"]),
    "safetensors_garbage": ("w2v2-base", lambda d: (d / "model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{"),
                            "model.safetensors", ["not a readable safetensors file"]),
}


def _bin_with_inf(path: Path) -> None:
    state = torch.load(path, weights_only=True)  # the test writes its own fixture; torch's safe reader
    state["classifier.out_proj.weight"][0, 0] = float("inf")
    torch.save(state, path)


def _fifo_folder(tmp: Path, name: str, which: str) -> Path:
    d = _hf(tmp, name)
    (d / which).unlink()
    os.mkfifo(d / which)
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every hostile input, built once; ``inputs`` is snapshotted before any command runs."""
    base = tmp_path_factory.mktemp("hostile_config")
    inputs, outs = base / "in", base / "out"
    inputs.mkdir()
    outs.mkdir()
    cases: dict[str, tuple[list[str], str, list[str], float]] = {}
    for name, (model, mutate, file, fragments) in HF_CASES.items():
        d = _hf(inputs, name, model)
        mutate(d)
        cases[name] = (["convert", str(d), "--out", str(outs / name), "--export", "none"], str(d / file), fragments,
                       TIMEOUT)
    # FIFOs and devices: every command that reads a user-named file
    fifo = inputs / "fifo.pkl"
    os.mkfifo(fifo)
    cases["fifo_inspect"] = (["inspect", str(fifo)], str(fifo), ["FIFO", "regular file"], FIFO_TIMEOUT)
    cases["fifo_convert"] = (["convert", str(fifo), "--out", str(outs / "fifo_convert")], str(fifo), ["FIFO"],
                             FIFO_TIMEOUT)
    cases["fifo_detect_model"] = (["detect", str(REC), "--model", str(fifo)], str(fifo), ["FIFO"], FIFO_TIMEOUT)
    cases["device_inspect"] = (["inspect", "/dev/zero"], "/dev/zero", ["character device"], FIFO_TIMEOUT)
    d = _fifo_folder(inputs, "fifo_config", "config.json")
    cases["fifo_hf_config"] = (["convert", str(d), "--out", str(outs / "fifo_hf_config"), "--export", "none"],
                               str(d / "config.json"), ["FIFO"], FIFO_TIMEOUT)
    d = _fifo_folder(inputs, "fifo_preprocessor", "preprocessor_config.json")
    cases["fifo_hf_preprocessor"] = (["convert", str(d), "--out", str(outs / "fifo_hf_pre"), "--export", "none"],
                                     str(d / "preprocessor_config.json"), ["FIFO"], FIFO_TIMEOUT)
    d = _fifo_folder(inputs, "fifo_weights", "model.safetensors")
    cases["fifo_hf_weights"] = (["convert", str(d), "--out", str(outs / "fifo_hf_weights"), "--export", "none"],
                                str(d / "model.safetensors"), ["FIFO"], FIFO_TIMEOUT)
    store = inputs / "store_fifo"
    (store / "cases").mkdir(parents=True)
    os.mkfifo(store / "MANIFEST.json")
    cases["fifo_manifest"] = (["golden", "verify", str(store)], str(store / "MANIFEST.json"), ["FIFO"], FIFO_TIMEOUT)
    store = inputs / "store_strings"
    (store / "cases").mkdir(parents=True)
    (store / "MANIFEST.json").write_text(json.dumps({"format": "porting-golden-manifest/1", "algorithm": "sha256",
                                                     "files": {"cases/a.json": "deadbeef"}}))
    cases["manifest_entry_string"] = (["golden", "verify", str(store)], str(store / "MANIFEST.json"),
                                      ['files.cases/a.json = "deadbeef"', "{sha256, bytes}"], TIMEOUT)
    store = inputs / "store_deep"
    (store / "cases").mkdir(parents=True)
    (store / "MANIFEST.json").write_text("{" + '"a":{' * 50_000 + "}" * 50_001)
    cases["manifest_deep"] = (["golden", "verify", str(store)], str(store / "MANIFEST.json"), ["nests deeper"], TIMEOUT)
    # converted folders (written by the library itself, then edited)
    from porting.convert import convert

    good = base / "converted"
    convert(GOLDEN / "models" / "sq11-norm.pkl", good, exports=None)
    hf_good = base / "converted_hf"
    convert(HF / "w2v2-base", hf_good, exports=None)
    for name, src, edit, fragments in [
        ("converted_array", good, lambda c: [1, 2], ["not a porting model config"]),
        ("converted_no_frontend", good, lambda c: {k: v for k, v in c.items() if k != "frontend"}, ["frontend"]),
        ("converted_positive_out_of_range", good, lambda c: {**c, "positive_index": 7}, ["positive_index = 7"]),
        ("converted_normalize_std_zero", good, lambda c: {**c, "normalize": {"mean": [0.0], "std": [0.0]}},
         ["normalize.std[0] = 0.0"]),
        ("converted_hf_heads_zero", hf_good,
         lambda c: {**c, "hf_config": {**c["hf_config"], "num_attention_heads": 0}}, ["hf_config.num_attention_heads = 0"]),
        ("converted_hf_rate_zero", hf_good, lambda c: {**c, "frontend": {**c["frontend"], "preprocessor": {
            **c["frontend"]["preprocessor"], "sampling_rate": 0}}}, ["frontend.preprocessor.sampling_rate = 0"]),
    ]:
        d = inputs / name
        shutil.copytree(src, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(edit(cfg)))
        rec = HF_REC if src is hf_good else REC
        cases[name] = (["detect", str(rec), "--model", str(d)], str(d / "config.json"), fragments, TIMEOUT)
    # generic torch.save'd modules
    torch.manual_seed(0)
    modules = {
        "module_linear": (nn.Sequential(nn.Linear(3, 3)), ["does not take the detector's input", "model"]),
        "module_linear_1e6": (_declaring(nn.Sequential(nn.Linear(3, 3)), in_features=10**6, out_features=10**6),
                              ["model[0]", "[1000000, 1000000]", "[3, 3]"]),
        "module_linear_negative": (_declaring(nn.Sequential(nn.Linear(3, 3)), out_features=-5),
                                   ["model[0]", "out_features = -5"]),
        "module_conv_huge_padding": (_declaring(nn.Sequential(nn.Conv2d(1, 2, 3)), padding=(10**9, 10**9)),
                                     ["model[0]", "padding"]),
    }
    for name, (module, fragments) in modules.items():
        p = inputs / f"{name}.pkl"
        torch.save(module, p)
        cases[name] = (["convert", str(p), "--out", str(outs / name), "--export", "none"], p.name, fragments, TIMEOUT)
    before = _snapshot(inputs)

    def one(item):
        name, (args, _, _, timeout) = item
        return name, _port(args, timeout)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(one, cases.items()))
    return {"cases": cases, "done": done, "inputs": inputs, "outs": outs, "before": before}


def _declaring(module: nn.Module, **attrs) -> nn.Module:
    for k, v in attrs.items():
        setattr(module[0], k, v)
    return module


ALL = (sorted(HF_CASES) + ["fifo_inspect", "fifo_convert", "fifo_detect_model", "device_inspect", "fifo_hf_config",
                           "fifo_hf_preprocessor", "fifo_hf_weights", "fifo_manifest", "manifest_entry_string",
                           "manifest_deep", "converted_array", "converted_no_frontend",
                           "converted_positive_out_of_range", "converted_normalize_std_zero",
                           "converted_hf_heads_zero", "converted_hf_rate_zero", "module_linear", "module_linear_1e6",
                           "module_linear_negative", "module_conv_huge_padding"])


@pytest.mark.parametrize("name", ALL)
def test_one_line_error_naming_file_and_fix(world, name):
    args, path, fragments, _ = world["cases"][name]
    proc = world["done"][name]
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"error: {path}: "), line
    what_and_fix = line[len(f"error: {path}: "):]
    assert "; " in what_and_fix and what_and_fix.split("; ", 1)[1].strip(), line  # <what>; <what to do>
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_inputs_unchanged_and_nothing_written(world):
    assert _snapshot(world["inputs"]) == world["before"]
    assert list(world["outs"].iterdir()) == []  # no output, no temp dir left beside it


def test_corpus_cases_are_live(tmp_path):
    """Positive control: the unmutated folders, the same commands, succeed; so each refusal above is the mutation's."""
    proc = _port(["convert", str(HF / "w2v2-base"), "--out", str(tmp_path / "ok"), "--export", "none"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok" / "config.json").is_file()


# ------------------------------------------------------------------------------------------ in-process checks


def test_every_hf_case_is_refused_in_process(tmp_path):
    """The library raises one-line PortingErrors (never another type) for every HF corpus case."""
    from porting.errors import PortingError
    from porting.families.hf.model import load_hf

    for name, (model, mutate, file, fragments) in HF_CASES.items():
        d = _hf(tmp_path, name, model)
        mutate(d)
        with pytest.raises(PortingError) as info:
            load_hf(d)
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(str(d / file)), (name, str(info.value))


def test_detection_payload_is_strict_json():
    """Non-finite numbers in a result become null, with a warning (strict JSON readers refuse bare NaN)."""
    from porting.summary import detection_payload

    class Result:  # an HF-shaped result (no ``table``) whose model overflowed
        def to_dict(self):
            return {"file": "x.wav", "windows": [{"logits": [float("nan"), 1.0], "probs": [float("inf"), 0.5]}]}

    class Det:
        config = {"source": {"file": "m"}}
        backend = "torch"

    payload = detection_payload(Det(), [Result()], 0.5, None)
    text = json.dumps(payload)

    def refuse(name):
        raise ValueError(name)

    back = json.loads(text, parse_constant=refuse)
    row = back["files"][0]["windows"][0]
    assert row["logits"] == [None, 1.0] and row["probs"] == [None, 0.5]
    assert any("2 non-finite values" in w for w in back["files"][0]["warnings"])


def test_reader_refuses_fifo_quickly(tmp_path):
    import time

    from porting.io import files
    from porting.errors import MalformedModelError

    p = tmp_path / "pipe"
    os.mkfifo(p)
    t = time.monotonic()
    with pytest.raises(MalformedModelError, match="FIFO"):
        files.read_bytes(p, "the model file")
    assert time.monotonic() - t < 5


# ------------------------------------------------------------------------------------ property tests (hypothesis)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

W2V2 = "Wav2Vec2ForSequenceClassification"
BASE_CONFIG = json.loads((HF / "w2v2-base" / "config.json").read_text())
BASE_ELEMENTS = 39_795  # elements in golden/hf/models/w2v2-base/model.safetensors (checked below)
ACTS = ["gelu", "relu", "tanh", "gelu_new", "silu"]


@st.composite
def small_w2v2_configs(draw):
    """Configs inside the schema, small enough to build in milliseconds."""
    heads = draw(st.integers(1, 4))
    hidden = heads * draw(st.integers(1, 6))
    groups = draw(st.sampled_from([g for g in range(1, hidden + 1) if hidden % g == 0]))
    n_conv = draw(st.integers(1, 3))
    n_labels = draw(st.integers(1, 4))
    return {
        **BASE_CONFIG,
        "hidden_size": hidden, "num_attention_heads": heads, "num_conv_pos_embedding_groups": groups,
        "num_conv_pos_embeddings": draw(st.integers(1, 6)),
        "num_hidden_layers": draw(st.integers(1, 2)), "intermediate_size": draw(st.integers(1, 12)),
        "conv_dim": draw(st.lists(st.integers(1, 6), min_size=n_conv, max_size=n_conv)),
        "conv_kernel": draw(st.lists(st.integers(1, 4), min_size=n_conv, max_size=n_conv)),
        "conv_stride": draw(st.lists(st.integers(1, 3), min_size=n_conv, max_size=n_conv)),
        "feat_extract_norm": draw(st.sampled_from(["group", "layer"])),
        "hidden_act": draw(st.sampled_from(ACTS)), "feat_extract_activation": draw(st.sampled_from(ACTS)),
        "layer_norm_eps": draw(st.floats(1e-12, 0.5)), "conv_bias": draw(st.booleans()),
        "do_stable_layer_norm": draw(st.booleans()), "use_weighted_layer_sum": draw(st.booleans()),
        "mask_time_prob": draw(st.floats(0.0, 1.0)), "classifier_proj_size": draw(st.integers(1, 6)),
        "id2label": {str(i): f"l{i}" for i in range(n_labels)},
        "label2id": {f"l{i}": i for i in range(n_labels)},
    }


def test_base_elements_constant():
    from safetensors.torch import load_file

    assert sum(t.numel() for t in load_file(str(HF / "w2v2-base" / "model.safetensors")).values()) == BASE_ELEMENTS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_w2v2_configs())
def test_within_schema_validates_and_builds(cfg):
    """Inside the schema: accepted, builds, and the parameter floor the size limits use is a true lower bound."""
    from porting.families.hf.model import build
    from porting.families.hf.schema import check_hf_config, hf_parameter_floor

    checked = check_hf_config(cfg, W2V2, "config.json")
    model = build(W2V2, checked)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params >= hf_parameter_floor(W2V2, checked)
    assert model.classifier.out_features == len(cfg["id2label"])


FIELDS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
          "hidden_act", "conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm", "num_conv_pos_embeddings",
          "num_conv_pos_embedding_groups", "classifier_proj_size", "id2label", "num_labels", "architectures",
          "conv_bias", "do_stable_layer_norm", "mask_time_prob", "use_weighted_layer_sum", "add_adapter"]
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(ACTS + ["group", "layer"]),
    st.lists(st.integers(-2, 10**7), max_size=80), st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), HOSTILE)
def test_any_value_is_accepted_or_one_line_error(field, value):
    """Any JSON value in any field: the read either accepts it (and the build then works or fails in one typed line)
    or refuses it with one PortingError line naming the field; never another exception type."""
    from porting.errors import PortingError
    from porting.families.hf.model import build
    from porting.families.hf.schema import check_hf_config

    cfg = {**BASE_CONFIG, field: value}
    try:
        checked = check_hf_config(cfg, W2V2, "m/config.json", elements=BASE_ELEMENTS)
    except PortingError as err:
        text = str(err)
        assert "\n" not in text and text.startswith("m/config.json: ")
        assert field in text or "imply at least" in text, text
        return
    try:
        build(W2V2, checked)
    except PortingError as err:
        assert "\n" not in str(err)


PRE_FIELDS = ["sampling_rate", "feature_size", "padding_side", "padding_value", "do_normalize", "return_attention_mask"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PRE_FIELDS), HOSTILE)
def test_preprocessor_values_accepted_only_within_schema(field, value):
    """The wav2vec2 preprocessor: a value is accepted exactly when a hand-written statement of the schema says so."""
    from porting.errors import PortingError
    from porting.families.hf.schema import check_preprocessor

    def ok(f, v):
        is_int = isinstance(v, int) and not isinstance(v, bool)
        return {
            "sampling_rate": is_int and 1000 <= v <= 384_000,
            "feature_size": is_int and v == 1,
            "padding_side": v == "right",
            "padding_value": not isinstance(v, bool) and isinstance(v, int | float) and v == v and abs(v) != float("inf"),
            "do_normalize": isinstance(v, bool),
            "return_attention_mask": isinstance(v, bool),
        }[f]

    pre = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000, field: value}
    try:
        check_preprocessor(pre, "wav2vec2", "p.json")
        accepted = True
    except PortingError as err:
        assert "\n" not in str(err) and f"p.json: {field} = " in str(err)
        accepted = False
    assert accepted == ok(field, value), (field, value)
