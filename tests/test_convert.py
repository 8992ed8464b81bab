"""`convert` / `load_model`: atomic output, config.json contents, bitwise round trip, typed failures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

from conftest import COMMITTED, GOLDEN, ROOT
from porting.convert import convert, format_summary, load_model
from porting.errors import MalformedModelError, UnsupportedLayerError, UnsupportedModelError
from porting.families.orcahello.frontend.config import FrontendConfig
from porting.golden import load_case
from porting.outputs import OutputError

MODELS = ["rn18", "sq11-norm"]
CASE_OF = {"rn18": "rn18__pcm16_16k_short", "sq11-norm": "sq11-norm__pcm16_16k_short"}


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp("conv") / name
    summary = convert(GOLDEN / "models" / f"{name}.pkl", out, exports=None)  # weights + config only
    return name, out, summary


def test_output_files_and_summary(converted):
    name, out, summary = converted
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temp dir left beside it
    text = format_summary(summary)
    assert f"{name}.pkl" in text and str(out) in text and len(text.splitlines()) <= 8


def test_safetensors_match_legacy_state_dict_listing(converted):
    name, out, _ = converted
    listing = json.loads((COMMITTED / "models" / f"{name}.inspect.json").read_text())["state_dict"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        got = {k: {"shape": list(f.get_slice(k).get_shape()), "dtype": f.get_slice(k).get_dtype()} for k in f.keys()}
    assert set(got) == set(listing)
    for k, v in listing.items():
        assert got[k]["shape"] == v["shape"], k
        assert got[k]["dtype"] == {"float32": "F32", "int64": "I64"}[v["dtype"]], k


def test_config_json(converted):
    name, out, _ = converted
    cfg = json.loads((out / "config.json").read_text())
    src = GOLDEN / "models" / f"{name}.pkl"
    listing = json.loads((COMMITTED / "models" / f"{name}.inspect.json").read_text())
    assert cfg["source"]["file"] == f"{name}.pkl"
    assert cfg["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == listing["sha256"]
    assert cfg["source"]["kind"] == "fastai1-learner"
    assert cfg["classes"] == listing["classes"] == ["negative", "positive"]
    assert cfg["positive_index"] == 1 and "positive" in cfg["positive_rule"]
    assert cfg["activation"] == {"name": "softmax", "dim": -1}
    assert cfg["frontend"] == FrontendConfig().to_dict()
    assert list(cfg["state_dict"]) == list(listing["state_dict"])  # legacy order kept in the config
    from porting import __version__

    assert cfg["porting_version"] == __version__
    if listing["normalize"] is None:
        assert cfg["normalize"] is None
    else:
        assert cfg["normalize"] == {"mean": listing["normalize"]["mean"], "std": listing["normalize"]["std"]}
    modules = [(m["path"], m["class"]) for m in listing["modules"]]
    assert cfg["architecture"]["class"] == modules[0][1]
    assert len(modules) == _count_nodes(cfg["architecture"])


def _count_nodes(node: dict) -> int:
    return 1 + sum(_count_nodes(c) for _, c in node["children"] if c is not None)


def test_round_trip_is_bitwise_and_matches_golden(converted):
    name, out, _ = converted
    import porting

    assert porting.load_model is load_model  # the package re-exports it lazily
    from_dir, cfg_dir = load_model(out)
    from_pkl, cfg_pkl = load_model(GOLDEN / "models" / f"{name}.pkl")
    assert cfg_dir == cfg_pkl == json.loads((out / "config.json").read_text())
    assert not from_dir.training and not from_pkl.training
    assert list(from_dir.state_dict()) == list(from_pkl.state_dict())
    case = load_case(GOLDEN / "cases" / f"{CASE_OF[name]}.json")
    x = case.tensors["X.model_input"]
    with torch.no_grad():
        a, b = from_dir(x), from_pkl(x)
    assert torch.equal(a, b)
    assert (a - case.tensors["Y.logits"]).abs().max().item() <= 1e-5


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists; choose another out or pass overwrite=True"):
        convert(GOLDEN / "models" / "sq11-norm.pkl", out)
    assert (out / "keep.txt").read_text() == "mine"
    convert(GOLDEN / "models" / "sq11-norm.pkl", out, overwrite=True, exports=None)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _save(tmp_path, obj, name="m.pt", **kw):
    path = tmp_path / name
    torch.save(obj, path, **kw)
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda d: _save(d, nn.Sequential(nn.Linear(2, 2), nn.GRU(2, 2))), UnsupportedLayerError, r"model\[1\] is torch"),
        (lambda d: _save(d, nn.Linear(2, 2).state_dict()), UnsupportedModelError, "only a state_dict"),
        (lambda d: _save(d, {"a": 1}), UnsupportedModelError, "root object is dict"),
        (lambda d: _write(d / "t.pkl", b"\x80\x02}q\x00(X"), MalformedModelError, "not a readable"),
        (lambda d: d / "missing.pkl", MalformedModelError, "cannot read"),
    ],
    ids=["unsupported-layer", "state-dict-only", "no-model", "truncated-pickle", "missing-file"],
)
def test_failures_are_typed_and_leave_nothing(tmp_path, make, error, match):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    path = make(src_dir)
    outs = tmp_path / "outs"
    outs.mkdir()
    with pytest.raises(error, match=match) as info:
        convert(path, outs / "model", exports=None)
    assert "\n" not in str(info.value)
    assert list(outs.iterdir()) == []


def test_cli_convert_prints_summary(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "porting", "convert", str(GOLDEN / "models" / "sq11-norm.pkl"),
                           "--out", str(out), "--export", "none"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "converted sq11-norm.pkl" in proc.stdout and "positive index 1" in proc.stdout
    assert json.loads((out / "config.json").read_text())["classes"] == ["negative", "positive"]


def test_exports_none_writes_the_card_but_no_artifact(tmp_path):
    """``exports="none"`` is ``--export none``: parity.json and the model card, no exported model (the winograd
    backend, which has no file, is still verified)."""
    out = tmp_path / "m"
    summary = convert(GOLDEN / "models" / "sq11-norm.pkl", out, exports="none")
    names = sorted(p.name for p in out.iterdir())
    assert {"config.json", "model.safetensors", "parity.json"} <= set(names)
    assert not [n for n in names if n.endswith((".onnx", ".pt", ".pt2", ".tflite"))]
    assert list(summary["exports"]["artifacts"]) == ["winograd"]


def test_output_dir_problems_are_found_before_reading_the_model(tmp_path):
    """--out under a regular file: one line, and the (unreadable) model is never opened."""
    regular = tmp_path / "f"
    regular.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory") as info:
        convert(tmp_path / "missing.pkl", regular / "out")
    assert str(info.value).count(str(regular / "out")) == 1


def test_unreadable_converted_dir_names_the_file_once(tmp_path):
    out = tmp_path / "m"
    convert(GOLDEN / "models" / "sq11-norm.pkl", out, exports=None)
    (out / "model.safetensors").unlink()
    with pytest.raises(MalformedModelError) as info:
        load_model(out)
    assert str(info.value).count("model.safetensors") == 1 and "No such file" in str(info.value)


def test_convert_creates_missing_parent_directories(tmp_path):
    """A fresh checkout has no out/: `port convert ... --out out/rn18` must still work (tools/demo)."""
    from porting.convert import convert

    out = tmp_path / "not" / "yet" / "model"
    convert(GOLDEN / "models" / "sq11-norm.pkl", out, exports=None)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temp dir left beside it
