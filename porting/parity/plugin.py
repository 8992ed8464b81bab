"""pytest plugin: the ``parity`` marker, golden-case fixtures and device parametrisation.

Registered through the ``pytest11`` entry point, so any project that installs
``porting`` gets ``pytest -m parity`` and the fixtures below.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("porting parity")
    group.addoption(
        "--golden-dir",
        default=os.environ.get("PORTING_GOLDEN_DIR"),
        help="golden store to test against (default: ./golden, or $PORTING_GOLDEN_DIR)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares a port stage with golden tensors at 1e-5")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped when none is present)")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def golden_dir(request) -> Path:
    opt = request.config.getoption("--golden-dir")
    path = Path(opt) if opt else Path(request.config.rootpath) / "golden"
    if not (path / "cases").is_dir():
        pytest.fail(f"golden store not found at {path} (pass --golden-dir)")
    return path


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
