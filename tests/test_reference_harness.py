"""The capture harness's fastai-free parts (reference/caseio.py) against the existing goldens.

The legacy-venv part (capture.py, legacy.py) cannot run here; what can be checked without fastai is:
the writer reproduces every public case byte for byte from its logical tensors and metadata, the
window selection reproduces every ``stored_windows`` from the budget, names and commands match, and
capture.py keeps its predict call where the crash case's traceback says it is.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
import torch

from conftest import COMMITTED, GOLDEN, ROOT, golden_cases
from porting.golden import load_case

sys.path.insert(0, str(ROOT / "reference"))
import caseio  # noqa: E402

ALL_CASES = golden_cases() + golden_cases(with_error=True)


def _case(name):
    return load_case(GOLDEN / "cases" / f"{name}.json")


def _base(meta: dict) -> dict:
    base = {k: meta[k] for k in caseio.BASE_KEYS}
    if "error" not in meta:
        base.update({k: meta[k] for k in caseio.RESULT_KEYS})
        base["checks"] = meta["checks"]
    return base


@pytest.mark.parametrize("name", golden_cases())
def test_writer_reproduces_case_bytes(name):
    case = _case(name)
    meta, stored = caseio.build_case(_base(case.meta), case.tensors)
    json_path = GOLDEN / "cases" / f"{name}.json"
    assert caseio.case_json_bytes(meta) == json_path.read_bytes()
    assert caseio.case_tensor_bytes(name, stored) == json_path.with_suffix(".safetensors").read_bytes()


@pytest.mark.parametrize("name", golden_cases(with_error=True))
def test_writer_reproduces_crash_case_bytes(name, tmp_path):
    case = _case(name)
    meta = caseio.error_meta(_base(case.meta), case.meta["error"])
    (tmp_path / f"{name}.safetensors").write_bytes(b"stale")
    written = caseio.write_case(tmp_path, meta, None)
    assert [p.name for p in written] == [f"{name}.json"]
    assert (tmp_path / f"{name}.json").read_bytes() == (GOLDEN / "cases" / f"{name}.json").read_bytes()
    assert not (tmp_path / f"{name}.safetensors").exists()  # a crash case keeps no stale tensors


def test_write_case_writes_both_files(tmp_path):
    name = "rn18__pcm16_8k_2500ms"
    case = _case(name)
    meta, stored = caseio.build_case(_base(case.meta), case.tensors)
    caseio.write_case(tmp_path, meta, stored)
    for suffix in (".json", ".safetensors"):
        assert (tmp_path / f"{name}{suffix}").read_bytes() == (GOLDEN / "cases" / f"{name}{suffix}").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.json", f"{name}.safetensors"]  # no temp files left


@pytest.mark.parametrize("name", golden_cases())
def test_window_selection_reproduces_stored_windows(name):
    case = _case(name)
    meta = case.meta
    stored, _ = caseio.encode_tensors(case.tensors)
    # bytes of one window's tensors as stored (int16 codes, aliases free) + its int64 stored_windows entry
    per_window = 8 + sum(stored[k][0].numel() * stored[k].element_size() for k in caseio.PER_WINDOW if k in stored)
    fixed = sum(stored[k].numel() * stored[k].element_size() for k in caseio.ALL_WINDOWS)
    budget = caseio.parse_max_bytes(meta["provenance"]["command"])
    conf = case.tensors["all.confidence"].tolist()
    chosen = caseio.select_windows(conf, [per_window] * meta["n_windows"], fixed, budget)
    assert chosen == meta["stored_windows"]
    # the budget binds where fewer windows were stored than had priority
    assert fixed + per_window * len(chosen) <= budget


def test_budget_drops_lowest_priority_first():
    conf = [0.0, 0.1, 0.2, 0.45, 0.9, 0.99, 0.3, 0.01]  # closest to 0.5: 3; max: 5; min: 0 (already first)
    assert caseio.window_priority(conf) == [0, 1, 6, 7, 3, 5]
    assert caseio.select_windows(conf, [10] * 8, 5, 5 + 10 * 4) == [0, 1, 6, 7]
    assert caseio.select_windows(conf, [10] * 8, 5, 5 + 10 * 5) == [0, 1, 3, 6, 7]
    assert caseio.select_windows(conf, [10] * 8, 5, 14) == []
    assert caseio.select_windows([0.7], [10], 0, 100) == [0]


@pytest.mark.parametrize("name", ALL_CASES)
def test_case_name_and_command(name):
    meta = _case(name).meta
    model, wav = GOLDEN / "models" / meta["model"]["file"], GOLDEN / "audio" / meta["audio"]["file"]
    assert caseio.case_name(model, wav) == name
    budget = caseio.parse_max_bytes(meta["provenance"]["command"])
    assert caseio.capture_command(model, wav, name, GOLDEN / "cases", budget) == meta["provenance"]["command"]


@pytest.mark.parametrize("name", golden_cases())
def test_window_plan_and_rolling_match_production(name):
    case = _case(name)
    meta = case.meta
    assert len(caseio.window_plan(meta["audio"]["duration_s"])) == meta["n_windows"]
    rolled = caseio.rolling_confidences(case.tensors["all.confidence"].tolist())
    assert rolled == meta["local_confidences"] == [r["confidence"] for r in meta["submission"]]


def test_window_plan_edges():
    assert caseio.window_plan(1.5) == []
    assert caseio.window_plan(2.0) == [(0, 2)]
    assert caseio.window_plan(3.999) == [(0, 2), (1, 3)]
    assert caseio.segment_start("/tmp/tmp_x_y/orca60_pcm16_48k_35_37.wav") == 35


def test_encode_int16_only_when_exact():
    codes = torch.tensor([[-32768, -1, 0, 1, 32767]], dtype=torch.int16)
    exact = codes.to(torch.float32) / 32768
    stored, storage = caseio.encode_tensors({"A.downmix": exact, "A.waveform": exact + 1e-6, "A.segment": exact * 2})
    assert stored["A.downmix"].dtype == torch.int16 and torch.equal(stored["A.downmix"], codes)
    assert storage["A.downmix"] == {"stored_as": "int16", "decode": caseio.INT16_DECODE}
    assert stored["A.waveform"].dtype == torch.float32 and "A.waveform" not in storage  # not a code grid
    assert stored["A.segment"].dtype == torch.float32  # -2.0 .. 2.0: outside int16


def test_encode_alias_only_when_bitwise_equal():
    c = torch.randn(2, 1, 4, 5)
    _, storage = caseio.encode_tensors({"C.padded": c, "X.model_input": c.clone()})
    assert storage == {"X.model_input": {"alias_of": "C.padded"}}
    stored, storage = caseio.encode_tensors({"C.padded": c, "X.model_input": c + 1e-7})
    assert storage == {} and "X.model_input" in stored


def test_sanitize_traceback_gives_the_golden_text():
    golden = _case("rn18__too_short_1500ms").meta["error"]["traceback"]
    site = "/opt/legacy/lib/python3.11/site-packages/"
    raw = (
        golden.replace("<site-packages>/", site)
        .replace("<production>/", "/srv/aifororcas/InferenceSystem/src/model/")
        .replace('File "capture.py"', 'File "/home/u/porting/reference/capture.py"')
    )
    assert raw != golden
    reps = {site: "<site-packages>/", "/srv/aifororcas/InferenceSystem/src/model/": "<production>/",
            "/home/u/porting/reference/capture.py": "capture.py"}
    assert caseio.sanitize_traceback(raw, reps) == golden


def test_capture_predict_call_is_on_the_line_the_crash_case_records():
    """rn18__too_short_1500ms stores `File "capture.py", line 117, in <module>` / `res = M.predict(A.wav)`."""
    tb = _case("rn18__too_short_1500ms").meta["error"]["traceback"]
    assert 'File "capture.py", line 117, in <module>\n    res = M.predict(A.wav)\n' in tb
    src = (ROOT / "reference" / "capture.py").read_text()
    assert src.splitlines()[116].strip() == "res = M.predict(A.wav)"
    tree = ast.parse(src)
    in_function = {
        node.lineno
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for node in ast.walk(fn)
        if hasattr(node, "lineno")
    }
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == 117]
    assert calls and 117 not in in_function  # module level, as `<module>` in the traceback says


def test_legacy_sources_compile_and_never_import_porting():
    for name in ("capture.py", "legacy.py", "caseio.py"):
        src = (ROOT / "reference" / name).read_text()
        tree = ast.parse(src, filename=name)
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "porting" not in imported, name  # the harness runs in the legacy venv
    for py in (ROOT / "porting").rglob("*.py"):
        assert "reference" not in {
            (n.module or "").split(".")[0] for n in ast.walk(ast.parse(py.read_text())) if isinstance(n, ast.ImportFrom)
        }, py  # and porting never imports the harness


def test_regenerate_dry_run_takes_budgets_and_dates_from_the_store(tmp_path):
    out = tmp_path / "store"
    cmd = [
        sys.executable, str(ROOT / "tools" / "regenerate_golden"), "--dry-run",
        "--legacy-python", "/legacy/bin/python", "--production", str(ROOT / "reference" / "capture.py"),
        "--model", str(GOLDEN / "models" / "sq11-norm.pkl"),
        str(GOLDEN / "audio" / "pcm16_16k_short.wav"), str(GOLDEN / "audio" / "pcm16_8k_2500ms.wav"),
        "--out", str(out), "--like", str(GOLDEN), "--keep-dates",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "capture.py" in line]
    assert len(lines) == 2
    known = json.loads((GOLDEN / "cases" / "sq11-norm__pcm16_16k_short.json").read_text())["provenance"]
    assert "--case sq11-norm__pcm16_16k_short" in lines[0] and "--max-bytes 2100000" in lines[0]
    assert f"--capture-date {known['capture_date']}" in lines[0]
    assert "--case sq11-norm__pcm16_8k_2500ms" in lines[1] and f"--max-bytes {caseio.DEFAULT_MAX_BYTES}" in lines[1]
    assert "--capture-date" not in lines[1]  # no such case in the store: a new date


def test_regenerate_records_the_fingerprint_the_legacy_python_measures(tmp_path):
    """fingerprint.json is measured by --legacy-python itself (here: this interpreter), with the capture's threads."""
    import argparse
    import importlib.machinery
    import importlib.util

    from porting.parity.fingerprint import load_fingerprint, machine_fingerprint, match

    loader = importlib.machinery.SourceFileLoader("regenerate_golden", str(ROOT / "tools" / "regenerate_golden"))
    spec = importlib.util.spec_from_loader("regenerate_golden", loader)
    regen = importlib.util.module_from_spec(spec)
    loader.exec_module(regen)
    path = regen.record_fingerprint(argparse.Namespace(legacy_python=sys.executable, threads=1), tmp_path)
    fp = load_fingerprint(tmp_path)
    assert path == tmp_path / "fingerprint.json" and fp["threads"] == 1 and fp["recorded"] is True
    assert match(machine_fingerprint(), fp)[0]  # same machine: the strict tier for cases captured here


def _regenerate(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate_golden"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("out", ["golden", "golden/", "golden/captures/my-machine", "golden/cases/.."])
def test_regenerate_refuses_to_write_into_the_committed_store(out, tmp_path):
    before = (COMMITTED / "MANIFEST.json").read_bytes()
    for extra in ([], ["--manifest-only"]):
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate_golden"), "--legacy-python", "/legacy/bin/python",
                               "--production", str(ROOT / "reference" / "capture.py"), "--out", out, *extra],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 1 and "inside the committed golden store" in done.stderr, done.stderr
        assert "--golden-dir" in done.stderr and done.stderr.count("\n") == 1
    assert (COMMITTED / "MANIFEST.json").read_bytes() == before
    assert not (COMMITTED / "captures" / "my-machine").exists()


def test_regenerate_without_models_plans_every_committed_case_with_its_budget(tmp_path):
    done = _regenerate("--dry-run", "--legacy-python", "/legacy/bin/python", "--production", ROOT / "reference" / "capture.py",
                       "--out", tmp_path / "mine")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if "capture.py" in line]
    committed = sorted(p.stem for p in (COMMITTED / "cases").glob("*.json"))
    assert [line[line.index("--case") + 1] for line in lines] == committed
    for line in lines:  # the committed case's budget, so the same windows are stored where confidences allow
        case = line[line.index("--case") + 1]
        recorded = caseio.parse_max_bytes(json.loads((COMMITTED / "cases" / f"{case}.json").read_text())["provenance"]["command"])
        assert int(line[line.index("--max-bytes") + 1]) == recorded
    assert not (tmp_path / "mine").exists()  # a dry run writes nothing
    half = _regenerate("--dry-run", "--legacy-python", "/l/bin/python", "--production", ROOT / "reference" / "capture.py",
                       "--model", COMMITTED / "models" / "rn18.pkl", "--out", tmp_path / "mine")
    assert half.returncode == 1 and "--model and recordings together" in half.stderr


@pytest.mark.parametrize("out", [None, "golden/hf", "golden/hf-t5/", "golden"])
def test_regenerate_hf_refuses_to_write_into_the_committed_store(out):
    """The HF stores are ground truth too: no default --out, and none inside golden/ without --write-committed-store."""
    before = {s: (COMMITTED / s / "MANIFEST.json").read_bytes() for s in ("hf", "hf-t4", "hf-t5")}
    for extra in ([], ["--manifest-only"]):
        args = ["--plan", "hf-t5", "--reference-python", "/ref/bin/python", *extra] + (["--out", out] if out else [])
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate_golden_hf"), *args],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 1 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "--write-committed-store" in done.stderr or "inside the committed golden store" in done.stderr
    assert {s: (COMMITTED / s / "MANIFEST.json").read_bytes() for s in before} == before
