"""Startup (issue 13): the light commands never import torch or scipy, detection never imports scipy, and the
lazy package API keeps ``porting.convert`` / ``porting.detect`` / ``porting.load_model`` the functions whatever
is imported first. Each check runs in a fresh interpreter: import state is what is under test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import GOLDEN, ROOT

HEAVY = ("torch", "scipy", "onnxruntime")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m porting ARGS``; the process and every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "porting", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    mods = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, mods


def _python(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("args", [("--help",), ("detect", "--help"), ("golden", "verify", str(GOLDEN))])
def test_light_commands_import_no_torch(args):
    proc, mods = _imported(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "porting.cli" in mods and "typer" in mods  # the import log was read
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"port {' '.join(args)} imported {heavy[:5]}"


def test_detection_resamples_without_scipy():
    # a 48 kHz recording: stage A really resamples (porting.dsp.resample, numpy only)
    _python(f"""
import sys
from porting.families.orcahello.detect import Detector
from porting.io.decode import probe
from porting.families.orcahello.frontend.windows import load_windows
x = load_windows(probe({str(GOLDEN / "audio" / "orca60_pcm16_48k.wav")!r}), [0, 1])
assert tuple(x.shape) == (2, 40000)
assert not [m for m in sys.modules if m.split('.')[0] == 'scipy'], 'scipy imported'
""")


def test_lazy_api_attribute_first():
    _python("""
import importlib, sys, types
import porting
assert 'torch' not in sys.modules, 'import porting imported torch'
assert {'convert', 'detect', 'load_model'} <= set(dir(porting))
lazy = porting.load_model
from porting.convert import convert, load_model
from porting.detect import detect
assert lazy is load_model and porting.load_model is load_model
assert porting.convert is convert and porting.detect is detect
assert isinstance(sys.modules['porting.convert'], types.ModuleType)
assert importlib.import_module('porting.detect') is sys.modules['porting.detect']
""")


def test_lazy_api_submodule_first():
    # the import system binds a submodule on its package when first imported: the function must keep the name
    _python("""
import sys, types
import porting.detect
import porting.convert
import porting.cli
from porting import convert, detect, load_model
assert callable(porting.detect) and not isinstance(porting.detect, types.ModuleType)
assert porting.detect is detect is sys.modules['porting.detect'].detect
assert porting.convert is convert is sys.modules['porting.convert'].convert
assert porting.load_model is load_model is sys.modules['porting.convert'].load_model
try:
    porting.no_such_name
except AttributeError as exc:
    assert 'no_such_name' in str(exc)
else:
    raise AssertionError('porting.no_such_name resolved')
""")
