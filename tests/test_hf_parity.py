"""The HF family against its golden stores: every stage of every stored window, chained and fed golden inputs, plus
every window's logits and probabilities, in the tier each store's fingerprint gives (porting.families.hf.parity).

One store per transformers major (issue 20): golden/hf (4.57.1), golden/hf-t4 (4.57.1, the weighted-layer-sum
models golden/hf lacks) and golden/hf-t5 (5.x, every model saved by 5.x). Each case's model folder records the
transformers that saved it, and the port follows that major's semantics by itself: no case passes a semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from porting.parity.fingerprint import machine_fingerprint
from porting.families.hf.parity import check_hf_case
from porting.golden import case_paths, load_case
from porting.parity.contract import choose_tier
from porting.parity.fingerprint import load_fingerprint

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
STORES = {"hf": GOLDEN / "hf", "hf-t4": GOLDEN / "hf-t4", "hf-t5": GOLDEN / "hf-t5"}
MIN_CASES = {"hf": 30, "hf-t4": 12, "hf-t5": 42}
CASES = [(name, p) for name, store in STORES.items() for p in case_paths(store)
         if not load_case(p).error]  # error cases: tests/test_hf_detect.py


@pytest.mark.parametrize("store", sorted(STORES))
def test_store_has_cases(store):
    n = sum(1 for name, _ in CASES if name == store)
    assert n >= MIN_CASES[store], (f"golden/{store} holds {n} cases; regenerate with "
                                   f"tools/regenerate_golden_hf --plan {store}")


@pytest.mark.parity
@pytest.mark.parametrize("store,path", CASES, ids=[f"{s}/{p.stem}" for s, p in CASES])
def test_hf_case(store, path):
    case = load_case(path)
    tier = choose_tier(load_fingerprint(STORES[store]), machine_fingerprint())
    report = check_hf_case(case, tier)
    assert report.stages, "nothing was compared"
    assert report.passed, report.summary()
