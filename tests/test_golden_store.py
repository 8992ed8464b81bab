"""golden/MANIFEST.json and `port golden verify`: the store is complete, unchanged, and tampering shows."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import COMMITTED, ROOT
from porting.errors import GoldenError
from porting.golden import MANIFEST_NAME, build_manifest, verify_store, write_manifest

SMALL_CASE = "rn18__pcm16_8k_2500ms"


def _port(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "porting", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One byte copy of the golden store per module (the original is never touched)."""
    dst = tmp_path_factory.mktemp("pristine") / "golden"
    shutil.copytree(COMMITTED, dst)
    return dst


@pytest.fixture()
def store(pristine, tmp_path):
    """A hard-linked copy of the pristine copy: cheap; tamper only through ``_replace`` (new inode)."""
    dst = tmp_path / "golden"
    shutil.copytree(pristine, dst, copy_function=os.link)
    return dst


def _replace(path, data: bytes):
    path.unlink()  # break the hard link first, so the pristine copy keeps its bytes
    path.write_bytes(data)


def test_manifest_lists_every_file_with_its_sha256_and_size():
    manifest = json.loads((COMMITTED / MANIFEST_NAME).read_text())
    nested = sorted(m.parent for m in COMMITTED.glob(f"*/**/{MANIFEST_NAME}"))  # family stores keep their own
    assert nested == [COMMITTED / "hf", COMMITTED / "hf-t4", COMMITTED / "hf-t5", COMMITTED / "melcnn",
                      COMMITTED / "panns"]  # HF: transformers 4.57.1 twice, 5.25.0; librosa-mel CNNs; PANNs
    on_disk = sorted(
        p.relative_to(COMMITTED).as_posix() for p in COMMITTED.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not any(n in p.parents for n in nested)
    )
    assert sorted(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        data = (COMMITTED / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, rel


def test_manifest_records_each_case_provenance():
    manifest = json.loads((COMMITTED / MANIFEST_NAME).read_text())
    cases = sorted(p.stem for p in (COMMITTED / "cases").glob("*.json"))
    amd = sorted(f"amd-epyc-zen4/{p.stem}" for p in (COMMITTED / "captures" / "amd-epyc-zen4" / "cases").glob("*.json"))
    assert sorted(manifest["cases"]) == sorted(cases + amd) and len(amd) == len(cases)  # every case captured twice
    for name, entry in manifest["cases"].items():
        capture, _, stem = name.rpartition("/")
        rel = f"captures/{capture}/cases/{stem}.json" if capture else f"cases/{name}.json"
        meta = json.loads((COMMITTED / rel).read_text())
        assert entry["provenance"] == meta["provenance"]
        assert entry["model"] == {"file": f"models/{meta['model']['file']}", "sha256": meta["model"]["sha256"]}
        assert entry["audio"] == {"file": f"audio/{meta['audio']['file']}", "sha256": meta["audio"]["sha256"]}
        for role in ("model", "audio"):
            assert manifest["files"][entry[role]["file"]]["sha256"] == entry[role]["sha256"]
        assert entry["files"][0] == rel
        assert ("error" in meta) == (len(entry["files"]) == 1) == entry["outcome"].startswith("error: ")


def test_committed_manifest_is_current():
    assert json.loads((COMMITTED / MANIFEST_NAME).read_text()) == build_manifest(COMMITTED)


def test_port_golden_verify_accepts_the_store():
    done = _port("golden", "verify", str(COMMITTED))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 45 files")  # 27 + the AMD capture's 15 cases files, README and 2 fingerprints


def test_port_golden_verify_reports_a_tampered_file(store):
    target = store / "cases" / f"{SMALL_CASE}.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # one bit of one float, same size
    _replace(target, bytes(data))
    done = _port("golden", "verify", str(store))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith(f"changed: cases/{SMALL_CASE}.safetensors (sha256 ")
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr.startswith("error: ") and "1 difference from MANIFEST.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_verify_reports_missing_extra_and_inconsistent(store):
    (store / "audio" / "too_short_1500ms.wav").unlink()
    (store / "cases" / "evil.json").write_text("{}")
    model = store / "models" / "sq11-norm.pkl"
    _replace(model, model.read_bytes() + b"\0")
    result = verify_store(store)
    assert not result.ok
    assert result.missing == ["audio/too_short_1500ms.wav"]
    assert result.extra == ["cases/evil.json"]
    assert [c.split(" ")[0] for c in result.changed] == ["models/sq11-norm.pkl"]
    assert sorted(i.split(":")[0] for i in result.inconsistent) == [
        "amd-epyc-zen4/sq11-norm__orca60_pcm16_48k", "amd-epyc-zen4/sq11-norm__pcm16_16k_short",
        "sq11-norm__orca60_pcm16_48k", "sq11-norm__pcm16_16k_short"]
    lines = result.problems()
    assert lines[0] == "missing: audio/too_short_1500ms.wav" and lines[1] == "extra: cases/evil.json"


def test_verify_refuses_a_store_without_manifest(store):
    (store / MANIFEST_NAME).unlink()
    with pytest.raises(GoldenError, match="no manifest"):
        verify_store(store)
    (store / MANIFEST_NAME).write_text('{"format": "something else"}')  # unlinked above: a new file
    done = _port("golden", "verify", str(store))
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "not a porting-golden-manifest/1" in done.stderr


def test_write_manifest_round_trip(store):
    (store / MANIFEST_NAME).unlink()
    write_manifest(store)
    assert (store / MANIFEST_NAME).read_bytes() == (COMMITTED / MANIFEST_NAME).read_bytes()
    assert verify_store(store).ok


def test_nested_family_store_is_its_own(tmp_path):
    """golden/hf has a MANIFEST of its own: the root manifest neither lists its files nor breaks when they change."""
    root = build_manifest(COMMITTED)
    assert not any(f.startswith("hf/") for f in root["files"])
    assert verify_store(COMMITTED / "hf").ok
    d = tmp_path / "g"
    shutil.copytree(COMMITTED / "cases", d / "cases")
    (d / "fam" / "cases").mkdir(parents=True)
    (d / "fam" / "cases" / "x.bin").write_bytes(b"1")
    write_manifest(d / "fam")
    write_manifest(d)
    (d / "fam" / "cases" / "x.bin").write_bytes(b"2")  # a change inside the nested store ...
    assert verify_store(d).ok  # ... is not the parent's business
    assert not verify_store(d / "fam").ok  # but its own manifest sees it
