"""The PANNs family without its goldens: reading checkpoints as data (both torch containers, wrapped or bare, numpy in
the sampler, a payload refused), identifying body and frontend, one-line errors, the detector's windows and labels,
and the CLI end to end. The numbers against the upstream code are tests/test_panns_parity.py's."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panns_checkpoints import panns_state, write_checkpoint
from porting.errors import MalformedModelError, PortingError, UnsafePickleError, UnsupportedModelError
from porting.families.panns.bodies import BODIES
from porting.families.panns.reader import audioset_labels, read_panns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cnn6(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("panns") / "Cnn6_mAP=0.343.pth", panns_state("Cnn6"))


@pytest.mark.parametrize("body", sorted(BODIES))
def test_every_body_is_identified_from_its_keys(tmp_path, body):
    spec = read_panns(write_checkpoint(tmp_path / "m.pth", panns_state(body)))
    assert spec.body == body and spec.classes == 527 and spec.frontend["preset"] == "32k"


@pytest.mark.parametrize("legacy,wrapped", [(True, True), (False, False)])
def test_legacy_stream_and_bare_state_dict_read(tmp_path, legacy, wrapped):
    path = write_checkpoint(tmp_path / "m.pth", panns_state("MobileNetV1"), legacy=legacy, wrapped=wrapped)
    spec = read_panns(path)
    assert spec.container == ("torch-legacy" if legacy else "torch-zip")
    assert ("sampler" in spec.wrapper) == wrapped
    want = panns_state("MobileNetV1")
    assert all(torch.equal(spec.state[k], want[k]) for k in want)


def test_weights_only_load_fails_where_the_reader_does_not(tmp_path):
    """The published files' sampler holds numpy arrays: torch's safe loader refuses them (autrainer #66)."""
    path = write_checkpoint(tmp_path / "m.pth", panns_state("Cnn6"))
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert read_panns(path).body == "Cnn6"


def test_dataparallel_prefix_is_removed_and_said(tmp_path):
    state = {f"module.{k}": v for k, v in panns_state("Cnn6").items()}
    spec = read_panns(write_checkpoint(tmp_path / "m.pth", state))
    assert spec.body == "Cnn6" and any("module." in n for n in spec.notes)


class _Payload:
    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def test_payload_in_sampler_is_refused_and_never_runs(tmp_path):
    canary = tmp_path / "CANARY"
    path = write_checkpoint(tmp_path / "evil.pth", panns_state("Cnn6"), sampler={"indexes": _Payload(canary)})
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_panns(path)
    r = subprocess.run([sys.executable, "-m", "porting.cli", "convert", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "refused dangerous globals" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not canary.exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("drop,match", [("bn0.weight", "missing bn0.weight"),
                                        ("fc_audioset.bias", "missing fc_audioset.bias")])
def test_missing_key_is_named_never_filled(tmp_path, drop, match):
    state = panns_state("Cnn6")
    del state[drop]
    with pytest.raises(MalformedModelError, match=match):
        read_panns(write_checkpoint(tmp_path / "m.pth", state))


def test_unexpected_key_and_wrong_shape_are_named(tmp_path):
    state = panns_state("Cnn6")
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(MalformedModelError, match="unexpected extra.weight"):
        read_panns(write_checkpoint(tmp_path / "a.pth", state))
    state = panns_state("Cnn6")
    state["fc1.weight"] = torch.zeros(512, 511)
    with pytest.raises(MalformedModelError, match="fc1.weight has shape"):
        read_panns(write_checkpoint(tmp_path / "b.pth", state))


def test_keys_of_no_body_are_refused_naming_them(tmp_path):
    state = {k: v for k, v in panns_state("Cnn6").items() if not k.startswith("conv_block4")}
    with pytest.raises(UnsupportedModelError, match="match no PANNs body"):
        read_panns(write_checkpoint(tmp_path / "m.pth", state))


def test_checkpoint_without_frontend_is_refused(tmp_path):
    """The Hydra framework's renamed CNN14 (no torchlibrosa frontend) is not a PANNs checkpoint."""
    state = {k: v for k, v in panns_state("Cnn6").items() if not k.startswith("logmel")}
    with pytest.raises(MalformedModelError, match="no logmel_extractor.melW"):
        read_panns(write_checkpoint(tmp_path / "m.pth", state))


def test_16k_filterbank_identifies_the_16k_preset(tmp_path):
    spec = read_panns(write_checkpoint(tmp_path / "m.pth", panns_state("Cnn14", 16000, 512, 160, fmax=8000.0)))
    assert (spec.frontend["preset"], spec.frontend["sample_rate"], spec.frontend["hop_size"]) == ("16k", 16000, 160)


def test_unpublished_filterbank_asks_for_rate_and_hop(tmp_path):
    path = write_checkpoint(tmp_path / "m.pth", panns_state("Cnn6", fmax=12000.0))
    with pytest.raises(UnsupportedModelError, match="--sample-rate HZ and --hop-size"):
        read_panns(path)
    spec = read_panns(path, sample_rate=32000, hop_size=500)
    assert spec.frontend["hop_size"] == 500 and spec.frontend["preset"] is None
    with pytest.raises(MalformedModelError, match="not 16k"):
        read_panns(write_checkpoint(tmp_path / "n.pth", panns_state("Cnn6")), preset="16k")


def test_audioset_labels_are_shipped():
    labels = audioset_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and labels[-1] == "Field recording"
    assert labels[74] == "Dog" and len(set(labels)) == 527


def test_other_class_counts_get_numbered_labels(tmp_path):
    spec = read_panns(write_checkpoint(tmp_path / "m.pth", panns_state("Cnn6", classes=3)))
    assert spec.labels == ["class_0", "class_1", "class_2"]


def test_convert_detect_end_to_end(cnn6, tmp_path):
    """convert (one export), then detect from the checkpoint and from the folder: the same numbers; the CSV has
    one column per AudioSet label; the window plan follows --window-s / --hop-s with the partial tail."""
    import soundfile as sf

    rate = 44100
    t = np.arange(int(rate * 7.3)) / rate
    wav = tmp_path / "rec.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t) * (t % 2 < 1)).astype(np.float32), rate, subtype="PCM_16")
    out = tmp_path / "conv"
    r = subprocess.run([sys.executable, "-m", "porting.cli", "convert", str(cnn6), "--out", str(out), "--export",
                        "onnx"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    parity = json.loads((out / "parity.json").read_text())
    assert parity["family"] == "panns" and parity["passed"] and set(parity["artifacts"]) == {"model.onnx", "pipeline.onnx"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["frontend"]["hop_size"] == 320 and len(cfg["classes"]) == 527
    runs = {}
    for model, backend in ((cnn6, "torch"), (out, "torch"), (out, "onnx")):
        js = tmp_path / f"{backend}-{Path(model).name}.json"
        r = subprocess.run([sys.executable, "-m", "porting.cli", "detect", str(wav), "--model", str(model),
                            "--window-s", "2", "--hop-s", "1.5", "--backend", backend, "--json", str(js),
                            "--csv", str(tmp_path / "w.csv")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        runs[(str(model), backend)] = json.loads(js.read_text())
    first = next(iter(runs.values()))["files"][0]
    starts = [w["start_s"] for w in first["windows"]]
    assert starts == [0.0, 1.5, 3.0, 4.5, 6.0] and [w["partial"] for w in first["windows"]] == [False] * 4 + [True]
    torch_probs = [np.array([w["probs"] for w in v["files"][0]["windows"]]) for (m, b), v in runs.items() if b == "torch"]
    assert np.array_equal(torch_probs[0], torch_probs[1])
    onnx_probs = np.array([w["probs"] for w in runs[(str(out), "onnx")]["files"][0]["windows"]])
    assert np.abs(onnx_probs - torch_probs[0]).max() <= 1e-5
    with open(tmp_path / "w.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:5] == ["file", "start_s", "end_s", "partial", "label"] and header[5] == "prob_Speech"
    assert len(header) == 5 + 527


def test_too_short_window_is_one_line(cnn6, tmp_path):
    r = subprocess.run([sys.executable, "-m", "porting.cli", "detect", str(ROOT / "golden" / "hf" / "audio" /
                        "tones16k.wav"), "--model", str(cnn6), "--window-s", "0.25"], capture_output=True, text=True)
    assert r.returncode != 0 and "needs at least 0.150 s per window" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_orcahello_and_hf_refuse_panns_options(tmp_path):
    """Family options: another family's model refuses them in one line (porting.family.Option)."""
    model = ROOT / "golden" / "hf" / "models" / "ast"
    if not model.is_dir():
        pytest.skip("golden/hf/models/ast is absent from this checkout")
    with pytest.raises(PortingError):
        from porting.convert import load_model

        load_model(model, preset="32k")


def test_converted_folder_refuses_another_hop(cnn6, tmp_path):
    from porting.convert import convert, load_model

    out = tmp_path / "c"
    convert(cnn6, out, exports=[])
    with pytest.raises(UnsupportedModelError, match="converted with hop_size 320, not 160"):
        load_model(out, hop_size=160)
    model, cfg = load_model(out)
    assert cfg["body"] == "Cnn6" and cfg["state_digest"] == json.loads((out / "config.json").read_text())["state_digest"]
