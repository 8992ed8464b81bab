"""porting.events: stretches above the threshold, by hand cases and by properties against plain definitions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from porting.families.orcahello.aggregate import AggregateConfig, aggregate
from porting.events import Event, find_events, second_events, window_events


def _grid(values, threshold=0.5):
    """Events of one-second rows [k, k + 1]."""
    n = len(values)
    return find_events(list(range(n)), [k + 1 for k in range(n)], values, threshold)


def _spans(events):
    return [(e.start_s, e.end_s) for e in events]


def test_hand_case_two_events():
    ev = _grid([0.1, 0.6, 0.7, 0.2, 0.9])
    assert _spans(ev) == [(1.0, 3.0), (4.0, 5.0)]
    assert (ev[0].peak, ev[0].peak_s, ev[0].n) == (0.7, 2.0, 2)
    assert ev[0].mean == pytest.approx(0.65, abs=1e-15)
    assert (ev[1].peak, ev[1].peak_s, ev[1].mean, ev[1].n) == (0.9, 4.0, 0.9, 1)
    assert ev[0].duration_s == 2.0


def test_threshold_is_strict_like_legacy():
    assert _grid([0.5, 0.5, 0.5]) == []
    assert _grid([1.0, 1.0], threshold=1.0) == []
    assert _grid([0.0, 0.0], threshold=0.0) == []
    assert _spans(_grid([0.0, 1e-9], threshold=0.0)) == [(1.0, 2.0)]


def test_nan_is_never_above_and_splits():
    assert _spans(_grid([0.9, math.nan, 0.9])) == [(0.0, 1.0), (2.0, 3.0)]


def test_first_of_equal_peaks():
    (e,) = _grid([0.8, 0.9, 0.9, 0.6])
    assert (e.peak, e.peak_s) == (0.9, 1.0)


def test_windows_with_gaps_split_and_overlaps_join():
    # hop 2 s, window 1 s: a gap between every window
    assert _spans(find_events([0, 2], [1, 3], [0.9, 0.9])) == [(0.0, 1.0), (2.0, 3.0)]
    # hop 1 s, window 2 s: consecutive windows overlap and join
    assert _spans(find_events([0, 1], [2, 3], [0.9, 0.9])) == [(0.0, 3.0)]
    # a window below the threshold inside the span of two overlapping ones above: one event, its value left out
    (e,) = find_events([0, 1, 2], [4, 5, 6], [0.8, 0.1, 0.6])
    assert (e.start_s, e.end_s, e.n, e.peak) == (0.0, 6.0, 2, 0.8)
    assert e.mean == pytest.approx(0.7, abs=1e-15)
    # a long window reaching over a short later one: the event ends at the furthest end
    assert _spans(find_events([0, 1], [10, 2], [0.9, 0.9])) == [(0.0, 10.0)]


def test_to_dict_names_the_csv_columns():
    (e,) = _grid([0.2, 0.75, 0.25])
    assert e.to_dict() == {"start_s": 1.0, "end_s": 2.0, "duration_s": 1.0, "peak_confidence": 0.75, "peak_s": 1.0,
                           "mean_confidence": 0.75, "n_intervals": 1}


@pytest.mark.parametrize("args,match", [
    (([0, 1], [1], [0.9, 0.9]), "one of each"),
    (([1, 0], [2, 1], [0.9, 0.9]), "start order"),
    (([0], [-1], [0.9]), "end >= start"),
])
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        find_events(*args)
    with pytest.raises(ValueError, match="threshold"):
        find_events([0], [1], [0.9], threshold=math.nan)


def test_second_events_of_a_legacy_table():
    # c = windows; rows: c0, (c0+c1)/2, (c1+c2)/2, c2 = 0.2, 0.55, 0.85, 0.9
    table = aggregate(np.array([0.2, 0.9, 0.8, 0.9], np.float32), "a.wav")
    ev = second_events(table.submission)
    assert _spans(ev) == [(1.0, 5.0)]
    assert ev[0].n == sum(table.local_predictions) == 4


def test_window_events_convert_samples_to_seconds():
    res = SimpleNamespace(classes=("noise", "owl"), sample_rate=16000, starts=[0, 16000, 32000, 48000],
                          lengths=[16000, 16000, 16000, 8000],
                          probs=torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
    ev = window_events(res, "owl", 0.5)
    assert _spans(ev) == [(0.0, 2.0), (3.0, 3.5)]
    assert ev[0].peak == pytest.approx(0.9) and ev[1].n == 1
    assert _spans(window_events(res, "noise", 0.5)) == [(2.0, 3.0)]
    with pytest.raises(ValueError, match="not one of the model's labels"):
        window_events(res, "cat")


_values = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=0, max_size=60)
_thresholds = st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.999]) | st.floats(0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(_values, _thresholds)
def test_grid_events_are_exactly_the_runs_above(values, threshold):
    ev = _grid(values, threshold)
    above = [v > threshold for v in values]
    covered = [any(e.start_s <= k and k + 1 <= e.end_s for e in ev) for k in range(len(values))]
    assert covered == above  # every row above is in an event, no row at or below is
    assert sum(e.n for e in ev) == sum(above)
    for a, b in zip(ev, ev[1:]):
        assert a.end_s < b.start_s  # separated by at least one row at or below the threshold
    for e in ev:
        rows = values[int(e.start_s):int(e.end_s)]
        assert e.n == len(rows) and all(v > threshold for v in rows)
        assert e.peak == max(rows) and e.peak_s == int(e.start_s) + rows.index(max(rows))
        assert e.mean == pytest.approx(sum(rows) / len(rows), rel=1e-12, abs=1e-15)
        assert threshold < e.mean <= e.peak


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), max_size=40), _thresholds)
def test_grid_events_agree_with_the_legacy_per_second_calls(conf, threshold):
    """The seconds in events are legacy's local_predictions = 1 (aggregate computes those independently)."""
    if not conf:
        return
    table = aggregate(np.array(conf, np.float32), "a.wav", AggregateConfig(threshold=threshold))
    ev = second_events(table.submission, threshold)
    in_event = [int(any(e.start_s <= r["start_time_s"] < e.end_s for e in ev)) for r in table.submission]
    assert in_event == table.local_predictions


_intervals = st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 20, allow_nan=False),
                                st.floats(0, 1, allow_nan=False)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_intervals, _thresholds)
def test_any_intervals_union_of_those_above(items, threshold):
    items = sorted(items, key=lambda t: t[0])
    starts, ends, vals = [s for s, _, _ in items], [s + d for s, d, _ in items], [v for _, _, v in items]
    ev = find_events(starts, ends, vals, threshold)
    above = [(s, e, v) for s, e, v in zip(starts, ends, vals) if v > threshold]
    for a, b in zip(ev, ev[1:]):
        assert a.end_s < b.start_s  # disjoint, with a gap
    owners = [[i for i, e in enumerate(ev) if e.start_s <= s and en <= e.end_s] for s, en, _ in above]
    assert all(len(o) == 1 for o in owners)  # each interval above in exactly one event
    assert sum(e.n for e in ev) == len(above)
    for i, e in enumerate(ev):
        mine = sorted(((s, en, v) for (s, en, v), o in zip(above, owners) if o == [i]), key=lambda t: t[0])
        assert e.start_s == mine[0][0] and e.end_s == max(en for _, en, _ in mine)
        reach = mine[0][1]
        for s, en, _ in mine[1:]:
            assert s <= reach  # no hole inside an event
            reach = max(reach, en)
        assert e.peak == max(v for _, _, v in mine)
        assert min(v for _, _, v in mine) - 1e-12 <= e.mean <= e.peak + 1e-12


def test_event_is_a_frozen_record():
    e = Event(0.0, 1.0, 0.9, 0.0, 0.9, 1)
    with pytest.raises(Exception):
        e.start_s = 2.0  # type: ignore[misc]
