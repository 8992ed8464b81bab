"""The detector: recording -> stage A windows -> B mel dB -> C crop/pad -> normalize -> model
-> softmax -> confidence -> aggregate (golden/README.md §1-§5), batched and streamed.

Only ``porting.io.decode`` touches the filesystem; every other step is a pure function over
a batch of windows, so memory is bounded by ``batch_size`` whatever the recording's length.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from .families.orcahello.aggregate import Aggregate, AggregateConfig, aggregate
from .errors import AudioError, MalformedModelError, PortingError, UnsupportedModelError
from .events import Event, second_events
from .io.stream import TruncatedAudioWarning
from .outputs import check_name, name_problem, spell
from .families.orcahello.frontend.config import FrontendConfig
from .io.decode import AudioInfo, probe
from .families.orcahello.frontend.windows import iter_windows, plan_windows
from .families.orcahello.graph import StageGraph
from .families.orcahello.padfold import fold_pad
from .families.orcahello.winograd import NAME as WINOGRAD


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.mallopt, _LIBC.malloc_trim  # glibc only
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def tune_malloc(mmap_bytes: int = 32 << 20, trim_bytes: int = 256 << 20) -> None:
    """glibc settings for batch-sized buffers (Linux only; a no-op elsewhere); ``release_memory`` goes with it.

    Measured on a 20-min recording (1199 windows, rn18, 2 cores, AMD Zen 5), seconds / peak RSS at 10 % -> 100 %:

    * glibc's default (the mmap threshold rises with every large free): heap fragments between torch's and
      onnxruntime's threads, RSS climbs ~7 MB per batch (3.1 GiB after 2 hours, onnx).
    * a fixed 1 MiB mmap threshold (the previous setting): flat RSS, but every feature map is a fresh mmap, page-
      faulted and zeroed: torch 56.2 s / 569 MB, onnx 24.3 s / 771 MB.
    * 256 MiB thresholds, nothing else: torch 28.9 s, onnx 18.7 s, but RSS grows again (onnx 785 -> 1097 MB).
    * this: buffers up to 32 MiB reused from the heap, larger ones mmapped, and the heap's free pages handed back
      after each batch (``malloc_trim``): torch 35.0 s / 694 -> 696 MB, onnx 22.3 s / 765 -> 786 MB.
    """
    libc = _libc()
    if libc:
        libc.mallopt(-3, mmap_bytes)  # M_MMAP_THRESHOLD (fixed from now on)
        libc.mallopt(-1, trim_bytes)  # M_TRIM_THRESHOLD


def release_memory() -> None:
    """Hand the heap's free pages back to the OS (after a batch): keeps RSS flat on long recordings."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def _verified(model_path: Path) -> dict[str, bool]:
    """Artifact name -> passed, from the converted DIR's parity.json (empty when there is none)."""
    from .io import files
    from .errors import PortingError
    from .export import PARITY_NAME
    from .schema import PARITY, validate

    path = model_path / PARITY_NAME
    if not files.exists(path):
        return {}
    try:  # an unreadable or malformed parity.json verifies nothing (auto then runs eager torch)
        arts = validate(files.read_json(path, "parity.json"), PARITY, path)["artifacts"]
    except PortingError:
        return {}
    return {name: a["passed"] for name, a in arts.items()}


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


#: Warnings about a recording itself, reported with that file (the CLI prints them as it finishes the file).
FILE_WARNINGS = (TruncatedAudioWarning,)
DEVICES = "cpu, cuda or cuda:N"
BACKENDS = ("auto", "torch", "onnx", WINOGRAD)


def check_device(device) -> str:
    """``device`` as a torch device string, if it names one this machine has; one-line error otherwise.

    Checked before torch parses it (``torch.device("tpu")`` raises a long RuntimeError listing every backend
    torch knows, most of which porting never runs on).
    """
    text = str(device).strip()
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
    if m is None or (m.group(1) == "cpu" and m.group(2) not in (None, "0")):
        raise UnsupportedModelError(f"{spell('device', device)}: unknown device; use {DEVICES}")
    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedModelError(f"{spell('device', device)}: no CUDA device on this machine; "
                                        f"use {spell('device', 'cpu')}")
        n = torch.cuda.device_count()
        if m.group(2) is not None and int(m.group(2)) >= n:
            raise UnsupportedModelError(f"{spell('device', device)}: this machine has {n} CUDA device"
                                        f"{'s' if n != 1 else ''} (cuda:0 to cuda:{n - 1}); use one of them")
    return text


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UnsupportedModelError(f"{spell('backend', backend)}: unknown backend; use {', '.join(BACKENDS)}")
    return backend


#: The most windows one forward pass may take: beyond it a batch only costs memory (32 already keeps 2 cores busy;
#: measured per batch in tools/bench), and a typo such as 1000000000 would allocate until the machine dies.
MAX_BATCH = 1024


def check_batch_size(batch_size) -> int | None:
    """None (the family's default) or an int in [1, MAX_BATCH]; one-line error otherwise."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise UnsupportedModelError(f"{spell('batch_size', batch_size)}: windows per forward pass must be an integer "
                                    f"from 1 to {MAX_BATCH} (default 32; HF models 16)")
    return batch_size


def check_threshold(threshold) -> float:
    # `not 0 <= t <= 1` is also true for NaN (every comparison with NaN is false)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise UnsupportedModelError(f"{spell('threshold', threshold)}: the threshold is a probability; "
                                    "use a number in [0, 1] (legacy: 0.5)")
    return float(threshold)


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


@dataclass
class FileError:
    path: Path
    error: PortingError

    def message(self) -> str:
        """One line naming the file once, by the path it was given as: ``path: what is wrong; what to do``."""
        text = str(self.error)
        name = f"{self.path.name}: "
        if text.startswith(name) and not text.startswith(f"{self.path}: "):
            text = text[len(name):]  # named by its bare name (the legacy wav_filename): use the path given
        text = text if str(self.path) in text else f"{self.path}: {text}"
        return " ".join(text.split())  # one line even for a file name holding a newline

    def reason(self) -> str:
        """``message()`` without the leading path: what is wrong and what to do."""
        text, head = self.message(), " ".join(f"{self.path}: ".split()) + " "
        return text[len(head):] if text.startswith(head) else text

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
    folded: bool = False  # ``model`` reads only a window's own frames (porting.families.orcahello.padfold)
    _graph: StageGraph | None = field(default=None, init=False, repr=False)

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
        from .convert import load_model

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
                from .families.orcahello.winograd import winograd_model

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


_REISSUED: dict = {}  # warnings.warn_explicit's registry for what run_many passes on (each shown once, as usual)


def _recorded(caught: list) -> list:
    """Warnings caught while reading one file, each text once, in order."""
    seen, out = set(), []
    for w in caught:
        key = (w.category, str(w.message))
        if key not in seen:
            seen.add(key)
            out.append(w)
    return out


def _stderr_is_tty() -> bool:
    """The bar is drawn on a terminal only: in a log file or a pipe each redraw would stay as text (the leftover
    ``file.wav: 100%|...|`` lines after the results), and on a terminal ``leave=False`` clears it."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_many(det, paths: Iterable[str | Path], progress: bool = False,
             on_file: Callable[[object, list[str]], None] | None = None) -> list:
    """Run ``det`` on each path; a bad file gives a ``FileError`` and the others still run.

    Every file's window count is read from its header first (a file that fails there counts 0), so the
    progress bar (``progress``: tqdm on stderr when it is a terminal, windows and windows/s) starts at ``0/N`` and ends at ``N/N``;
    a file that fails midway advances it by the windows it did not score. ``on_file(result, warnings)`` is
    called as each file finishes, with the texts of the warnings about that file (``FILE_WARNINGS``, e.g. a
    truncated WAV), while the bar is cleared from the terminal; without ``on_file`` those warnings reach the
    caller as ordinary warnings. Returns the results in the order of ``paths``.
    """
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    plans: list[int | PortingError] = []
    caught: list[list] = []
    for p in paths:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                plans.append(int(det.n_windows(_lookable(p))))
            except PortingError as err:
                plans.append(err)
            except OSError as exc:  # a file that vanished or turned unreadable between two looks: that file only
                plans.append(_unreadable(p, exc))
        caught.append(rec)
    total = sum(n for n in plans if isinstance(n, int))
    out: list = []
    with tqdm(total=total, unit="win", disable=not (progress and _stderr_is_tty()), leave=False, dynamic_ncols=True) as bar:
        for p, plan, early in zip(paths, plans, caught):
            bar.set_description(p.name)
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                bar.update(n)

            with warnings.catch_warnings(record=True) as late:
                warnings.simplefilter("always")
                if isinstance(plan, PortingError):
                    res = FileError(p, plan)
                else:
                    try:
                        res = det.run(p, on_batch=step)
                    except PortingError as err:
                        res = FileError(p, err)
                    except OSError as exc:
                        res = FileError(p, _unreadable(p, exc))
            if isinstance(plan, int) and done < plan:
                bar.update(plan - done)
            out.append(res)
            mine = []
            for w in _recorded(early + late):
                if on_file is not None and issubclass(w.category, FILE_WARNINGS):
                    mine.append(str(w.message))
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_REISSUED,
                                           source=w.source)
            if on_file is not None:
                with tqdm.external_write_mode():
                    on_file(res, mine)
    return out


def _lookable(path: Path) -> Path:
    """``path`` if the OS can look it up; an ``AudioError`` for that file alone otherwise (a name over 255 bytes
    used to raise ``OSError`` before any file was scored, losing the batch)."""
    problem = name_problem(path)
    if problem:
        raise AudioError(f"{path}: {problem}; rename the file")
    return path


def _unreadable(path: Path, exc: OSError) -> AudioError:
    return AudioError(f"{path}: cannot read ({exc.strerror or type(exc).__name__}); check the file and its permissions")


def is_hf_model(model_path: str | Path) -> bool:
    """An HF model folder, or a folder ``port convert`` wrote from one."""
    from .families.hf.folder import is_hf_folder

    p = Path(model_path)
    if not p.is_dir():
        return False
    if is_hf_folder(p):
        return True
    from .io import files
    from .errors import PortingError

    try:
        cfg = files.read_json(p / "config.json", "the model config") if files.exists(p / "config.json") else None
    except PortingError:
        return False  # the loader reports it, in one line
    return isinstance(cfg, dict) and cfg.get("family") == "hf"


def load_detector(model_path: str | Path, device: str = "cpu", batch_size: int | None = None, backend: str = "auto",
                  window_s: float | None = None, hop_s: float | None = None, fbank_backend: str | None = None,
                  threshold: float = 0.5, transformers_semantics=None):
    """The detector for ``model_path``: ``porting.families.hf.detect.HFDetector`` for the HF family (windows of
    ``window_s``/``hop_s``), else the OrcaHello ``Detector`` (its windows are fixed: 2 s, hop 1 s; ``threshold``
    decides its per-second calls and events, legacy's 0.5 by default). ``transformers_semantics`` (HF models: 4 or
    5) overrides the transformers major an HF folder is ported with (``porting.families.hf.semantics``)."""
    device = check_device(device)
    check_backend(backend)
    threshold = check_threshold(threshold)
    batch_size = check_batch_size(batch_size)
    check_name(model_path, "model", MalformedModelError)
    if is_hf_model(model_path):
        from .families.hf.detect import HFDetector

        return HFDetector.load(model_path, device=device, backend=backend, window_s=window_s, hop_s=hop_s,
                               fbank_backend=fbank_backend, batch_size=batch_size or 16,
                               transformers_semantics=transformers_semantics)
    given = [spell(n) for n, v in (("window_s", window_s), ("hop_s", hop_s), ("fbank_backend", fbank_backend),
                                   ("transformers_semantics", transformers_semantics))
             if v is not None]
    if given:
        raise UnsupportedModelError(f"{'/'.join(given)}: the OrcaHello detector's frontend is fixed (2-s windows, "
                                    "hop 1 s, golden/README.md §1-§3); drop the option" + ("s" if len(given) > 1 else ""))
    return Detector.load(model_path, device=device, batch_size=batch_size or 32, backend=backend,
                         aggregate_cfg=AggregateConfig(threshold=threshold))


def check_positive(det, positive: str | None) -> str | None:
    """The label whose events to report: HF models need one named (``positive``), OrcaHello has its own."""
    classes = list(det.config.get("classes") or [])
    if getattr(det, "aggregate_cfg", None) is not None:  # OrcaHello: the config's positive class, fixed
        own = classes[det.positive_index] if classes else None
        if positive is not None and positive != own:
            raise UnsupportedModelError(f"{spell('positive', positive)}: this OrcaHello model scores its positive "
                                        f"class {own!r} (config.json positive_index); drop the option")
        return own
    if positive is not None and positive not in det.graph.classes:
        raise UnsupportedModelError(f"{spell('positive', positive)}: not a label of this model; use one of "
                                    f"{', '.join(det.graph.classes)}")
    return positive


def detect(
    paths: str | Path | Iterable[str | Path],
    model: str | Path | Detector,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    backend: str = "auto",
    threshold: float = 0.5,
    window_s: float | None = None,
    hop_s: float | None = None,
    fbank_backend: str | None = None,
    progress: bool = False,
    transformers_semantics: int | None = None,
) -> list:
    """Run the detector on one or many recordings, with ``port detect``'s defaults; a bad file gives a
    ``FileError``, the rest go on. ``model`` is a path (loaded by ``load_detector``) or a loaded detector
    (then the other options but ``progress`` are its own)."""
    det = model if not isinstance(model, (str, Path)) else load_detector(
        model, device=device, batch_size=batch_size, backend=backend, window_s=window_s, hop_s=hop_s,
        fbank_backend=fbank_backend, threshold=threshold, transformers_semantics=transformers_semantics)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return run_many(det, paths, progress=progress)
