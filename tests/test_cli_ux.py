"""What a user meets at the command line (issue 13): output paths checked before work, atomic writes, one-line
errors naming a path once, --version, --device, inline per-file reports, the progress total, events and CSV,
plurals, and the Python API with the CLI's defaults and its own parameter names in errors."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import COMMITTED, GOLDEN, ROOT
from porting.cli import app
from porting.errors import AudioError, PortingError

SQ11 = GOLDEN / "models" / "sq11-norm.pkl"
SHORT = GOLDEN / "audio" / "pcm16_16k_short.wav"
ORCA60 = GOLDEN / "audio" / "orca60_pcm16_48k.wav"
HF = COMMITTED / "hf"


def _port(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(res, *fragments):
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # a clean exit, not an escaped exception
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


class WorkStarted(Exception):
    pass


def _module(name: str):
    """The submodule itself (``porting.detect`` / ``porting.convert`` are also the package's functions)."""
    import importlib

    return importlib.import_module(name)


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model, converting or running parity raises: a check that passes lets the test see it."""
    def boom(*a, **k):
        raise WorkStarted

    monkeypatch.setattr(_module("porting.detect"), "load_detector", boom)
    monkeypatch.setattr(_module("porting.convert"), "convert", boom)
    monkeypatch.setattr(_module("porting.parity.run"), "run_parity", boom)


def _bad_outputs(tmp_path: Path) -> dict[str, Path]:
    regular = tmp_path / "regular"
    regular.write_text("x")
    return {"under a regular file": regular / "out.json", "inside /proc": Path("/proc/porting-test/out.json"),
            "a directory": tmp_path, "a device": Path("/dev/null")}


# ---------------------------------------------------------------- 1. output paths, before the work


@pytest.mark.parametrize("kind", ["under a regular file", "inside /proc", "a directory", "a device"])
@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_detect_output_paths_are_checked_before_detection(tmp_path, no_work, kind, flag):
    out = _bad_outputs(tmp_path)[kind]
    _one_error_line(_port("detect", SHORT, "--model", SQ11, flag, out), str(out), flag)


def test_detect_refuses_one_file_for_two_outputs(tmp_path, no_work):
    p = tmp_path / "r.out"
    _one_error_line(_port("detect", SHORT, "--model", SQ11, "--json", p, "--csv", p), "--json and --csv")


@pytest.mark.parametrize("kind", ["under a regular file", "inside /proc", "a device"])
def test_convert_out_is_checked_before_reading_the_model(tmp_path, no_work, kind):
    out = _bad_outputs(tmp_path)[kind]
    _one_error_line(_port("convert", SQ11, "--out", out, "--export", "none"), str(out), "--out")


@pytest.mark.parametrize("kind", ["under a regular file", "inside /proc", "a device"])
def test_parity_report_is_checked_before_the_run(tmp_path, no_work, kind):
    out = _bad_outputs(tmp_path)[kind]
    _one_error_line(_port("parity", "--report", out), str(out), "--report")


@pytest.mark.parametrize("kind", ["under a regular file", "inside /proc", "a directory", "a device"])
def test_parity_json_is_checked_before_the_run(tmp_path, no_work, kind):
    out = _bad_outputs(tmp_path)[kind]
    _one_error_line(_port("parity", "--json", out), str(out), "--json")


def test_good_output_paths_pass_the_checks_and_create_nothing(tmp_path, no_work):
    """Missing parents are fine (created when writing); the check itself leaves the disk as it was."""
    res = _port("detect", SHORT, "--model", SQ11, "--json", tmp_path / "a" / "b" / "r.json", "--csv",
                tmp_path / "r.csv")
    assert isinstance(res.exception, WorkStarted)
    res = _port("parity", "--report", tmp_path / "rep", "--json", tmp_path / "p.json")
    assert isinstance(res.exception, WorkStarted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_replaces_or_leaves_the_old_file(tmp_path, monkeypatch):
    from porting.outputs import OutputError, write_text_atomic

    target = tmp_path / "r.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640  # its mode kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError) as info:
        write_text_atomic(target, "newer", "json_out")
    assert str(info.value).count(str(target)) == 1 and "No space left" in str(info.value)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left


def test_atomic_writer_creates_parents_and_a_normal_mode(tmp_path):
    from porting.outputs import write_text_atomic

    umask = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "x" / "y" / "r.csv", "a,b\n")
    finally:
        os.umask(umask)
    assert p.read_text() == "a,b\n" and (p.stat().st_mode & 0o777) == 0o644


# ---------------------------------------------------------------- 2. devices


@pytest.mark.parametrize("cmd", [["detect", SHORT, "--model", SQ11], ["parity"]])
def test_unknown_device_is_one_line_naming_the_valid_ones(no_work, cmd):
    _one_error_line(_port(*cmd, "--device", "tpu"), "--device tpu", "cpu, cuda or cuda:N")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(no_work):
    _one_error_line(_port("detect", SHORT, "--model", SQ11, "--device", "cuda"), "no CUDA device", "--device cpu")


def test_check_device_accepts_what_torch_runs():
    from porting.detect import check_device

    assert check_device("cpu") == "cpu" and check_device(torch.device("cpu")) == "cpu"
    for bad in ("tpu", "cuda:x", "cpu:1", "", "CUDA"):
        with pytest.raises(PortingError, match="unknown device"):
            check_device(bad)


# ---------------------------------------------------------------- 3. --version


def _pyproject_version() -> str:
    return re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_version():
    proc = subprocess.run([sys.executable, "-m", "porting", "--version"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"porting {_pyproject_version()}\n"


def test_version_imports_nothing_heavy():
    """Whatever importing porting.cli costs, --version itself loads no torch, numpy or model code."""
    code = ("import sys; import porting.cli as c; before = set(sys.modules)\n"
            "try:\n    c.app(['--version'])\nexcept SystemExit:\n    pass\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(m for m in new if m.split('.')[0] in ('torch', 'numpy', 'soundfile') or "
            "m.startswith('porting.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


# ---------------------------------------------------------------- 4-7. per-file errors, warnings, progress


def _truncated_wav(path: Path, claims_s: float = 5.0, holds_s: float = 3.5, sr: int = 16000) -> Path:
    x = (np.random.default_rng(0).standard_normal(int(sr * claims_s)) * 0.1).astype(np.float32)
    sf.write(path, x, sr, subtype="PCM_16")
    os.truncate(path, 44 + int(sr * holds_s) * 2)
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One run over good, missing, directory, non-audio, empty and truncated files."""
    d = tmp_path_factory.mktemp("batch")
    (d / "adir.wav").mkdir()
    (d / "notes.wav").write_text("this is not audio\n" * 20)
    (d / "empty.wav").write_bytes(b"")
    files = [SHORT, d / "missing.wav", d / "adir.wav", d / "notes.wav", d / "empty.wav",
             _truncated_wav(d / "cut.wav"), GOLDEN / "audio" / "pcm16_8k_2500ms.wav"]
    res = _port("detect", *files, "--model", SQ11, "--no-progress", "--json", d / "r.json", "--csv", d / "r.csv")
    return d, files, res


def test_each_error_names_its_path_once(batch):
    d, files, res = batch
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert [ln.split(": ")[1] for ln in errors] == [str(f) for f in files[1:5]]  # in order, one line each
    for ln, f in zip(errors, files[1:5]):
        assert ln.count(str(f)) == 1 and ln.count(f.name) == 1, ln
    assert "no such file" in errors[0]
    assert "is a directory" in errors[1] and "no such file" not in errors[1]
    assert "not a readable audio file" in errors[2] and "empty" in errors[3]
    assert res.stderr.splitlines()[-1] == (f"4 of 7 recordings failed: {', '.join(str(f) for f in files[1:5])}")


def test_reports_come_inline_in_file_order(batch):
    """Each file's line (result on stdout, error on stderr) appears as it finishes, before the next file's."""
    d, files, res = batch
    firsts = [next(i for i, ln in enumerate(res.output.splitlines()) if str(f) in ln) for f in files]
    assert firsts == sorted(firsts)


def test_truncated_wav_is_scored_with_one_warning(batch):
    d, files, res = batch
    cut = str(files[5])
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warn) == 1 and cut in warn[0] and warn[0].count(cut) == 1
    assert "truncated" in warn[0] and "5.000 s" in warn[0] and "1.500 s missing" in warn[0]
    assert any(ln.startswith(f"{cut}: 2 windows") for ln in res.stdout.splitlines())
    (entry,) = [f for f in json.loads((d / "r.json").read_text())["files"] if f["file"] == cut]
    assert entry["n_windows"] == 2 and entry["warnings"] == [warn[0].removeprefix("warning: ")]


def test_truncated_wav_warns_through_the_api(tmp_path):
    from porting.io.decode import probe
    from porting.io.stream import TruncatedAudioWarning

    path = _truncated_wav(tmp_path / "cut.wav")
    with pytest.warns(TruncatedAudioWarning, match=r"cut\.wav: truncated WAV.*1\.500 s missing"):
        info = probe(path)
    assert info.frames == 3.5 * 16000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe(SHORT)  # a complete file: no warning
    import porting

    with pytest.warns(TruncatedAudioWarning) as rec:
        (r,) = porting.detect([path], SQ11)  # the batch runner passes it on to an API caller
    assert len(r.confidence) == 2 and len(rec) == 1


class _FakeDetector:
    """n_windows / run without a model: 'bad' fails at the header, 'mid' after its first batch."""

    def __init__(self):
        self.calls = []

    def n_windows(self, p):
        self.calls.append(("plan", p.name))
        if p.name == "bad":
            raise AudioError(f"{p}: no such file; check the path")
        return {"a": 5, "mid": 4, "b": 3}[p.name]

    def run(self, p, on_batch=None):
        self.calls.append(("run", p.name))
        n = self.n_windows(p)
        self.calls.pop()
        on_batch(2)
        if p.name == "mid":
            raise AudioError(f"{p}: NaN/Inf sample at frame 9; clean or re-export the recording")
        on_batch(n - 2)
        return p.name


def test_progress_total_is_known_up_front_and_reaches_it(monkeypatch):
    import tqdm

    from porting.detect import FileError, run_many

    bars = []

    class Recording(tqdm.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)
            self.total_at_start = self.total

    monkeypatch.setattr(tqdm, "tqdm", Recording)
    monkeypatch.setattr(sys.modules["porting.detect"], "_stderr_is_tty", lambda: True)  # pytest captures stderr
    det = _FakeDetector()
    seen = []
    out = run_many(det, ["a", "bad", "mid", "b"], progress=True, on_file=lambda r, w: seen.append(r))
    (bar,) = bars
    assert bar.total_at_start == 12 and bar.n == 12  # 5 + 0 + 4 + 3, the failure midway filled in
    assert det.calls[:4] == [("plan", "a"), ("plan", "bad"), ("plan", "mid"), ("plan", "b")]  # all planned first
    assert [("run", n) for n in ("a", "mid", "b")] == det.calls[4:]  # a file that failed its plan is not run again
    assert out[0] == "a" and out[3] == "b" and isinstance(out[1], FileError) and isinstance(out[2], FileError)
    assert seen == out


def test_no_progress_bar_text_in_a_log_file(tmp_path):
    """stderr redirected to a file: the results and the model line, no bar redraws left behind as text."""
    log = tmp_path / "err.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "porting", "detect", str(ORCA60), "--model", str(SQ11)],
                              stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and "global_confidence" in proc.stdout
    text = log.read_text()
    assert "backend" in text and "win/s" not in text and "%|" not in text, text


# ---------------------------------------------------------------- 8. events, threshold, CSV


def _runs(flags):
    """(start, end) of each run of 1s, by hand."""
    out, start = [], None
    for k, f in enumerate(list(flags) + [0]):
        if f and start is None:
            start = k
        if not f and start is not None:
            out.append((start, k))
            start = None
    return out


@pytest.fixture(scope="module")
def orca(tmp_path_factory):
    d = tmp_path_factory.mktemp("orca")
    res = _port("detect", ORCA60, "--model", SQ11, "--no-progress", "--json", d / "r.json", "--csv", d / "r.csv")
    assert res.exit_code == 0, res.output
    return res, json.loads((d / "r.json").read_text()), (d / "r.csv").read_text()


def test_events_are_the_legacy_per_second_calls(orca):
    res, payload, text = orca
    gold = json.loads((GOLDEN / "cases" / "sq11-norm__orca60_pcm16_48k.json").read_text())
    want = _runs(gold["local_predictions"])
    assert len(want) >= 3
    (f,) = payload["files"]
    assert [(e["start_s"], e["end_s"]) for e in f["events"]] == want
    conf = [r["confidence"] for r in gold["submission"]]
    for e, (a, b) in zip(f["events"], want):
        assert abs(e["peak_confidence"] - max(conf[a:b])) <= 1e-5
        assert abs(e["mean_confidence"] - sum(conf[a:b]) / (b - a)) <= 1e-5
        assert e["n_intervals"] == b - a and e["duration_s"] == b - a
    assert "submission" in f and "local_predictions" in f and payload["threshold"] == 0.5  # the legacy table stays


def test_csv_is_one_row_per_event_and_reads_back(orca):
    res, payload, text = orca
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["file", "start_s", "end_s", "duration_s", "peak_confidence", "peak_s",
                             "mean_confidence", "n_intervals"]
    events = payload["files"][0]["events"]
    assert len(rows) == len(events)
    for row, e in zip(rows, events):
        assert row["file"] == str(ORCA60)
        for k in ("start_s", "end_s", "duration_s", "peak_confidence", "peak_s", "mean_confidence"):
            assert float(row[k]) == e[k]  # written to read back exactly
        assert int(row["n_intervals"]) == e["n_intervals"]


def test_terminal_shows_a_summary_and_events_not_every_second(orca):
    res, payload, _ = orca
    lines = res.stdout.splitlines()
    n_events = len(payload["files"][0]["events"])
    assert lines[0].startswith(f"{ORCA60}: 59 windows, ") and f"{n_events} events > 0.5:" in lines[0]
    assert len(lines) == 1 + n_events + 2  # the file, its events, two "wrote" lines
    assert all(len(ln) < 200 for ln in lines)


def test_threshold_moves_the_calls_and_the_events(tmp_path):
    gold = json.loads((GOLDEN / "cases" / "sq11-norm__orca60_pcm16_48k.json").read_text())
    conf = np.array([r["confidence"] for r in gold["submission"]])
    thr = 0.9
    assert np.abs(conf - thr).min() > 1e-4  # no legacy value so close to it that port rounding could flip it
    res = _port("detect", ORCA60, "--model", SQ11, "--no-progress", "--threshold", thr, "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    (f,) = json.loads((tmp_path / "r.json").read_text())["files"]
    flags = [int(c > thr) for c in conf]
    assert f["local_predictions"] == flags and f["threshold"] == thr
    assert [(e["start_s"], e["end_s"]) for e in f["events"]] == _runs(flags)
    assert flags != gold["local_predictions"]  # the option changed something


def test_threshold_outside_0_1_is_refused(no_work):
    res = _port("detect", SHORT, "--model", SQ11, "--threshold", "1.5")
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_many_events_are_capped_on_the_terminal():
    from porting.families.orcahello.aggregate import aggregate
    from porting.families.orcahello.detect import FileResult
    from porting.events import second_events
    from porting.summary import MAX_EVENT_LINES, format_file

    conf = np.tile(np.array([0.9, 0.9, 0.1, 0.1], np.float32), 100)  # a 400-s recording, 100 events
    table = aggregate(conf, "long.wav")
    r = FileResult(Path("long.wav"), torch.zeros(400, 2), torch.zeros(400, 2), torch.from_numpy(conf), table,
                   second_events(table.submission))
    lines = format_file(r).splitlines()
    assert len(r.events) == 100 and len(lines) == 1 + MAX_EVENT_LINES + 1
    assert lines[-1] == f"  ... {100 - MAX_EVENT_LINES} more events (all of them in the JSON/CSV)"


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    res = _port("detect", HF / "audio" / "tones16k.wav", HF / "audio" / "stereo44k1.flac", "--model",
                HF / "models" / "w2v2-base", "--window-s", "1", "--no-progress", "--json", d / "r.json", "--csv",
                d / "r.csv")
    assert res.exit_code == 0, res.output
    return d, json.loads((d / "r.json").read_text())


def test_hf_csv_is_one_row_per_window(hf_run):
    d, payload = hf_run
    rows = list(csv.DictReader(io.StringIO((d / "r.csv").read_text())))
    labels = payload["files"][0]["labels"]
    assert list(rows[0]) == ["file", "start_s", "end_s", "partial", "label", *[f"prob_{c}" for c in labels]]
    want = [(f["file"], w) for f in payload["files"] for w in f["windows"]]
    assert len(rows) == len(want) and any(w["partial"] for _, w in want)
    for row, (file, w) in zip(rows, want):
        assert row["file"] == file and row["label"] == w["label"]
        assert (float(row["start_s"]), float(row["end_s"])) == (w["start_s"], w["end_s"])
        assert row["partial"] == ("true" if w["partial"] else "false")
        assert [float(row[f"prob_{c}"]) for c in labels] == w["probs"]
    assert all("events" not in f for f in payload["files"])  # no --positive: no events for HF


def test_hf_positive_label_gives_window_events(hf_run, tmp_path):
    _, plain = hf_run
    f0 = plain["files"][0]
    k = 0
    col = [w["probs"][k] for w in f0["windows"]]
    thr = float(np.median(col))
    res = _port("detect", HF / "audio" / "tones16k.wav", "--model", HF / "models" / "w2v2-base", "--window-s", "1",
                "--no-progress", "--positive", f0["labels"][k], "--threshold", thr, "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    (f,) = json.loads((tmp_path / "r.json").read_text())["files"]
    flags = [int(p > thr) for p in col]  # hop = window: windows [k, k + 1] s touch
    assert [(e["start_s"], e["end_s"]) for e in f["events"]] == [(float(a), float(b)) for a, b in _runs(flags)]
    n = len(f["events"])
    assert f"; {n} event{'s' if n != 1 else ''} {f0['labels'][k]} > {thr:g}" in res.stdout


def test_hf_unknown_positive_label():
    res = _port("detect", HF / "audio" / "tones16k.wav", "--model", HF / "models" / "w2v2-base", "--positive", "nope")
    _one_error_line(res, "--positive nope: not a label of this model; use one of ")


# ---------------------------------------------------------------- 9. plurals


def test_one_window_is_singular():
    from porting.detect import detect
    from porting.summary import format_file

    (r,) = detect(GOLDEN / "audio" / "pcm16_8k_2500ms.wav", SQ11)
    line = format_file(r).splitlines()[0]
    assert ": 1 window, " in line, line


def test_convert_summary_plurals():
    from porting.convert import format_summary

    s = {"source": "m.pkl", "kind": "k", "container": "c", "out": "o", "modules": 1, "tensors": 2,
         "parameters": 1, "bytes": 1234, "classes": [], "positive_index": None, "normalize": None,
         "activation": None, "stubbed": 1}
    text = format_summary(s)
    assert "1 module, 2 tensors, 1 parameter, 1,234 bytes" in text and "1 pickle global kept" in text


# ---------------------------------------------------------------- 10. the API and the CLI agree


class _Formats(Exception):
    pass


def test_convert_api_default_exports_are_the_cli_default(tmp_path, monkeypatch):
    import porting
    from porting.export import available_formats

    def record(model, config, out_dir, formats, **kw):
        raise _Formats(list(formats))

    monkeypatch.setattr(_module("porting.families.orcahello.export"), "export_all", record)
    with pytest.raises(_Formats) as api:
        porting.convert(SQ11, tmp_path / "api")
    cli = _port("convert", SQ11, "--out", tmp_path / "cli")
    assert isinstance(cli.exception, _Formats)
    assert api.value.args[0] == cli.exception.args[0] == available_formats()
    assert list(tmp_path.iterdir()) == []


def test_detect_api_defaults_are_the_cli_defaults(monkeypatch):
    import porting

    seen = []

    def record(model, **kw):
        seen.append(kw)
        raise WorkStarted

    monkeypatch.setattr(_module("porting.detect"), "load_detector", record)
    with pytest.raises(WorkStarted):
        porting.detect([SHORT], SQ11)
    assert isinstance(_port("detect", SHORT, "--model", SQ11).exception, WorkStarted)
    api, cli = seen
    assert api == cli and api["backend"] == "auto" and api["threshold"] == 0.5


def test_errors_name_the_callers_own_options(tmp_path):
    import porting

    out = tmp_path / "rn18"
    out.mkdir()
    with pytest.raises(PortingError) as api:
        porting.convert(SQ11, out, exports=None)
    assert "overwrite=True" in str(api.value) and "--force" not in str(api.value)
    line = _one_error_line(_port("convert", SQ11, "--out", out), "--force")
    assert "overwrite" not in line
    with pytest.raises(PortingError) as api:
        porting.detect([SHORT], SQ11, device="tpu")
    assert "device='tpu'" in str(api.value) and "--device" not in str(api.value)
    with pytest.raises(PortingError) as api:
        porting.detect([SHORT], SQ11, window_s=3)
    assert str(api.value).startswith("window_s: ") and "--window-s" not in str(api.value)
    _one_error_line(_port("detect", SHORT, "--model", SQ11, "--window-s", "3"), "--window-s: ")
