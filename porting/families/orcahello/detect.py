"""OrcaHello's detector: recording -> stage A windows -> B mel dB -> C crop/pad -> normalize -> model
-> softmax -> confidence -> per-second aggregate (golden/README.md §1-§5), batched and streamed.

Only ``porting.io.decode`` touches the filesystem; every other step is a pure function over a batch of windows, so
memory is bounded by ``batch_size`` whatever the recording's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...detect import check_backend, check_device, release_memory, tune_malloc
from ...errors import UnsupportedModelError
from ...events import Event, second_events
from ...export import verified as _verified
from ...io.decode import AudioInfo, probe
from ...outputs import spell
from ...summary import plural
from .aggregate import Aggregate, AggregateConfig, aggregate
from .frontend.config import FrontendConfig
from .frontend.windows import iter_windows, plan_windows
from .graph import StageGraph
from .padfold import fold_pad
from .winograd import NAME as WINOGRAD


def _onnx_file(model_path: Path, passed: dict[str, bool], require_verified: bool) -> Path | None:
    """The ONNX classifier to run: detector.onnx (the pad-folded classifier, ``porting.families.orcahello.padfold``), else
    model.onnx, each only if present and (``require_verified``) passed this model's verification (``passed``:
    ``_verified(model_path)``)."""
    from .export.onnx import DETECTOR_FILE, MODEL_FILE

    for name in (DETECTOR_FILE, MODEL_FILE):
        if (model_path / name).is_file() and (passed.get(name, False) or not require_verified):
            return model_path / name
    return None


def _onnx_usable(model_path: Path, device: torch.device, passed: dict[str, bool]) -> bool:
    from importlib.util import find_spec

    return (device.type == "cpu" and model_path.is_dir() and find_spec("onnxruntime") is not None
            and _onnx_file(model_path, passed, require_verified=True) is not None)



@dataclass
class FileResult:
    """What one recording gave: per-window outputs, the legacy per-second table and its events."""

    path: Path
    logits: torch.Tensor  # [W, K] float32
    probs: torch.Tensor  # [W, K] float32
    confidence: torch.Tensor  # [W] float32
    table: Aggregate
    events: list[Event] = field(default_factory=list)  # porting.events.second_events of the table
    threshold: float = 0.5

    def to_dict(self) -> dict:
        d = {"file": str(self.path), "n_windows": int(self.confidence.numel()), "threshold": self.threshold,
             "events": [e.to_dict() for e in self.events]}
        d.update(self.table.to_dict())
        for row, logits, probs in zip(d["windows"], self.logits.tolist(), self.probs.tolist()):
            row["logits"] = logits
            row["probs"] = probs
        return d

    def events_for(self, threshold: float, positive: str | None) -> list[Event]:
        """Its own events (the per-second table's, at the detector's threshold)."""
        return list(self.events)

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        t = self.table
        n_above, n_rows = sum(t.local_predictions), len(t.submission)
        return (f"{self.path}: {plural(len(self.confidence), 'window')}, {n_above}/{plural(n_rows, 'second')} "
                f"> {threshold:g}, global_prediction={t.global_prediction}, "
                f"global_confidence={t.global_confidence:.6f}", f"> {threshold:g}")



@dataclass
class Detector:
    """A loaded model plus everything needed to run the legacy detector with it."""

    model: torch.nn.Module
    config: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 32
    aggregate_cfg: AggregateConfig = field(default_factory=AggregateConfig)
    backend: str = "torch"
    folded: bool = False  # ``model`` reads only a window's own frames (porting.families.orcahello.padfold)
    _graph: StageGraph | None = field(default=None, init=False, repr=False)
    csv_layout = "events"  # --csv: one row per event

    @property
    def labels(self) -> list[str]:
        return list(self.config.get("classes") or [])

    def check_positive(self, positive: str | None) -> str | None:
        """OrcaHello scores its config's positive class, fixed: ``--positive`` may only name it."""
        classes = self.labels
        own = classes[self.positive_index] if classes else None
        if positive is not None and positive != own:
            raise UnsupportedModelError(f"{spell('positive', positive)}: this OrcaHello model scores its positive "
                                        f"class {own!r} (config.json positive_index); drop the option")
        return own

    @classmethod
    def load(cls, model_path: str | Path, device: str | torch.device = "cpu", backend: str = "torch", **kw) -> "Detector":
        """``backend="onnx"`` runs the model stage in onnxruntime (CPU) from ``model_path/detector.onnx``,
        else ``model.onnx`` (refused when parity.json says it failed verification); the frontend stays the exact
        torch one on ``device``. ``"winograd"`` runs ``porting.families.orcahello.winograd.winograd_model`` (BN folded, fused
        residual/ReLU, Winograd F(2,3) convolutions from 256 channels; CPU; refused when parity.json says it failed). ``"auto"`` picks
        onnx for a converted DIR on CPU when onnxruntime is installed and parity.json says that ONNX artifact passed,
        else winograd when parity.json says it passed, else torch (measured per batch of 32 on 2 cores, AMD Zen 5:
        onnx 0.36 s, winograd 0.42 s, torch 0.61 s). Every backend runs the pad-folded twin of the model
        (``porting.families.orcahello.padfold.fold_pad``) whenever the model allows it."""
        from ...convert import load_model

        device = torch.device(check_device(device))
        check_backend(backend)
        path = Path(model_path)
        passed = _verified(path)  # parity.json, read once
        if backend == "auto":
            backend = ("onnx" if _onnx_usable(path, device, passed) else
                       WINOGRAD if device.type == "cpu" and passed.get(WINOGRAD) else "torch")
        if backend == "onnx":
            from .export.onnx import DETECTOR_FILE, MODEL_FILE, load_onnx_model

            failed = [n for n, ok in passed.items() if n in (DETECTOR_FILE, MODEL_FILE) and not ok]
            chosen = _onnx_file(path, passed, require_verified=False) if path.is_dir() else None
            if chosen is not None and chosen.name in failed:
                raise UnsupportedModelError(f"{chosen}: failed this model's verification (parity.json); "
                                            f"re-run `port convert` or use {spell('backend', 'torch')}")
            model, config = load_onnx_model(model_path, chosen.name if chosen is not None else MODEL_FILE)
            name = chosen.name if chosen is not None else MODEL_FILE
            folded = name == DETECTOR_FILE
        else:
            model, config = load_model(model_path, device=device)
            if backend == WINOGRAD:
                if device.type != "cpu":
                    raise UnsupportedModelError(f"{spell('backend', WINOGRAD)}: a CPU backend; use "
                                                f"{spell('device', 'cpu')} or {spell('backend', 'torch')}")
                if passed.get(WINOGRAD) is False:
                    raise UnsupportedModelError(f"{model_path}: the winograd backend failed this model's verification "
                                                f"(parity.json); re-run `port convert` or use {spell('backend', 'torch')}")
                from .winograd import winograd_model

                model = winograd_model(model)
            twin = fold_pad(model, config)
            model, folded = (model, False) if twin is None else (twin, True)
        det = cls(model=model, config=config, device=device, backend=backend, folded=folded, **kw)
        tune_malloc()
        det.positive_index  # fail at load time, not after decoding the first file
        return det

    @property
    def graph(self) -> StageGraph:
        """The stage graph this model runs (porting.families.orcahello.graph), parsed from config.json once."""
        if self._graph is None:
            self._graph = StageGraph.from_config(self.config)
        return self._graph

    @property
    def frontend(self) -> FrontendConfig:
        return self.graph.frontend

    @property
    def positive_index(self) -> int:
        idx = self.config.get("positive_index")
        if idx is None:
            raise UnsupportedModelError(
                f"{self.config.get('source', {}).get('file', 'model')}: no positive class among "
                f"{self.config.get('classes')}; the detector needs a class named 'positive' or two classes"
            )
        return int(idx)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return self.graph.activate(logits)

    @torch.inference_mode()
    def logits_of(self, x: torch.Tensor) -> torch.Tensor:
        """Model input ``[B, 1, 256, 312]`` (golden ``X.model_input``) -> logits, on this detector's model."""
        return self.model(x.to(self.device)).float()

    @torch.inference_mode()
    def forward_windows(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage A output ``[B, 40000]`` -> (logits ``[B, K]``, probs ``[B, K]``)."""
        fe = self.frontend
        if self.folded and waveform.shape[-1] != fe.windows.window_samples:
            raise ValueError(f"forward_windows: a pad-folded model needs whole {fe.windows.window_samples}-sample "
                             f"windows (stage A output), got shape {tuple(waveform.shape)}")
        logits = self.logits_of(self.graph.model_input(waveform.to(self.device)))
        return logits, self.activate(logits)

    def run(self, path: str | Path, on_batch: Callable[[int], None] | None = None) -> FileResult:
        """Detect on one recording. Raises ``AudioError`` for unusable input (e.g. shorter than 2 s)."""
        info: AudioInfo = probe(path)
        logits, probs = [], []
        for _, wave in iter_windows(info, self.batch_size, self.frontend.windows):
            lg, pr = self.forward_windows(wave)
            logits.append(lg.cpu())
            probs.append(pr.cpu())
            release_memory()
            if on_batch is not None:
                on_batch(len(wave))
        logits_t, probs_t = torch.cat(logits), torch.cat(probs)
        conf = probs_t[:, self.positive_index].contiguous()
        table = aggregate(conf.numpy(), Path(path).name, self.aggregate_cfg)
        threshold = self.aggregate_cfg.threshold
        return FileResult(Path(path), logits_t, probs_t, conf, table, second_events(table.submission, threshold),
                          threshold)

    def n_windows(self, path: str | Path) -> int:
        return len(plan_windows(probe(path).duration_s, self.frontend.windows))


