"""Prove each exported artifact against the eager port (always) and the goldens (when available).

The converter cannot assume a golden store exists (a user converts their own pickle), so every artifact
is first run on a deterministic **probe batch**: synthetic 2-s windows at 20 kHz on the PCM_16 grid (what
stage A produces, golden/README.md §3), passed through the exact torch frontend for the classifier
artifacts. The eager port (``porting.detect``'s path: CPU FFT, per-window mel GEMM, crop/pad, normalize,
model, softmax) is the reference. When a golden store holds cases captured from the same pickle (same
sha256), every stored window is checked too: ``X.model_input`` -> ``Y.logits`` for classifiers,
``A.waveform`` -> ``Y.logits`` / ``Y.probs`` for pipelines.

Every check goes through the one comparison engine (``porting.parity.compare_rule``) with the contract's
rules: logits by the row rule (``|d| <= 1e-5 + 1e-5 * max|row|``), probabilities and confidences within 1e-5
absolute. Checks against the eager port run on this machine, so they are strict-tier; checks against a golden
capture use that capture's tier (its numerics fingerprint against this machine's). No artifact passes with a
warning: one failed gating check fails the artifact. Only the TFLite XNNPACK run is informational (``gating: false``): the gate runs the
builtin resolver, XNNPACK's numbers are reported beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ....parity.contract import STRICT
from ..frontend.config import WindowConfig
from ..graph import StageGraph

TOLERANCE = 1e-5
RULES = "logits: |d| <= 1e-5 + 1e-5 * max|row|; probs and confidence: 1e-5 absolute; tiers as in porting.parity.contract"
FAMILY = "orcahello"
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
    """Stages B, C and normalization exactly as the eager port runs them (the stage graph)."""
    return StageGraph.from_config(config).model_input(waveform)


@torch.inference_mode()
def eager_reference(model: torch.nn.Module, config: dict, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
    """The eager port on a batch of windows: model input, logits, probs, confidence (all CPU float32).

    The model runs one window per forward, as legacy's ``predict`` did (golden/README.md §6): that is
    the run that is bitwise with the goldens, while a batched forward moves logits by up to ~6e-6
    (measured on the probe), which would eat most of the 1e-5 budget of the artifact under test.
    """
    graph = StageGraph.from_config(config)
    x = graph.model_input(waveform)
    model = model.cpu().eval()
    logits = torch.cat([model(x[i:i + 1]) for i in range(len(x))]).float()
    probs = graph.activate(logits)
    return {"model_input": x, "logits": logits, "probs": probs, "confidence": graph.confidence(probs)}


def golden_cases_for(config: dict, golden_dir: str | Path) -> list:
    """The golden cases (with results) of every capture, captured from the same pickle as ``config``
    (matched by sha256)."""
    from ....golden import captures, case_paths, load_case

    sha = config.get("source", {}).get("sha256")
    out = []
    for cap in captures(golden_dir):
        for p in case_paths(cap.dir):
            meta = json.loads(p.read_text())
            if meta.get("error") or meta.get("model", {}).get("sha256") != sha:
                continue
            out.append(load_case(p))
    return out


def case_label(case) -> str:
    """``rn18__x`` for the store's own capture, ``amd-epyc-zen4/rn18__x`` for one under captures/."""
    up = case.dir.parent
    return case.name if up.parent.name != "captures" else f"{up.name}/{case.name}"


def golden_windows(cases: list, config: dict) -> list[tuple]:
    """Each case as one batch of its stored windows for the engine's golden checks: ``(label, tensors, tier)``, the
    tier that case's capture is held to here (``porting.parity.run.tier_for``)."""
    from ....parity.run import tier_for

    pos = StageGraph.from_config(config).require_positive()
    out = []
    for case in cases:
        t = case.tensors
        out.append((case_label(case), {"A.waveform": t["A.waveform"], "X.model_input": t["X.model_input"],
                                       "Y.logits": t["Y.logits"], "Y.probs": t["Y.probs"],
                                       "Y.confidence": t["Y.probs"][:, pos]}, tier_for(case)[0]))
    return out


def check_runner(
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    kind: str,
    config: dict,
    probe: dict[str, torch.Tensor],
    probe_waveform: torch.Tensor,
    cases: list,
    gating: bool = True,
) -> list[dict]:
    """All checks of one loaded artifact (``kind``: "model", input the model input, or "pipeline", input the
    waveform) by the engine (``porting.export.declared``): against the eager port on the probe, then every case."""
    from ....export.declared import check_eager, check_golden
    from .artifacts import declare

    art = next(a for a in declare("pt2", torch.nn.Identity(), config, probe, probe_waveform) if a.kind == kind)
    return (check_eager(art, run, FAMILY, gating)
            + check_golden(art, run, golden_windows(cases, config), STRICT, FAMILY, gating))
