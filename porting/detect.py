"""The detector: recording -> stage A windows -> B mel dB -> C crop/pad -> normalize -> model
-> softmax -> confidence -> aggregate (golden/README.md §1-§5), batched and streamed.

Only ``porting.frontend.decode`` touches the filesystem; every other step is a pure function over
a batch of windows, so memory is bounded by ``batch_size`` whatever the recording's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from .aggregate import Aggregate, AggregateConfig, aggregate
from .errors import PortingError, UnsupportedModelError
from .frontend.config import FrontendConfig
from .frontend.decode import AudioInfo, probe
from .frontend.windows import iter_windows, plan_windows
from .graph import StageGraph
from .padfold import fold_pad


def _fixed_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Keep glibc from letting the heap grow with every batch (Linux only; a no-op elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so later batch-sized buffers land
    on the heap, which then fragments between torch's and onnxruntime's threads: measured on a 20-min
    recording, RSS climbed ~7 MB per batch of 32 windows (3.1 GiB after 2 hours with --backend onnx).
    A fixed threshold (what MALLOC_MMAP_THRESHOLD_ does) keeps big buffers in mmap, returned on free:
    RSS then stays flat (795 MiB).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _verified(model_path: Path) -> dict[str, bool]:
    """Artifact name -> passed, from the converted DIR's parity.json (empty when there is none)."""
    import json

    from .export import PARITY_NAME

    try:
        arts = json.loads((model_path / PARITY_NAME).read_text()).get("artifacts", {})
    except (OSError, ValueError):
        return {}
    return {name: bool(a.get("passed")) for name, a in arts.items()}


def _onnx_file(model_path: Path, require_verified: bool) -> Path | None:
    """The ONNX classifier to run: detector.onnx (the pad-folded classifier, ``porting.padfold``), else
    model.onnx, each only if present and (``require_verified``) passed this model's verification."""
    from .export.onnx import DETECTOR_FILE, MODEL_FILE

    passed = _verified(model_path)
    for name in (DETECTOR_FILE, MODEL_FILE):
        if (model_path / name).is_file() and (passed.get(name, False) or not require_verified):
            return model_path / name
    return None


def _onnx_usable(model_path: Path, device: torch.device) -> bool:
    from importlib.util import find_spec

    return (device.type == "cpu" and model_path.is_dir() and find_spec("onnxruntime") is not None
            and _onnx_file(model_path, require_verified=True) is not None)


@dataclass
class FileResult:
    """What one recording gave: per-window outputs plus the legacy per-second table."""

    path: Path
    logits: torch.Tensor  # [W, K] float32
    probs: torch.Tensor  # [W, K] float32
    confidence: torch.Tensor  # [W] float32
    table: Aggregate

    def to_dict(self) -> dict:
        d = {"file": str(self.path), "n_windows": int(self.confidence.numel())}
        d.update(self.table.to_dict())
        for row, logits, probs in zip(d["windows"], self.logits.tolist(), self.probs.tolist()):
            row["logits"] = logits
            row["probs"] = probs
        return d


@dataclass
class FileError:
    path: Path
    error: PortingError

    def message(self) -> str:
        """One line naming the file once: the error's own text when it already names it, else ``path: text``."""
        text = str(self.error)
        return text if str(self.path) in text or text.startswith(f"{self.path.name}:") else f"{self.path}: {text}"

    def to_dict(self) -> dict:
        return {"file": str(self.path), "error": {"type": type(self.error).__name__, "message": str(self.error)}}


@dataclass
class Detector:
    """A loaded model plus everything needed to run the legacy detector with it."""

    model: torch.nn.Module
    config: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 32
    aggregate_cfg: AggregateConfig = field(default_factory=AggregateConfig)
    backend: str = "torch"
    folded: bool = False  # ``model`` reads only a window's own frames (porting.padfold)
    _graph: StageGraph | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, model_path: str | Path, device: str | torch.device = "cpu", backend: str = "torch", **kw) -> "Detector":
        """``backend="onnx"`` runs the model stage in onnxruntime (CPU) from ``model_path/detector.onnx``,
        else ``model.onnx`` (refused when parity.json says it failed verification); the frontend stays the exact
        torch one on ``device``. ``"auto"`` picks onnx for a converted DIR on CPU when onnxruntime is installed and
        parity.json says that ONNX artifact passed (measured ~1.7x faster than eager torch on 2 cores), else torch. The torch backend runs the pad-folded twin of
        the model (``porting.padfold.fold_pad``) whenever the model allows it."""
        from .convert import load_model

        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedModelError(f"--device {device}: no CUDA device on this machine; use --device cpu")
        if backend == "auto":
            backend = "onnx" if _onnx_usable(Path(model_path), device) else "torch"
        if backend == "onnx":
            from .export.onnx import DETECTOR_FILE, MODEL_FILE, load_onnx_model

            path = Path(model_path)
            failed = [n for n, ok in _verified(path).items() if n in (DETECTOR_FILE, MODEL_FILE) and not ok]
            chosen = _onnx_file(path, require_verified=False) if path.is_dir() else None
            if chosen is not None and chosen.name in failed:
                raise UnsupportedModelError(f"{chosen}: failed this model's verification (parity.json); "
                                            "re-run `port convert` or use --backend torch")
            model, config = load_onnx_model(model_path, chosen.name if chosen is not None else MODEL_FILE)
            name = chosen.name if chosen is not None else MODEL_FILE
            folded = name == DETECTOR_FILE
        elif backend == "torch":
            model, config = load_model(model_path, device=device)
            twin = fold_pad(model, config)
            model, folded = (model, False) if twin is None else (twin, True)
        else:
            raise UnsupportedModelError(f"--backend {backend}: unknown backend; use auto, torch or onnx")
        det = cls(model=model, config=config, device=device, backend=backend, folded=folded, **kw)
        _fixed_mmap_threshold()
        det.positive_index  # fail at load time, not after decoding the first file
        return det

    @property
    def graph(self) -> StageGraph:
        """The stage graph this model runs (porting.graph), parsed from config.json once."""
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
            if on_batch is not None:
                on_batch(len(wave))
        logits_t, probs_t = torch.cat(logits), torch.cat(probs)
        conf = probs_t[:, self.positive_index].contiguous()
        table = aggregate(conf.numpy(), Path(path).name, self.aggregate_cfg)
        return FileResult(Path(path), logits_t, probs_t, conf, table)

    def n_windows(self, path: str | Path) -> int:
        return len(plan_windows(probe(path).duration_s, self.frontend.windows))


def run_many(det: Detector, paths: Iterable[str | Path], progress: bool = False) -> list[FileResult | FileError]:
    """Run ``det`` on each path; a bad file gives a ``FileError`` and the others still run.

    With ``progress``, a tqdm bar on stderr counts windows (and shows windows/s) across all files.
    """
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    out: list[FileResult | FileError] = []
    with tqdm(total=0, unit="win", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for p in paths:
            bar.set_description(p.name)
            try:
                bar.total += det.n_windows(p)
                bar.refresh()
                out.append(det.run(p, on_batch=bar.update))
            except PortingError as err:
                out.append(FileError(p, err))
    return out


def is_hf_model(model_path: str | Path) -> bool:
    """An HF model folder, or a folder ``port convert`` wrote from one."""
    import json

    from .hf.folder import is_hf_folder

    p = Path(model_path)
    if not p.is_dir():
        return False
    if is_hf_folder(p):
        return True
    try:
        return json.loads((p / "config.json").read_text()).get("family") == "hf"
    except (OSError, ValueError, AttributeError):
        return False


def load_detector(model_path: str | Path, device: str = "cpu", batch_size: int | None = None, backend: str = "auto",
                  window_s: float | None = None, hop_s: float | None = None, fbank_backend: str | None = None):
    """The detector for ``model_path``: ``porting.hf.detect.HFDetector`` for the HF family (windows of
    ``window_s``/``hop_s``), else the OrcaHello ``Detector`` (its windows are fixed: 2 s, hop 1 s)."""
    if is_hf_model(model_path):
        from .hf.detect import HFDetector

        return HFDetector.load(model_path, device=device, backend=backend, window_s=window_s, hop_s=hop_s,
                               fbank_backend=fbank_backend, batch_size=batch_size or 16)
    if window_s is not None or hop_s is not None or fbank_backend is not None:
        raise UnsupportedModelError("--window-s/--hop-s/--fbank-backend: the OrcaHello detector's frontend is fixed "
                                    "(2-s windows, hop 1 s, golden/README.md §1-§3); drop the options")
    return Detector.load(model_path, device=device, batch_size=batch_size or 32, backend=backend)


def detect(
    paths: str | Path | Iterable[str | Path],
    model: str | Path | Detector,
    *,
    device: str = "cpu",
    batch_size: int = 32,
) -> list[FileResult | FileError]:
    """Run the detector on one or many recordings; a bad file gives a ``FileError``, the rest go on."""
    det = model if not isinstance(model, (str, Path)) else load_detector(model, device=device, batch_size=batch_size,
                                                                        backend="torch")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return run_many(det, paths)
