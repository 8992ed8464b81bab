"""OrcaHello's artifacts as declarations for the engine (``porting.export.declared``): what each takes and gives,
what it is traced on and verified against (the package docstring, ``porting.families.orcahello.export``, says why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ....export import require
from ....export.declared import Artifact
from ..graph import StageGraph

EXTENSIONS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2", "tflite": ".tflite"}
OUTPUTS = {"model": ("logits",), "pipeline": ("confidence", "probs", "logits")}
DERIVED = "activation of the artifact's logits, computed outside it (porting.families.orcahello.graph)"


def example_inputs(config: dict, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic example (spectrogram ``[B, 1, n_mels, frames]``, waveform ``[B, N]``) the traces are made on."""
    fe = StageGraph.from_config(config).frontend
    g = torch.Generator().manual_seed(0)
    spec = torch.randn(batch, 1, fe.mel.n_mels, fe.pad.frames, generator=g)
    wave = 0.1 * torch.randn(batch, fe.windows.window_samples, generator=g)
    return spec, wave


def _metadata(config: dict, kind: str) -> dict[str, str]:
    """ONNX metadata_props: what the graph takes and what it leaves out (normalization), the source's sha256."""
    if kind == "model":
        io = "input spectrogram [B,1,256,312] = model input after normalization (normalization NOT in this graph)"
    elif kind == "detector":
        io = ("input spectrogram [B,1,256,312] as model.onnx, for 2-s windows only: frames 157.. must be stage C's "
              "pad (they are not read; the pad is built in)")
    else:
        io = "input waveform [B,40000] float32 20 kHz mono stage-A window; stages B, C, normalization, model, softmax inside"
    return {
        "porting.kind": kind,
        "porting.io": io,
        "porting.source_sha256": str(config.get("source", {}).get("sha256")),
        "porting.classes": json.dumps(config.get("classes")),
        "porting.positive_index": str(config.get("positive_index")),
        "porting.normalize": json.dumps(config.get("normalize")),
    }


def _io(kind: str, fmt: str, config: dict, name: str = "") -> dict:
    """parity.json's description of an artifact's input and outputs."""
    fe = StageGraph.from_config(config).frontend
    if kind == "model":
        meaning = "model input AFTER normalization (golden X.model_input)"
        if name.startswith("detector."):
            meaning += "; 2-s windows only: frames from 157 on must be stage C's pad (not read, built in)"
        return {"inputs": {"spectrogram": {"shape": ["B", 1, fe.mel.n_mels, fe.pad.frames], "dtype": "float32",
                                           "meaning": meaning}},
                "outputs": {"logits": ["B", "K"]}}
    stft = "torch.stft (CPU FFT)" if fmt in ("torchscript", "pt2") else "conv1d DFT"
    return {"inputs": {"waveform": {"shape": ["B", fe.windows.window_samples], "dtype": "float32",
                                    "meaning": f"stage-A window at {fe.windows.sample_rate} Hz (golden A.waveform)"}},
            "outputs": {"confidence": ["B"], "probs": ["B", "K"], "logits": ["B", "K"]}, "stft": stft}


def _confidence(config: dict) -> Callable[[dict], dict]:
    """A classifier artifact's probabilities and confidence, derived from its logits as ``port detect`` does."""
    graph = StageGraph.from_config(config)

    def derive(out: dict) -> dict:
        probs = graph.activate(torch.as_tensor(out["Y.logits"]).float())
        return {"Y.confidence": graph.confidence(probs)}

    return derive


def stages_of(ref: dict) -> dict:
    """``verify.eager_reference``'s outputs by golden stage."""
    return {"Y.logits": ref["logits"], "Y.probs": ref["probs"], "Y.confidence": ref["confidence"]}


def declare(fmt: str, model: torch.nn.Module, config: dict, probe: dict | None = None,
            probe_wave: torch.Tensor | None = None) -> list[Artifact]:
    """The artifacts of ``fmt`` (``ARTIFACTS``), declared for the engine (``porting.export.declared``); ``probe``
    (``verify.eager_reference`` of ``probe_wave``) is what each is verified on (none: build only)."""
    from ..padfold import fold_pad
    from ..pipeline import Classifier, Pipeline

    model = model.cpu().eval()
    ext = EXTENSIONS[fmt]
    spec, wave = example_inputs(config)
    extra = {"config.json": json.dumps(config)} if fmt in ("torchscript", "pt2") else {}
    reference = (lambda x: stages_of(probe)) if probe is not None else None  # the probe's eager outputs, once

    def classifier(name: str, net: torch.nn.Module, kind: str) -> Artifact:
        return Artifact(name, fmt, "model", Classifier(net).eval(), "spectrogram", ("logits",), ("Y.logits",),
                        {0: "batch"}, ["B", 1, spec.shape[2], spec.shape[3]],
                        [] if probe is None else [probe["model_input"]], reference, "X.model_input", extra,
                        example=spec, metadata=_metadata(config, kind) if fmt == "onnx" else {},
                        derive=_confidence(config), derive_note=DERIVED, io=_io("model", fmt, config, name),
                        informational=("xnnpack",) if fmt == "tflite" else ())

    arts = [classifier(f"model{ext}", model, "model"),
            Artifact(f"pipeline{ext}", fmt, "pipeline",
                     Pipeline(model, config, dft="fft" if fmt in ("torchscript", "pt2") else "matmul").eval(),
                     "waveform", OUTPUTS["pipeline"], ("Y.confidence", "Y.probs", "Y.logits"), {0: "batch"},
                     ["B", wave.shape[1]], [] if probe_wave is None else [probe_wave], reference, "A.waveform", extra,
                     example=wave, metadata=_metadata(config, "pipeline") if fmt == "onnx" else {},
                     io=_io("pipeline", fmt, config), informational=("xnnpack",) if fmt == "tflite" else ())]
    if fmt == "onnx":
        twin = fold_pad(model, config)
        if twin is not None:
            arts.append(classifier("detector.onnx", twin, "detector"))
    return arts


def build_all(arts: list[Artifact], out_dir: str | Path) -> list[Path]:
    """Write the declared ``arts`` into ``out_dir`` (``porting.export.declared.build``); returns their paths."""
    from ....export.declared import build

    paths = []
    for art in arts:
        paths.append(Path(out_dir) / art.name)
        build(art, paths[-1])
    return paths


def build_format(fmt: str, model: torch.nn.Module, config: dict, out_dir: str | Path) -> list[Path]:
    """Write ``fmt``'s artifacts of ``model`` into ``out_dir``; returns their paths."""
    require(fmt, f"--export {fmt}")
    return build_all(declare(fmt, model, config), out_dir)
