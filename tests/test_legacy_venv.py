"""tools/legacy_venv's pieces, without the network: the building itself needs PyPI and GitHub.

The fixture ``tests/fixtures/fastai_audio-0.1`` is fastai_audio 0.1's real install files (MIT; PROVENANCE.md
there), so the Python 3.11 fix is checked on the file the legacy venv actually patches.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import COMMITTED, FIXTURES, ROOT

TOOL = ROOT / "tools" / "legacy_venv"
FA = FIXTURES / "fastai_audio-0.1"
lv = runpy.run_path(str(TOOL))
Failure = lv["Failure"]

LINE_8_OLD = "from dataclasses import dataclass, asdict\n"
LINE_8_NEW = "from dataclasses import dataclass, asdict, field\n"
LINE_76_OLD = "    sg_cfg: SpectrogramConfig = SpectrogramConfig()\n"
LINE_76_NEW = "    sg_cfg: SpectrogramConfig = field(default_factory=SpectrogramConfig)\n"


def _data_py() -> str:
    return (FA / "audio" / "data.py").read_text()


def test_fixture_is_fastai_audio_0_1_file_by_file():
    assert lv["check_tree"](FA) == []
    assert set(lv["FASTAI_AUDIO_FILES"]) == {p.relative_to(FA).as_posix() for p in FA.rglob("*") if p.is_file()} - {"PROVENANCE.md"}


def test_fix_changes_exactly_lines_8_and_76_of_the_real_file():
    old = _data_py().splitlines(keepends=True)
    assert old[7] == LINE_8_OLD and old[75] == LINE_76_OLD
    fixed, changed = lv["apply_py311_fix"](_data_py())
    new = fixed.splitlines(keepends=True)
    assert changed and len(new) == len(old)
    assert new[7] == LINE_8_NEW and new[75] == LINE_76_NEW
    assert [i for i, (a, b) in enumerate(zip(old, new)) if a != b] == [7, 75]
    assert lv["sha256"](fixed.encode()) == lv["DATA_PY_FIXED_SHA256"]
    again, changed_again = lv["apply_py311_fix"](fixed)  # idempotent: a fixed file is kept as it is
    assert again == fixed and not changed_again
    assert lv["_unfix"](fixed) == _data_py()


def _config_classes(text: str) -> dict:
    """Define fastai_audio's SpectrogramConfig and AudioConfig from ``text`` (no fastai needed)."""
    tree = ast.parse(text)
    keep = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in ("SpectrogramConfig", "AudioConfig")]
    ns = {"dataclass": dataclasses.dataclass, "asdict": dataclasses.asdict, "field": dataclasses.field,
          "Path": Path, "warnings": warnings}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "audio/data.py", "exec"), ns)
    return ns


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the failure the fix is for appears from Python 3.11 on")
def test_the_fix_is_what_python_3_11_needs():
    with pytest.raises(ValueError, match="mutable default"):
        _config_classes(_data_py())
    ns = _config_classes(lv["apply_py311_fix"](_data_py())[0])
    cfg = ns["AudioConfig"]()
    assert cfg.sg_cfg == ns["SpectrogramConfig"]() and cfg.sg_cfg is not ns["AudioConfig"]().sg_cfg


@pytest.mark.parametrize("line", [8, 76])
def test_fix_refuses_a_file_that_is_not_0_1(line):
    lines = _data_py().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1].replace("asdict", "astuple").replace("= SpectrogramConfig()", "= None")
    with pytest.raises(Failure, match=f"line {line} is"):
        lv["apply_py311_fix"]("".join(lines))
    with pytest.raises(Failure, match="lines; the 0.1 fix edits line"):
        lv["apply_py311_fix"]("".join(_data_py().splitlines(keepends=True)[:50]))


def test_check_tree_names_a_changed_or_missing_file(tmp_path):
    tree = tmp_path / "fa"
    shutil.copytree(FA, tree)
    (tree / "audio" / "learner.py").write_text("# edited\n")
    (tree / "setup.py").unlink()
    problems = lv["check_tree"](tree)
    assert problems == ["audio/learner.py is not fastai_audio 0.1's (sha256 " + problems[0].split("sha256 ")[1], "setup.py missing"]
    shutil.copyfile(FA / "audio" / "learner.py", tree / "audio" / "learner.py")
    shutil.copyfile(FA / "setup.py", tree / "setup.py")
    (tree / "audio" / "data.py").write_text(lv["apply_py311_fix"](_data_py())[0])
    assert lv["check_tree"](tree) == []  # an already fixed data.py is still 0.1


def test_prepare_from_a_directory_fixes_and_records(tmp_path):
    info = lv["prepare_fastai_audio"](str(FA), tmp_path / "src")
    assert info["kind"] == "directory" and info["py311_fix"] == "applied" and info["commit"] is None
    assert info["data_py_sha256"] == lv["DATA_PY_FIXED_SHA256"]
    assert (tmp_path / "src" / "audio" / "data.py").read_text().splitlines(keepends=True)[75] == LINE_76_NEW
    assert _data_py().splitlines(keepends=True)[75] == LINE_76_OLD  # the source is not touched
    with pytest.raises(Failure, match="no audio/data.py"):
        lv["prepare_fastai_audio"](str(tmp_path / "nothing"), tmp_path / "src2")


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_source_survives_a_mirror_with_missing_blobs(tmp_path):
    """A local repository whose tag 0.1 tree lacks a blob outside the install files (like mirrors that lack the
    tree's WAVs): `git archive` stops there, the tool reads the files one by one; the commit is checked against
    0.1's."""
    repo = tmp_path / "repo"
    shutil.copytree(FA, repo)
    (repo / "data").mkdir()
    (repo / "data" / "beep.wav").write_bytes(b"RIFF not really a wav" * 50)
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "0.1", cwd=repo)
    _git("tag", "0.1", cwd=repo)
    blob = subprocess.run(["git", "rev-parse", "0.1:data/beep.wav"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    assert b"invalid object" in subprocess.run(["git", "archive", "0.1"], cwd=repo, capture_output=True).stderr
    info = lv["fetch_fastai_audio"](str(repo), tmp_path / "out")
    assert info["kind"] == "git" and len(info["commit"]) == 40
    assert lv["check_tree"](tmp_path / "out") == []
    with pytest.raises(Failure, match=f"not {lv['FASTAI_AUDIO_COMMIT'][:10]}"):  # same files, another commit
        lv["prepare_fastai_audio"](str(repo), tmp_path / "out2")
    with pytest.raises(Failure, match="no tag 0.1"):
        _git("tag", "-d", "0.1", cwd=repo)
        lv["fetch_fastai_audio"](str(repo), tmp_path / "out3")


def _fake_ffmpeg(folder: Path, first_line: str) -> str:
    folder.mkdir()
    exe = folder / "ffmpeg"
    exe.write_text(f"#!/bin/sh\necho '{first_line}'\n")
    exe.chmod(0o755)
    return str(folder)


def test_ffmpeg_check(tmp_path):
    with pytest.raises(Failure, match="ffmpeg is not on PATH .*apt-get install ffmpeg"):
        lv["check_ffmpeg"](str(tmp_path))
    assert lv["check_ffmpeg"](_fake_ffmpeg(tmp_path / "ok", "ffmpeg version 5.1.9 Copyright")) == "ffmpeg version 5.1.9 Copyright"
    with pytest.raises(Failure, match="did not answer like ffmpeg"):
        lv["check_ffmpeg"](_fake_ffmpeg(tmp_path / "bad", "hello"))


def test_constraints_are_the_recorded_freeze_with_torch_2_9_1():
    env = json.loads((COMMITTED / "legacy_env.json").read_text())
    pins = lv["constraints"](env)
    assert {"fastai==1.0.61", "numpy==1.26.4", "scipy==1.17.1", "pandas==1.5.3", "pydub==0.24.1", "librosa==0.11.0",
            "soundfile==0.14.0", "safetensors==0.8.0"} <= set(pins)
    assert [p for p in pins if p.split("==")[0] in ("torch", "torchaudio", "torchvision")] == \
        ["torch==2.9.1", "torchaudio==2.9.1", "torchvision==0.24.1"]
    assert not [p for p in pins if p.startswith(("nvidia-", "cuda-", "triton", "fastai_audio"))]


def test_production_sha256_is_the_one_every_golden_case_records(tmp_path):
    recorded = {json.loads(p.read_text())["provenance"]["production_module_sha256"]
                for p in (COMMITTED / "cases").glob("*.json")}
    assert recorded == {lv["PRODUCTION_SHA256"]}
    other = tmp_path / "fastai_inference.py"
    other.write_text("# not production\n")
    with pytest.raises(Failure, match="is not the production module the goldens record"):
        lv["obtain_production"](str(other), tmp_path / "dest.py")
    assert not (tmp_path / "dest.py").exists()
    with pytest.raises(Failure, match="no such file"):
        lv["obtain_production"](str(tmp_path / "missing.py"), tmp_path / "dest.py")


def _cli(*args, path=None):
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the dry run looks for a Python 3.11: this one is not")
def test_cli_dry_run_prints_the_plan_and_makes_nothing(tmp_path):
    fake = _fake_ffmpeg(tmp_path / "bin", "ffmpeg version 5.1.9")
    done = _cli(str(tmp_path / "legacy"), "--fastai-audio", str(FA), "--production", "/x/fastai_inference.py",
                "--dry-run", path=fake + os.pathsep + os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    assert "torch==2.9.1 torchaudio==2.9.1" in done.stdout and f"fastai_audio 0.1 from {FA}" in done.stdout
    assert "ffmpeg version 5.1.9" in done.stdout and not (tmp_path / "legacy").exists()


def test_cli_refusals_are_one_line(tmp_path):
    inside = _cli(str(ROOT / "legacy-venv"), "--dry-run")
    assert inside.returncode == 1 and inside.stderr.strip().count("\n") == 0
    assert "inside the porting checkout" in inside.stderr
    fake_py = tmp_path / "python3.12"
    fake_py.write_text("#!/bin/sh\necho 3 12 1\n")
    fake_py.chmod(0o755)
    wrong = _cli(str(tmp_path / "legacy"), "--python", str(fake_py), "--dry-run",
                 path=_fake_ffmpeg(tmp_path / "bin", "ffmpeg version 5.1.9") + os.pathsep + os.environ["PATH"])
    assert wrong.returncode == 1 and "is Python 3.12.1; the legacy stack needs 3.11" in wrong.stderr
    no_ffmpeg = _cli(str(tmp_path / "legacy"), "--dry-run", path=str(tmp_path / "empty"))
    assert no_ffmpeg.returncode == 1 and "ffmpeg is not on PATH" in no_ffmpeg.stderr


def test_cli_refuses_a_path_that_is_not_a_new_dir_or_a_venv(tmp_path):
    path = _fake_ffmpeg(tmp_path / "bin", "ffmpeg version 5.1.9") + os.pathsep + os.environ["PATH"]
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    for target, why in (("a-file", "is a file"), ("full", "exists and is not a venv")):
        done = _cli(str(tmp_path / target), "--dry-run", path=path)
        assert done.returncode == 1 and why in done.stderr, done.stderr
    assert (tmp_path / "full" / "notes.txt").read_text() == "x"
