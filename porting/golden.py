"""Golden cases: load the captured legacy tensors, decoded to their logical float32 values.

A case is ``<model>__<recording>.json`` + ``.safetensors`` (format: golden/README.md,
"Case format"). Some ``A.*`` tensors are stored as exact integer sample codes and
``X.model_input`` may be an alias of ``C.padded``; the JSON's ``tensor_storage`` says
which. ``load_case`` undoes both so callers only ever see the logical tensors.

The store itself (models/, audio/, cases/) is made tamper-evident by ``MANIFEST.json``:
``write_manifest`` records it, ``verify_store`` (``port golden verify``) checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GoldenError

if TYPE_CHECKING:  # torch is imported where tensors are loaded: `port golden verify` needs only hashlib
    import torch

_INT_SCALE = {"int16": 32768.0, "int32": 2.0**31}


@dataclass(frozen=True)
class Case:
    name: str
    meta: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)
    dir: Path

    @property
    def error(self) -> dict | None:
        """Crash cases (e.g. a recording shorter than 2 s) carry ``error`` instead of results."""
        return self.meta.get("error")

    @property
    def root(self) -> Path:
        """The store holding audio/ and models/: ``cases/``'s parent, also for ``captures/<name>/cases``
        (a second capture of the same models and recordings, on another machine)."""
        up = self.dir.parent
        return up.parent.parent if up.parent.name == CAPTURES else up

    @property
    def audio_path(self) -> Path:
        return self.root / "audio" / self.meta["audio"]["file"]

    @property
    def model_path(self) -> Path:
        """The model the case was captured from, in the store's ``models/``: its folder (``model.dir``) where it is one,
        else its file (``model.file``)."""
        model = self.meta["model"]
        return self.root / "models" / (model.get("dir") or model["file"])

    @property
    def family(self) -> str | None:
        """The family whose case it is (``porting.family``); None: the family whose records name none."""
        return self.meta.get("family")

    @property
    def stored_windows(self) -> list[int]:
        return [int(i) for i in self.meta.get("stored_windows", [])]

    def window(self, i: int) -> dict[str, torch.Tensor]:
        """Tensors of stored window ``i`` where a case stores them per window (``w<i>/<stage>``, leading dim 1)."""
        prefix = f"w{i}/"
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _decode(name: str, t: torch.Tensor, storage: dict) -> torch.Tensor:
    import torch

    how = storage.get(name)
    if how is None or "stored_as" not in how:
        return t
    scale = _INT_SCALE.get(how["stored_as"])
    if scale is None:
        raise GoldenError(f"{name}: unknown stored_as {how['stored_as']!r}; update porting.golden")
    # code / 2^k is exact in float32 for int16 and in float64 for int32 (then one rounding to float32,
    # matching soundfile's float32(int32 / 2^31) read).
    return (t.to(torch.float64) / scale).to(torch.float32)


def load_case(json_path: str | Path) -> Case:
    """Load one golden case (JSON + safetensors), tensors decoded and aliases resolved."""
    from .io.files import read_json

    json_path = Path(json_path)
    meta = read_json(json_path, "the golden case", GoldenError, fix="run `port golden verify`")
    if not isinstance(meta, dict):
        raise GoldenError(f"{json_path}: the golden case is not a JSON object; run `port golden verify`")
    tensors: dict[str, torch.Tensor] = {}
    st = json_path.with_suffix(".safetensors")
    if st.exists():
        from safetensors.torch import load_file

        raw = load_file(str(st))
        storage = meta.get("tensor_storage", {})
        tensors = {k: _decode(k, v, storage) for k, v in raw.items()}
        for name, how in storage.items():
            if "alias_of" in how:
                tensors[name] = tensors[how["alias_of"]]
    elif "error" not in meta:
        raise GoldenError(f"{st}: missing tensors for case {meta.get('case')}; run `port golden verify`")
    return Case(name=meta.get("case", json_path.stem), meta=meta, tensors=tensors, dir=json_path.parent)


def case_paths(golden_dir: str | Path) -> list[Path]:
    """All case JSONs under ``golden_dir/cases`` in name order."""
    return sorted((Path(golden_dir) / "cases").glob("*.json"))


def case_family(golden: str | Path) -> str | None:
    """The ``family`` a case JSON (or the first case of a store) names; None where it names none or cannot be read
    (the loader then says what is wrong, in one line)."""
    p = Path(golden)
    paths = [p] if p.suffix == ".json" else case_paths(p)
    try:
        meta = json.loads(paths[0].read_text()) if paths else None
    except (OSError, ValueError):
        return None
    return meta.get("family") if isinstance(meta, dict) else None


CAPTURES = "captures"


def store_file(case: Case, rel: str) -> Path:
    """A file of ``case``'s store (``models/...``), or a one-line error saying how to restore it."""
    p = case.root / rel
    if not p.is_file():
        raise GoldenError(f"{p}: missing from the golden store; restore it (git checkout {case.root})")
    return p


def generated_state(case: Case) -> dict:
    """The full state dict (numpy) of a case whose big weights are not stored: ``models/<meta.model.generated>``
    names the recipe, seed, layout and the fixed tensors' files (``porting.synth``); regenerated and checked against
    the capture's ``state_sha256`` before anything is compared."""
    from safetensors.numpy import load_file

    from . import synth

    meta = case.meta["model"]
    recipe = json.loads(store_file(case, f"models/{meta['generated']}").read_text())
    if recipe.get("recipe") != synth.RECIPE:
        raise GoldenError(f"{case.name}: weights made by {recipe.get('recipe')!r}; this porting regenerates "
                          f"{synth.RECIPE} only")
    names = recipe["fixed"] if isinstance(recipe["fixed"], list) else [recipe["fixed"]]
    fixed: dict = {}
    for name in names:
        part = load_file(str(store_file(case, f"models/{name}")))
        twice = sorted(set(part) & set(fixed))
        if twice:
            raise GoldenError(f"{case.name}: {twice[0]} is in two of its fixed files ({', '.join(names)})")
        fixed.update(part)
    state = synth.generate(recipe["layout"], fixed, int(recipe["seed"]))
    got = synth.digest(state)
    if got != meta["state_sha256"]:
        raise GoldenError(f"{case.name}: regenerated weights have digest {got[:12]}, the capture's "
                          f"{meta['state_sha256'][:12]} (numpy's generator changed?); the goldens cannot be checked "
                          "with these weights")
    return state


_SCRATCH: dict = {}


def scratch_dir(prefix: str) -> Path:
    """One private temp dir per process and ``prefix`` (materialised golden models), removed at exit."""
    if prefix not in _SCRATCH:
        import atexit
        import shutil
        import tempfile

        _SCRATCH[prefix] = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(shutil.rmtree, _SCRATCH[prefix], True)
    return _SCRATCH[prefix]


@dataclass(frozen=True)
class Capture:
    """One capture of the store's cases on one machine: ``golden/cases`` (name "golden") or
    ``golden/captures/<name>/cases``, with the machine's numerics fingerprint beside ``cases/``."""

    name: str
    dir: Path  # holds cases/ and fingerprint.json
    fingerprint: dict | None

    def case_path(self, case: str) -> Path:
        return self.dir / "cases" / f"{case}.json"


def captures(golden_dir: str | Path) -> list[Capture]:
    """Every capture of a store, the store's own ``cases/`` first."""
    from .parity.fingerprint import load_fingerprint

    golden_dir = Path(golden_dir)
    dirs = [("golden", golden_dir)] + [(d.name, d) for d in sorted((golden_dir / CAPTURES).glob("*")) if (d / "cases").is_dir()]
    return [Capture(name, d, load_fingerprint(d)) for name, d in dirs]


# ----------------------------------------------------------------------------------- golden store
# MANIFEST.json makes the store tamper-evident: every file's sha256 and size, and per case where it came
# from (format: reference/README.md, "Golden store"). `port golden verify` checks a store against it.

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "porting-golden-manifest/1"
_CHUNK = 1 << 20


def file_digest(path: str | Path) -> dict:
    """``{"sha256": hex, "bytes": size}`` of one file, read in 1 MiB chunks."""
    from .io.files import open_regular

    h = hashlib.sha256()
    size = 0
    with open_regular(path, "the file", GoldenError) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def _store_files(golden_dir: Path) -> list[str]:
    """Every regular file of the store (POSIX paths relative to it), the manifest itself excluded, and so is
    every nested store (a sub-folder with a MANIFEST.json of its own, e.g. ``golden/hf``: one store per family)."""
    nested = [p.parent for p in golden_dir.glob(f"*/**/{MANIFEST_NAME}")]
    out = []
    for p in golden_dir.rglob("*"):
        if any(n in p.parents for n in nested):
            continue
        if p.is_file() and not p.is_symlink():
            rel = p.relative_to(golden_dir).as_posix()
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def _case_entry(golden_dir: Path, json_rel: str) -> dict:
    from .io.files import read_json

    meta = read_json(golden_dir / json_rel, "the golden case", GoldenError, fix="regenerate it with tools/regenerate_golden")
    files = [json_rel]
    st = json_rel[: -len(".json")] + ".safetensors"
    if (golden_dir / st).is_file():
        files.append(st)
    if meta.get("error"):
        outcome = f"error: {meta['error'].get('type')}: {meta['error'].get('message')}"
    else:
        outcome = f"ok: {meta.get('n_windows')} windows, {len(meta.get('stored_windows', []))} stored"
    return {
        "files": files,
        "model": {"file": f"models/{meta['model']['file']}", "sha256": meta["model"]["sha256"]},
        "audio": {"file": f"audio/{meta['audio']['file']}", "sha256": meta["audio"]["sha256"]},
        "outcome": outcome,
        "provenance": meta.get("provenance", {}),
    }


def build_manifest(golden_dir: str | Path) -> dict:
    """The manifest of a store as it is now (see ``write_manifest``)."""
    golden_dir = Path(golden_dir)
    if not (golden_dir / "cases").is_dir():
        raise GoldenError(f"{golden_dir}: not a golden store (no cases/ folder); pass the golden/ directory")
    files = {rel: file_digest(golden_dir / rel) for rel in _store_files(golden_dir)}
    cases = {}
    for rel in files:
        parts = rel.split("/")
        if rel.endswith(".json") and (parts[0] == "cases" or (parts[0] == CAPTURES and parts[2:3] == ["cases"])):
            key = Path(rel).stem if parts[0] == "cases" else f"{parts[1]}/{Path(rel).stem}"
            try:
                cases[key] = _case_entry(golden_dir, rel)
            except (ValueError, KeyError, TypeError) as exc:
                raise GoldenError(f"{golden_dir / rel}: malformed case JSON ({exc!r}); regenerate it with tools/regenerate_golden") from exc
    return {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files, "cases": cases}


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1) + "\n").encode("utf-8")


def write_manifest(golden_dir: str | Path) -> Path:
    """(Re)write ``golden_dir/MANIFEST.json`` from the files present (atomically: temp file, then rename)."""
    golden_dir = Path(golden_dir)
    data = manifest_bytes(build_manifest(golden_dir))
    target = golden_dir / MANIFEST_NAME
    tmp = target.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify_store`` found. ``ok`` only when every list is empty."""

    golden_dir: Path
    n_files: int
    n_bytes: int
    missing: list[str]
    extra: list[str]
    changed: list[str]
    inconsistent: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.inconsistent)

    def problems(self) -> list[str]:
        """One line per problem: ``missing: cases/x.json`` etc."""
        return (
            [f"missing: {p}" for p in self.missing]
            + [f"extra: {p}" for p in self.extra]
            + [f"changed: {p}" for p in self.changed]
            + [f"inconsistent: {p}" for p in self.inconsistent]
        )


def read_manifest(golden_dir: str | Path) -> dict:
    """The store's MANIFEST.json, read through ``porting.io.files`` and checked by ``porting.schema.MANIFEST``."""
    from .io import files
    from .schema import MANIFEST, validate

    path = Path(golden_dir) / MANIFEST_NAME
    if not files.exists(path):
        raise GoldenError(f"{path}: no manifest; create it with `tools/regenerate_golden --manifest-only --out {golden_dir}`")
    manifest = files.read_json(path, "the manifest", GoldenError, fix="restore it from version control")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise GoldenError(f"{path}: not a {MANIFEST_FORMAT} manifest; restore it from version control")
    return validate(manifest, MANIFEST, path, GoldenError)


def verify_store(golden_dir: str | Path) -> VerifyResult:
    """Compare a store with its MANIFEST.json: missing, extra and changed files (sha256 or size), and
    cases whose recorded model/audio sha256 no longer match the files they name."""
    golden_dir = Path(golden_dir)
    manifest = read_manifest(golden_dir)
    listed: dict = manifest["files"]
    present = set(_store_files(golden_dir))
    missing = sorted(set(listed) - present)
    extra = sorted(present - set(listed))
    changed = []
    digests = {}
    n_bytes = 0
    for rel in sorted(set(listed) & present):
        digests[rel] = d = file_digest(golden_dir / rel)
        n_bytes += d["bytes"]
        want = listed[rel]
        if d["sha256"] != want.get("sha256") or d["bytes"] != want.get("bytes"):
            changed.append(f"{rel} (sha256 {d['sha256'][:12]}…, {d['bytes']} bytes; manifest {str(want.get('sha256'))[:12]}…, {want.get('bytes')} bytes)")
    inconsistent = []
    for name, case in sorted(manifest.get("cases", {}).items()):
        for role in ("model", "audio"):
            ref = case.get(role, {})
            d = digests.get(ref.get("file"))
            if d is not None and d["sha256"] != ref.get("sha256"):
                inconsistent.append(f"{name}: {role} {ref.get('file')} has sha256 {d['sha256'][:12]}…, the case was captured from {str(ref.get('sha256'))[:12]}…")
    return VerifyResult(golden_dir, len(present & set(listed)), n_bytes, missing, extra, changed, inconsistent)
