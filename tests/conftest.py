"""Shared test helpers. Golden fixtures come from the porting.parity plugin (entry point).

Two stores: ``GOLDEN`` is the golden store the parity tests compare the port with: the committed one, or the
one named by ``pytest --golden-dir=DIR`` / ``$PORTING_GOLDEN_DIR`` (e.g. a capture regenerated on this machine,
reference/README.md "Regenerating"), set in ``pytest_configure`` before any test module is imported.
``COMMITTED`` is always the repository's ``golden/``: the tests about the committed store itself (its manifest,
its two legacy captures, the HF family, the models' inspect listings).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "golden"
GOLDEN = COMMITTED  # replaced by the store under test in pytest_configure


def pytest_configure(config):
    """Point ``GOLDEN`` at the store the plugin's ``golden_dir`` fixture uses (one resolution for both)."""
    global GOLDEN
    from porting.parity.plugin import golden_path

    GOLDEN = golden_path(config).resolve()
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def golden_cases(with_error: bool = False, store: Path | None = None) -> list[str]:
    """Case names of the golden store under test, or of ``store`` (crash cases only when asked)."""
    import json

    out = []
    for p in sorted(((store or GOLDEN) / "cases").glob("*.json")):
        if bool(json.loads(p.read_text()).get("error")) == with_error:
            out.append(p.stem)
    return out


def capture_names() -> list[str]:
    """The captures of the store under test: ``golden`` (its cases/) and each ``captures/<name>``."""
    from porting.golden import captures

    return [cap.name for cap in captures(GOLDEN)]


def testing_committed_store() -> bool:
    return GOLDEN.resolve() == COMMITTED.resolve()


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
