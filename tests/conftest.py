"""Shared test helpers. Golden fixtures come from the porting.parity plugin (entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def golden_cases(with_error: bool = False) -> list[str]:
    """Case names of the public goldens (crash cases only when asked)."""
    import json

    out = []
    for p in sorted((GOLDEN / "cases").glob("*.json")):
        if bool(json.loads(p.read_text()).get("error")) == with_error:
            out.append(p.stem)
    return out


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def one_thread():
    """torch on one thread for the test (bitwise oracle comparisons; restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
