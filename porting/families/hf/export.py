"""Verified exports of an HF classifier: ONNX, TorchScript and torch.export, each of the model and of the pipeline.

One declaration per artifact (``ARTIFACTS``: file, inputs with their axes, outputs), as optimum's ``OnnxConfig``:

* ``model.*``: ``input_values`` -> ``logits``. wav2vec2 family: ``[B, T]`` samples (after the feature extractor),
  batch and time dynamic; AST: ``[B, max_length, num_mel_bins]`` fbank features, batch dynamic.
* ``pipeline.*`` (wav2vec2 family): ``waveform`` ``[B, T]`` at the feature extractor's rate -> ``probs``, ``logits``,
  the feature extractor inside (``porting.families.hf.features.wav2vec2_features``, whole windows).
  AST's pipeline would need the kaldi fbank's FFT inside the graph and is not exported (the model is).
* ``*.tflite`` (LiteRT needs fixed shapes): whole windows only, ``T`` = the converted model's window length, with one
  signature per batch size (``batch_1``, ``batch_8``); verified at batch 3 and 9 (both signatures) instead of two
  lengths; a partial tail needs another backend.

Tracing bakes shape branches in (SEW-D pads the squeezed sequence only when its length is odd), so every artifact
is verified at **two input lengths** -- a whole window and a shorter tail whose frame count has the other parity --
and two batch sizes, against the eager rebuild, by the contract (``compare_rule(..., family="hf")``: logits by the
row rule, probabilities 1e-5 absolute). An artifact that fails to export, load or match is marked failed in
parity.json; nothing passes with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...export.declared import TFLITE_BATCHES, Artifact, check_eager, export_artifact, golden_windows, parity_document
from .graph import HFStageGraph
from .model import FAMILY

ARTIFACTS = {
    "onnx": ("model.onnx", "pipeline.onnx"),
    "torchscript": ("model.torchscript.pt", "pipeline.torchscript.pt"),
    "pt2": ("model.pt2", "pipeline.pt2"),
    "tflite": ("model.tflite", "pipeline.tflite"),
}


class _Pipeline(torch.nn.Module):
    """waveform [B, T] -> (probs, logits): the feature extractor, then the model. ``exact=False``: float64 statistics
    (traceable for every length); ``exact=True``: numpy's summation order, as ``port detect`` runs it (the eager
    reference of every pipeline artifact, and the fixed-length TFLite graph)."""

    def __init__(self, model: torch.nn.Module, graph: HFStageGraph, exact: bool = False):
        super().__init__()
        self.model, self.graph, self.exact = model, graph, exact

    def forward(self, waveform: torch.Tensor):
        from .features import wav2vec2_features

        # exact=False: one float64 sum per statistic. The exact path replays numpy's pairwise summation order,
        # which depends on the length, so a trace would bake one length in (measured: fails at the second
        # verification length). float64 is closer to the true mean/var than numpy's float32 pairwise sums; the two
        # differ by <= 3.3e-6 on ordinary audio, up to 1.8e-4 on a -0.7 DC with 1e-4 noise (porting.families.hf.features).
        # A fixed-length artifact (TFLite) takes the exact path: its summation plan is the window length's, and LiteRT
        # has no float64 sum.
        values, mask = wav2vec2_features(waveform, None, self.graph.feature_config, exact=self.exact)
        logits = self.model(values, mask)
        return self.graph.activate(logits), logits


class _Model(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor):
        return self.model(input_values)


def conv_frames(n: int, config: dict) -> int:
    """Frames the wav2vec2-style CNN makes of ``n`` samples (transformers ``_get_feat_extract_output_lengths``)."""
    for k, s in zip(config.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2)), config.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))):
        n = (n - k) // s + 1
    return n


def probe_lengths(graph: HFStageGraph, config: dict) -> list[int]:
    """A whole window and a ~0.7-window tail whose CNN frame count has the other parity."""
    full = graph.window_samples
    tail = max(int(0.7 * full), 1)
    while conv_frames(tail, config) % 2 == conv_frames(full, config) % 2 and tail > 1:
        tail -= 1
    return [full, tail]


def probe_waves(n: int, batch: int, rate: int, seed: int) -> torch.Tensor:
    """Deterministic speech-like probe windows: tones with vibrato over noise, one quiet, one loud."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / rate
    rows = []
    for b in range(batch):
        f = 300.0 * (b + 1) * (1 + 0.05 * torch.sin(2 * torch.pi * 3 * t))
        x = 0.3 * torch.sin(2 * torch.pi * torch.cumsum(f, 0) / rate) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
        rows.append(x * (0.2 if b % 2 else 0.9))
    return torch.stack(rows).float()


def _inputs(graph: HFStageGraph, config: dict, kind: str, fmt: str = "onnx") -> list[torch.Tensor]:
    """Verification inputs: two lengths (a whole window, a tail), or for AST and TFLite (fixed lengths) two batch
    sizes of whole windows, 3 and 9 (so TFLite runs both its signatures)."""
    hf = config["hf_config"]
    if fmt == "tflite" and graph.kind != "ast":
        waves = [probe_waves(graph.window_samples, b, graph.sample_rate, b) for b in (3, 9)]
        return [graph.features(w)["F.input_values"] for w in waves] if kind == "model" else waves
    if graph.kind == "ast":
        return [graph.features(probe_waves(graph.window_samples, b, graph.sample_rate, b))["F.input_values"]
                for b in (2, 3)] if kind == "model" else []
    waves = [probe_waves(n, b, graph.sample_rate, i) for i, (n, b) in enumerate(zip(probe_lengths(graph, hf), (2, 3)))]
    return [graph.features(w)["F.input_values"] for w in waves] if kind == "model" else waves


def _check(kind: str, run, ref_module: torch.nn.Module, inputs: list[torch.Tensor]) -> list[dict]:
    """``run`` (an artifact's runner) against ``ref_module`` on ``inputs``, as export_hf verifies it."""
    names, stages = (("logits",), ("Y.logits",)) if kind == "model" else (("probs", "logits"), ("Y.probs", "Y.logits"))
    art = Artifact("", "", kind, ref_module, "", names, stages, {}, [], list(inputs))
    return check_eager(art, run, FAMILY)


def _whole(t: dict, kind: str, example: torch.Tensor) -> bool:
    """A golden window the fixed-shape TFLite artifact can take (same per-row shape as its signatures)."""
    x = t["F.input_values"] if kind == "model" else t["A.waveform"]
    return tuple(x.shape[1:]) == tuple(example.shape[1:])


def export_hf(model: torch.nn.Module, config: dict, out_dir: str | Path, formats, log=None,
              golden: str | Path | None = None) -> dict:
    """Export ``formats`` of ``model`` into ``out_dir``, verify each artifact at two input lengths against the eager
    rebuild and, with ``golden`` (an HF golden store), on every stored window of this model's cases; write parity.json."""
    from ...export import require as _require

    out_dir = Path(out_dir)
    log = log or (lambda msg: None)
    graph = HFStageGraph.from_config(config)
    model = model.cpu().eval()
    extra = {"config.json": json.dumps(config)}
    shas = set((config.get("source") or {}).get("sha256", {}).values())
    windows, tier = golden_windows(golden, lambda case: case.meta["model"].get("weights_sha256") in shas)
    artifacts: dict[str, dict] = {}
    for fmt in formats:
        _require(fmt, "export")
        for kind, name in zip(("model", "pipeline"), ARTIFACTS[fmt]):
            inputs = _inputs(graph, config, kind, fmt)
            if not inputs:
                continue
            time_axis = graph.kind != "ast"
            names = ("input_values", "logits") if kind == "model" else ("waveform", "probs", "logits")
            art = Artifact(
                name, fmt, kind,
                module=_Model(model) if kind == "model" else _Pipeline(model, graph, exact=fmt == "tflite"),
                # the eager reference: what `port detect` computes (the exact feature extractor)
                reference=None if kind == "model" else _Pipeline(model, graph, exact=True),
                input=names[0], outputs=names[1:], stages=("Y.logits",) if kind == "model" else ("Y.probs", "Y.logits"),
                axes={0: "B", 1: "T"} if time_axis else {0: "B"},
                shape=(["B", "T"] if fmt != "tflite" else ["B", graph.window_samples]) if time_axis else
                ["B", graph.feature_config.max_length, graph.feature_config.num_mel_bins],
                probes=inputs, golden_input="F.input_values" if kind == "model" else "A.waveform", extra=extra,
                tflite_batches=TFLITE_BATCHES)
            # the model artifact takes no mask: only windows without padding (all of golden/hf's) apply
            gold = [(k, t) for k, t in windows if (fmt != "tflite" or _whole(t, kind, inputs[0]))
                    and not (kind == "model" and "F.attention_mask" in t and not bool(t["F.attention_mask"].all()))]
            artifacts[name] = export_artifact(art, out_dir, FAMILY, gold, tier, log)
    parity = parity_document(
        FAMILY, artifacts, "logits: |d| <= 1e-5 + 1e-5 * max|row|; probabilities: 1e-5 absolute (porting.parity.contract)",
        model={"file": config["source"]["file"], "sha256": config["source"]["sha256"]},
        reference="the eager rebuild (porting.families.hf), features by porting.families.hf.features",
        golden=None if golden is None else {"dir": str(golden), "tier": tier, "windows": [w for w, _ in windows]})
    (out_dir / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
    return parity
