"""Aggregation of window confidences into the legacy per-second result (golden/README.md §5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import golden_cases
from porting.families.orcahello.aggregate import Aggregate, AggregateConfig, aggregate
from porting.errors import AudioError, PortingError
from porting.golden import load_case

CASES = golden_cases()
CRASH_CASES = golden_cases(with_error=True)


def _load(golden_dir, name):
    return load_case(golden_dir / "cases" / f"{name}.json")


# --------------------------------------------------------------------------- golden parity


@pytest.mark.parity
@pytest.mark.parametrize("name", CASES)
def test_aggregate_matches_golden(name, golden_dir):
    case = _load(golden_dir, name)
    meta = case.meta
    res = aggregate(case.tensors["all.confidence"], meta["audio"]["file"]).to_dict()

    assert len(res["submission"]) == meta["n_windows"] + 1 == len(meta["submission"])
    conf_diff = max(abs(a["confidence"] - b["confidence"]) for a, b in zip(res["submission"], meta["submission"]))
    assert conf_diff <= 1e-5, f"{name}: submission confidence max |diff| {conf_diff:.3g}"
    assert res["local_predictions"] == meta["local_predictions"]
    assert res["global_prediction"] == meta["global_prediction"]
    assert abs(res["global_confidence"] - meta["global_confidence"]) <= 1e-3


@pytest.mark.parity
@pytest.mark.parametrize("name", CASES)
def test_aggregate_reproduces_golden_json_exactly(name, golden_dir):
    """Same float64 operations as pandas, so the values are identical, and the JSON types too."""
    case = _load(golden_dir, name)
    meta = case.meta
    res = aggregate(case.tensors["all.confidence"], meta["audio"]["file"]).to_dict()
    golden_windows = [{k: w[k] for k in ("index", "start_s", "end_s", "confidence")} for w in meta["windows"]]
    for key, golden in [("windows", golden_windows)] + [(k, meta[k]) for k in res if k != "windows"]:
        # json.dumps tells 1 from 1.0, so this checks types (int vs float) as well as values.
        assert json.dumps(res[key]) == json.dumps(golden), key


@pytest.mark.parity
def test_aggregate_sorts_by_window_start(golden_dir):
    """Legacy scored windows in directory order (e.g. 52, 25, 55, ...) and sorted by start afterwards."""
    case = _load(golden_dir, "rn18__orca60_pcm16_48k")
    order = case.meta["checks"]["predict_item_order_starts"]
    assert order != sorted(order)
    shuffled = case.tensors["all.confidence"][torch.tensor(order)]
    res = aggregate(shuffled, case.meta["audio"]["file"], window_starts=order)
    assert res.submission == case.meta["submission"]


@pytest.mark.parity
@pytest.mark.parametrize("name", CRASH_CASES)
def test_zero_windows_is_a_typed_error(name, golden_dir):
    """Legacy crashed with KeyError: 0 on a < 2 s recording; the port says why, in one line."""
    case = _load(golden_dir, name)
    assert case.error["type"] == "KeyError" and case.meta["audio"]["duration_s"] < 2
    with pytest.raises(AudioError) as err:
        aggregate(np.zeros(0, dtype=np.float32), case.meta["audio"]["file"])
    msg = str(err.value)
    assert "\n" not in msg and case.meta["audio"]["file"] in msg and "shorter than 2 s" in msg
    assert isinstance(err.value, PortingError)


# --------------------------------------------------------------------------- hand-computed cases


def test_hand_computed_rows_and_decisions():
    # Binary fractions: every value below is exact in float32 and float64.
    res = aggregate([0.25, 0.75, 0.625], "x.wav")
    assert [r["confidence"] for r in res.submission] == [0.25, 0.5, 0.6875, 0.625]
    assert [r["start_time_s"] for r in res.submission] == [0, 1, 2, 3]
    assert all(r["duration_s"] == 1.0 and r["wav_filename"] == "x.wav" for r in res.submission)
    assert res.local_predictions == [0, 0, 1, 1]  # 0.5 is not > 0.5: strict
    assert res.global_prediction == 0  # 2 positive rows < 3
    assert res.global_confidence == 65.625  # 100 * (0.6875 + 0.625) / 2
    assert [(w["index"], w["start_s"], w["end_s"]) for w in res.windows] == [(0, 0, 2), (1, 1, 3), (2, 2, 4)]


def test_config_thresholds():
    conf = [0.25, 0.75, 0.625]
    assert aggregate(conf, "x.wav", AggregateConfig(min_positive_calls=2)).global_prediction == 1
    res = aggregate(conf, "x.wav", AggregateConfig(threshold=0.25))
    assert res.local_predictions == [0, 1, 1, 1] and res.global_prediction == 1


def test_no_positive_rows_gives_int_zero_confidence():
    res = aggregate(np.array([0.125, 0.5], dtype=np.float32), "q.wav")
    assert res.local_predictions == [0, 0, 0]
    assert res.global_prediction == 0
    assert res.global_confidence == 0 and type(res.global_confidence) is int  # legacy: `= 0`


def test_single_window_gives_two_rows():
    res = aggregate(torch.tensor([0.875]), "one.wav")
    assert [(r["start_time_s"], r["confidence"]) for r in res.submission] == [(0, 0.875), (1, 0.875)]


def test_float32_inputs_are_promoted_not_reparsed():
    c32 = np.float32(0.1)
    res = aggregate(np.array([c32, c32], dtype=np.float32), "p.wav")
    assert res.submission[0]["confidence"] == float(c32) != 0.1
    assert res.submission[1]["confidence"] == float(c32)  # (a + a) / 2 == a, exactly


def test_to_dict_is_plain_json():
    res = aggregate(torch.tensor([0.9, 0.8, 0.95], dtype=torch.float32), "w.wav")
    assert isinstance(res, Aggregate)
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) == {
        "windows", "submission", "local_predictions", "local_confidences", "global_prediction", "global_confidence"
    }
    assert d["local_confidences"] == [r["confidence"] for r in d["submission"]]


def test_bad_inputs():
    with pytest.raises(ValueError):
        aggregate(np.zeros((2, 2)), "x.wav")
    with pytest.raises(ValueError):
        aggregate([0.1, 0.2], "x.wav", window_starts=[0, 0])
    with pytest.raises(ValueError):
        aggregate([0.1, 0.2], "x.wav", window_starts=[1, 2])


# --------------------------------------------------------------------------- property


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=80))
def test_matches_plain_python_reference(values):
    """An independent, loop-by-loop reading of README §5 in Python floats."""
    res = aggregate(np.array(values, dtype=np.float32), "r.wav")
    c = [float(v) for v in values]
    ref = [c[0]] + [(c[k - 1] + c[k]) / 2 for k in range(1, len(c))] + [c[-1]]
    assert res.local_confidences == ref
    assert res.local_predictions == [int(r > 0.5) for r in ref]
    pos = [r for r in ref if r > 0.5]
    assert res.global_prediction == int(len(pos) >= 3)
    if pos:
        assert math.isclose(res.global_confidence, 100 * math.fsum(pos) / len(pos), rel_tol=1e-12)
    else:
        assert res.global_confidence == 0
