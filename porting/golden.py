"""Golden cases: load the captured legacy tensors, decoded to their logical float32 values.

A case is ``<model>__<recording>.json`` + ``.safetensors`` (format: golden/README.md,
"Case format"). Some ``A.*`` tensors are stored as exact integer sample codes and
``X.model_input`` may be an alias of ``C.padded``; the JSON's ``tensor_storage`` says
which. ``load_case`` undoes both so callers only ever see the logical tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from .errors import GoldenError

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
    def audio_path(self) -> Path:
        return self.dir.parent / "audio" / self.meta["audio"]["file"]

    @property
    def model_path(self) -> Path:
        return self.dir.parent / "models" / self.meta["model"]["file"]

    @property
    def stored_windows(self) -> list[int]:
        return list(self.meta.get("stored_windows", []))


def _decode(name: str, t: torch.Tensor, storage: dict) -> torch.Tensor:
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
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise GoldenError(f"{json_path}: cannot read golden case JSON ({exc}); run `port golden verify`") from exc
    tensors: dict[str, torch.Tensor] = {}
    st = json_path.with_suffix(".safetensors")
    if st.exists():
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
