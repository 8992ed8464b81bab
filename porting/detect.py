"""``port detect``: the family's detector (``porting.family.Detector``: windows -> batches -> stages -> results,
streamed) run over many recordings, each failure reported with its file while the others go on.

The option checks (device, backend, batch size, threshold) and the malloc tuning that keeps RSS flat on long
recordings are the engine's; what a window, a stage and a result are is the family's.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import family as registry
from .errors import AudioError, MalformedModelError, PortingError, UnsupportedModelError
from .io.stream import TruncatedAudioWarning
from .outputs import check_name, name_problem, spell


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


FILE_WARNINGS = (TruncatedAudioWarning,)
DEVICES = "cpu, cuda or cuda:N"
BACKENDS = ("auto", "torch", "onnx")  # and each family's own (``Family.backends``)


def backends() -> tuple[str, ...]:
    """Every ``--backend`` a registered family runs."""
    out = list(BACKENDS)
    for fam in registry.families().values():
        out += [b for b in getattr(fam, "backends", ()) if b not in out]
    return tuple(out)


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
    names = backends()
    if backend not in names:
        raise UnsupportedModelError(f"{spell('backend', backend)}: unknown backend; use {', '.join(names)}")
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



def stream_stages(path, rate: int, window_samples: int, hop_samples: int, batch_size: int, forward: Callable,
                  stages: tuple[str, ...], on_batch: Callable[[int], None] | None = None):
    """Windows -> batches -> stages, streamed, for a family whose windows start every ``hop_samples`` at ``rate``
    (``porting.io.stream``: a shorter tail scored alone, marked partial): each batch ``[B, L]`` through
    ``forward`` (-> {stage: tensor}), ``stages`` kept and concatenated. Returns (the window plan, {stage: tensor})."""
    from .io.stream import iter_windows, plan_recording

    plan = plan_recording(path, rate, window_samples, hop_samples)
    kept: dict[str, list] = {s: [] for s in stages}
    for batch in iter_windows(path, rate, window_samples, hop_samples, batch_size):
        out = forward(torch.from_numpy(batch.waveforms))
        for s in stages:
            kept[s].append(out[s])
        if on_batch is not None:
            on_batch(len(batch.starts))
    return plan, {s: torch.cat(v) for s, v in kept.items()}


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


def load_detector(model_path: str | Path, device: str = "cpu", batch_size: int | None = None, backend: str = "auto",
                  threshold: float = 0.5, **options):
    """The detector of ``model_path``'s family (``porting.family.Detector``). ``options`` are the family's own
    (``Family.options``; e.g. HF models: windows of ``window_s`` every ``hop_s``, the fbank code path, the
    transformers major followed); None means not given, and a family refuses those it does not take.
    ``threshold`` decides per-window or per-second calls where the family makes them (legacy's 0.5 by default)."""
    device = check_device(device)
    check_backend(backend)
    threshold = check_threshold(threshold)
    batch_size = check_batch_size(batch_size)
    check_name(model_path, "model", MalformedModelError)
    options = registry.given(options)
    return registry.for_model(model_path).detector(Path(model_path), device=device, batch_size=batch_size,
                                                    backend=backend, threshold=threshold, **options)


def check_positive(det, positive: str | None) -> str | None:
    """The label whose events to report (the family's rule: some need one named, others score their own)."""
    return det.check_positive(positive)


def detect(
    paths: str | Path | Iterable[str | Path],
    model: str | Path | registry.Detector,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    backend: str = "auto",
    threshold: float = 0.5,
    progress: bool = False,
    **options,
) -> list:
    """Run the detector on one or many recordings, with ``port detect``'s defaults; a bad file gives a
    ``FileError``, the rest go on. ``model`` is a path (loaded by ``load_detector``) or a loaded detector
    (then the other options but ``progress`` are its own). ``options``: the family's own (``load_detector``)."""
    det = model if not isinstance(model, (str, Path)) else load_detector(
        model, device=device, batch_size=batch_size, backend=backend, threshold=threshold, **options)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return run_many(det, paths, progress=progress)
