"""The HF family against golden/hf: every stage of every stored window, chained and fed golden inputs, plus
every window's logits and probabilities, in the tier this machine's fingerprint gives (porting.parity.hf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from porting.parity.fingerprint import machine_fingerprint
from porting.parity.hf import check_hf_case, hf_case_paths, hf_tier, load_hf_case

STORE = Path(__file__).resolve().parent.parent / "golden" / "hf"
CASES = [p for p in hf_case_paths(STORE) if not load_hf_case(p).error]  # error cases: tests/test_hf_detect.py


def test_store_has_cases():
    assert len(CASES) >= 30, f"golden/hf holds {len(CASES)} cases; regenerate with tools/regenerate_golden_hf"


@pytest.mark.parity
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hf_case(path):
    case = load_hf_case(path)
    tier = hf_tier(STORE, machine_fingerprint())
    report = check_hf_case(case, tier)
    assert report.stages, "nothing was compared"
    assert report.passed, report.summary()
