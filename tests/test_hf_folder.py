"""Reading HF model folders as data: recognition from config + keys, one-line errors, hostile checkpoints.

The folders are golden/hf/models (written by transformers' save_pretrained in the reference venv) and copies of
them altered the way real folders go wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from fixtures import pickle_kit as pk
from porting.errors import MalformedModelError, UnsupportedModelError
from porting.families.hf.folder import AST, CUSTOM_SPEECH, inspect_folder, read_hf_folder, recognise

MODELS = ROOT / "golden" / "hf" / "models"
EXPECTED = {
    "w2v2-base": "Wav2Vec2ForSequenceClassification",
    "w2v2-large": "Wav2Vec2ForSequenceClassification",
    "hubert": "HubertForSequenceClassification",
    "wavlm": "WavLMForSequenceClassification",
    "sewd": "SEWDForSequenceClassification",
    "ast": AST,
    "custom-mean": CUSTOM_SPEECH,
    "custom-sum": CUSTOM_SPEECH,
    "custom-max": CUSTOM_SPEECH,
}


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(MODELS / name, dst)
    return dst


def _port(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recognised_from_config_and_keys(name):
    spec = read_hf_folder(MODELS / name)
    assert spec.architecture == EXPECTED[name]
    assert spec.labels == [spec.config["id2label"][str(i)] for i in range(len(spec.labels))]


def test_pytorch_model_bin_is_read_without_torch_load():
    spec = read_hf_folder(MODELS / "custom-max")
    assert spec.weights_file == "pytorch_model.bin"
    ref = torch.load(MODELS / "custom-max" / "pytorch_model.bin", weights_only=True)  # torch's own safe reader: oracle
    assert set(ref) == set(spec.state)
    assert all(torch.equal(ref[k], spec.state[k]) for k in ref)


def test_custom_head_recognised_by_keys_when_config_names_the_base_class(tmp_path):
    d = _copy("custom-mean", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["Wav2Vec2ForSequenceClassification"]  # what a Trainer run on the subclass may write
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MalformedModelError, match="names class Wav2Vec2ForSequenceClassification but the weights hold a "
                                                  "Wav2Vec2ForSpeechClassification"):
        read_hf_folder(d)


def test_unknown_architecture_one_line(tmp_path):
    d = _copy("w2v2-base", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["Wav2Vec2ForCTC"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="Wav2Vec2ForCTC") as err:
        read_hf_folder(d)
    assert "\n" not in str(err.value)


def test_head_keys_unknown():
    with pytest.raises(UnsupportedModelError, match="head keys are"):
        recognise({"architectures": ["Wav2Vec2ForCTC"]}, ["wav2vec2.feature_projection.projection.weight", "lm_head.weight"])


def test_folder_without_config(tmp_path):
    d = _copy("w2v2-base", tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(MalformedModelError, match="no config.json"):
        read_hf_folder(d)
    r = _port("detect", str(ROOT / "golden" / "hf" / "audio" / "tones16k.wav"), "--model", str(d), "--no-progress")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no config.json" in r.stderr, r.stderr


def test_shape_mismatch_names_the_key(tmp_path):
    from porting.families.hf.model import load_hf

    d = _copy("w2v2-base", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = cfg["intermediate_size"] * 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MalformedModelError, match=r"intermediate_dense.weight has shape \[\d+, \d+\] but config.json "
                                                  r"implies \[\d+, \d+\]"):
        load_hf(d)


def _hostile_bin(folder: Path, canary: Path) -> None:
    """custom-max's real pytorch_model.bin with ``state["evil"] = os.system("touch canary")`` injected."""
    src = folder / "pytorch_model.bin"
    data = pk.inject_setitem(pk.read_data_pkl(src), "evil", pk.payloads(canary)["os_system"])
    src.write_bytes(pk.rezip_with(src, data))


def test_payload_in_pytorch_model_bin_is_live(tmp_path):
    d = _copy("custom-max", tmp_path)
    canary = tmp_path / "canary"
    _hostile_bin(d, canary)
    torch.load(d / "pytorch_model.bin", weights_only=False)  # what transformers did before torch 2.6: runs it
    assert canary.exists()


@pytest.mark.parametrize("command", ["convert", "inspect", "detect"])
def test_payload_in_pytorch_model_bin_is_refused(tmp_path, command):
    d = _copy("custom-max", tmp_path)
    canary = tmp_path / "canary"
    _hostile_bin(d, canary)
    args = {"convert": ("convert", str(d), "--out", str(tmp_path / "out"), "--export", "none"),
            "inspect": ("inspect", str(d)),
            "detect": ("detect", str(ROOT / "golden" / "hf" / "audio" / "tones16k.wav"), "--model", str(d), "--no-progress")}
    r = _port(*args[command])
    assert "os.system" in (r.stdout + r.stderr)
    assert not canary.exists()
    assert not (tmp_path / "out").exists()
    if command != "inspect":
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr


def test_inspect_reports_architecture_and_labels():
    rep = inspect_folder(MODELS / "sewd")
    assert rep["architecture"] == "SEWDForSequenceClassification" and rep["problems"] == []
    assert rep["labels"] == ["noise", "owl", "other"]
