"""Issue 19: `port` pointed at hostile paths and option values, through the real entry point (``python -m porting``,
the same ``porting.cli.main`` as the ``port`` script). Every case asserts the exit code, exactly one ``error:`` line
on stderr naming the path (or option) and a fix, no traceback (``PORTING_DEBUG=1`` makes an unexpected exception
print one, so it fails here), every input byte for byte as before, no temp leftovers, and a time bound.

The classes: outputs that are (or contain) an input, one bad path in a batch, option values, quiet wrong answers,
SIGTERM and failed replaces, messages split over lines. Config values, weights, FIFOs: tests/test_hostile_config.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import COMMITTED, GOLDEN, ROOT

SQ11 = GOLDEN / "models" / "sq11-norm.pkl"
RN18 = GOLDEN / "models" / "rn18.pkl"
SHORT = GOLDEN / "audio" / "pcm16_16k_short.wav"
HF_MODEL = COMMITTED / "hf" / "models" / "w2v2-base"
HF_AUDIO = COMMITTED / "hf" / "audio" / "tones16k.wav"
LONG = "a" * 300  # one path component over NAME_MAX (255 bytes)
TIME_BOUND_S = 180  # a hang fails the case instead of the suite


def _env() -> dict:
    env = dict(os.environ, PORTING_DEBUG="1", PYTHONPATH=str(ROOT))
    env.pop("CI", None)
    return env


def port(*args, cwd: Path, timeout: float = TIME_BOUND_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "porting", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=_env(), timeout=timeout)


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (its relative path -> hash): inputs and earlier outputs."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if p.name.endswith((".tmp", ".old")) or p.name.startswith(".porting-probe."))


def one_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The contract of a refusal: exit ``code``, one ``error:`` line holding ``fragments`` and a fix (after ';')."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    for f in fragments:
        assert f in line, line
    assert "; " in line.split(": ", 2)[-1], f"no fix after the reason: {line}"
    return line


@pytest.fixture
def work(tmp_path):
    """A user's folder: a recording, a learner pickle, its conversion, an HF folder, an earlier result."""
    shutil.copy(SHORT, tmp_path / "rec.wav")
    shutil.copy(SQ11, tmp_path / "m.pkl")
    shutil.copytree(HF_MODEL, tmp_path / "hf")
    shutil.copy(HF_AUDIO, tmp_path / "tones.wav")
    (tmp_path / "earlier.json").write_text('{"kept": true}\n')
    proc = port("convert", "m.pkl", "--out", "conv", "--export", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def _refused(work: Path, args: list, code: int, *fragments: str, created: tuple[str, ...] = ()) -> str:
    before = _digest(work)
    proc = port(*args, cwd=work)
    line = one_error(proc, code, *fragments)
    after = _digest(work)
    assert {k: v for k, v in after.items() if k in before} == before, "an input or earlier output changed"
    assert set(after) - set(before) <= set(created), sorted(set(after) - set(before))
    assert not _leftovers(work), _leftovers(work)
    return line


# ------------------------------------------------------------------------------ outputs that are inputs

@pytest.mark.parametrize("args, fragments", [
    (["detect", "rec.wav", "--model", "m.pkl", "--json", "rec.wav"], ("rec.wav", "is the recording", "--json")),
    (["detect", "rec.wav", "--model", "m.pkl", "--csv", "rec.wav"], ("rec.wav", "is the recording", "--csv")),
    (["detect", "rec.wav", "--model", "m.pkl", "--json", "m.pkl"], ("m.pkl", "is the model", "--json")),
    (["detect", "rec.wav", "--model", "conv", "--json", "conv/config.json"], ("conv/config.json", "inside the model")),
    (["detect", "rec.wav", "--model", "conv", "--csv", "./conv/../rec.wav"], ("is the recording",)),
    (["convert", "m.pkl", "--out", ".", "--force"], ("contains the model", "--out")),
    (["convert", "hf", "--out", "hf", "--force", "--export", "none"], ("hf", "is the model", "--out")),
    (["convert", "hf", "--out", "hf/sub", "--export", "none"], ("inside the model folder", "--out")),
    (["parity", "--golden", "conv", "--report", "conv/r"], ("inside the golden store", "--report")),
], ids=["json-is-recording", "csv-is-recording", "json-is-model", "json-in-model-dir", "csv-dotdot-recording",
        "convert-out-contains-model", "convert-hf-onto-itself", "convert-into-hf-folder", "report-into-golden"])
def test_an_output_that_is_or_contains_an_input_is_refused(work, args, fragments):
    _refused(work, args, 1, *fragments)


def test_a_hard_link_to_the_recording_is_refused(work):
    os.link(work / "rec.wav", work / "alias.json")
    _refused(work, ["detect", "rec.wav", "--model", "m.pkl", "--json", "alias.json"], 1, "is the recording")


# ------------------------------------------------------------------------------ one bad path

def test_a_name_too_long_fails_that_file_only(work):
    before = _digest(work)
    proc = port("detect", "rec.wav", f"{LONG}.wav", "--model", "m.pkl", "--json", "out.json", "--no-progress", cwd=work)
    line = one_error(proc, 1, "longer than the 255", "rename the file")
    assert LONG[:40] in line
    payload = json.loads((work / "out.json").read_text())
    assert [("error" in f) for f in payload["files"]] == [False, True]  # the good file was scored and written
    assert payload["files"][0]["n_windows"] == 2
    assert {k: v for k, v in _digest(work).items() if k in before} == before


@pytest.mark.parametrize("args, fragments", [
    (["detect", "rec.wav", "--model", LONG], ("longer than the 255", "--model")),
    (["detect", "rec.wav", "--model", "m.pkl", "--json", f"{LONG}.json"], ("longer than the 255", "--json")),
    (["convert", "m.pkl", "--out", LONG], ("longer than the 255", "--out")),
    (["convert", f"{LONG}.pkl", "--out", "x"], ("longer than the 255",)),
    (["inspect", f"{LONG}.pkl"], ("longer than the 255",)),
    (["golden", "verify", LONG], ("longer than the 255",)),
], ids=["model", "json", "out", "convert-model", "inspect", "golden-verify"])
def test_a_name_too_long_anywhere_is_one_line(work, args, fragments):
    _refused(work, args, 1, *fragments)


def test_a_newline_in_a_file_name_stays_on_one_line(work):
    proc = port("detect", "rec.wav", "bad\nname.wav", "--model", "m.pkl", "--no-progress", cwd=work)
    line = one_error(proc, 1, "bad name.wav")
    assert "\n" not in line


# ------------------------------------------------------------------------------ option values

@pytest.mark.parametrize("args, code, fragments", [
    (["--window-s", "nan"], 1, ("--window-s nan", "finite")),
    (["--window-s", "inf"], 1, ("--window-s inf", "finite")),
    (["--window-s", "1e-9"], 1, ("--window-s 1e-09", "0.05 to 3600")),
    (["--hop-s", "nan"], 1, ("--hop-s nan", "finite")),
    (["--hop-s", "1e-9"], 1, ("--hop-s 1e-09", "0.01 s to the window")),
    (["--batch-size", "1000000000"], 1, ("--batch-size 1000000000", "1 to 1024")),
    (["--batch-size", "0"], 2, ("--batch-size", "port detect --help")),
    (["--threshold", "2"], 2, ("--threshold", "port detect --help")),
    (["--threshold", "nan"], 2, ("--threshold", "port detect --help")),
    (["--batch-size", "many"], 2, ("--batch-size", "port detect --help")),
], ids=["window-nan", "window-inf", "window-tiny", "hop-nan", "hop-tiny", "batch-huge", "batch-0", "threshold-2",
        "threshold-nan", "batch-text"])
def test_option_values_are_checked_in_one_line(work, args, code, fragments):
    _refused(work, ["detect", "tones.wav", "--model", "hf", "--no-progress", *args], code, *fragments)


def test_threshold_nan_from_python_is_refused():
    from porting.detect import check_threshold
    from porting.errors import PortingError

    for bad in (float("nan"), float("inf"), -0.1, 1.5, True):
        with pytest.raises(PortingError, match="threshold"):
            check_threshold(bad)


def test_a_usage_error_is_one_line_not_a_panel(work):
    proc = port("detect", "rec.wav", "--model", "m.pkl", "--bogus", cwd=work)
    one_error(proc, 2, "--bogus", "port detect --help")
    assert "╭" not in proc.stderr and "Usage:" not in proc.stderr


# ------------------------------------------------------------------------------ quiet wrong answers

def test_golden_that_does_not_exist_is_refused_for_hf_folders_too(work):
    _refused(work, ["convert", "hf", "--out", "o", "--export", "none", "--golden", "/nonexistent"], 1,
             "--golden /nonexistent", "not a golden store")
    _refused(work, ["convert", "m.pkl", "--out", "o", "--export", "none", "--golden", "/nonexistent"], 1,
             "--golden /nonexistent", "not a golden store")


def test_json_naming_a_directory_with_a_slash_is_refused(work):
    _refused(work, ["detect", "rec.wav", "--model", "m.pkl", "--json", "newdir/"], 1, "newdir/", "names a directory")
    assert not (work / "newdir").exists()


# ------------------------------------------------------------------------------ leftovers

def test_sigterm_during_convert_leaves_nothing(work):
    before = _digest(work)
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "porting", "convert", str(RN18), "--out", "t1", "--export", "onnx"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIME_BOUND_S
    while not list(work.glob(".t1.*.tmp")):  # the temp dir exists: conversion is under way
        assert proc.poll() is None and time.monotonic() < deadline, "convert ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIME_BOUND_S)
    one_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 128 + signal.SIGTERM, "terminated")
    assert not (work / "t1").exists() and not _leftovers(work)
    assert _digest(work) == before


def test_a_failed_replace_restores_the_old_output_and_leaves_nothing(tmp_path, monkeypatch):
    import importlib

    C = importlib.import_module("porting.convert")  # the module (porting.convert is also the function)
    from porting.errors import ExportError

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    real = os.rename

    def rename(src, dst):
        if Path(dst) == out and Path(src).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(C.os, "rename", rename)
    with pytest.raises(ExportError, match="No space left"):
        C._write_atomically(out, True, lambda tmp: (tmp / "new.txt").write_text("new"))
    assert (out / "keep.txt").read_text() == "old" and not (out / "new.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp, no .old


def test_an_unexpected_exception_is_one_line_without_debug(tmp_path):
    """The last line of defence: a bug shows as one line (exit 70) naming how to get the traceback."""
    code = ("import sys, porting.cli as c\n"
            "def boom(prog_name): raise ZeroDivisionError('x')\n"
            "c._run_app = boom\nsys.argv = ['port', 'detect']\nc.main()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PORTING_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 70 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "PORTING_DEBUG=1" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "PORTING_DEBUG": "1"},
                          timeout=60)
    assert proc.returncode == 70 and "Traceback" in proc.stderr


def test_inspect_json_is_strict_json(monkeypatch):
    """`port inspect --json` writes null for a non-finite number (a pickle's NaN normalization stats), never NaN."""
    import importlib

    from typer.testing import CliRunner

    from porting.cli import app

    learner = importlib.import_module("porting.families.orcahello.learner")
    monkeypatch.setattr(learner, "inspect_pickle", lambda path: {"normalize": {"mean": [float("nan")], "std": [1.0]}})
    res = CliRunner().invoke(app, ["inspect", str(SQ11), "--json"])
    assert res.exit_code == 0, res.output

    def refuse(token):
        raise ValueError(token)

    assert json.loads(res.stdout, parse_constant=refuse) == {"normalize": {"mean": [None], "std": [1.0]}}
