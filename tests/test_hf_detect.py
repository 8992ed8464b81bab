"""`port detect` on HF models: windows, JSON rows against the goldens' every-window outputs, bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from porting.golden import load_case

HF = ROOT / "golden" / "hf"
AUDIO = HF / "audio"


def _port(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def w2v2_json(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("det") / "out.json"
    r = _port("detect", str(AUDIO / "tones16k.wav"), str(AUDIO / "stereo44k1.flac"), "--model",
              str(HF / "models" / "w2v2-base"), "--window-s", "1", "--hop-s", "0.5", "--json", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("i,rec", [(0, "tones16k"), (1, "stereo44k1")])
def test_rows_match_the_goldens(w2v2_json, i, rec):
    case = load_case(HF / "cases" / f"w2v2-base__{rec}.json")
    got = w2v2_json["files"][i]
    w = case.meta["windows"]
    assert got["labels"] == case.meta["labels"]
    assert [r["start_s"] for r in got["windows"]] == [s / 16000 for s in w["starts"]]
    assert [r["end_s"] for r in got["windows"]] == [(s + n) / 16000 for s, n in zip(w["starts"], w["lengths"])]
    assert [r["partial"] for r in got["windows"]] == w["partial"]
    probs = np.array([r["probs"] for r in got["windows"]])
    assert np.abs(probs - case.tensors["all.probs"].numpy()).max() <= 1e-5
    assert [r["label"] for r in got["windows"]] == [case.meta["labels"][k] for k in case.tensors["all.probs"].argmax(-1)]


def test_unscored_tail_is_reported(tmp_path):
    case = load_case(HF / "cases" / "w2v2-base__tones16k__hop1.json")
    out = tmp_path / "o.json"
    r = _port("detect", str(AUDIO / "tones16k.wav"), "--model", str(HF / "models" / "w2v2-base"), "--window-s", "1",
              "--json", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())["files"][0]
    assert got["n_windows"] == len(case.meta["windows"]["starts"])
    assert got["unscored_tail_s"] == case.meta["windows"]["unscored_tail_samples"] / 16000 > 0


def test_converted_folder_gives_the_same_rows(w2v2_json, tmp_path):
    out = tmp_path / "conv"
    r = _port("convert", str(HF / "models" / "w2v2-base"), "--out", str(out), "--export", "none")
    assert r.returncode == 0, r.stderr
    j = tmp_path / "o.json"
    r = _port("detect", str(AUDIO / "tones16k.wav"), "--model", str(out), "--window-s", "1", "--hop-s", "0.5",
              "--json", str(j), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(j.read_text())["files"][0]["windows"] == w2v2_json["files"][0]["windows"]


def test_default_window_is_the_models_clip_length(tmp_path):
    out = tmp_path / "o.json"
    r = _port("detect", str(AUDIO / "tones16k.wav"), "--model", str(HF / "models" / "ast"), "--json", str(out),
              "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["files"][0]["windows"]
    assert [(w["start_s"], w["end_s"]) for w in rows[:2]] == [(0.0, 1.0), (1.0, 2.0)]  # AST max_length 100 x 10 ms


def _wav_with_rate_zero(path: Path) -> None:
    data = np.zeros(1600, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data"
                     + struct.pack("<I", len(data)) + data)


def test_bad_recordings_fail_one_line_each_and_the_batch_goes_on(tmp_path):
    zero = tmp_path / "rate0.wav"
    _wav_with_rate_zero(zero)
    out = tmp_path / "o.json"
    r = _port("detect", str(AUDIO / "short16k.wav"), str(zero), str(AUDIO / "tones16k.wav"), "--model",
              str(HF / "models" / "w2v2-base"), "--window-s", "1", "--json", str(out), "--no-progress")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, r.stderr
    assert "short16k.wav" in errors[0] and "shorter than one 1.00-s window" in errors[0]
    assert "rate0.wav" in errors[1] and "sample rate" in errors[1]
    assert all(line.count(str(tmp_path)) <= 1 for line in errors)
    files = json.loads(out.read_text())["files"]
    assert [("error" in f) for f in files] == [True, True, False]
    assert files[2]["n_windows"] > 0


@pytest.mark.parametrize("args,msg", [(("--window-s", "1", "--hop-s", "2"), "--hop-s 2.0: out of range; pass a hop of 0.01 s to the window (1 s)"),
                                      (("--window-s", "0"), "--window-s 0.0: out of range; pass a window of 0.05 to 3600 seconds")])
def test_bad_window_options(args, msg):
    r = _port("detect", str(AUDIO / "tones16k.wav"), "--model", str(HF / "models" / "w2v2-base"), *args, "--no-progress")
    assert r.returncode == 1 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_orcahello_refuses_window_options():
    r = _port("detect", str(ROOT / "golden" / "audio" / "pcm16_16k_short.wav"), "--model",
              str(ROOT / "golden" / "models" / "rn18.pkl"), "--window-s", "3", "--no-progress")
    assert r.returncode == 1 and "frontend is fixed" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", ["torchaudio-kaldi", "numpy"])
def test_fbank_backend_selects_the_golden_it_matches(tmp_path, backend):
    gold = load_case(HF / "cases" / ("ast__stereo48k" + ("__numpy-fbank" if backend == "numpy" else "") + ".json"))
    other = load_case(HF / "cases" / ("ast__stereo48k" + ("" if backend == "numpy" else "__numpy-fbank") + ".json"))
    out = tmp_path / "o.json"
    r = _port("detect", str(AUDIO / "stereo48k.wav"), "--model", str(HF / "models" / "ast"), "--hop-s", "0.5",
              "--fbank-backend", backend, "--json", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    logits = np.array([w["logits"] for w in json.loads(out.read_text())["files"][0]["windows"]])
    ref, alt = gold.tensors["all.logits"].numpy(), other.tensors["all.logits"].numpy()
    assert np.abs(logits - ref).max() <= 1e-5 + 1e-5 * np.abs(ref).max()
    assert np.abs(logits - ref).max() < np.abs(logits - alt).max()  # the two backends are told apart


def test_fbank_backend_refused_where_it_means_nothing():
    r = _port("detect", str(AUDIO / "tones16k.wav"), "--model", str(HF / "models" / "w2v2-base"), "--fbank-backend",
              "numpy", "--no-progress")
    assert r.returncode == 1 and "have no fbank" in r.stderr and r.stderr.count("\n") == 1, r.stderr
