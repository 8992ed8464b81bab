"""The numerics fingerprint of a machine: what decides which float32 code paths its FFT and BLAS take.

The same legacy flow gives different last bits on different CPUs (golden/captures/amd-epyc-zen4/README.md:
0.017 dB in ``B.mel_db``, 1.7e-5 in logits between an Intel and an AMD capture), because MKL and oneDNN
dispatch on the CPU vendor and ISA. A golden is therefore only a *strict* reference (every stage within
1e-5) on a machine whose fingerprint matches the one it was captured on; elsewhere the portable tier
applies (``porting.parity.contract``).

Kept free of porting imports (stdlib + torch) so the capture harness in ``reference/`` can load this
file by path inside the legacy venv and record the same fields the port compares.
"""

from __future__ import annotations

import functools
import json
import platform
import re
from pathlib import Path

FINGERPRINT_NAME = "fingerprint.json"  # beside a capture's cases/ folder
FORMAT = "porting.fingerprint/1"
# CPU flags MKL / oneDNN dispatch on (kernels differ between these); the rest of /proc/cpuinfo's flags
# do not change float results.
DISPATCH_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
# What must be equal for two machines to count as one numerics fingerprint (strict tier). Versions are
# recorded but not compared: torch 2.9.1 and 2.13.0 give bitwise the same mel and logits on one CPU
# (captures/amd-epyc-zen4/README.md), while one torch on two CPUs does not.
KEY = ("cpu.vendor", "cpu.family", "cpu.model", "isa", "cpu.dispatch_flags", "fft", "blas")


def _cpuinfo() -> dict:
    out: dict = {"vendor": None, "family": None, "model": None, "name": None, "dispatch_flags": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    first = text.split("\n\n", 1)[0]
    fields = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in first.splitlines()) if k.strip())
    out["vendor"] = fields.get("vendor_id")
    out["family"] = int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else None
    out["model"] = int(fields["model"]) if fields.get("model", "").isdigit() else None
    out["name"] = fields.get("model name")
    flags = set(fields.get("flags", "").split())
    out["dispatch_flags"] = [f for f in DISPATCH_FLAGS if f in flags]
    return out


@functools.lru_cache(maxsize=1)
def _measured() -> str:
    return json.dumps(_measure())


def machine_fingerprint() -> dict:
    """This process's fingerprint (imports torch; measured once, a fresh dict each call)."""
    return json.loads(_measured())


def _measure() -> dict:
    import torch

    show = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", show)
    dnn = re.search(r"MKL-DNN v([\d.]+)", show)
    has_mkl = torch.backends.mkl.is_available()
    try:
        import numpy

        np_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency of both venvs
        np_version = None
    return {
        "format": FORMAT,
        "recorded": True,
        "cpu": _cpuinfo(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "fft": "mkl" if has_mkl else "pocketfft",
        "fft_version": mkl.group(1) if (has_mkl and mkl) else None,
        "blas": "mkl" if "BLAS_INFO=mkl" in show else (re.search(r"BLAS_INFO=(\w+)", show) or [None, None])[1],
        "onednn": dnn.group(1) if dnn else None,
        "torch": torch.__version__,
        "numpy": np_version,
        "threads": torch.get_num_threads(),
        "os": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }


def _get(fp: dict, dotted: str):
    cur = fp
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def match(running: dict, golden: dict) -> tuple[bool, str]:
    """(same fingerprint?, why): every ``KEY`` field equal where both sides recorded it.

    A field the golden did not record (``null``: the original capture noted no CPU model) is not held
    against it; the reason names it, so the report says what the match rests on.
    """
    differ, unknown = [], []
    for k in KEY:
        a, b = _get(running, k), _get(golden, k)
        if a is None or b is None:
            unknown.append(k)
        elif a != b:
            differ.append(f"{k} {a} vs {b}")
    if differ:
        return False, "fingerprints differ: " + "; ".join(differ)
    why = "fingerprints match on " + ", ".join(k for k in KEY if k not in unknown)
    if unknown:
        why += f" ({', '.join(unknown)} not recorded)"
    return True, why


def describe(fp: dict | None) -> str:
    """One line: ``GenuineIntel fam 6 model 143 (Xeon ...), AVX512, fft mkl 2024.2, torch 2.13.0, 2 threads``."""
    if not fp:
        return "no fingerprint recorded"
    cpu = fp.get("cpu") or {}
    parts = [str(cpu.get("vendor") or "unknown vendor")]
    if cpu.get("family") is not None:
        model = cpu.get("model")
        parts.append(f"family {cpu['family']} model {model if model is not None else 'not recorded'}")
    if cpu.get("name"):
        parts.append(f"({cpu['name']})")
    text = " ".join(parts)
    rest = [f"ISA {fp.get('isa')}", f"fft {fp.get('fft')} {fp.get('fft_version') or ''}".rstrip(),
            f"torch {fp.get('torch')}", f"{fp.get('threads')} threads"]
    if not fp.get("recorded", True):
        rest.append("reconstructed, not recorded at capture")
    return text + ", " + ", ".join(rest)


def load_fingerprint(capture_dir: str | Path) -> dict | None:
    """The fingerprint beside ``capture_dir/cases`` (None when there is none)."""
    path = Path(capture_dir) / FINGERPRINT_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_fingerprint(capture_dir: str | Path, fp: dict | None = None) -> Path:
    path = Path(capture_dir) / FINGERPRINT_NAME
    path.write_text(json.dumps(fp or machine_fingerprint(), indent=1) + "\n")
    return path


if __name__ == "__main__":  # `python porting/parity/fingerprint.py`: this machine's, as JSON
    print(json.dumps(machine_fingerprint(), indent=1))
