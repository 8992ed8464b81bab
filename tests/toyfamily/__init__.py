"""A family defined outside porting (issue 22): what a third party ships to port its own models, using only
porting's engine and library layers. Registered with ``porting.family.register(FAMILY)`` (a package would declare
``[project.entry-points."porting.families"] toy = "toyfamily:FAMILY"``).

The source: a folder with ``toy.json`` (the frontend declaration: rate, window, hop, frame length, classes) and
``weights.pt`` (a plain ``torch.save``d state dict, read with ``weights_only=True``: nothing executed).
The stage graph: ``A.waveform`` [B, N] -> ``F.energy`` = log(mean of each frame's squares + 1e-6) [B, N / frame]
-> ``Y.logits`` = a linear layer (key ``proj.*``) -> ``Y.probs`` = softmax. The "original stack" is numpy
(``reference``), which also writes the golden store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from porting.errors import MalformedModelError, UnsupportedModelError
from porting.events import window_events
from porting.family import NO, SURE, Claim, Option, ReportTraits
from porting.io import files
from porting.io.weights import CONFIG_FORMAT, read_converted, write_model
from porting.schema import check_converted_header

NAME = "toy"
SOURCE = "toy.json"
WEIGHTS = "weights.pt"
STAGES = ("A.waveform", "F.energy", "Y.logits", "Y.probs")


# ------------------------------------------------------------------------------------------------- rebuild


class ToyNet(torch.nn.Module):
    """waveform [B, N] -> (probs, logits): the frontend and the head in one module (state-dict keys: ``proj.*``)."""

    def __init__(self, frame: int, n_frames: int, n_classes: int):
        super().__init__()
        self.frame, self.n_frames = frame, n_frames
        self.proj = torch.nn.Linear(n_frames, n_classes)

    def energy(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform[:, : self.frame * self.n_frames].reshape(waveform.shape[0], self.n_frames, self.frame)
        return torch.log((x * x).mean(-1) + 1e-6)

    def forward(self, waveform: torch.Tensor):
        logits = self.proj(self.energy(waveform))
        return torch.softmax(logits, -1), logits


def _net(cfg: dict, state: dict) -> ToyNet:
    net = ToyNet(cfg["frame"], cfg["n_frames"], len(cfg["classes"]))
    net.load_state_dict(state)
    return net.eval()


def _read_source(folder: Path) -> tuple[dict, dict]:
    decl = files.read_json(folder / SOURCE, "the toy declaration")
    for key in ("sample_rate", "window_s", "hop_s", "frame", "classes"):
        if key not in decl:
            raise MalformedModelError(f"{folder / SOURCE}: no {key!r}; declare it")
    raw = files.read_bytes(folder / WEIGHTS, "the weights")
    state = torch.load(io.BytesIO(bytes(raw)), weights_only=True)  # tensors only: nothing executed
    window = round(decl["window_s"] * decl["sample_rate"])
    cfg = {"format": CONFIG_FORMAT, "family": NAME, "classes": list(decl["classes"]), "frame": int(decl["frame"]),
           "n_frames": window // int(decl["frame"]),
           "windows": {"window_s": decl["window_s"], "hop_s": decl["hop_s"], "sample_rate": decl["sample_rate"]},
           "activation": {"name": "softmax", "dim": -1},
           "source": {"file": folder.name, "sha256": hashlib.sha256(bytes(raw)).hexdigest()},
           "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                          for k, t in state.items()}}
    return cfg, state


def _check_converted(config, path, elements=None) -> dict:
    config = check_converted_header(config, path)
    if config.get("family") != NAME:
        raise MalformedModelError(f"{path}: not a toy model config; re-run `port convert`")
    return config


# ------------------------------------------------------------------------------------------------- detect


@dataclass
class ToyResult:
    path: Path
    classes: tuple[str, ...]
    sample_rate: int
    starts: list[int]
    lengths: list[int]
    partial: list[bool]
    logits: torch.Tensor
    probs: torch.Tensor

    def to_dict(self) -> dict:
        rows = [{"start_s": s / self.sample_rate, "end_s": (s + n) / self.sample_rate, "partial": p,
                 "label": self.classes[int(np.argmax(pr))], "logits": lg, "probs": pr}
                for s, n, p, lg, pr in zip(self.starts, self.lengths, self.partial, self.logits.tolist(),
                                           self.probs.tolist())]
        return {"file": str(self.path), "n_windows": len(rows), "labels": list(self.classes), "windows": rows}

    def events_for(self, threshold: float, positive: str | None):
        return None if positive is None else window_events(self, positive, threshold)

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        return f"{self.path}: {len(self.starts)} toy windows", f"{positive} > {threshold:g}"


class ToyDetector:
    csv_layout = "windows"

    def __init__(self, net: ToyNet, config: dict, batch_size: int, backend: str, device: str, gain: float = 1.0):
        self.net, self.config, self.batch_size, self.backend, self.device = net, config, batch_size, backend, device
        self.gain = gain
        w = config["windows"]
        self.rate, self.window = int(w["sample_rate"]), round(w["window_s"] * w["sample_rate"])
        self.hop = round(w["hop_s"] * w["sample_rate"])
        self.labels = list(config["classes"])

    def n_windows(self, path) -> int:
        from porting.io.stream import n_windows

        return n_windows(path, self.rate, self.window, self.hop)

    def check_positive(self, positive):
        if positive is not None and positive not in self.labels:
            raise UnsupportedModelError(f"--positive {positive}: not a label of this toy model")
        return positive

    @torch.inference_mode()
    def forward(self, waveform: torch.Tensor) -> dict:
        """One batch through every stage, by golden name (a partial tail zero-padded to a whole window)."""
        if waveform.shape[1] < self.window:
            waveform = torch.nn.functional.pad(waveform, (0, self.window - waveform.shape[1]))
        waveform = waveform * self.gain if self.gain != 1.0 else waveform
        probs, logits = self.net(waveform)
        return {"A.waveform": waveform, "F.energy": self.net.energy(waveform), "Y.logits": logits, "Y.probs": probs}

    def run(self, path, on_batch=None) -> ToyResult:
        from porting.detect import stream_stages

        plan, out = stream_stages(path, self.rate, self.window, self.hop, self.batch_size, self.forward,
                                  ("Y.logits", "Y.probs"), on_batch)
        return ToyResult(Path(path), tuple(self.labels), self.rate, [w.start for w in plan], [w.length for w in plan],
                         [w.partial for w in plan], out["Y.logits"], out["Y.probs"])


# ------------------------------------------------------------------------------------------------- goldens


def reference(cfg: dict, state: dict, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """The original stack: numpy, float64, rounded to float32 per stage."""
    w = np.asarray(state["proj.weight"], np.float64)
    b = np.asarray(state["proj.bias"], np.float64)
    x = waveform.astype(np.float64)[:, : cfg["frame"] * cfg["n_frames"]].reshape(len(waveform), cfg["n_frames"], -1)
    energy = np.log((x * x).mean(-1) + 1e-6)
    logits = energy.astype(np.float32).astype(np.float64) @ w.T + b
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return {"A.waveform": waveform.astype(np.float32), "F.energy": energy.astype(np.float32),
            "Y.logits": logits.astype(np.float32), "Y.probs": (e / e.sum(-1, keepdims=True)).astype(np.float32)}


def write_golden(store: Path, model_dir: Path, name: str, waveform: np.ndarray) -> Path:
    """A toy golden case: ``cases/<name>.json`` + ``.safetensors`` (every stage of ``waveform``'s windows)."""
    from safetensors.numpy import save_file

    from porting.parity.fingerprint import write_fingerprint

    cfg, state = _read_source(model_dir)
    (store / "cases").mkdir(parents=True, exist_ok=True)
    save_file(reference(cfg, {k: v.numpy() for k, v in state.items()}, waveform), str(store / "cases" / f"{name}.safetensors"))
    meta = {"family": NAME, "model": str(model_dir.resolve()), "stages": list(STAGES)}
    (store / "cases" / f"{name}.json").write_text(json.dumps(meta))
    write_fingerprint(store)  # captured here: the strict tier on this machine
    return store


# ------------------------------------------------------------------------------------------------- family


class ToyFamily:
    name = NAME
    title = "toy energy classifiers (tests/toyfamily)"
    backends = ()
    options = (Option("gain", "--toy-gain", float, "toy models: scale each window by this before scoring (default 1)"),)
    drawn_stages = ()
    report = ReportTraits(reference="numpy", stages_doc="Stages (toy family): `A.waveform`, `F.energy` log frame "
                          "energies, `Y.*` logits and probabilities.", flat_captures=True)

    def recognise(self, path: Path) -> Claim:
        return Claim(SURE) if (path / SOURCE).is_file() else Claim(NO)

    def owns_converted(self, family) -> bool:
        return family == NAME

    def inspect(self, path: Path, **options) -> dict:
        cfg, state = _read_source(path)
        return {"folder": str(path), "classes": cfg["classes"], "tensors": cfg["state_dict"]}

    def format_inspect(self, report: dict) -> str:
        return f"{report['folder']}: toy model, classes {report['classes']}, {len(report['tensors'])} tensors"

    def convert(self, model: Path, write, *, exports, golden, log, **options) -> dict:
        from porting.export.declared import Artifact, export_artifact, parity_document

        if options:
            raise UnsupportedModelError(f"{model}: {', '.join(options)}: not an option of the toy family")
        cfg, state = _read_source(model)
        net = _net(cfg, state)
        window = cfg["frame"] * cfg["n_frames"]
        parity = None

        def fill(tmp: Path) -> None:
            nonlocal parity
            write_model(tmp, {k: v.contiguous() for k, v in state.items()}, cfg, cfg["source"]["sha256"])
            if exports is None:
                return
            g = torch.Generator().manual_seed(0)
            probes = [torch.randn(b, window, generator=g) * 0.1 for b in (2, 3)]  # two batch sizes
            ext = {"onnx": "onnx", "torchscript": "torchscript.pt", "pt2": "pt2", "tflite": "tflite"}
            arts = {}
            for fmt in exports:
                art = Artifact(f"model.{ext[fmt]}", fmt, "pipeline", net, "waveform", ("probs", "logits"),
                               ("Y.probs", "Y.logits"), {0: "B"}, ["B", window], probes,
                               extra={"config.json": json.dumps(cfg)})
                arts[art.name] = export_artifact(art, tmp, NAME, log=log)
            parity = parity_document(NAME, arts, "1e-5 absolute on every output (porting.parity.contract)")
            (tmp / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
            os.chmod(tmp / "parity.json", 0o644)

        write(fill)
        return {"source": model.name, "sha256": cfg["source"]["sha256"], "kind": "toy-folder", "container": WEIGHTS,
                "modules": sum(1 for _ in net.modules()), "tensors": len(state),
                "parameters": int(sum(p.numel() for p in net.parameters())),
                "bytes": int(sum(t.numel() * t.element_size() for t in state.values())), "classes": cfg["classes"],
                "positive_index": None, "normalize": None, "activation": cfg["activation"], "stubbed": 0,
                "exports": parity}

    def load(self, path: Path, **options):
        if (path / SOURCE).is_file():
            cfg, state = _read_source(path)
        else:
            cfg, state = read_converted(path, _check_converted)
        return _net(cfg, state), cfg

    def detector(self, path: Path, *, device, batch_size, backend, threshold, **options):
        gain = options.pop("gain", 1.0)
        if options or backend not in ("auto", "torch"):
            raise UnsupportedModelError(f"{path}: the toy family runs eager torch only, with no option but --toy-gain")
        net, cfg = self.load(path)
        return ToyDetector(net, cfg, batch_size or 4, "torch", device, gain)

    def captured_from(self, case, model_path: Path) -> bool:
        return True  # every toy case is run with the model it is given

    def check_case(self, captures: list, model_path, *, device, batch_size, backend, cache) -> list:
        from porting.parity.compare import ParityReport, compare_rule
        from porting.parity.run import CaseRun

        runs = []
        for cap, case, tier in captures:
            want = {k: v.numpy() for k, v in case.tensors.items()}
            det = self.detector(Path(model_path or case.meta["model"]), device=device, batch_size=batch_size,
                                backend="torch", threshold=0.5)
            got = det.forward(torch.from_numpy(want["A.waveform"]))
            stages = [compare_rule(s, want[s], got[s].numpy(), tier.name, None, None, family=NAME) for s in STAGES]
            runs.append(CaseRun(ParityReport(case.name, str(device), stages, tier.line(), cap.name), tier=tier,
                                capture=cap.name, golden_fingerprint=cap.fingerprint, family=NAME))
        return runs

    def parity_context(self, case):
        return None

    def tolerances(self, stage: str):
        return None  # every stage 1e-5 absolute (the contract's ABS), strict and portable


FAMILY = ToyFamily()
