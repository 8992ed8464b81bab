"""pytest plugin: the ``parity`` marker, golden-case fixtures and device parametrisation.

Registered through the ``pytest11`` entry point, so any project that installs
``porting`` gets ``pytest -m parity`` and the fixtures below:

* ``golden_dir``: the golden store (``--golden-dir``, ``$PORTING_GOLDEN_DIR`` or ./golden);
* ``device``: each test runs on ``cpu``, and on ``cuda`` (TF32 off) when a GPU is present;
* ``parity_case`` / ``parity_error_case``: a test taking one of them runs once per golden case
  (results / crash cases), with the case loaded (``porting.golden.Case``);
* ``parity_check(case, actual, device=...)``: compares the port's outputs with the case by the
  contract (``porting.parity.contract``: strict tier when the case's capture has this machine's numerics
  fingerprint, portable otherwise), records the comparison for ``--parity-report DIR`` and fails the
  test with the located mismatches, the tier and why.

``--parity-report DIR`` writes ``DIR/report.md`` (+ figures, with the ``report`` extra: matplotlib) for
every comparison made through ``parity_check`` in the session, with the store's MANIFEST hash; the
header of every run prints this machine's fingerprint and each capture's tier.
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
        help="golden store to test against, e.g. one regenerated on this machine (reference/README.md); write "
             "--golden-dir=DIR (default: $PORTING_GOLDEN_DIR, else <rootdir>/golden)",
    )
    group.addoption(
        "--parity-report",
        default=None,
        metavar="DIR",
        help="write DIR/report.md (+ PNG figures with the report extra) for the session's parity comparisons",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares a port stage with golden tensors by the parity contract (strict or portable tier)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped when none is present)")
    setattr(config, _RUNS_KEY, [])  # CaseRuns recorded by parity_check


def pytest_report_header(config):
    """This machine's numerics fingerprint and the tier each capture of the golden store gets here."""
    try:
        from ..golden import captures
        from .contract import choose_tier
        from .fingerprint import describe, machine_fingerprint
    except ImportError:  # pragma: no cover - torch missing: the tests say so themselves
        return None
    store = golden_path(config)
    if not (store / "cases").is_dir():
        return None
    running = machine_fingerprint()
    lines = [f"porting parity: golden store: {store}", f"porting parity: this machine: {describe(running)}"]
    for cap in captures(store):
        lines.append(f"porting parity: capture {cap.name}: {choose_tier(cap.fingerprint, running).line()}")
    return lines


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def golden_path(config) -> Path:
    """The golden store of the session: ``--golden-dir``, else ``$PORTING_GOLDEN_DIR``, else ``<rootdir>/golden``."""
    opt = config.getoption("--golden-dir")
    return Path(opt).expanduser() if opt else Path(config.rootpath) / "golden"



def _case_names(config, with_error: bool) -> list[tuple[str, str]]:
    """(path relative to the store, test id) of every case of every capture (``cases/``, ``captures/*/cases/``)."""
    store = golden_path(config)
    out = []
    dirs = [("golden", store / "cases")] + [(d.name, d / "cases") for d in sorted((store / "captures").glob("*"))]
    for capture, cases in dirs:
        for p in sorted(cases.glob("*.json")):
            try:
                has_error = bool(json.loads(p.read_text()).get("error"))
            except ValueError:
                has_error = False  # malformed: let the fixture raise a GoldenError when it loads it
            if has_error == with_error:
                out.append((p.relative_to(store).as_posix(), p.stem if capture == "golden" else f"{capture}:{p.stem}"))
    return out


def pytest_generate_tests(metafunc):
    """One test per golden case and capture for tests that take ``parity_case`` / ``parity_error_case``."""
    for name, with_error in (("parity_case", False), ("parity_error_case", True)):
        if name in metafunc.fixturenames:
            found = _case_names(metafunc.config, with_error)
            metafunc.parametrize(name, [rel for rel, _ in found], indirect=True, ids=[i for _, i in found])


_loaded: dict[Path, object] = {}


def _load(path: Path):
    from ..golden import load_case

    if path not in _loaded:
        _loaded[path] = load_case(path)
    return _loaded[path]


@pytest.fixture(scope="session")
def golden_dir(request) -> Path:
    path = golden_path(request.config)
    if not (path / "cases").is_dir():
        pytest.fail(f"golden store not found at {path} (pass --golden-dir)")
    return path


@pytest.fixture
def parity_case(request, golden_dir):
    """A golden case with results (parametrized over the store by ``pytest_generate_tests``)."""
    return _load(golden_dir / request.param)


@pytest.fixture
def parity_error_case(request, golden_dir):
    """A golden crash case (legacy raised, e.g. a recording shorter than 2 s)."""
    return _load(golden_dir / request.param)


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
    from .. import family as registry
    from .compare import ParityReport, compare
    from .contract import REGENERATE, STRICT
    from .run import CaseRun, tier_for, worst_arrays

    def check(case, actual, device="cpu", stages=None, running=None):
        fam = registry.named(case.family)
        stored = case.stored_windows
        tier, cap = tier_for(case, running)
        results = compare(case.tensors, actual, stored, tier.name, fam.parity_context(case), stages=stages,
                          family=case.family)
        run = CaseRun(ParityReport(case.name, str(device), results, tier.line(), cap.name),
                      worst_arrays(results, case.tensors, actual, stored, fam.drawn_stages), tier=tier,
                      capture=cap.name, golden_fingerprint=cap.fingerprint, family=case.family)
        getattr(request.config, _RUNS_KEY).append(run)
        bad = [r.message() for r in results if not r.passed]
        if bad:
            hint = "" if tier.name != STRICT else f"\n{REGENERATE}"
            pytest.fail(f"{case.name} ({cap.name}) [{device}], {tier.line()}:\n" + "\n".join(bad) + hint, pytrace=False)
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

    merged: dict[tuple[str, str, str], CaseRun] = {}  # one section per case, capture and device, however many tests
    for r in runs:
        key = (r.report.case, r.capture, r.report.device)
        if key not in merged:
            merged[key] = CaseRun(ParityReport(r.report.case, r.report.device, [], r.report.note, r.capture), {},
                                          tier=r.tier, capture=r.capture, golden_fingerprint=r.golden_fingerprint,
                                  family=r.family)
        merged[key].report.stages.extend(r.report.stages)
        merged[key].worst.update(r.worst)
    path = write_report(list(merged.values()), out, title="Parity report (pytest session)",
                        golden=golden_path(session.config))
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"parity report: {path} ({len(runs)} comparisons)")
