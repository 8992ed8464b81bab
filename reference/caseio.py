"""Golden case naming, window selection, encoding and writing: the parts of the capture without fastai.

Runs in the legacy venv (imported by ``capture.py``) and in the project venv (tests,
``tools/regenerate_golden``), so it needs only the standard library, numpy, torch and safetensors.
The format it writes is documented in ``reference/README.md`` ("Case format"); fed the logical tensors
and metadata of an existing case it reproduces that case's ``.json`` and ``.safetensors`` byte for byte
(tests/test_reference_harness.py checks every public case).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import save as _st_save

# Logical tensors in the order the JSON lists them (tensor_shapes, tensor_logical_dtype, tensor_storage).
TENSOR_ORDER = (
    "stored_windows",
    "A.segment",
    "A.downmix",
    "A.waveform",
    "B.mel_db",
    "C.padded",
    "X.model_input",
    "Y.logits",
    "Y.probs",
    "all.logits",
    "all.probs",
    "all.confidence",
)
PER_WINDOW = TENSOR_ORDER[1:9]  # first dim S = stored windows
ALL_WINDOWS = TENSOR_ORDER[9:]  # first dim W = every window
INT_CODE_CANDIDATES = ("A.segment", "A.downmix", "A.waveform")  # PCM reads: maybe exact int16 codes
ALIAS = ("X.model_input", "C.padded")  # no normalization -> X is bitwise C

INT16_DECODE = "value = float32(code) / 32768 (exact)"
NOTE_FLOATS = "JSON numbers are the float32 values promoted to double, written with round-trip precision (exact)"
CAPTURE_SCRIPT = "./capture.py"
PRODUCTION_MODULE = "orcasound/aifororcas-livesystem: InferenceSystem/src/model/fastai_inference.py"
DEFAULT_MAX_BYTES = 8_000_000

# Top-level JSON keys written from the capture (everything else is derived from the tensors).
BASE_KEYS = ("case", "model", "audio", "provenance")
RESULT_KEYS = ("submission", "local_predictions", "local_confidences", "global_prediction", "global_confidence")


# ----------------------------------------------------------------------------------------- naming


def case_name(model_path: str | os.PathLike, audio_path: str | os.PathLike) -> str:
    """``<model stem>__<recording stem>``, e.g. ``rn18__orca60_pcm16_48k``."""
    return f"{Path(model_path).stem}__{Path(audio_path).stem}"


def window_plan(duration_s: float) -> list[tuple[int, int]]:
    """Production's windows ``[i, i+2]`` for ``i in range(int(floor(duration) - 1))`` (golden README §1)."""
    return [(i, i + 2) for i in range(int(math.floor(duration_s) - 1))]


def segment_start(path: str | os.PathLike) -> int:
    """Window start parsed from a segment file name ``<name>_<begin>_<end>.wav``, as production does (P:215)."""
    return int(str(path).split("_")[-2])


def capture_command(model: str | os.PathLike, wav: str | os.PathLike, case: str, out: str | os.PathLike, max_bytes: int) -> str:
    """The canonical capture command stored in ``provenance.command``.

    Paths are reduced to their names and machine-specific flags (``--production``, ``--threads``,
    ``--capture-date``) are left out, so the same capture gives the same JSON on any machine.
    """
    return (
        f"python {CAPTURE_SCRIPT} --model {Path(model).name} --wav {Path(wav).name} --case {case}"
        f" --out {Path(out).name} --max-bytes {int(max_bytes)}"
    )


def parse_max_bytes(command: str) -> int | None:
    """The ``--max-bytes`` budget recorded in a case's ``provenance.command`` (None when absent)."""
    m = re.search(r"--max-bytes[ =](\d+)", command or "")
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------- encoding


def _int16_codes(t: torch.Tensor) -> torch.Tensor | None:
    """Exact int16 sample codes of ``t`` (value = code / 32768), or None when ``t`` is not such a read."""
    if t.dtype != torch.float32:
        return None
    if t.numel() == 0:
        return torch.zeros(t.shape, dtype=torch.int16)
    scaled = t.to(torch.float64) * 32768.0
    if not bool(torch.isfinite(scaled).all()):
        return None
    codes = torch.round(scaled)
    if not bool((codes == scaled).all()) or codes.min() < -32768 or codes.max() > 32767:
        return None
    codes = codes.to(torch.int16)
    if not torch.equal(codes.to(torch.float32) / 32768.0, t):
        return None
    return codes


def encode_tensors(logical: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Logical tensors -> (tensors to store, ``tensor_storage`` JSON).

    ``A.*`` that are exact PCM_16 reads are stored as int16 codes (half the bytes, no information lost);
    PCM_32 reads (from PCM_24/FLOAT sources, README §2) stay float32. ``X.model_input`` that is bitwise
    ``C.padded`` (no normalization, README §4) is stored once, as an alias.
    """
    stored: dict[str, torch.Tensor] = {}
    storage: dict[str, dict] = {}
    for name in TENSOR_ORDER:
        if name not in logical:
            continue
        t = logical[name]
        if name in INT_CODE_CANDIDATES:
            codes = _int16_codes(t)
            if codes is not None:
                stored[name] = codes
                storage[name] = {"stored_as": "int16", "decode": INT16_DECODE}
                continue
        if name == ALIAS[0] and ALIAS[1] in logical and torch.equal(t, logical[ALIAS[1]]):
            storage[name] = {"alias_of": ALIAS[1]}
            continue
        stored[name] = t.contiguous()
    return stored, storage


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ------------------------------------------------------------------------------ window selection


def window_priority(confidence: Sequence[float]) -> list[int]:
    """Windows worth storing, most useful first (distinct indices).

    The edges (first two and last two windows: start-of-file and tail handling), then the window closest
    to the 0.5 decision threshold (where a small error flips a prediction), then the most and the least
    confident windows. Ties go to the lowest index (numpy argmin/argmax).
    """
    c = np.asarray(confidence, dtype=np.float64)
    n = len(c)
    if n == 0:
        return []
    order = [0, 1, n - 2, n - 1, int(np.argmin(np.abs(c - 0.5))), int(np.argmax(c)), int(np.argmin(c))]
    out: list[int] = []
    for i in order:
        if 0 <= i < n and i not in out:
            out.append(i)
    return out


def select_windows(confidence: Sequence[float], window_bytes: Sequence[int], fixed_bytes: int, max_bytes: int) -> list[int]:
    """``stored_windows``: windows taken in ``window_priority`` order while the tensor payload fits.

    The budget counts tensor data bytes as stored (int16 codes, aliases free): ``fixed_bytes`` (the
    every-window tensors) plus ``window_bytes[i]`` for each stored window (its per-window tensors and
    its ``stored_windows`` entry). A window that does not fit is skipped. Returned in ascending order.
    """
    if len(window_bytes) != len(confidence):
        raise ValueError(f"window_bytes has {len(window_bytes)} entries for {len(confidence)} windows")
    total = int(fixed_bytes)
    chosen: list[int] = []
    for i in window_priority(confidence):
        if total + int(window_bytes[i]) <= max_bytes:
            chosen.append(i)
            total += int(window_bytes[i])
    return sorted(chosen)


def budget_sizes(logical_all: Mapping[str, torch.Tensor]) -> tuple[list[int], int]:
    """(bytes per window, fixed bytes) of a capture whose per-window tensors hold EVERY window."""
    stored, _ = encode_tensors({k: v for k, v in logical_all.items() if k != "stored_windows"})
    n = int(logical_all["all.confidence"].shape[0])
    per = 8  # its int64 entry in stored_windows
    for name in PER_WINDOW:
        if name in stored:
            if stored[name].shape[0] != n:
                raise ValueError(f"{name} has {stored[name].shape[0]} windows, expected {n}")
            per += _nbytes(stored[name][:1]) if n else 0
    fixed = sum(_nbytes(stored[k]) for k in ALL_WINDOWS if k in stored)
    return [per] * n, fixed


# ------------------------------------------------------------------------------------ case files


def to_jsonable(obj):
    """numpy/torch scalars -> plain Python (floats keep their exact double value)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def window_records(all_logits: torch.Tensor, all_probs: torch.Tensor, all_confidence: torch.Tensor) -> list[dict]:
    """The JSON ``windows`` list: window i covers [i, i+2] s (README §1); values are the float32 results."""
    return [
        {
            "index": i,
            "start_s": i,
            "end_s": i + 2,
            "confidence": float(all_confidence[i]),
            "logits": all_logits[i].tolist(),
            "probs": all_probs[i].tolist(),
        }
        for i in range(int(all_confidence.shape[0]))
    ]


def build_case(base: Mapping, logical: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(case JSON dict, tensors to store) from the capture's metadata and logical tensors.

    ``base`` holds case/model/audio/provenance, the production results (submission, local_predictions,
    local_confidences, global_prediction, global_confidence) and ``checks``. ``logical`` holds
    ``stored_windows`` (int64 [S]), the per-window tensors of those S windows and ``all.*`` [W].
    """
    missing = [k for k in (*BASE_KEYS, *RESULT_KEYS, "checks") if k not in base]
    if missing:
        raise ValueError(f"case metadata lacks {missing}")
    missing = [k for k in TENSOR_ORDER if k not in logical]
    if missing:
        raise ValueError(f"case tensors lack {missing}")
    sw = logical["stored_windows"].to(torch.int64)
    for k in PER_WINDOW:
        if logical[k].shape[0] != sw.shape[0]:
            raise ValueError(f"{k} has {logical[k].shape[0]} windows, stored_windows has {sw.shape[0]}")
    stored, storage = encode_tensors({**logical, "stored_windows": sw})
    meta = {k: to_jsonable(base[k]) for k in BASE_KEYS}
    meta["n_windows"] = int(logical["all.confidence"].shape[0])
    meta["stored_windows"] = sw.tolist()
    meta["tensor_shapes"] = {k: list(logical[k].shape) for k in TENSOR_ORDER}
    meta["tensor_logical_dtype"] = {k: str(logical[k].dtype).replace("torch.", "") for k in TENSOR_ORDER}
    meta["tensor_storage"] = storage
    meta["windows"] = window_records(logical["all.logits"], logical["all.probs"], logical["all.confidence"])
    for k in RESULT_KEYS:
        meta[k] = to_jsonable(base[k])
    meta["checks"] = to_jsonable(base["checks"])
    meta["note_floats"] = NOTE_FLOATS
    return meta, stored


def error_meta(base: Mapping, error: Mapping) -> dict:
    """Case JSON of a crash: case/model/audio/provenance and ``error`` {type, module, message, traceback}."""
    meta = {k: to_jsonable(base[k]) for k in BASE_KEYS}
    meta["error"] = {k: str(error[k]) for k in ("type", "module", "message", "traceback")}
    return meta


def case_json_bytes(meta: Mapping) -> bytes:
    """``json.dumps(indent=1)``, no trailing newline: floats in Python's shortest round-trip repr."""
    return json.dumps(meta, indent=1).encode("utf-8")


def case_tensor_bytes(case: str, stored: Mapping[str, torch.Tensor]) -> bytes:
    """safetensors bytes with ``{"case": name}`` metadata (the library orders tensors by dtype, then name)."""
    return _st_save({k: v.contiguous() for k, v in stored.items()}, metadata={"case": case})


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_case(out_dir: str | os.PathLike, meta: Mapping, stored: Mapping[str, torch.Tensor] | None) -> list[Path]:
    """Write ``<case>.json`` (+ ``.safetensors`` unless it is a crash case); each file replaced atomically.

    A crash case removes a stale ``.safetensors`` of the same name, so no tensors outlive their JSON.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = meta["case"]
    js, st = out / f"{name}.json", out / f"{name}.safetensors"
    written = []
    if stored is not None:
        _atomic_write(st, case_tensor_bytes(name, stored))
        written.append(st)
    elif st.exists():
        st.unlink()
    _atomic_write(js, case_json_bytes(meta))
    written.append(js)
    return written


# ------------------------------------------------------------------------------------- tracebacks


def sanitize_traceback(text: str, replacements: Mapping[str, str]) -> str:
    """Replace machine-specific path prefixes (longest first), e.g. site-packages -> ``<site-packages>``."""
    for old in sorted((k for k in replacements if k), key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def rolling_confidences(confidence: Sequence[float]) -> list[float]:
    """Production's per-second table in float64 (README §5): c0, (c[i-1]+c[i])/2 ..., c[W-1]; W+1 rows."""
    c = [float(x) for x in confidence]
    if not c:
        return []
    return [c[0]] + [(c[i - 1] + c[i]) / 2 for i in range(1, len(c))] + [c[-1]]
