"""Exports, engine side: the formats and their runtimes (``porting.export.runners``), ``--export`` parsing,
``parity.json`` (written by each family's artifact verification, read here by ``port detect`` and printed by
``port convert``). What each artifact holds is its family's declaration.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ExportError

FORMATS = ("onnx", "torchscript", "pt2", "tflite")
PARITY_NAME = "parity.json"

__all__ = ["FORMATS", "PARITY_NAME", "available_formats", "parse_formats", "missing", "verified", "format_parity"]


def onnx_backend(model_path, backend: str, device, artifact: str) -> str:
    """``torch`` or ``onnx`` for ``--backend auto|torch|onnx`` of a model whose ONNX path is ``artifact`` in its
    converted folder: ``auto`` takes the artifact on CPU when it passed its verification (parity.json) and
    onnxruntime is installed; ``onnx`` without a verified artifact is a one-line error saying what to do."""
    from importlib.util import find_spec

    from ..errors import UnsupportedModelError

    path = Path(model_path)
    onnx = path / artifact
    ok = path.is_dir() and verified(path).get(artifact, False) and onnx.is_file()
    if backend == "auto":
        return "onnx" if getattr(device, "type", str(device)) == "cpu" and ok and find_spec("onnxruntime") else "torch"
    if backend == "onnx":
        if not onnx.is_file():
            raise UnsupportedModelError(f"{path}: no {artifact}; convert with `port convert MODEL --out DIR --export "
                                        "onnx` or use --backend torch")
        if not ok:
            raise UnsupportedModelError(f"{onnx}: failed this model's verification (parity.json); re-run `port "
                                        "convert` or use --backend torch")
    return backend


def verified(model_path: Path) -> dict[str, bool]:
    """Artifact name -> passed, from the converted DIR's parity.json (empty when there is none)."""
    from ..errors import PortingError
    from ..io import files
    from ..schema import PARITY, validate

    path = model_path / PARITY_NAME
    if not files.exists(path):
        return {}
    try:  # an unreadable or malformed parity.json verifies nothing (auto then runs eager torch)
        arts = validate(files.read_json(path, "parity.json"), PARITY, path)["artifacts"]
    except PortingError:
        return {}
    return {name: a["passed"] for name, a in arts.items()}


def missing(fmt: str) -> str | None:
    """Why ``fmt`` cannot be exported here (one line with the install hint), or None."""
    if fmt == "onnx":
        from .runners import onnx_missing

        return onnx_missing()
    if fmt == "tflite":
        from .runners import tflite_missing

        return tflite_missing()
    return None  # torchscript and pt2 need only torch


def available_formats() -> list[str]:
    return [f for f in FORMATS if missing(f) is None]


def parse_formats(text: str | None) -> list[str]:
    """``--export`` value -> formats: None or "all" = every available one; "none" = none; else a comma list.

    An unknown name, or an explicitly requested format whose extra is not installed, is an ``ExportError``.
    """
    if text is None or text.strip().lower() == "all":
        return available_formats()
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["none"] or not names:
        return []
    out = []
    for name in names:
        require(name, f"--export {text}")
        if name not in out:
            out.append(name)
    return out


def require(fmt: str, where: str) -> None:
    """``ExportError`` unless ``fmt`` is a known format whose runtime is installed."""
    if fmt not in FORMATS:
        raise ExportError(f"{where}: unknown format {fmt!r}; choose from {', '.join(FORMATS)}, all or none")
    reason = missing(fmt)
    if reason:
        raise ExportError(f"--export {fmt}: {reason}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def format_parity(parity: dict) -> str:
    """One line per artifact: PASS/FAIL, worst diff vs eager and vs goldens (gating checks)."""
    lines = [f"exports ({parity['rules']}; max |diff| vs eager probe / vs goldens):"]
    for name, art in parity["artifacts"].items():
        if art.get("error"):
            lines.append(f"  FAIL {name:26s} {art['error']}")
            continue
        lines.append(f"  {'PASS' if art['passed'] else 'FAIL'} {name:26s} {_worst(art, 'eager'):>9s} / {_worst(art, 'golden'):>9s}"
                     f"  ({art['runtime']})")
        for extra in art.get("informational", []):
            lines.append(f"       {'':26s} {_worst(extra, 'eager'):>9s} / {_worst(extra, 'golden'):>9s}"
                         f"  ({extra['runtime']}, not gating: {'within' if extra['passed'] else 'MISSES'} the contract)")
    return "\n".join(lines)


def _worst(art: dict, against: str) -> str:
    diffs = [r["max_abs_diff"] for r in art.get("checks", []) if r["against"] == against]
    if not diffs:
        return "-"
    if any(d is None for d in diffs):
        return "inf"
    return f"{max(diffs):.2e}"
