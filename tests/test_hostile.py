"""Hostile and malformed inputs through the real CLI: `port convert` refuses, runs nothing, leaves nothing.

Every payload in the corpus is live: ``test_corpus_is_live`` shows the standard unpickler executes
each one (it creates the canary), so the refusals below are not vacuous.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import GOLDEN, ROOT
from fixtures import pickle_kit as pk
from porting.convert import convert
from porting.errors import PortingError

SQ11 = GOLDEN / "models" / "sq11-norm.pkl"

# name -> fragments the one-line error must contain (what was refused or what is wrong)
EXPECT = {
    "cli_zip_real_export": ("os.system", "builtins.exec"),
    "cli_legacy": ("posix.system", "__builtin__.eval"),
    "cli_raw": ("builtins.__import__", "subprocess.check_call", "pickle.loads"),
    "os_system": "os.system",
    "posix_system": "posix.system",
    "builtins_exec": "builtins.exec",
    "py2_builtin_eval": "__builtin__.eval",
    "import_getattr": "builtins.__import__",
    "getattr_as_model": "builtins.getattr",
    "subprocess": "subprocess.check_call",
    "nested_pickle_loads": "pickle.loads",
    "partial_build_as_model": "functools.partial",
    "zip_os_system": "os.system",
    "zip_exec_inside_real_export": "builtins.exec",
    "legacy_posix_system": "posix.system",
    "legacy_eval_in_sys_info": "builtins.eval",
    "empty": "empty file",
    "truncated_zip": "broken torch zip container",
    "truncated_legacy": "truncated",
    "random_bytes": "not a readable",
    "text_file": "not a readable",
    "zip_without_data_pkl": "no archive/data.pkl",
    "state_dict_only": "only a state_dict",
    "unsupported_layer": "model[1] is torch.nn.modules.rnn.LSTM",
}


def _corpus(d: Path, canary: Path) -> dict[str, Path]:
    files: dict[str, bytes] = {}
    live = pk.payloads(canary)
    for name, ops in live.items():
        files[name] = pk.pickle_of(ops)
    files["zip_os_system"] = pk.torch_zip(pk.pickle_of(live["os_system"]))
    real = pk.read_data_pkl(SQ11)
    files["cli_zip_real_export"] = pk.rezip_with(
        SQ11, pk.inject_setitem(pk.inject_setitem(real, "evil1", live["os_system"]), "evil2", live["builtins_exec"]))
    files["cli_legacy"] = pk.torch_legacy(pk.pickle_of(_dict(a=live["posix_system"], b=live["py2_builtin_eval"])))
    files["cli_raw"] = pk.pickle_of(
        _dict(a=live["import_getattr"], b=live["subprocess"], c=live["nested_pickle_loads"]))
    files["zip_exec_inside_real_export"] = pk.rezip_with(SQ11, pk.inject_setitem(real, "metrics2", live["builtins_exec"]))
    files["legacy_posix_system"] = pk.torch_legacy(pk.pickle_of(live["posix_system"]))
    py_touch = pk.text(f"open({str(canary)!r}, 'w').close()")
    files["legacy_eval_in_sys_info"] = (  # the payload sits where torch expects the sys_info dict
        pickle.dumps(pk.LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
        + pk.pickle_of(pk.call(pk.glob("builtins", "eval"), py_touch))
    )
    files["empty"] = b""
    files["truncated_zip"] = SQ11.read_bytes()[:1_000_000]
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    legacy_path = d / "small_legacy.tmp"
    torch.save(small, legacy_path, _use_new_zipfile_serialization=False)
    files["truncated_legacy"] = legacy_path.read_bytes()[:-20]
    legacy_path.unlink()
    files["random_bytes"] = bytes((i * 7919 + 13) % 251 for i in range(4096))
    files["text_file"] = b"this is not a pickle\n"
    files["zip_without_data_pkl"] = _zip_without_pkl()
    sd_path = d / "sd.tmp"
    torch.save(small.state_dict(), sd_path)
    files["state_dict_only"] = sd_path.read_bytes()
    sd_path.unlink()
    lstm_path = d / "lstm.tmp"
    torch.save(nn.Sequential(nn.Linear(3, 3), nn.LSTM(3, 3)), lstm_path)
    files["unsupported_layer"] = lstm_path.read_bytes()
    lstm_path.unlink()
    out = {}
    for name, data in files.items():
        p = d / f"{name}.pkl"
        p.write_bytes(data)
        out[name] = p
    return out


def _fragments(name: str) -> tuple[str, ...]:
    want = EXPECT[name]
    return (want,) if isinstance(want, str) else want


def _dict(**values: bytes) -> bytes:
    """Opcodes of a dict holding several payloads."""
    return b"}(" + b"".join(pk.text(k) + v for k, v in values.items()) + b"u"


def _zip_without_pkl() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


# The real CLI (a fresh interpreter each: ~3 s, mostly `import torch`) runs files that together hold every
# category the issue names (os/posix.system, exec/eval/getattr/__import__, subprocess, nested pickle.loads,
# BUILD on functools.partial, payloads in the zip and the legacy container, empty/truncated/non-pickle);
# the whole corpus, one payload per file, also goes through the library in-process below.
CLI_CASES = [
    "cli_zip_real_export", "cli_legacy", "cli_raw", "getattr_as_model", "partial_build_as_model", "empty",
    "truncated_zip", "text_file",
]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    (base / "in").mkdir()
    canary = base / "canary"
    files = _corpus(base / "in", canary)
    assert set(files) == set(EXPECT)
    return {"files": files, "canary": canary, "base": base}


@pytest.fixture(scope="module")
def results(corpus):
    """Run `port convert` for real on one file per category (concurrently: each is a fresh interpreter)."""
    outs = corpus["base"] / "cli_out"
    outs.mkdir()

    def one(name):
        if name == "inspect":
            return name, _run_cli(["inspect", str(corpus["files"]["subprocess"])])
        return name, _run_cli(["convert", str(corpus["files"][name]), "--out", str(outs / name)])

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(one, CLI_CASES + ["inspect"]))
    return {"done": done, "canary": corpus["canary"], "outs": outs}


def test_corpus_is_live(tmp_path):
    """Positive control: the standard unpickler runs every payload (in a throwaway interpreter)."""
    canaries = {name: tmp_path / f"canary_{name}" for name in pk.payloads(tmp_path / "x")}
    for name, canary in canaries.items():
        (tmp_path / f"{name}.pkl").write_bytes(pk.pickle_of(pk.payloads(canary)[name]))
    script = "import pickle,sys\nfor p in sys.argv[1:]:\n    try: pickle.load(open(p,'rb'))\n    except Exception: pass\n"
    subprocess.run([sys.executable, "-c", script, *[str(tmp_path / f"{n}.pkl") for n in canaries]], check=True,
                   capture_output=True, timeout=120)
    assert sorted(n for n, c in canaries.items() if c.exists()) == sorted(canaries)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_library_refuses_whole_corpus(corpus, tmp_path, name):
    """In-process: a typed one-line error naming what was refused or wrong; nothing run, nothing written."""
    with pytest.raises(PortingError) as info:
        convert(corpus["files"][name], tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in _fragments(name):
        assert fragment in message, message
    assert list(tmp_path.iterdir()) == []
    assert not corpus["canary"].exists()


@pytest.mark.parametrize("name", CLI_CASES)
def test_convert_refuses_with_one_line_error(results, name):
    proc = results["done"][name]
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in _fragments(name):
        assert fragment in lines[0], lines[0]


def test_no_code_ran_and_nothing_was_written(results):
    assert not results["canary"].exists()
    assert list(results["outs"].iterdir()) == []  # no output dir, no temp dir left beside it


def test_inspect_lists_refusals_without_failing(results):
    proc = results["done"]["inspect"]
    assert proc.returncode == 0, proc.stderr
    assert "refused  subprocess.check_call" in proc.stdout
    assert "refused: subprocess.check_call" in proc.stdout
    assert "problem: UnsafePickleError" in proc.stdout
    assert not results["canary"].exists()
