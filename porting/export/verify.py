"""Prove each exported artifact against the eager port (always) and the goldens (when available).

The converter cannot assume a golden store exists (a user converts their own pickle), so every artifact
is first run on a deterministic **probe batch**: synthetic 2-s windows at 20 kHz on the PCM_16 grid (what
stage A produces, golden/README.md §3), passed through the exact torch frontend for the classifier
artifacts. The eager port (``porting.detect``'s path: CPU FFT, per-window mel GEMM, crop/pad, normalize,
model, softmax) is the reference. When a golden store holds cases captured from the same pickle (same
sha256), every stored window is checked too: ``X.model_input`` -> ``Y.logits`` for classifiers,
``A.waveform`` -> ``Y.logits`` / ``Y.probs`` for pipelines.

Every check is max |diff| <= 1e-5 (absolute). No artifact passes with a warning: one failed gating check
fails the artifact. Only the TFLite XNNPACK run is informational (``gating: false``): the gate runs the
builtin resolver, XNNPACK's numbers are reported beside it.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..frontend.config import FrontendConfig, WindowConfig
from ..frontend.mel import mel_db
from ..frontend.normalize import normalize
from ..frontend.pad import crop_pad
from ..pipeline import activate, activation_of

TOLERANCE = 1e-5
PARITY_FORMAT = "porting.parity/1"
PROBE_SEED = 20261122
PROBE_DESCRIPTION = (
    "4 synthetic 2-s windows at the stage-A rate, quantized to the PCM_16 grid (code/32768) like stage A's "
    "cache round trip: (0) a harmonic FM call over pink noise, (1) white noise at -40 dBFS, (2) brown noise + "
    "60 Hz hum + clicks, (3) a quiet 3 kHz tone over 1-LSB noise; seed " + str(PROBE_SEED)
)


def probe_waveforms(cfg: WindowConfig = WindowConfig(), seed: int = PROBE_SEED) -> torch.Tensor:
    """The probe batch ``[4, window_samples]`` float32 (see ``PROBE_DESCRIPTION``), identical on every run."""
    g = torch.Generator().manual_seed(seed)
    n, sr = cfg.window_samples, cfg.sample_rate
    t = torch.arange(n, dtype=torch.float64) / sr

    def noise() -> torch.Tensor:
        return torch.randn(n, generator=g, dtype=torch.float64)

    def pink() -> torch.Tensor:  # 1/f amplitude shaping in the frequency domain
        spec = torch.fft.rfft(noise())
        f = torch.arange(spec.numel(), dtype=torch.float64).clamp(min=1.0)
        x = torch.fft.irfft(spec / f.sqrt(), n)
        return x / x.abs().max()

    f0 = 700.0 + 300.0 * torch.sin(2 * math.pi * 0.7 * t)  # FM call, 400-1000 Hz, 5 harmonics
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    call = sum(torch.sin(h * phase) / h for h in range(1, 6)) * torch.hann_window(n, periodic=False, dtype=torch.float64)
    brown = torch.cumsum(noise(), 0)
    brown = (brown - brown.mean()) / brown.abs().max()
    clicks = torch.zeros(n, dtype=torch.float64)
    clicks[torch.randint(0, n, (12,), generator=g)] = 0.8
    windows = [
        0.3 * call + 0.05 * pink(),
        0.01 * noise(),
        0.3 * brown + 0.05 * torch.sin(2 * math.pi * 60.0 * t) + clicks,
        1e-3 * torch.sin(2 * math.pi * 3000.0 * t) + noise() / 32768.0,
    ]
    x = torch.stack(windows)
    codes = torch.clamp(torch.floor(x * 32768.0), -32768, 32767)  # the PCM_16 grid, as stage A delivers
    return (codes / 32768.0).to(torch.float32)


def model_input(waveform: torch.Tensor, config: dict) -> torch.Tensor:
    """Stages B, C and normalization exactly as the eager port runs them (``porting.detect``)."""
    fe = FrontendConfig.from_dict(config.get("frontend", {}))
    norm = config.get("normalize")
    x = crop_pad(mel_db(waveform, fe.mel), fe.pad)
    return normalize(x, norm["mean"], norm["std"]) if norm else x


@torch.inference_mode()
def eager_reference(model: torch.nn.Module, config: dict, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
    """The eager port on a batch of windows: model input, logits, probs, confidence (all CPU float32).

    The model runs one window per forward, as legacy's ``predict`` did (golden/README.md §6): that is
    the run that is bitwise with the goldens, while a batched forward moves logits by up to ~6e-6
    (measured on the probe), which would eat most of the 1e-5 budget of the artifact under test.
    """
    x = model_input(waveform, config)
    model = model.cpu().eval()
    logits = torch.cat([model(x[i:i + 1]) for i in range(len(x))]).float()
    probs = activate(logits, activation_of(config))
    return {"model_input": x, "logits": logits, "probs": probs, "confidence": probs[:, int(config["positive_index"])]}


def golden_cases_for(config: dict, golden_dir: str | Path) -> list:
    """The golden cases (with results) captured from the same pickle as ``config`` (matched by sha256)."""
    from ..golden import case_paths, load_case

    sha = config.get("source", {}).get("sha256")
    out = []
    for p in case_paths(golden_dir):
        meta = json.loads(p.read_text())
        if meta.get("error") or meta.get("model", {}).get("sha256") != sha:
            continue
        out.append(load_case(p))
    return out


def _max_diff(got, want) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf
    if got.size == 0:
        return 0.0
    d = np.abs(got - want)
    return math.inf if not np.all(np.isfinite(d)) else float(d.max())


def _check(against: str, data: str, output: str, got, want, windows: int, gating: bool = True, note: str | None = None) -> dict:
    diff = _max_diff(got, want)
    row = {
        "against": against, "data": data, "windows": windows, "output": output,
        "max_abs_diff": diff if math.isfinite(diff) else None, "tolerance": TOLERANCE,
        "passed": bool(diff <= TOLERANCE), "gating": gating,
    }
    if note:
        row["note"] = note
    return row


def _confidence(logits: np.ndarray, config: dict) -> np.ndarray:
    """The activation of an artifact's logits, taken in torch as the port does (for classifier artifacts)."""
    probs = activate(torch.from_numpy(np.asarray(logits, dtype=np.float32)), activation_of(config))
    return probs[:, int(config["positive_index"])].numpy()


def check_runner(
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    kind: str,
    config: dict,
    probe: dict[str, torch.Tensor],
    probe_waveform: torch.Tensor,
    cases: list,
    gating: bool = True,
) -> list[dict]:
    """All checks of one loaded artifact. ``kind`` is "model" (input: model input) or "pipeline" (input: waveform)."""
    pos = int(config["positive_index"])
    rows = []
    derived = "activation (softmax) of the artifact's logits, computed outside it"

    def compare(against: str, data: str, out: dict, logits, probs, conf, n: int):
        rows.append(_check(against, data, "logits", out["logits"], logits, n, gating))
        if kind == "pipeline":
            rows.append(_check(against, data, "probs", out["probs"], probs, n, gating))
            rows.append(_check(against, data, "confidence", out["confidence"], conf, n, gating))
        else:
            rows.append(_check(against, data, "confidence", _confidence(out["logits"], config), conf, n, gating, derived))

    x = probe_waveform if kind == "pipeline" else probe["model_input"]
    out = run(x.numpy())
    compare("eager", "probe", out, probe["logits"], probe["probs"], probe["confidence"], len(x))
    for case in cases:
        t = case.tensors
        x = t["A.waveform"] if kind == "pipeline" else t["X.model_input"]
        out = run(x.numpy())
        compare("golden", case.name, out, t["Y.logits"], t["Y.probs"], t["Y.probs"][:, pos], len(x))
    return rows


def runtime_versions() -> dict:
    """Versions of everything that produced or ran the artifacts (those installed)."""
    from importlib import metadata

    from .. import __version__

    out = {"python": platform.python_version(), "platform": platform.platform(), "porting": __version__,
           "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("onnx", "onnxruntime", "litert-torch", "ai-edge-litert"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_parity(parity: dict) -> str:
    """One line per artifact: PASS/FAIL, worst diff vs eager and vs goldens (gating checks)."""
    lines = [f"exports (tolerance {parity['tolerance']:g}, max |diff| vs eager probe / vs goldens):"]
    for name, art in parity["artifacts"].items():
        if art.get("error"):
            lines.append(f"  FAIL {name:26s} {art['error']}")
            continue
        lines.append(f"  {'PASS' if art['passed'] else 'FAIL'} {name:26s} {_worst(art, 'eager'):>9s} / {_worst(art, 'golden'):>9s}"
                     f"  ({art['runtime']})")
        for extra in art.get("informational", []):
            lines.append(f"       {'':26s} {_worst(extra, 'eager'):>9s} / {_worst(extra, 'golden'):>9s}"
                         f"  ({extra['runtime']}, not gating: {'within' if extra['passed'] else 'MISSES'} 1e-5)")
    return "\n".join(lines)


def _worst(art: dict, against: str) -> str:
    diffs = [r["max_abs_diff"] for r in art.get("checks", []) if r["against"] == against]
    if not diffs:
        return "-"
    if any(d is None for d in diffs):
        return "inf"
    return f"{max(diffs):.2e}"
