"""What the capture harnesses share (hf_capture.py, panns_capture.py, melcnn_capture.py): window planning, file
writing, the seeded generators and the platform record.

Runs in every reference venv: the standard library and numpy only. The plan is porting.io.stream.plan_windows's,
written again here so that the harnesses never import porting.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import tempfile
import zlib
from pathlib import Path

import numpy as np


class TooShort(ValueError):
    """The recording holds fewer samples than one window."""


def window_plan(n: int, window_samples: int, hop_samples: int, rate: int | None = None) -> dict:
    """Full windows at k*H while k*H + W <= n; then, if samples remain after the last full window's end,
    one PARTIAL window at the next k*H holding the rest, scored alone at its own length only when it holds
    at least W//2 samples (else those samples are left unscored). ``rate`` only words the TooShort message."""
    W, H = window_samples, hop_samples
    starts, k = [], 0
    while k * H + W <= n:
        starts.append(k * H)
        k += 1
    if not starts:
        at = f" at {rate} Hz" if rate else ""
        raise TooShort(f"recording holds {n} samples{at}, fewer than one {W}-sample window")
    lengths, partial = [W] * len(starts), [False] * len(starts)
    last_end = starts[-1] + W
    unscored, unscored_start = 0, None
    if n > last_end:
        ts = k * H
        if n - ts >= W // 2:
            starts.append(ts)
            lengths.append(n - ts)
            partial.append(True)
        else:
            unscored, unscored_start = n - last_end, last_end
    return {"starts": starts, "lengths": lengths, "partial": partial,
            "unscored_tail_samples": unscored, "unscored_tail_start": unscored_start}


def window_priority(partial: list[bool]) -> list[int]:
    """Windows worth storing, in order: window 0 (start edge), the last full window, the partial tail."""
    full = [i for i, p in enumerate(partial) if not p]
    out: list[int] = []
    for i in [0, full[-1]] + [i for i, p in enumerate(partial) if p]:
        if i not in out:
            out.append(i)
    return out


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file beside it (world-readable), renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def hann_burst(t: np.ndarray, t0: float, dur: float, f: float, amp: float) -> np.ndarray:
    """A tone of ``f`` Hz under a Hann envelope from ``t0`` for ``dur`` s (the synthetic recordings' events)."""
    u = (t - t0) / dur
    env = np.where((u >= 0) & (u <= 1), 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(u, 0, 1)), 0.0)
    return amp * env * np.sin(2 * np.pi * f * (t - t0))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def audio_record(path: Path, name: str, info) -> dict:
    """A case's ``audio`` block: the recording's file name, sha256 and ``soundfile.info`` fields."""
    return {"file": name, "sha256": sha256_file(path), "sample_rate": info.samplerate, "channels": info.channels,
            "frames": info.frames, "subtype": info.subtype, "format": info.format}


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


def load_by_path(name: str, path: Path):
    """A module imported from its file (porting's numpy-only modules: the harnesses never import porting)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tensor_dtype(t) -> str:
    return str(t.dtype).replace("torch.", "")


def state_numpy(sd) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in sd.items()}


def seeded(seed: int, key: str, salt: int) -> np.random.Generator:
    """numpy's generator for ``(seed, key, salt)``: one stream per tensor key, whatever order they are made in."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode()), salt]))


def cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def platform_record() -> dict:
    return {"os": f"{platform.system()} {platform.machine()}", "platform": platform.platform(), "cpu": cpu_name()}
