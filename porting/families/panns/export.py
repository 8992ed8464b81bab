"""Verified exports of a PANNs tagger: ONNX, TorchScript, torch.export and TFLite, each of the model and of the
pipeline (declarations, ``porting.export.declared``: the engine builds, loads back and verifies them).

* ``model.*``: ``logmel`` ``[B, 1, T, n_mels]`` (dB, torchlibrosa's layout) -> ``logits``: bn0, body, head.
* ``pipeline.*``: ``waveform`` ``[B, N]`` at the model's rate -> ``probs``, ``logits``, the frontend inside as the
  checkpoint's own conv (reflect pad, two strided ``conv1d``, power, mel matmul, ``10 * log10``): no FFT op, so
  every runtime has it. ``top_db`` is None in every PANNs model, so no batch-wide ``.max().item()`` is traced in.
* TFLite (fixed shapes): whole windows of the converted window length, signatures for batch 1 and 8.

Each artifact is verified at two lengths (a whole window and a ~0.6-window tail: the pooling floors differ) and two
batch sizes, traced at a third batch, against the eager rebuild by the contract (logits by the row rule,
probabilities 1e-5), and, with ``--golden``, on every stored window of this model's golden cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...export.declared import TFLITE_BATCHES, Artifact, export_artifact, golden_windows, parity_document
from .model import PannsTagger

FAMILY = "panns"
ARTIFACTS = {
    "onnx": ("model.onnx", "pipeline.onnx"),
    "torchscript": ("model.torchscript.pt", "pipeline.torchscript.pt"),
    "pt2": ("model.pt2", "pipeline.pt2"),
    "tflite": ("model.tflite", "pipeline.tflite"),
}


class _Model(torch.nn.Module):
    def __init__(self, net: PannsTagger):
        super().__init__()
        self.net = net

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.net.from_logmel(logmel)


class _Pipeline(torch.nn.Module):
    def __init__(self, net: PannsTagger):
        super().__init__()
        self.net = net

    def forward(self, waveform: torch.Tensor):
        logits = self.net(waveform)
        return torch.sigmoid(logits), logits


def probe_waves(n: int, batch: int, rate: int, seed: int) -> torch.Tensor:
    """Deterministic probe windows: a gliding tone, clicks and noise, at two levels."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / rate
    rows = []
    for b in range(batch):
        f = 200.0 * (b + 1) * (1 + t)
        x = 0.3 * torch.sin(2 * torch.pi * torch.cumsum(f, 0) / rate) + 0.03 * torch.randn(n, generator=g, dtype=torch.float64)
        x[:: max(rate // 7, 1)] += 0.5
        rows.append(x * (0.1 if b % 2 else 0.8))
    return torch.stack(rows).float()


def _lengths(net: PannsTagger, window: int) -> list[int]:
    """A whole window and a tail of ~0.6 of it whose frame count has the other parity (pools floor)."""
    tail = max(int(0.6 * window), 2 * net.min_samples)
    frames = lambda n: 1 + n // net.hop  # noqa: E731
    while frames(tail) % 2 == frames(window) % 2 and tail > net.min_samples:
        tail -= net.hop // 2 or 1
    return [window, tail]


def export_panns(net: PannsTagger, config: dict, out_dir: str | Path, formats, log=None,
                 golden: str | Path | None = None) -> dict:
    """Export ``formats`` of ``net`` into ``out_dir``, verify each artifact, write parity.json."""
    from ...export import require as _require

    out_dir = Path(out_dir)
    net = net.cpu().eval()
    rate = int(config["frontend"]["sample_rate"])
    window = round(float(config["windows"]["window_s"]) * rate)
    windows, tier = golden_windows(golden, lambda case: case.family == FAMILY and case.meta["model"].get(
        "state_sha256") == config.get("state_digest"))
    extra = {"config.json": json.dumps(config)}
    artifacts: dict[str, dict] = {}
    with torch.no_grad():
        for fmt in formats:
            _require(fmt, "export")
            fixed = fmt == "tflite"
            lengths = [window] if fixed else _lengths(net, window)
            batches = (3, 9) if fixed else (2, 3)
            waves = [probe_waves(lengths[min(i, len(lengths) - 1)], b, rate, i) for i, b in enumerate(batches)]
            example_wave = probe_waves(lengths[0], 4, rate, 7)  # a third batch size: one baked in fails the probes
            for kind, name in zip(("model", "pipeline"), ARTIFACTS[fmt]):
                if kind == "model":
                    probes, example = [net.logmel(w) for w in waves], net.logmel(example_wave)
                    module, inp, outs, stages = _Model(net), "logmel", ("logits",), ("Y.logits",)
                    axes, shape, gin = {0: "B", 2: "T"}, ["B", 1, "T", net.logmel_extractor.melW.shape[1]], "F.logmel"
                else:
                    probes, example = waves, example_wave
                    module, inp, outs, stages = _Pipeline(net), "waveform", ("probs", "logits"), ("Y.probs", "Y.logits")
                    axes, shape, gin = {0: "B", 1: "T"}, ["B", "T"], "A.waveform"
                if fixed:
                    axes = {0: "B"}
                    shape = [s if s != "T" else int(probes[0].shape[2 if kind == "model" else 1]) for s in shape]
                art = Artifact(name, fmt, kind, module, inp, outs, stages, axes, shape, probes, golden_input=gin,
                               extra=extra, tflite_batches=TFLITE_BATCHES, example=example if not fixed else None)
                gold = [(k, t) for k, t in windows if not fixed or tuple(t[gin].shape[1:]) == tuple(probes[0].shape[1:])]
                artifacts[name] = export_artifact(art, out_dir, FAMILY, gold, tier, log)
    parity = parity_document(
        FAMILY, artifacts, "logits: |d| <= 1e-5 + 1e-5 * max|row|; probabilities: 1e-5 absolute (porting.parity.contract)",
        model={"file": config["source"]["file"], "sha256": config["source"]["sha256"]},
        reference="the eager rebuild (porting.families.panns)",
        golden=None if golden is None else {"dir": str(golden), "tier": tier, "windows": [w for w, _ in windows]})
    (out_dir / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
    return parity
