"""Verified exports of a librosa-mel CNN classifier: ONNX, TorchScript, torch.export and TFLite of the model
(declarations, ``porting.export.declared``: the engine builds, loads back and verifies them).

* ``model.*``: ``input`` ``[B, 1, n_mels, T]`` (the per-clip min-max log-mel, in [0, 1)) -> ``probs`` (softmax),
  ``logits`` (the class scores: the Linear head's logits, or ``s · cos θ`` for a cosine head). T is the clip's frame
  count (``1 + clip // hop``; every window is fitted to the clip), so only the batch axis is dynamic.

The frontend stays outside the artifacts: librosa's STFT is float64 and every reduction is per clip, which a
float32 runtime graph cannot hold to the contract (``port detect --backend onnx`` runs it in torch, then the ONNX
model). Each artifact is verified at two batch sizes, traced at a third, against the eager rebuild by the contract
(logits by the row rule, probabilities 1e-5), and, with ``--golden``, on every stored window of this run's cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...export.declared import TFLITE_BATCHES, Artifact, export_artifact, golden_windows, parity_document

FAMILY = "melcnn"
ARTIFACTS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "pt2": "model.pt2", "tflite": "model.tflite"}


class _Model(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        logits = self.net.from_input(x)
        return torch.softmax(logits, dim=1), logits


def probe_inputs(net, batch: int, seed: int) -> torch.Tensor:
    """Model inputs of real recordings' shape: the frontend of deterministic tones, clicks and noise."""
    g = torch.Generator().manual_seed(seed)
    n, rate = net.clip, net.sample_rate
    t = torch.arange(n, dtype=torch.float64) / rate
    rows = []
    for b in range(batch):
        f = 300.0 * (b + 1) * (1 + t / max(t[-1].item(), 1e-9))
        x = 0.3 * torch.sin(2 * torch.pi * torch.cumsum(f, 0) / rate) + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
        x[:: max(rate // 5, 1)] += 0.4
        rows.append(x * (0.05 if b % 2 else 0.7))
    return net.model_input(torch.stack(rows).float())


def export_melcnn(net, config: dict, out_dir: str | Path, formats, log=None, golden: str | Path | None = None) -> dict:
    from ...export import require as _require

    out_dir = Path(out_dir)
    net = net.cpu().eval()
    windows, tier = golden_windows(golden, lambda case: case.family == FAMILY and case.meta["model"].get(
        "state_sha256") == config.get("state_digest"))
    extra = {"config.json": json.dumps(config)}
    artifacts: dict[str, dict] = {}
    with torch.no_grad():
        probes = [probe_inputs(net, b, i) for i, b in enumerate((2, 3))]
        example = probe_inputs(net, 4, 7)
        shape = ["B", *probes[0].shape[1:]]
        for fmt in formats:
            _require(fmt, "export")
            fixed = fmt == "tflite"
            name = ARTIFACTS[fmt]
            art = Artifact(name, fmt, "model", _Model(net), "input", ("probs", "logits"), ("Y.probs", "Y.logits"),
                           {0: "B"}, shape, probes, golden_input="F.input", extra=extra,
                           tflite_batches=TFLITE_BATCHES, example=None if fixed else example)
            artifacts[name] = export_artifact(art, out_dir, FAMILY, windows, tier, log)
    parity = parity_document(
        FAMILY, artifacts, "logits: |d| <= 1e-5 + 1e-5 * max|row|; probabilities: 1e-5 absolute (porting.parity.contract)",
        model={"file": config["source"]["file"], "sha256": config["source"]["sha256"]},
        reference="the eager rebuild (porting.families.melcnn)",
        golden=None if golden is None else {"dir": str(golden), "tier": tier, "windows": [w for w, _ in windows]})
    (out_dir / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
    return parity
