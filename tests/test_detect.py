"""End-to-end detector vs the goldens: every window of every public case, and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import GOLDEN, golden_cases
from porting.detect import FileError, detect
from porting.families.orcahello.detect import Detector
from porting.golden import load_case

TOL = 1e-5


@pytest.fixture(scope="module")
def detectors():
    cache = {}

    def get(model_file: str, device: torch.device) -> Detector:
        key = (model_file, str(device))
        if key not in cache:
            cache[key] = Detector.load(GOLDEN / "models" / model_file, device=device, batch_size=16)
        return cache[key]

    return get


@pytest.mark.parity
def test_detect_matches_golden_all_windows(parity_case, parity_check, detectors, device):
    """What `port detect` ships (the pad-folded model) on every window, against every capture, by the contract."""
    case = parity_case
    res = detectors(case.meta["model"]["file"], device).run(case.audio_path)
    parity_check(case, {"all.logits": res.logits, "all.probs": res.probs, "all.confidence": res.confidence}, device,
                 stages=["all.logits", "all.probs", "all.confidence"])

    got = res.table.to_dict()
    sub = np.array([r["confidence"] for r in got["submission"]])
    want = np.array([r["confidence"] for r in case.meta["submission"]])
    assert sub.shape == want.shape
    assert np.abs(sub - want).max() <= TOL
    assert [r["start_time_s"] for r in got["submission"]] == [r["start_time_s"] for r in case.meta["submission"]]
    assert got["local_predictions"] == case.meta["local_predictions"]
    assert got["global_prediction"] == case.meta["global_prediction"]
    assert abs(got["global_confidence"] - case.meta["global_confidence"]) <= 1e-3


def test_too_short_recording_is_a_typed_per_file_error(tmp_path):
    """Legacy crashed with KeyError: 0 (golden case rn18__too_short_1500ms); we report it per file."""
    crash = json.loads((GOLDEN / "cases" / "rn18__too_short_1500ms.json").read_text())
    assert crash["error"]["type"] == "KeyError"
    out = detect(
        [GOLDEN / "audio" / "too_short_1500ms.wav", GOLDEN / "audio" / "pcm16_8k_2500ms.wav"],
        GOLDEN / "models" / "sq11-norm.pkl",
    )
    assert isinstance(out[0], FileError) and "2 s" in str(out[0].error)
    assert not isinstance(out[1], FileError) and len(out[1].confidence) == 1


def test_cli_detect_multi_file_json_and_failures(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    out_json = tmp_path / "res.json"
    proc = subprocess.run(
        [sys.executable, "-m", "porting", "detect", str(GOLDEN / "audio" / "pcm16_16k_short.wav"), str(bad),
         "--model", str(GOLDEN / "models" / "sq11-norm.pkl"), "--json", str(out_json), "--no-progress"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and "notes.wav" in err_lines[0]
    payload = json.loads(out_json.read_text())
    good, failed = payload["files"]
    want = json.loads((GOLDEN / "cases" / "sq11-norm__pcm16_16k_short.json").read_text())
    for key in ("submission", "local_predictions", "global_prediction"):
        assert key in good
    assert good["local_predictions"] == want["local_predictions"]
    assert [w["index"] for w in good["windows"]] == [w["index"] for w in want["windows"]]
    assert failed["error"]["type"] == "AudioError"


def test_nan_recording_fails_cleanly(tmp_path):
    x = np.zeros(16000 * 3, dtype=np.float32)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    (res,) = detect([p], GOLDEN / "models" / "sq11-norm.pkl")
    assert isinstance(res, FileError) and "nan.wav" in str(res.error)


def test_model_without_positive_class_is_refused_at_load(fixtures_dir):
    """xresnet_norm has three classes and none named 'positive': no confidence is defined."""
    from porting.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="positive"):
        Detector.load(fixtures_dir / "fastai2" / "xresnet_norm.pkl")
