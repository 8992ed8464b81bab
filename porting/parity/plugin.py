"""pytest plugin: the ``parity`` marker, golden-case fixtures and device parametrisation.

Registered through the ``pytest11`` entry point, so any project that installs
``porting`` gets ``pytest -m parity`` and the fixtures below:

* ``golden_dir``: the golden store (``--golden-dir``, ``$PORTING_GOLDEN_DIR`` or ./golden);
* ``device``: each test runs on ``cpu``, and on ``cuda`` (TF32 off) when a GPU is present;
* ``parity_case`` / ``parity_error_case``: a test taking one of them runs once per golden case
  (results / crash cases), with the case loaded (``porting.golden.Case``);
* ``parity_check(case, actual, device=...)``: compares the port's outputs with the case at 1e-5,
  records the comparison for ``--parity-report DIR`` and fails the test with the located mismatches.

``--parity-report DIR`` writes ``DIR/report.md`` (+ PNGs) for every comparison made through
``parity_check`` in the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_RUNS_KEY = "porting_parity_runs"


def pytest_addoption(parser):
    group = parser.getgroup("porting parity")
    group.addoption(
        "--golden-dir",
        default=os.environ.get("PORTING_GOLDEN_DIR"),
        help="golden store to test against (default: ./golden, or $PORTING_GOLDEN_DIR)",
    )
    group.addoption(
        "--parity-report",
        default=None,
        metavar="DIR",
        help="write DIR/report.md and PNGs for the session's parity comparisons",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares a port stage with golden tensors at 1e-5")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped when none is present)")
    setattr(config, _RUNS_KEY, [])  # CaseRuns recorded by parity_check


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _golden_path(config) -> Path:
    opt = config.getoption("--golden-dir")
    return Path(opt) if opt else Path(config.rootpath) / "golden"


def _case_names(config, with_error: bool) -> list[str]:
    cases = _golden_path(config) / "cases"
    out = []
    for p in sorted(cases.glob("*.json")):
        try:
            has_error = bool(json.loads(p.read_text()).get("error"))
        except ValueError:
            has_error = False  # malformed: let the fixture raise a GoldenError when it loads it
        if has_error == with_error:
            out.append(p.stem)
    return out


def pytest_generate_tests(metafunc):
    """One test per golden case for tests that take ``parity_case`` / ``parity_error_case``."""
    for name, with_error in (("parity_case", False), ("parity_error_case", True)):
        if name in metafunc.fixturenames:
            names = _case_names(metafunc.config, with_error)
            metafunc.parametrize(name, names, indirect=True, ids=names)


_loaded: dict[Path, object] = {}


def _load(path: Path):
    from ..golden import load_case

    if path not in _loaded:
        _loaded[path] = load_case(path)
    return _loaded[path]


@pytest.fixture(scope="session")
def golden_dir(request) -> Path:
    path = _golden_path(request.config)
    if not (path / "cases").is_dir():
        pytest.fail(f"golden store not found at {path} (pass --golden-dir)")
    return path


@pytest.fixture
def parity_case(request, golden_dir):
    """A golden case with results (parametrized over the store by ``pytest_generate_tests``)."""
    return _load(golden_dir / "cases" / f"{request.param}.json")


@pytest.fixture
def parity_error_case(request, golden_dir):
    """A golden crash case (legacy raised, e.g. a recording shorter than 2 s)."""
    return _load(golden_dir / "cases" / f"{request.param}.json")


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Each parity test runs on CPU, and on CUDA (TF32 off) when a GPU is present."""
    import torch

    if request.param == "cuda":
        if not _cuda_available():
            pytest.skip("no CUDA device on this machine")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(request.param)


@pytest.fixture
def parity_check(request):
    """``parity_check(case, actual, device="cpu", stages=None)``: compare, record for the report, and
    fail with one located message per failing stage. Returns the StageResults."""
    from .compare import ParityReport, compare
    from .run import CaseRun, worst_arrays

    def check(case, actual, device="cpu", stages=None):
        stored = case.stored_windows
        results = compare(case.tensors, actual, stored, stages=stages)
        run = CaseRun(ParityReport(case.name, str(device), results), worst_arrays(results, case.tensors, actual, stored))
        getattr(request.config, _RUNS_KEY).append(run)
        bad = [r.message() for r in results if not r.passed]
        if bad:
            pytest.fail(f"{case.name} [{device}]: " + "\n".join(bad), pytrace=False)
        return results

    return check


def pytest_sessionfinish(session, exitstatus):
    out = session.config.getoption("--parity-report", default=None)
    runs = getattr(session.config, _RUNS_KEY, [])
    if not out or not runs:
        return
    from .compare import ParityReport
    from .report import write_report
    from .run import CaseRun

    merged: dict[tuple[str, str], CaseRun] = {}  # one section per case and device, however many tests
    for r in runs:
        key = (r.report.case, r.report.device)
        if key not in merged:
            merged[key] = CaseRun(ParityReport(*key, []), {})
        merged[key].report.stages.extend(r.report.stages)
        merged[key].worst.update(r.worst)
    path = write_report(list(merged.values()), out, title="Parity report (pytest session)")
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"parity report: {path} ({len(runs)} comparisons)")
