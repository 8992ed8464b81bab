"""Read a PANNs checkpoint as data: the state dict, which body it is, its frontend configuration and its labels.

The published checkpoints are ``torch.save({'iteration', 'model': state_dict, 'sampler': {...}})`` (training's
``main.py``); the sampler holds numpy arrays, so ``torch.load(weights_only=True)`` fails on them (autrainer issue
#66) and panns_inference falls back to full unpickling. Here the file goes through porting's restricted unpickler
(``porting.io.unpickle``): nothing it names is imported or called, numpy arrays become inert records, and a
dangerous global anywhere (a payload in ``sampler``) refuses the whole file. Both containers are read: the legacy
stream of torch < 1.6 (the 2019-2020 checkpoints) and the zip of later versions. A bare state dict, and one saved
from ``nn.DataParallel`` (every key under ``module.``), are read too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path


from ...errors import MalformedModelError, UnsupportedModelError
from .bodies import BODIES, body_of
from .presets import BY_NAME, MATCH, PRESETS, identify

FRONTEND_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                 "logmel_extractor.melW")
SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
AUDIOSET_CLASSES = 527
LABELS_CSV = Path(__file__).with_name("class_labels_indices.csv")


def looks_like_panns(path: Path) -> bool:
    """Cheap test for ``recognise``: a file whose first 4 MiB name the stored mel filterbank (the pickle holding the
    keys comes first in both torch containers). The read itself checks everything."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(4 << 20)
    except OSError:
        return False
    return b"logmel_extractor.melW" in head and b"spectrogram_extractor" in head


@dataclass
class PannsSpec:
    """What a checkpoint holds and what the port adds to it."""

    path: Path
    sha256: str
    container: str  # "torch-zip" | "torch-legacy" | ...
    wrapper: dict  # the top-level entries besides the state dict (iteration, sampler: described, never used)
    body: str
    n_fft: int
    n_mels: int
    state: dict
    frontend: dict  # presets.Preset.record(...)
    labels: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.labels)


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names in index order (the CSV shipped with the package; AudioSet ontology,
    CC BY 4.0, as audioset_tagging_cnn's metadata/class_labels_indices.csv)."""
    with open(LABELS_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def read_state(path: Path) -> tuple[dict, str, str, dict, list[str]]:
    """``(state dict, sha256, container, other top-level entries described, notes)``, nothing executed."""
    from ...io.unpickle import read_state_dict

    f = read_state_dict(path, ("model",), "a PANNs checkpoint")
    return f.state, f.sha256, f.container, f.wrapper, f.notes


def _frontend(path: Path, state: dict, n_fft: int, preset: str | None, sample_rate: int | None,
              hop_size: int | None) -> dict:
    """The frontend record: the preset the stored filterbank identifies, or the one the user names."""
    found, gap = identify(state["logmel_extractor.melW"].numpy())
    if preset is not None:
        if preset not in BY_NAME:
            raise UnsupportedModelError(f"--preset {preset}: unknown; use one of {', '.join(BY_NAME)}")
        chosen = BY_NAME[preset]
        if found is not None and found is not chosen:
            raise MalformedModelError(f"{path}: its mel filterbank is the {found.name} preset's ({found.sample_rate} Hz), "
                                      f"not {preset}'s; drop --preset or check the file")
        if chosen.window_size != n_fft:
            raise MalformedModelError(f"{path}: n_fft {n_fft} (conv_real), but preset {preset} has {chosen.window_size}")
        rec = chosen.record("--preset" if found is None else f"mel filterbank (max |d| {gap:.1e}) and --preset")
    elif found is not None:
        rec = found.record(f"mel filterbank equals the published {found.name} one (max |d| {gap:.1e} <= {MATCH:g}); "
                           "hop_size is that preset's (not stored in the file)")
    elif sample_rate is None or hop_size is None:
        near = f" (closest: {gap:.1e} off)" if gap != float("inf") else ""
        raise UnsupportedModelError(
            f"{path}: its mel filterbank matches no published PANNs configuration ({', '.join(p.name for p in PRESETS)})"
            f"{near}; pass --sample-rate HZ and --hop-size SAMPLES (the values it was trained with)")
    else:
        rec = {"preset": None, "sample_rate": int(sample_rate), "window_size": n_fft, "hop_size": int(hop_size),
               "mel_bins": int(state["logmel_extractor.melW"].shape[1]), "fmin": None, "fmax": None, "ref": 1.0,
               "amin": 1e-10, "top_db": None, "identified_by": "--sample-rate and --hop-size"}
    if sample_rate is not None and sample_rate != rec["sample_rate"]:
        raise MalformedModelError(f"{path}: --sample-rate {sample_rate}, but its mel filterbank was made for "
                                  f"{rec['sample_rate']} Hz; drop --sample-rate")
    if hop_size is not None:
        if not 1 <= hop_size <= n_fft:
            raise UnsupportedModelError(f"--hop-size {hop_size}: must be 1 to n_fft ({n_fft})")
        rec = {**rec, "hop_size": int(hop_size), "identified_by": rec["identified_by"] + "; hop from --hop-size"}
    return rec


def read_panns(path: str | Path, preset: str | None = None, sample_rate: int | None = None,
               hop_size: int | None = None) -> PannsSpec:
    """Read, identify and check a PANNs checkpoint (one-line errors naming the key or option)."""
    from ...io.weights import check_weights

    path = Path(path)
    state, sha, container, wrapper, notes = read_state(path)
    for k in FRONTEND_KEYS:
        if k not in state:
            raise MalformedModelError(f"{path}: no {k}; a PANNs checkpoint stores its frontend (torchlibrosa's STFT "
                                      "kernels and mel filterbank): pass the full training checkpoint")
    body = body_of(state)
    if body is None:
        sample = ", ".join(sorted(k for k in state if k not in FRONTEND_KEYS)[:3])
        raise UnsupportedModelError(f"{path}: its keys ({sample}, ...) match no PANNs body porting rebuilds "
                                    f"({', '.join(BODIES)})")
    state = check_weights(state, path)
    real = state[FRONTEND_KEYS[0]]
    n_fft = int(real.shape[-1])
    if real.dim() != 3 or tuple(real.shape[:2]) != (n_fft // 2 + 1, 1):
        raise MalformedModelError(f"{path}: {FRONTEND_KEYS[0]} has shape {list(real.shape)}; torchlibrosa's is "
                                  "[n_fft // 2 + 1, 1, n_fft]")
    mel_w = state["logmel_extractor.melW"]
    if mel_w.dim() != 2 or mel_w.shape[0] != n_fft // 2 + 1:
        raise MalformedModelError(f"{path}: logmel_extractor.melW has shape {list(mel_w.shape)}; expected "
                                  f"[{n_fft // 2 + 1}, n_mels]")
    classes = int(state["fc_audioset.weight"].shape[0]) if "fc_audioset.weight" in state else 0
    frontend = _frontend(path, state, n_fft, preset, sample_rate, hop_size)
    labels = audioset_labels() if classes == AUDIOSET_CLASSES else [f"class_{i}" for i in range(classes)]
    if classes != AUDIOSET_CLASSES:
        notes.append(f"{classes} classes (not AudioSet's 527): labels class_0..class_{classes - 1}")
    from ...io.weights import check_keys
    from .model import PannsTagger

    want = PannsTagger(body, n_fft, int(mel_w.shape[1]), max(classes, 1), frontend).state_dict()
    check_keys(path, state, want, "pass the checkpoint as trained")
    return PannsSpec(path, sha, container, wrapper, body, n_fft, int(mel_w.shape[1]), state, frontend, labels, notes)
