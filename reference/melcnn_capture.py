"""Capture the melcnn family goldens: run Project-Echo's PyTorch+Hydra CNN classifiers unchanged, record every stage.

"melcnn" = CNN audio classifiers trained with DataBytes-Organisation/Project-Echo's PyTorch framework
(``src/Prototypes/engine/torch_impl/``) on librosa mel spectrograms. Runs under the reference interpreter (torch
2.9.1, torchvision 0.24.1, librosa 0.11.0, numpy 1.26.4, omegaconf 2.3.0; reference/melcnn/requirements.txt) with the
UPSTREAM code passed as ``--echo DIR`` (a folder holding Project-Echo's torch_impl files at the commits of
``ECHO_FILES``, same relative paths; their sha256s are checked and recorded in every case). Nothing upstream is
copied into this repository and nothing is re-implemented: the harness builds the upstream classes, loads weights
with ``load_state_dict(strict=True)``, produces every model input with the upstream ``SpectrogramDataset.__getitem__``
and records with hooks (module hooks; and wrappers around the ``librosa.feature.melspectrogram`` /
``librosa.power_to_db`` that dataset.py calls). It never imports ``porting``; only ``porting/synth.py`` (the seeded
weight recipe) and ``porting/parity/fingerprint.py`` are loaded by file path. The flow recorded per window is what a
Project-Echo evaluation does with one clip::

    ds = SpectrogramDataset([path], [0], cfg); ds.is_train = False     # dataset.py@b08bebb (never sets is_train)
    x, _ = ds[0]           # librosa.load(sr=cfg.data.sample_rate, mono=True) -> crop/zero-pad to the clip ->
                           # melspectrogram -> power_to_db(ref=np.max, top_db) -> per-clip min-max -> (1, n_mels, T)
    model = EfficientNetV2ArcFace(...); model.load_state_dict(torch.load("best_<model.name>.pth")); model.eval()
    out = model(x[None])   # Linear head: logits; CosineLinear head: cos(theta), scored as s * cos(theta)

Here ``librosa.load`` (as dataset.py calls it) is wrapped to return one window of the recording (the recording is
read once with the same call, then sliced), so the upstream crop/pad/mel/dB/min-max code runs on each window.

Subcommands (golden/melcnn/README.md documents the store)::

    python reference/melcnn_capture.py audio --out golden/melcnn/audio
    python reference/melcnn_capture.py models --echo ECHO --store golden/melcnn --cache ~/melcnn-cache [--model NAME ...]
    python reference/melcnn_capture.py isa-check --echo ECHO --store golden/melcnn --cache ~/melcnn-cache [--model ...]
    python reference/melcnn_capture.py capture --echo ECHO --store golden/melcnn --case effv2_s_cosine:birds44k1 [...]
    python reference/melcnn_capture.py fingerprint --store golden/melcnn
    python reference/melcnn_capture.py env --store golden/melcnn
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness_common.py beside this file
from harness_common import audio_record, sha256_file, window_plan, window_priority  # noqa: E402
from harness_common import atomic_write as _atomic_write, hann_burst as _hann_burst  # noqa: E402
from harness_common import json_bytes as _json_bytes, load_by_path as _load_by_path  # noqa: E402
from harness_common import platform_record as _platform, seeded as _seeded, state_numpy  # noqa: E402
from harness_common import tensor_dtype as _dtype  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAMILY = "melcnn"
HARNESS_FILE = "reference/melcnn_capture.py"
SYNTH_FILE = "porting/synth.py"
THREADS = 2
NOTE_FLOATS = "JSON numbers are the float32 values promoted to double, written with round-trip precision (exact)"
DEFAULT_ECHO = Path("/work/echo-cache/torch_impl")

# The upstream code this harness runs: DataBytes-Organisation/Project-Echo, src/Prototypes/engine/torch_impl/<path>,
# each file at its own commit (the versions that fit together; golden/melcnn/README.md "Upstream").
ECHO_REPO = "https://github.com/DataBytes-Organisation/Project-Echo"
ECHO_PREFIX = "src/Prototypes/engine/torch_impl/"
ECHO_FILES = {
    "model/effv2.py": ("2c1440ec6c283ccfc0d171643e1c9def042bdc63",
                       "3dfa329b93189a6fec16aa895ed9bb6442d23427a17657d73bea157bf007dbaf"),
    "model/utils.py": ("e042c6e7ad7f8ea86f8ff71b6435d89048c1ad8d",
                       "953efa982596636a387493b4f4fdb3abaab3e270e1daea10609de519b4c0f176"),
    "model/panns_cnn14.py": ("9ccf8f4f7fdc5f5d737d4e952e151a3622d0fe9d",
                             "299727155469ecc3d5ad5129cdd7dd9dae70e0b82f05b8f5244b46954ab3eb05"),
    "dataset.py": ("b08bebb2a99535978b94d7535bc420d920954699",
                   "1547258479a5723a5b8f64cf50452dfeb4f5a56e8ee7d0f09f9bddde3d136761"),
    "config/config.yaml": ("76e6263ab408c7bc70a95e314b53bc6be362ec73",
                           "dfa3a09d128bb7b65e099d1154a14264499708966dc07a23108d7f1c9ddf1aaf"),
    "config/model/efficientnet_v2.yaml": ("2db30a69aa794bdafd5ba854daced7faa0e67080",
                                          "230679f4045fb58fc084036ed53245c2a106a5ba34787a79b00486f02c7551be"),
    "model/ghost_effv2.py": ("4a9a72f31a01f11b6686f59255b014be2207b58d",
                             "5763d37e94f722e6065df39e1fec1e804304a86b3fc35276a67ec5f5be8efbf4"),
    "config/model/ghost_efficientnet_v2.yaml": ("76e6263ab408c7bc70a95e314b53bc6be362ec73",
                                                "2e6133fcb5f0c3955611ab6b23b90933a12383a2e674bb68d57a0aeade451729"),
}
# Modules the upstream files import at module level that the reference interpreter may lack; each missing one is
# replaced by an inert stub (nothing the captured inference path calls: plotting, UMAP, progress bars, disk cache).
STUBBABLE = ("umap", "matplotlib", "matplotlib.pyplot", "tqdm", "tqdm.auto", "diskcache")

# Six plausible class names (sorted, as dataset.index_directory sorts the class directories)
CLASS_NAMES = ("Acanthiza pusilla", "Cacatua galerita", "Dacelo novaeguineae", "Gymnorhina tibicen",
               "Malurus cyaneus", "Rhipidura leucophrys")
NUM_CLASSES = len(CLASS_NAMES)

DATA_48K = {"audio_clip_duration": 5, "sample_rate": 48000, "n_fft": 2048, "hop_length": 923, "n_mels": 260,
            "fmin": 20, "fmax": 13000, "top_db": 80}  # config.yaml@76e6263's data section
DATA_32K_3S = {"audio_clip_duration": 3, "sample_rate": 32000, "n_fft": 1024, "hop_length": 320, "n_mels": 128,
               "fmin": 50, "fmax": 14000, "top_db": 80}
DATA_32K_5S = {"audio_clip_duration": 5, "sample_rate": 32000, "n_fft": 1024, "hop_length": 320, "n_mels": 64,
               "fmin": 50, "fmax": 14000, "top_db": 80}
DATA_32K_4S = {"audio_clip_duration": 4, "sample_rate": 32000, "n_fft": 1024, "hop_length": 320, "n_mels": 96,
               "fmin": 50, "fmax": 14000, "top_db": 80}
DATA_KEYS = tuple(DATA_48K)

# name -> the run: data values, training.use_arcface, the model section (None: efficientnet_v2.yaml@2db30a6 as is;
# a str: that upstream yaml of ECHO_FILES as is), the upstream class and its constructor kwargs, synth seed,
# M.features module (+ "features_hook": "pre" for the input of that module, else its output), head kind
MODELS = {
    "effv2_s_cosine": {
        "data": DATA_48K, "use_arcface": "arcface", "model_cfg": None,
        "module": "model.effv2", "class": "EfficientNetV2ArcFace",
        "ctor": {"model_name": "efficientnet_v2_s", "pretrained": False, "num_classes": NUM_CLASSES, "use_arcface": True,
                 "in_channels": 1, "trainable_blocks": -1},
        "seed": 11, "features": "features", "head": "cosine",
    },
    "effv2_s_linear": {
        "data": DATA_32K_3S, "use_arcface": None,
        "model_cfg": {"name": "efficientnet_v2_linear",
                      "params": {"model_name": "efficientnet_v2_s", "pretrained": True,
                                 "num_classes": "${data.num_classes}", "use_arcface": False}},
        "module": "model.effv2", "class": "EfficientNetV2ArcFace",
        "ctor": {"model_name": "efficientnet_v2_s", "pretrained": False, "num_classes": NUM_CLASSES, "use_arcface": False,
                 "in_channels": 1, "trainable_blocks": -1},
        "seed": 12, "features": "features", "head": "linear",
    },
    "cnn14_linear": {
        "data": DATA_32K_5S, "use_arcface": None,
        # panns_cnn14.yaml@2303a59 plus model_name (it has none, and Model dispatches on it) and num_classes for
        # its classes_num (the class takes num_classes)
        "model_cfg": {"name": "panns_cnn14",
                      "params": {"model_name": "panns_cnn14", "pretrained": True,
                                 "num_classes": "${data.num_classes}", "use_arcface": False}},
        "module": "model.panns_cnn14", "class": "PannsCNN14ArcFace",
        "ctor": {"num_classes": NUM_CLASSES, "pretrained": False, "use_arcface": False},
        "seed": 13, "features": "cnn.conv_block6", "head": "linear",
    },
    "ghost_cosine": {
        # config.yaml@76e6263's own default model group (defaults: [model: ghost_efficientnet_v2, ...]) as is; its
        # use_qat: true is the QAT wrapping main.py applies for training/export: the float model is what is captured
        "data": DATA_32K_4S, "use_arcface": "arcface", "model_cfg": "config/model/ghost_efficientnet_v2.yaml",
        "module": "model.ghost_effv2", "class": "GhostEfficientNetV2",
        "ctor": {"num_classes": NUM_CLASSES, "width_mult": 1.0, "depth_mult": 1.0, "drop_rate": 0.1, "use_arcface": True},
        # M.features: the input of backbone[-1] (the pool Sequential = model.pool): the last Ghost block's output
        "seed": 14, "features": "backbone.41", "features_hook": "pre", "head": "cosine",
    },
}
RECORDING = "birds44k1.wav"
RECORDINGS = {RECORDING: (44100, 1, 23.0, "WAV", "PCM_16")}
NUM_BATCHES_TRACKED = 100_000
BATCH = 4  # the all.* batched run: DataLoader(batch_size=BATCH, shuffle=False) over the windows
# Conditioning of the fixed 0-D/1-D tensors (recorded in models/<name>.json "conditioning")
BN_WEIGHT = "1 + 0.1*n"
BN_BIAS_OFFSET = 1.5  # BatchNorms followed by ReLU/SiLU: 1.5 + 0.1*n; the others (projections): 0.1*n
SMALL_BIAS = "0.05*n"  # SE fc1/fc2 biases, CNN14 cnn.fc1.bias
HEAD_TARGET_SPREAD = 0.5  # linear head: class targets linspace(-x, x) over the classes (permuted) in logit space
# ... plus one offset for every class: the softmax is unchanged, and the logit rows are not centred on 0 (a trained
# head's are not; a centred row makes the row rule's relative part vanish, so the float32 noise of CNN14's
# 2048-channel convs, ~1e-5 of the summed magnitudes, met an absolute 1e-5 floor: margin 0.97 with SSE4.1 kernels)
HEAD_LOGIT_OFFSET = 3.0
# weight gain of the last BatchNorm before the head (Linear heads only): the generated head weight has a fixed scale
# and the pooled embedding varies little between clips, so without it the softmax is nearly flat
HEAD_BN_GAIN = {"effv2_s_linear": 5.0, "cnn14_linear": 2.0}
# GhostEfficientNetV2's LayerScale gammas ([1, C, 1, 1]; upstream init 1e-5, trained ones are larger): stored in the
# fixed tensors, LAYERSCALE_BASE + 0.1*n per channel (same rng rule as the BatchNorms)
LAYERSCALE_BASE = 0.5
# Cosine heads whose weight is conditioned (stored in the fixed tensors) instead of generated: each class vector is the
# calibration embeddings' mean direction plus ALIGN_NOISE times a seeded random unit vector, so cos θ sits near
# 1/sqrt(1 + ALIGN_NOISE^2) as a trained ArcFace head's does for its class, not near 0 as random 256-d vectors do
# (cos θ ~ 0.1 made s·cos θ's rows small against the float32 noise of the body: 1.14 of the row rule with forced
# kernels)
COSINE_HEAD_ALIGN = {"ghost_cosine": 0.8}
NOISE_SEED = 20240
N_CAL_SCENES = 6
FORCED_ISA_ENV = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}
FORCED_ISA_LIMIT = 5e-6


# ------------------------------------------------------------------------------------------ helpers


def load_synth():
    """porting/synth.py by file path (numpy only; porting itself is never imported)."""
    return _load_by_path("_melcnn_synth", ROOT / SYNTH_FILE)


def _echo_dir(echo: Path) -> Path:
    echo = Path(echo).expanduser().resolve()
    if not (echo / "dataset.py").is_file() and (echo / ECHO_PREFIX / "dataset.py").is_file():
        echo = echo / ECHO_PREFIX  # a clone's root was given
    return echo


def echo_hashes(echo: Path) -> dict:
    """{file: {commit, sha256}} of the upstream files in ``echo``; refuses any other version."""
    echo = _echo_dir(echo)
    got = {}
    for rel, (commit, want) in ECHO_FILES.items():
        p = echo / rel
        if not p.is_file():
            sys.exit(f"error: --echo {echo}: no {rel}; put Project-Echo's {ECHO_PREFIX}{rel} at {commit[:7]} there")
        h = sha256_file(p)
        if h != want:
            sys.exit(f"error: {p} has sha256 {h}, not Project-Echo {ECHO_PREFIX}{rel}@{commit[:7]}'s {want}")
        got[rel] = {"commit": commit, "sha256": h}
    return got


_STUBBED: list[str] = []


def _install_stubs() -> list[str]:
    """Inert stand-ins for the module-level imports the inference path never uses, only where they are missing."""
    if _STUBBED or "_melcnn_stubs_done" in sys.modules:
        return list(_STUBBED)
    for name in STUBBABLE:
        top = name.split(".")[0]
        if name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if found and top not in _STUBBED:
            continue
        mod = types.ModuleType(name)
        mod.__doc__ = "inert stub installed by reference/melcnn_capture.py (not used by the captured inference path)"
        if name == "tqdm.auto":
            mod.tqdm = lambda it=None, *a, **k: it
        if name == "diskcache":
            class Cache:  # noqa: D401 - never constructed (use_disk_cache False)
                def __init__(self, *a, **k):
                    raise RuntimeError("diskcache is stubbed by the melcnn harness")
            mod.Cache = Cache
        sys.modules[name] = mod
        if "." in name:
            setattr(sys.modules[top], name.split(".", 1)[1], mod)
        if top not in _STUBBED:
            _STUBBED.append(top)
    sys.modules["_melcnn_stubs_done"] = types.ModuleType("_melcnn_stubs_done")
    return list(_STUBBED)


def load_echo(echo: Path):
    """(model.effv2, model.panns_cnn14, model.ghost_effv2, dataset) imported from ``echo`` (sha256-checked), with ``echo`` on sys.path."""
    echo = _echo_dir(echo)
    echo_hashes(echo)
    os.environ.setdefault("MPLBACKEND", "Agg")
    _install_stubs()
    sys.path.insert(0, str(echo))
    import importlib

    mods = {n: importlib.import_module(n)
            for n in ("model.effv2", "model.panns_cnn14", "model.ghost_effv2", "dataset", "model.utils")}
    for n, m in mods.items():
        want = (echo / (n.replace(".", "/") + ".py")).resolve()
        if Path(m.__file__).resolve() != want:
            sys.exit(f"error: {n} was imported from {m.__file__}, not {want}")
    return mods


def _versions() -> dict:
    import librosa
    import soundfile
    import soxr
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "scipy": importlib.metadata.version("scipy"),
        "soxr": soxr.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "omegaconf": importlib.metadata.version("omegaconf"),
        "safetensors": importlib.metadata.version("safetensors"),
    }


# ------------------------------------------------------------------------------------------ audio


def _gate(t, t0, t1, ramp=0.005):
    up = np.clip((t - t0) / ramp, 0, 1)
    down = np.clip((t1 - t) / ramp, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))


def _chirp(t, t0, dur, f0, f1, amp, harmonics=(1.0,), shape="exp"):
    """A gated frequency sweep f0 -> f1 over [t0, t0+dur] (exponential or linear), with harmonics."""
    tt = np.clip(t - t0, 0, dur)
    if shape == "exp":
        k = np.log(f1 / f0) / dur
        phase = 2 * np.pi * f0 * (np.exp(k * tt) - 1) / k
    else:
        phase = 2 * np.pi * (f0 * tt + 0.5 * (f1 - f0) / dur * tt * tt)
    env = _gate(t, t0, t0 + dur, min(0.01, dur / 4))
    return amp * env * sum(a * np.sin((h + 1) * phase) for h, a in enumerate(harmonics))


def _trill(t, t0, dur, fc, depth, rate, amp):
    """A warbling whistle: fc with sinusoidal FM of ``depth`` Hz at ``rate`` Hz, amplitude-modulated per note."""
    tt = np.clip(t - t0, 0, dur)
    phase = 2 * np.pi * (fc * tt - depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * tt))
    am = 0.5 - 0.5 * np.cos(2 * np.pi * rate * tt)
    return amp * _gate(t, t0, t0 + dur, 0.01) * am * np.sin(phase)


def synth_audio(name: str) -> np.ndarray:
    """The float64 signal [frames, 1] of the recording (seeded; before quantisation)."""
    sr, ch, dur, _, _ = RECORDINGS[name]
    n = int(round(dur * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(np.random.SeedSequence([27182, zlib.crc32(name.encode())]))
    x = np.zeros(n)
    # 0-4 s: a sequence of descending whistled chirps (fairy-wren like), 4-4.6 s a rising sweep with harmonics
    for i in range(8):
        t0 = 0.2 + i * 0.45
        x += _chirp(t, t0, 0.18, 7500.0 - 300 * i, 4200.0 - 150 * i, 0.18 + 0.02 * (i % 3), (1.0, 0.25))
    x += _chirp(t, 4.0, 0.6, 900.0, 5200.0, 0.25, (1.0, 0.5, 0.25, 0.12))
    # 5-8 s: harmonic calls (magpie-like carols): stacked harmonics with glides, two voices
    for t0, f0, f1, d in ((5.0, 620.0, 780.0, 0.5), (5.6, 780.0, 540.0, 0.45), (6.2, 440.0, 660.0, 0.7),
                          (7.1, 980.0, 820.0, 0.55)):
        x += _chirp(t, t0, d, f0, f1, 0.12, (1.0, 0.7, 0.5, 0.35, 0.2, 0.1), shape="lin")
    # 8-10.5 s: a trill (1.8-2.6 kHz warble) over pink-ish background noise
    x += _trill(t, 8.1, 2.2, 3200.0, 400.0, 14.0, 0.2)
    # 10.5-12 s: tone bursts (Hann) at several frequencies and levels
    for i, (f, a) in enumerate(((1500.0, 0.3), (2500.0, 0.1), (4000.0, 0.35), (6000.0, 0.05), (9000.0, 0.2))):
        x += _hann_burst(t, 10.5 + 0.3 * i, 0.22, f, a)
    # 12-13.5 s: a loud harsh call (cockatoo-like screech): noise-modulated harmonic stack, peak ~0.85
    screech = _chirp(t, 12.1, 1.1, 1100.0, 1350.0, 1.0, (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3), shape="lin")
    screech *= 1.0 + 0.5 * rng.standard_normal(n) * _gate(t, 12.1, 13.2)
    x += 0.85 * screech / max(np.abs(screech).max(), 1e-9)
    # 13.5-15 s: quiet stretch (noise floor 3e-5), with a faint high whistle at 14.2 s
    x += _chirp(t, 14.2, 0.3, 8500.0, 8000.0, 0.01)
    # 15-18.5 s: laughing call (kookaburra-like): repeated rising-falling notes, accelerating
    tk = 15.0
    for i in range(12):
        d = 0.16 - 0.007 * i
        x += _chirp(t, tk, d, 600.0 + 40 * i, 1400.0 + 60 * i, 0.22, (1.0, 0.6, 0.3), shape="lin")
        tk += d + 0.09 - 0.004 * i
    # 18.5-20 s: broadband noise bursts (white and first-difference)
    white = rng.standard_normal(n)
    x += 0.12 * _gate(t, 18.6, 18.9) * white
    x += 0.1 * _gate(t, 19.3, 19.5) * np.diff(white, prepend=0.0) / np.sqrt(2)
    # 20-23 s (the tail): overlapping chirps from two birds, and a 15 kHz tone above every fmax
    for i in range(6):
        x += _chirp(t, 20.1 + 0.42 * i, 0.2, 3000.0 + 500 * i, 6000.0 - 300 * i, 0.15, (1.0, 0.3))
        x += _chirp(t, 20.3 + 0.47 * i, 0.12, 2200.0, 1800.0, 0.1, (1.0, 0.4, 0.2), shape="lin")
    x += 0.03 * _gate(t, 21.0, 22.5) * np.sin(2 * np.pi * 15000.0 * t)
    # background: brown-ish noise (wind) at varied level, 3e-5 in the quiet stretch
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.linspace(brown[0], brown[-1], n)  # remove the drift
    brown /= np.abs(brown).max()
    level = 0.01 + 0.02 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 7.0))
    quiet = _gate(t, 13.5, 15.0, 0.05)
    floor = level * (1 - quiet) + 3e-5 * quiet
    x += floor * (0.5 * brown + 0.5 * rng.standard_normal(n))
    return x[:, None]


def write_recording(name: str, out_dir: Path) -> Path:
    """Quantise exactly (PCM_16 codes chosen here) and write."""
    import soundfile as sf

    sr, ch, _, fmt, subtype = RECORDINGS[name]
    x = synth_audio(name)
    if np.abs(x).max() >= 1.0:
        raise RuntimeError(f"{name}: the signal clips (peak {np.abs(x).max():.3f})")
    data = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    path = out_dir / name
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=ch, format=fmt, subtype=subtype) as f:
        f.write(data)
    back, _ = sf.read(str(path), dtype=np.int16, always_2d=True)
    if not np.array_equal(back, data):
        raise RuntimeError(f"{path}: read-back differs from what was written")
    return path


def recording_file(store: Path, rec: str) -> str:
    for r in RECORDINGS:
        if rec in (r, Path(r).stem) and (store / "audio" / r).is_file():
            return r
    sys.exit(f"error: no recording {rec!r} in {store}/audio (one of {sorted(RECORDINGS)}); run `audio` first")


def calibration_clips(name: str) -> tuple[list[np.ndarray], list[str]]:
    """Calibration waveforms at the model's rate, distinct from the golden recording: seeded synthetic scenes of one
    clip each (random chirps, harmonic calls, bursts over noise), one shorter scene (zero-padded by the upstream
    code), and two noise clips."""
    data = MODELS[name]["data"]
    sr = data["sample_rate"]
    n = int(data["audio_clip_duration"] * sr)
    clips, names = [], []
    for k in range(N_CAL_SCENES):
        rng = np.random.default_rng(np.random.SeedSequence([NOISE_SEED, sr, k]))
        m = n if k < N_CAL_SCENES - 1 else int(0.6 * n)
        t = np.arange(m) / sr
        dur = m / sr
        x = 0.005 * rng.standard_normal(m)
        for _ in range(int(rng.integers(4, 10))):
            t0 = float(rng.uniform(0, dur - 0.3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                f0, f1 = sorted(rng.uniform(800, 9000, 2))[:: 1 if rng.random() < 0.5 else -1]
                x += _chirp(t, t0, float(rng.uniform(0.05, 0.3)), f0, f1, float(rng.uniform(0.03, 0.3)), (1.0, 0.3))
            elif kind == 1:
                f0 = float(rng.uniform(300, 1200))
                x += _chirp(t, t0, float(rng.uniform(0.2, 0.6)), f0, f0 * float(rng.uniform(0.7, 1.4)),
                            float(rng.uniform(0.03, 0.15)), (1.0, 0.6, 0.4, 0.2), shape="lin")
            else:
                x += _hann_burst(t, t0, float(rng.uniform(0.1, 0.3)), float(rng.uniform(500, 10000)),
                                 float(rng.uniform(0.02, 0.3)))
        clips.append(x.astype(np.float32))
        names.append(f"scene{k}" + ("(0.6 clip)" if m < n else ""))
    rng = np.random.default_rng(np.random.SeedSequence([NOISE_SEED, sr, 99]))
    clips.append((0.05 * rng.standard_normal(n)).astype(np.float32))
    names.append("noise:white 0.05")
    brown = np.cumsum(rng.standard_normal(n))
    brown = brown - np.linspace(brown[0], brown[-1], n)
    clips.append((0.2 * brown / np.abs(brown).max()).astype(np.float32))
    names.append("noise:brown peak 0.2")
    return clips, names


# ------------------------------------------------------------------------------------ config, labels


def compose_config(echo: Path, name: str):
    """The run's composed config as Hydra holds it before the task runs (written to .hydra/config.yaml):
    the model group first (defaults `[model: ..., _self_]`: _self_ last), then config.yaml@76e6263 without
    `defaults`/`hydra`, with this run's data values and training.use_arcface; data.num_classes -1, unresolved."""
    from omegaconf import OmegaConf

    echo = _echo_dir(echo)
    spec = MODELS[name]
    base = OmegaConf.load(echo / "config" / "config.yaml")
    if spec["model_cfg"] is None:
        model = OmegaConf.load(echo / "config" / "model" / "efficientnet_v2.yaml")
    elif isinstance(spec["model_cfg"], str):
        if spec["model_cfg"] not in ECHO_FILES:
            raise RuntimeError(f"{spec['model_cfg']} is not a pinned upstream file")
        model = OmegaConf.load(echo / spec["model_cfg"])
    else:
        model = OmegaConf.create(copy.deepcopy(spec["model_cfg"]))
    body = OmegaConf.to_container(base, resolve=False)
    del body["defaults"], body["hydra"]
    for k, v in spec["data"].items():
        if k not in body["data"]:
            raise RuntimeError(f"config.yaml has no data.{k}")
        body["data"][k] = v
    body["training"]["use_arcface"] = spec["use_arcface"]
    cfg = OmegaConf.create({"model": OmegaConf.to_container(model, resolve=False), **body})
    return cfg


def config_yaml(echo: Path, name: str) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(compose_config(echo, name))  # what hydra's _save_config writes (resolve=False)


def runtime_config(echo: Path, name: str):
    """The config as main.py holds it at runtime: num_classes set from the class directories (struct off)."""
    from omegaconf import OmegaConf

    cfg = compose_config(echo, name)
    OmegaConf.set_struct(cfg, False)
    cfg.data.num_classes = NUM_CLASSES
    return cfg


def dataset_config(echo: Path, name: str):
    """runtime_config with system.use_disk_cache False (the harness never caches)."""
    cfg = runtime_config(echo, name)
    cfg.system.use_disk_cache = False
    return cfg


def head_scale(cfg) -> tuple[float | None, str | None]:
    ua = cfg.training.use_arcface
    if ua is None:
        return None, None
    key = {"arcface": "training.arcface.s", "circle": "training.circle.s"}[ua]
    return float(cfg.training[ua].s), key


def class_names_text() -> str:
    return "".join(c + "\n" for c in sorted(CLASS_NAMES))


# -------------------------------------------------------------------------------------- the frontend


class UpstreamFrontend:
    """The upstream SpectrogramDataset over a list of in-memory waveforms: ``librosa.load`` as dataset.py calls it is
    wrapped to return waveform i for the key ``#i``; melspectrogram / power_to_db are wrapped to record their outputs."""

    def __init__(self, mods, cfg, waves: list[np.ndarray]):
        self.mods = mods
        self.cfg = cfg
        self.waves = waves
        self.ds = mods["dataset"].SpectrogramDataset([f"#{i}" for i in range(len(waves))], [0] * len(waves), cfg)
        self.ds.is_train = False  # dataset.py@b08bebb's __init__ never sets it
        if self.ds.cache is not None:
            raise RuntimeError("the dataset built a disk cache")
        self.grab: dict = {}

    @contextlib.contextmanager
    def patched(self):
        lib = self.mods["dataset"].librosa
        orig_load, orig_mel, orig_db = lib.load, lib.feature.melspectrogram, lib.power_to_db
        sr = int(self.cfg.data.sample_rate)

        def load(path, sr=None, mono=True, **kw):
            if sr != self.cfg.data.sample_rate or mono is not True or kw:
                raise RuntimeError(f"unexpected librosa.load call ({sr}, {mono}, {kw})")
            return self.waves[int(str(path)[1:])], sr

        def mel(*a, **kw):
            out = orig_mel(*a, **kw)
            self.grab["F.mel"] = np.array(out, copy=True)
            self.grab["mel_kwargs"] = sorted(kw)
            return out

        def db(*a, **kw):
            out = orig_db(*a, **kw)
            self.grab["F.db"] = np.array(out, copy=True)
            return out

        lib.load, lib.feature.melspectrogram, lib.power_to_db = load, mel, db
        try:
            yield sr
        finally:
            lib.load, lib.feature.melspectrogram, lib.power_to_db = orig_load, orig_mel, orig_db

    def item(self, i: int):
        """(F.mel, F.db, F.input [1, 1, n_mels, T]) of waveform i through __getitem__."""
        import torch

        self.grab.clear()
        with self.patched():
            x, _ = self.ds[i]
        mel, db = self.grab["F.mel"], self.grab["F.db"]
        return torch.from_numpy(mel)[None], torch.from_numpy(db)[None], x[None]

    def batches(self, batch: int):
        """F.input of every waveform in DataLoader(batch_size=batch, shuffle=False) batches (default collate)."""
        from torch.utils.data import DataLoader

        with self.patched():
            for x, _ in DataLoader(self.ds, batch_size=batch, shuffle=False, num_workers=0):
                yield x


# -------------------------------------------------------------------------------------- models


class _Stop(Exception):
    pass


def build(mods, name: str):
    spec = MODELS[name]
    cls = getattr(mods[spec["module"]], spec["class"])
    with contextlib.redirect_stdout(sys.stderr):  # set_trainable_layers prints
        return cls(**spec["ctor"])


def _bn_followed_by_act(model) -> dict:
    """BatchNorm name -> the activation module that follows it in its Sequential (None when none follows)."""
    import torch

    out = {}
    for pname, parent in model.named_modules():
        if not isinstance(parent, torch.nn.Sequential):
            continue
        kids = list(parent.named_children())
        for j, (cname, child) in enumerate(kids):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                nxt = kids[j + 1][1] if j + 1 < len(kids) else None
                act = nxt if isinstance(nxt, (torch.nn.ReLU, torch.nn.SiLU)) else None
                out[f"{pname}.{cname}" if pname else cname] = type(act).__name__ if act is not None else None
    # GhostEfficientNetV2's ConvBnAct (conv -> batch_norm -> activation, not a Sequential): its BN is followed by its
    # activation (SiLU, or Identity when relu=False)
    for pname, parent in model.named_modules():
        if type(parent).__name__ == "ConvBnAct" and isinstance(parent.batch_norm, torch.nn.modules.batchnorm._BatchNorm):
            act = parent.activation
            out[f"{pname}.batch_norm"] = (type(act).__name__ if isinstance(act, (torch.nn.ReLU, torch.nn.SiLU))
                                          else None)
    return out


def _aliases(sd) -> dict:
    """{key: twin} for state-dict keys holding the very same tensor as a later key (GhostEfficientNetV2 registers its
    stem twice: ``stem.*`` and ``backbone.0.*``); twin = the last key of the group in state_dict() order."""
    groups: dict = {}
    for k, v in sd.items():
        groups.setdefault((v.data_ptr(), tuple(v.shape), tuple(v.stride()), str(v.dtype)), []).append(k)
    return {k: ks[-1] for ks in groups.values() if len(ks) > 1 for k in ks[:-1]}


def _layerscale_keys(model) -> list:
    """State-dict keys of LayerScale ``gamma`` parameters ([1, C, 1, 1]: not generated, stored in the fixed tensors)."""
    return [f"{n}.gamma" for n, m in model.named_modules() if type(m).__name__ == "LayerScale"]


def fixed_nd_keys(model, name: str = "") -> dict:
    """Tensors of 2+ dims stored in the fixed tensors instead of generated, with why (none for EfficientNet / CNN14)."""
    out = {k: "LayerScale gamma: conditioned (LAYERSCALE_BASE + 0.1*n)" for k in _layerscale_keys(model)}
    if name in COSINE_HEAD_ALIGN:
        out["head.weight"] = (f"cosine head aligned with the calibration embeddings (mean direction + "
                              f"{COSINE_HEAD_ALIGN[name]:g} x a seeded unit vector per class)")
    for k, twin in _aliases(model.state_dict()).items():
        if model.state_dict()[k].ndim >= 2:
            out[k] = f"the same tensor as {twin} (registered twice): a copy of the generated {twin}"
    return out


def model_inputs(mods, echo: Path, name: str, waves: list[np.ndarray]):
    cfg = dataset_config(echo, name)
    fe = UpstreamFrontend(mods, cfg, waves)
    return [fe.item(i)[2] for i in range(len(waves))]


def condition(model, name: str, xs: list) -> dict:
    """Set the model's fixed 0-D/1-D tensors (golden/melcnn/README.md "Conditioning"): BN affine seeded, every
    BatchNorm's running statistics calibrated in forward order on the calibration inputs, small biases seeded, the
    Linear head's bias spreading the classes."""
    import torch

    spec = MODELS[name]
    seed = spec["seed"]
    sd = model.state_dict()
    acts = _bn_followed_by_act(model)
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if sorted(acts) != sorted(n for n, _ in bns):
        raise RuntimeError(f"{name}: BatchNorms outside a Sequential: {sorted(set(n for n, _ in bns) - set(acts))}")
    new = {}
    gain = HEAD_BN_GAIN.get(name, 1.0)
    last_bn = bns[-1][0]  # the last BatchNorm before the head (features.7.1 / cnn.conv_block6.seq2.1)
    for bn_name, bn in bns:
        c = bn.num_features
        g = gain if bn_name == last_bn else 1.0
        new[f"{bn_name}.weight"] = (g * (1 + 0.1 * _seeded(seed, f"{bn_name}.weight", 1).standard_normal(c))).astype(np.float32)
        off = BN_BIAS_OFFSET if acts[bn_name] else 0.0
        new[f"{bn_name}.bias"] = (off + 0.1 * _seeded(seed, f"{bn_name}.bias", 1).standard_normal(c)).astype(np.float32)
    gammas = _layerscale_keys(model)
    for k in gammas:
        c = sd[k].numel()
        new[k] = (LAYERSCALE_BASE + 0.1 * _seeded(seed, k, 1).standard_normal(c)).astype(np.float32).reshape(sd[k].shape)
    aliases = _aliases(sd)  # twins of a key set here (stem.1.* = backbone.0.1.*) take its value with it
    head_key = "head.bias"
    small = [k for k, v in sd.items()
             if k.endswith(".bias") and v.ndim == 1 and k not in new and k != head_key and k not in aliases
             and not any(aliases.get(n) == k for n in new)]
    for k in small:
        new[k] = (0.05 * _seeded(seed, k, 1).standard_normal(sd[k].shape[0])).astype(np.float32)
    with torch.no_grad():
        for k, v in new.items():
            sd[k].copy_(torch.from_numpy(v))
    model.eval()
    batch = torch.cat(xs)  # the calibration inputs as one batch
    for bn_name, bn in bns:
        momentum = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()

        def stop(m, a, o):
            raise _Stop

        h = bn.register_forward_hook(stop)
        with torch.no_grad():
            try:
                model(batch)
            except _Stop:
                pass
        h.remove()
        bn.eval()
        bn.momentum = momentum
        if int(bn.num_batches_tracked) != 1:
            raise RuntimeError(f"{name}: {bn_name} saw {int(bn.num_batches_tracked)} batches")
        bn.num_batches_tracked.fill_(NUM_BATCHES_TRACKED)
    assert not model.training and not any(m.training for m in model.modules())
    got = {}
    h = model.head.register_forward_pre_hook(lambda m, a: got.__setitem__("emb", a[0].detach().clone()))
    with torch.no_grad():
        model(batch)
    h.remove()
    emb = got["emb"].double()
    W = model.head.weight.detach().double()
    info = {
        "bn_weight": BN_WEIGHT,
        "bn_bias": f"{BN_BIAS_OFFSET:g} + 0.1*n where a ReLU/SiLU follows the BatchNorm in its Sequential, else 0.1*n",
        "bn_bias_offset": BN_BIAS_OFFSET,
        "last_bn": last_bn, "last_bn_weight_gain": gain,
        "last_bn_weight": f"{gain:g} * (1 + 0.1*n): spreads the embedding across clips so that the Linear head's "
                          "softmax is neither flat nor saturated (the head weight is generated, its scale is fixed)",
        "bn_followed_by_activation": sum(1 for a in acts.values() if a), "bn_plain": sum(1 for a in acts.values() if not a),
        "bn_rng": "numpy default_rng(SeedSequence([seed, crc32(key), 1])).standard_normal(C) per key",
        "bn_running_stats": "calibrated: one BatchNorm at a time in forward order, that BN in train mode with momentum=None "
                            "on ONE batch holding every calibration input, every other module in eval, torch.no_grad; "
                            f"then num_batches_tracked set to {NUM_BATCHES_TRACKED}",
        "small_biases": {"rule": SMALL_BIAS + " (same rng rule)", "keys": small},
        "calibration_inputs": len(xs),
    }
    if gammas:
        info["layerscale_gamma"] = {
            "rule": f"{LAYERSCALE_BASE:g} + 0.1*n per channel (same rng rule, key = the gamma's state-dict key), set "
                    "before the running statistics are calibrated",
            "why": "upstream initialises gamma to 1e-5 (the residual branches ~off; trained values are larger); "
                   f"{LAYERSCALE_BASE:g} lets every residual branch count while the activations stay bounded",
            "keys": len(gammas)}
    if aliases:
        info["aliased_keys"] = {
            "pairs": aliases,
            "rule": "keys holding the same tensor (the stem registered as model.stem and model.backbone[0]): one value, "
                    "stored under both keys; the 4-D stem conv weight is generated once, for the later key"}
    if spec["head"] == "linear":
        z = (emb @ W.T).numpy()  # [clips, C], float64
        mean, std = z.mean(0), z.std(0)
        targets = HEAD_LOGIT_OFFSET + np.linspace(-HEAD_TARGET_SPREAD, HEAD_TARGET_SPREAD, NUM_CLASSES)[
            _seeded(seed, head_key, 1).permutation(NUM_CLASSES)]
        bias = (targets - mean).astype(np.float32)
        with torch.no_grad():
            model.head.bias.copy_(torch.from_numpy(bias))
        info["head_bias"] = (f"target - mean over the calibration inputs of head.weight @ embedding (float64), targets = "
                             f"{HEAD_LOGIT_OFFSET:g} + linspace(-{HEAD_TARGET_SPREAD:g}, {HEAD_TARGET_SPREAD:g}, "
                             f"{NUM_CLASSES}) permuted by "
                             "default_rng(SeedSequence([seed, crc32('head.bias'), 1])).permutation")
        info["pre_bias_logits"] = {"class_mean": mean.tolist(), "class_std_over_clips": std.tolist()}
    else:
        if name in COSINE_HEAD_ALIGN:
            noise = COSINE_HEAD_ALIGN[name]
            mean_dir = torch.nn.functional.normalize(torch.nn.functional.normalize(emb).mean(0), dim=0)
            rows = []
            for c in range(W.shape[0]):
                z = torch.from_numpy(_seeded(seed, f"head.weight.{c}", 1).standard_normal(W.shape[1]))
                rows.append(mean_dir + noise * torch.nn.functional.normalize(z, dim=0))
            W = torch.stack(rows)
            with torch.no_grad():
                model.head.weight.copy_(W.float())
            W = model.head.weight.detach().double()
            info["head"] = (f"CosineLinear: no bias; weight row c = normalize(mean over the calibration inputs of "
                            f"normalize(embedding)) + {noise:g} * normalize(n_c), n_c = default_rng(SeedSequence([seed, "
                            "crc32('head.weight.<c>'), 1])).standard_normal(D) (float64, stored as float32)")
        else:
            info["head"] = "CosineLinear: no bias, nothing conditioned"
        cos = torch.nn.functional.linear(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(W)).numpy()
        info["cos_on_calibration"] = {"min": float(cos.min()), "max": float(cos.max()), "std": float(cos.std())}
    return info


def prob_spread(p: np.ndarray) -> dict:
    q = np.percentile(p, [0, 5, 25, 50, 75, 95, 100])
    mx = p.max(1)
    return {"n": int(p.size), "min": float(q[0]), "p5": float(q[1]), "p25": float(q[2]), "median": float(q[3]),
            "p75": float(q[4]), "p95": float(q[5]), "max": float(q[6]),
            "max_prob_per_window": [float(v) for v in mx],
            "argmax_per_window": [int(v) for v in p.argmax(1)],
            "frac_windows_max_prob_0.3_0.95": float(((mx >= 0.3) & (mx <= 0.95)).mean())}


def _softmax_scores(out, s):
    import torch

    logits = out * s if s is not None else out.clone()
    return logits, torch.softmax(logits, dim=1)


def golden_waves(store: Path, name: str):
    """(y, plan, windows) of the golden recording at the model's rate: y = librosa.load(path, sr, mono=True) once,
    windows = y[start:start+length] per planned window."""
    import librosa

    data = MODELS[name]["data"]
    sr = data["sample_rate"]
    y, got = librosa.load(str(store / "audio" / RECORDING), sr=sr, mono=True)
    assert got == sr and y.dtype == np.float32 and y.ndim == 1, (got, y.dtype, y.shape)
    W = int(data["audio_clip_duration"] * sr)
    plan = window_plan(int(y.shape[0]), W, W)
    waves = [np.ascontiguousarray(y[s:s + n]) for s, n in zip(plan["starts"], plan["lengths"])]
    return y, W, plan, waves


def golden_probs(echo: Path, store: Path, name: str, checkpoint: Path, threads: int) -> dict:
    """Y.probs of the upstream model loaded from ``checkpoint`` on every golden window (each alone, as captured)."""
    import torch

    torch.set_num_threads(threads)
    synth = load_synth()
    mods = load_echo(echo)
    model = build(mods, name)
    model.load_state_dict(torch.load(str(checkpoint), map_location="cpu", weights_only=True))
    model.eval()
    cfg = dataset_config(echo, name)
    s, _ = head_scale(cfg)
    _, _, plan, waves = golden_waves(store, name)
    xs = model_inputs(mods, echo, name, waves)
    with torch.no_grad():
        probs = np.stack([_softmax_scores(model(x), s)[1][0].numpy() for x in xs])
    return {"probs": probs, "windows": np.array([f"w{i}" for i in range(len(xs))]),
            "state_sha256": synth.digest(state_numpy(model.state_dict())),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def _probs_subprocess(echo: Path, store: Path, name: str, checkpoint: Path, threads: int, forced: bool) -> dict:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in FORCED_ISA_ENV}
    if forced:
        env.update(FORCED_ISA_ENV)
    with tempfile.TemporaryDirectory(prefix="melcnn-isa-") as tmp:
        out = Path(tmp) / "probs.npz"
        cmd = [sys.executable, str(HERE / "melcnn_capture.py"), "golden-probs", "--echo", str(_echo_dir(echo)),
               "--store", str(Path(store).resolve()), "--model", name, "--checkpoint", str(Path(checkpoint).resolve()),
               "--out", str(out), "--threads", str(threads)]
        done = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            sys.exit(f"error: {name}: golden-probs ({'forced ISA' if forced else 'normal'}) failed ({done.returncode})")
        z = np.load(out)
        return {"probs": z["probs"], "windows": [str(w) for w in z["windows"]], "state_sha256": str(z["state_sha256"]),
                "cpu_capability": str(z["cpu_capability"]), "threads": int(z["threads"])}


def forced_isa_check(echo: Path, store: Path, name: str, checkpoint: Path, threads: int, state_sha256: str,
                     in_process: np.ndarray | None = None) -> dict:
    normal = _probs_subprocess(echo, store, name, checkpoint, threads, forced=False)
    forced = _probs_subprocess(echo, store, name, checkpoint, threads, forced=True)
    for r in (normal, forced):
        if r["state_sha256"] != state_sha256:
            sys.exit(f"error: {name}: {checkpoint} holds state {r['state_sha256']}, expected {state_sha256}")
    if forced["cpu_capability"] == normal["cpu_capability"]:
        print(f"warning: {name}: ATen reports cpu capability {normal['cpu_capability']} in both runs", file=sys.stderr)
    d = np.abs(forced["probs"].astype(np.float64) - normal["probs"].astype(np.float64))
    same_argmax = bool(np.array_equal(forced["probs"].argmax(1), normal["probs"].argmax(1)))
    res = {
        "env": dict(FORCED_ISA_ENV),
        "cpu_capability": {"normal": normal["cpu_capability"], "forced": forced["cpu_capability"]},
        "threads": normal["threads"],
        "windows": int(d.shape[0]),
        "max_abs_dprob": float(d.max()),
        "mean_abs_dprob": float(d.mean()),
        "max_abs_dprob_per_window": {w: float(d[i].max()) for i, w in enumerate(normal["windows"])},
        "same_argmax": same_argmax,
        "limit": FORCED_ISA_LIMIT,
        "within_limit": bool(d.max() <= FORCED_ISA_LIMIT and same_argmax),
        "what": "max |dprob| (Y.probs) over the golden windows (each alone, through the upstream SpectrogramDataset) "
                "between two runs of the upstream model loaded from the checkpoint in subprocesses of the reference "
                "interpreter: normal, and with " + " ".join(f"{k}={v}" for k, v in FORCED_ISA_ENV.items()),
    }
    if in_process is not None:
        res["normal_equals_in_process"] = bool(np.array_equal(normal["probs"], in_process))
    print(f"{name}: forced-ISA max |dprob| {res['max_abs_dprob']:.3g} (mean {res['mean_abs_dprob']:.3g}; same argmax "
          f"{same_argmax}; cpu capability {normal['cpu_capability']} -> {forced['cpu_capability']})"
          + ("" if res["within_limit"] else f"  EXCEEDS {FORCED_ISA_LIMIT:g}"), flush=True)
    return res


def run_dir(cache: Path, name: str) -> Path:
    return Path(cache).expanduser().resolve() / name


def checkpoint_name(echo: Path, name: str) -> str:
    return f"best_{compose_config(echo, name).model.name}.pth"


def make_model(echo: Path, store: Path, cache: Path, name: str, threads: int) -> Path:
    """models/<name>.json + <name>.fixed.safetensors + <name>/config.yaml + <name>/class_names.txt, and the run dir
    <cache>/<name>/ (.hydra/config.yaml, class_names.txt, best_<model.name>.pth) as a Project-Echo training run leaves it."""
    import torch
    from safetensors.numpy import save as np_save

    torch.set_num_threads(threads)
    synth = load_synth()
    mods = load_echo(echo)
    spec = MODELS[name]
    seed = spec["seed"]
    torch.manual_seed(0)  # the upstream init is overwritten; seeded only so the run is repeatable
    model = build(mods, name).eval()
    sd0 = state_numpy(model.state_dict())
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in sd0.items()]
    nd_fixed = fixed_nd_keys(model, name)  # 2+-dim tensors kept in the fixed tensors (GhostEfficientNetV2 only)
    aliases = _aliases(model.state_dict())
    generated = [k for k, shape, _ in layout if len(shape) >= 2 and k not in nd_fixed]
    fixed = {k: v for k, v in sd0.items() if k not in generated}
    state = synth.generate(layout, fixed, seed)
    for k, twin in aliases.items():  # one tensor: its twin's (generated) value under both keys
        state[k] = state[twin].copy()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.eval()
    clips, clip_names = calibration_clips(name)
    xs = model_inputs(mods, echo, name, clips)
    cond = condition(model, name, xs)
    cond["calibration_clip_names"] = clip_names
    cond["calibration_inputs_are"] = ("F.input of each calibration waveform through the upstream "
                                      "SpectrogramDataset.__getitem__ (synthesized at the model's rate, distinct from the "
                                      "golden recording)")
    now = state_numpy(model.state_dict())
    fixed = {k: v for k, v in now.items() if k not in generated}
    state = synth.generate(layout, fixed, seed)
    if synth.digest(state) != synth.digest(now):
        raise RuntimeError(f"{name}: synth.generate does not reproduce the conditioned state")
    if any(v.ndim > 1 and k not in nd_fixed for k, v in fixed.items()):
        raise RuntimeError(f"{name}: a fixed tensor of 2+ dims")
    for k, twin in aliases.items():
        if not np.array_equal(now[k], now[twin]):
            raise RuntimeError(f"{name}: {k} and {twin} differ")
    models_dir = store / "models"
    own_file = f"{name}.fixed.safetensors"
    _atomic_write(models_dir / own_file, np_save(fixed, metadata={"model": name}))
    yaml_text = config_yaml(echo, name)
    _atomic_write(models_dir / name / "config.yaml", yaml_text.encode())
    _atomic_write(models_dir / name / "class_names.txt", class_names_text().encode())
    # the run dir, as Trainer + Hydra leave it: torch.save(model.state_dict(), "best_<model.name>.pth")
    rd = run_dir(cache, name)
    (rd / ".hydra").mkdir(parents=True, exist_ok=True)
    _atomic_write(rd / ".hydra" / "config.yaml", yaml_text.encode())
    _atomic_write(rd / "class_names.txt", class_names_text().encode())
    ckpt = rd / checkpoint_name(echo, name)
    torch.save(model.state_dict(), str(ckpt))
    s, s_key = head_scale(dataset_config(echo, name))
    _, _, plan, waves = golden_waves(store, name)
    gx = model_inputs(mods, echo, name, waves)
    with torch.no_grad():
        outs = [model(x) for x in gx]
    probs = np.stack([_softmax_scores(o, s)[1][0].numpy() for o in outs])
    cond["probs_on_golden_windows"] = prob_spread(probs)
    if s is not None:
        sc = np.stack([(o * s)[0].numpy() for o in outs])
        cond["s_cos_on_golden_windows"] = {"s": s, "min": float(sc.min()), "max": float(sc.max()),
                                           "std": float(sc.std()),
                                           "range_per_window": [float(r.max() - r.min()) for r in sc]}
    isa = forced_isa_check(echo, store, name, ckpt, threads, synth.digest(state), probs)
    meta = {
        "recipe": synth.RECIPE,
        "seed": seed,
        "class": spec["class"],
        "module": spec["module"],
        "constructor": spec["ctor"],
        "layout": layout,
        "fixed": [own_file],
        "fixed_sha256": {own_file: sha256_file(models_dir / own_file)},
        "fixed_is": "every 0-D/1-D tensor of the state dict (BatchNorm affine + running statistics + num_batches_tracked, "
                    "biases); every >=2-D weight is generated by the recipe"
                    + ("" if not nd_fixed else ", except the 2+-dim tensors of fixed_nd (stored)"),
        "state_sha256": synth.digest(state),
        "checkpoint": ckpt.name,
        "checkpoint_sha256": sha256_file(ckpt),
        "checkpoint_format": f"torch.save(model.state_dict(), '{ckpt.name}') (torch {torch.__version__}, zip): the bare "
                             "state dict upstream Trainer saves; not stored: regenerate from layout + fixed + synth",
        "config": f"{name}/config.yaml",
        "class_names": f"{name}/class_names.txt",
        "generated_keys": len(generated),
        "parameters": {"total": int(sum(int(np.prod(s_)) for _, s_, _ in layout)),
                       "fixed": int(sum(int(v.size) for v in fixed.values()))},
        "features_module": spec["features"],
        **({"features_hook": spec["features_hook"]} if "features_hook" in spec else {}),
        **({"fixed_nd": nd_fixed} if nd_fixed else {}),
        "head": {"kind": spec["head"], "s": s, "source": s_key},
        "conditioning": cond,
        "forced_isa_max_abs_dprob": isa["max_abs_dprob"],
        "forced_isa": isa,
        "upstream": {"repo": ECHO_REPO, "prefix": ECHO_PREFIX, "files": echo_hashes(echo)},
        "versions": _versions(),
        "stubbed_modules": _install_stubs(),
        "threads": torch.get_num_threads(),
        "harness": HARNESS_FILE,
    }
    out = models_dir / f"{name}.json"
    _atomic_write(out, _json_bytes(meta))
    return out


def load_generated(store: Path, name: str):
    """(meta, state as numpy) of models/<name>.json, checked: the fixed file's sha256 and the state digest."""
    from safetensors.numpy import load as np_load

    synth = load_synth()
    meta = json.loads((store / "models" / f"{name}.json").read_text())
    fixed = {}
    for f in meta["fixed"]:
        raw = (store / "models" / f).read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["fixed_sha256"][f]:
            sys.exit(f"error: models/{f} does not have the sha256 models/{name}.json records")
        fixed.update(np_load(raw))
    if meta["recipe"] != synth.RECIPE:
        sys.exit(f"error: models/{name}.json was made with {meta['recipe']}, synth.py is {synth.RECIPE}")
    state = synth.generate(meta["layout"], fixed, meta["seed"])
    if synth.digest(state) != meta["state_sha256"]:
        sys.exit(f"error: synth.generate does not reproduce models/{name}.json's state_sha256")
    return meta, state


# ------------------------------------------------------------------------------------ the capture

KEY_ORDER = ("case", "family", "model", "audio", "frontend", "head", "windows", "n_windows", "stored_windows", "labels",
             "activation", "stages", "hooks", "batched", "store_budget", "tensor_shapes", "tensor_dtypes", "scores",
             "checks", "provenance", "capture_date", "note_floats")
STAGES = ("A.waveform", "F.mel", "F.db", "F.input", "M.features", "M.embedding", "Y.output", "Y.logits", "Y.probs")


def hooks_doc(name: str) -> dict:
    spec = MODELS[name]
    eff = spec["class"] == "EfficientNetV2ArcFace"
    ghost = spec["class"] == "GhostEfficientNetV2"
    d = MODELS[name]["data"]
    return {
        "A.waveform": "the window: y[start:start+length] of y = librosa.load(path, sr=cfg.data.sample_rate, mono=True) "
                      "(once for the whole file), float32 [1, n] (n < clip for a partial tail: before the upstream zero-pad)",
        "F.mel": "output of librosa.feature.melspectrogram as dataset.py calls it (power, [n_mels, T]) on the clip "
                 "(a partial tail right-padded with zeros to the clip by dataset.py), [1, n_mels, T]",
        "F.db": "output of librosa.power_to_db(mel, ref=np.max, top_db=cfg.data.top_db) as dataset.py calls it, [1, n_mels, T]",
        "F.input": "what SpectrogramDataset.__getitem__ returns: (db - db.min()) / (db.max() - db.min() + 1e-6), "
                   "expand_dims(0), torch float32; with the batch dim: [1, 1, n_mels, T] = the model input",
        "M.features": ("forward hook: output of model.features (the EfficientNet body, after features.7's SiLU), [1, 1280, H, W]"
                       if eff else "forward pre-hook on model.backbone[-1] (backbone.41, the pool Sequential = model.pool): "
                       "its input = the output of the last Ghost MBConv block (x + layerscale(conv(x)); no activation), "
                       "[1, 256, n_mels/32, T/32] (ceil)" if ghost else "forward hook: output of model.cnn.conv_block6 (pool (1,1): identity), [1, 2048, n_mels/32, T/32]"),
        "M.embedding": ("forward pre-hook: input of model.head = flatten(avgpool(M.features), 1), [1, 1280]" if eff else
                        "forward pre-hook: input of model.head = model.pool(M.features) = flatten(AdaptiveAvgPool2d(1)), "
                        "Dropout off in eval, [1, 256]" if ghost else
                        "forward pre-hook: input of model.head = relu_(cnn.fc1(max_dim2 + mean_dim2 of mean(M.features, dim=3)))"
                        " (eval: dropout off), [1, 2048]"),
        "Y.output": "model(x) in eval, as is: " + ("cos(theta) of the CosineLinear head" if spec["head"] == "cosine"
                                                   else "the Linear head's logits") + ", [1, C]",
        "Y.logits": ("the class scores: Y.output * s (float32; s = cfg.training.<use_arcface>.s, as Project-Echo's later "
                     "evaluation multiplies the mean cosine by s; no margin at inference)" if spec["head"] == "cosine"
                     else "the class scores: = Y.output (Linear head)") + ", [1, C]",
        "Y.probs": "torch.softmax(Y.logits, dim=1), [1, C]",
        "all.logits": f"Y.logits of every window from the batched upstream run (DataLoader(batch_size={BATCH}) over the "
                      "windows, default collate of F.input), [n_windows, C]",
        "all.probs": "softmax(all.logits, dim=1), [n_windows, C]",
        "clone": "every hooked tensor is cloned at once (SiLU(inplace=True) / F.relu_ overwrite module outputs later)",
        "frames": f"T = 1 + clip // hop_length = {1 + int(d['audio_clip_duration'] * d['sample_rate']) // d['hop_length']} "
                  "(center=True)",
    }


def capture(echo: Path, store: Path, name: str, rec: str, capture_date: str, threads: int,
            max_bytes: int | None = None) -> Path:
    import soundfile as sf
    import torch
    from safetensors.torch import save as st_save

    torch.set_num_threads(threads)
    synth = load_synth()
    mods = load_echo(echo)
    hashes = echo_hashes(echo)
    spec = MODELS[name]
    gen, state = load_generated(store, name)
    if gen["class"] != spec["class"] or gen["constructor"] != spec["ctor"] or gen["seed"] != spec["seed"]:
        sys.exit(f"error: models/{name}.json describes {gen['class']} {gen['constructor']} seed {gen['seed']}, "
                 f"the harness {spec['class']} {spec['ctor']} seed {spec['seed']}")
    rec = recording_file(store, rec)
    audio_path = store / "audio" / rec
    case = f"{name}__{Path(rec).stem}"
    yaml_text = (store / "models" / name / "config.yaml").read_text()
    if yaml_text != config_yaml(echo, name):
        sys.exit(f"error: models/{name}/config.yaml is not the composed config; rerun `models`")
    if (store / "models" / name / "class_names.txt").read_text() != class_names_text():
        sys.exit(f"error: models/{name}/class_names.txt differs")
    labels = (store / "models" / name / "class_names.txt").read_text().splitlines()

    model = build(mods, name)
    layout = [[k, list(v.shape), _dtype(v)] for k, v in model.state_dict().items()]
    if layout != gen["layout"]:
        sys.exit(f"error: the upstream {spec['class']}'s state_dict layout differs from models/{name}.json's")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.eval()
    ran = synth.digest(state_numpy(model.state_dict()))
    if ran != gen["state_sha256"]:
        sys.exit(f"error: the upstream model holds state {ran}, models/{name}.json says {gen['state_sha256']}")

    cfg = dataset_config(echo, name)
    s, s_key = head_scale(cfg)
    info = sf.info(str(audio_path))
    d = spec["data"]
    sr = d["sample_rate"]
    y, W, plan, waves = golden_waves(store, name)
    meta = {
        "case": case,
        "family": FAMILY,
        "model": {
            "name": name,
            "file": gen["checkpoint"],
            "sha256": gen["checkpoint_sha256"],
            "sha256_is": f"of the checkpoint the harness writes (<cache>/{name}/{gen['checkpoint']}, not stored: "
                         "regenerate it from the generated description); the model's identity is state_sha256",
            "config": f"models/{name}/config.yaml",
            "class_names": f"models/{name}/class_names.txt",
            "checkpoint": gen["checkpoint"],
            "state_sha256": gen["state_sha256"],
            "generated": f"{name}.json",
            "generated_sha256": sha256_file(store / "models" / f"{name}.json"),
            "class": spec["class"],
            "module": spec["module"],
            "constructor": spec["ctor"],
            "model_cfg": {"name": str(cfg.model.name)},
            "recipe": gen["recipe"],
            "seed": spec["seed"],
            "fixed": gen["fixed"],
            "fixed_sha256": gen["fixed_sha256"],
            "loaded_with": "model.load_state_dict(state, strict=True); model.eval()",
            "features_module": spec["features"],
            **({"features_hook": spec["features_hook"]} if "features_hook" in spec else {}),
            "upstream": {rel: dict(v) for rel, v in hashes.items()},
        },
        "audio": audio_record(audio_path, rec, info),
        "frontend": {
            "load": f"librosa.load(path, sr={sr}, mono=True) (res_type soxr_hq), once for the whole file",
            **{k: d[k] for k in DATA_KEYS},
            "window": "hann", "win_length": d["n_fft"], "center": True, "pad_mode": "constant", "power": 2.0,
            "htk": False, "norm": "slaney", "ref": "np.max", "amin": 1e-10, "minmax_eps": 1e-6,
            "clip_samples": W,
            "tail": "zero-padded on the right to clip_samples by dataset.py (np.pad 'constant')",
        },
        "head": {"kind": spec["head"], "s": s, "source": s_key},
    }
    prov = {
        **_versions(),
        **_platform(),
        "upstream": {"repo": ECHO_REPO, "prefix": ECHO_PREFIX, "files": {rel: dict(v) for rel, v in hashes.items()}},
        "stubbed_modules": _install_stubs(),
        "harness": {"file": HARNESS_FILE, "sha256": sha256_file(HERE / "melcnn_capture.py")},
        "synth": {"file": SYNTH_FILE, "sha256": sha256_file(ROOT / SYNTH_FILE), "recipe": synth.RECIPE},
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "capture_date": capture_date,
        "command": f"python {HARNESS_FILE} capture --echo <ECHO> --store <store> --case {name}:{Path(rec).stem}"
                   + (f" --max-bytes {max_bytes}" if max_bytes is not None else ""),
    }
    meta["windows"] = {"window_s": float(d["audio_clip_duration"]), "hop_s": float(d["audio_clip_duration"]),
                       "window_samples": W, "hop_samples": W, "resampled_samples": int(y.shape[0]), **plan}
    candidates = window_priority(plan["partial"])
    meta["n_windows"] = len(plan["starts"])
    meta["labels"] = labels
    meta["activation"] = "softmax"

    grabbed: dict = {}
    if spec.get("features_hook") == "pre":
        fmod = dict(model.named_modules(remove_duplicate=False))[spec["features"]]
        if fmod is not model.backbone[-1]:
            sys.exit(f"error: {spec['features']} is not model.backbone[-1]")
        fhook = fmod.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("M.features", a[0].detach().clone()))
    else:
        fhook = dict(model.named_modules())[spec["features"]].register_forward_hook(
            lambda m, a, o: grabbed.__setitem__("M.features", o.detach().clone()))
    handles = [
        fhook,
        model.head.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("M.embedding", a[0].detach().clone())),
    ]
    fe = UpstreamFrontend(mods, cfg, waves)
    per_window: dict[int, dict] = {}
    all_logits_single = []
    checks = {"model_training": bool(model.training), "any_module_training": any(m.training for m in model.modules()),
              "state_digest_ran": ran, "dataset_is_train": False, "probs_equal_softmax_logits": True,
              "output_equal_head_embedding": True, "embedding_from_features_max_abs": 0.0,
              "input_minmax": [], "db_range": [], "frames": []}
    for i, wave in enumerate(waves):
        mel, db, x = fe.item(i)
        grabbed.clear()
        with torch.no_grad():
            out = model(x).detach().clone()
        logits, probs = _softmax_scores(out, s)
        rec_t = {"A.waveform": torch.from_numpy(wave.copy())[None], "F.mel": mel, "F.db": db, "F.input": x,
                 "M.features": grabbed["M.features"], "M.embedding": grabbed["M.embedding"], "Y.output": out,
                 "Y.logits": logits.contiguous(), "Y.probs": probs.contiguous()}
        assert tuple(rec_t) == STAGES
        with torch.no_grad():
            checks["output_equal_head_embedding"] &= bool(torch.equal(model.head(rec_t["M.embedding"]), out))
            if spec["class"] == "EfficientNetV2ArcFace":
                e = torch.flatten(model.avgpool(rec_t["M.features"]), 1)
            elif spec["class"] == "GhostEfficientNetV2":
                e = model.pool(rec_t["M.features"].clone())
            else:
                f = torch.mean(rec_t["M.features"], dim=3)
                e = torch.relu(model.cnn.fc1(torch.max(f, dim=2)[0] + torch.mean(f, dim=2)))
            checks["embedding_from_features_max_abs"] = max(checks["embedding_from_features_max_abs"],
                                                            float((e - rec_t["M.embedding"]).abs().max()))
        checks["probs_equal_softmax_logits"] &= bool(torch.equal(torch.softmax(logits, dim=1), probs))
        checks["input_minmax"].append([float(x.min()), float(x.max())])
        checks["db_range"].append([float(db.min()), float(db.max())])
        checks["frames"].append(int(x.shape[-1]))
        all_logits_single.append(logits[0])
        if i in candidates:
            per_window[i] = {k: v.contiguous() for k, v in rec_t.items()}
    for h in handles:
        h.remove()
    # the batched run (all.*)
    batched = []
    with torch.no_grad():
        for xb in fe.batches(BATCH):
            out = model(xb)
            batched.append(_softmax_scores(out, s)[0])
    all_logits = torch.cat(batched).contiguous()
    all_probs = torch.softmax(all_logits, dim=1).contiguous()
    single = torch.stack(all_logits_single)
    checks["batched_vs_single_max_abs_dlogit"] = float((all_logits - single).abs().max())
    checks["batched_vs_single_max_abs_dprob"] = float((all_probs - torch.softmax(single, dim=1)).abs().max())
    checks["frames_rule"] = "1 + clip_samples // hop_length (center=True; every window is padded to the clip)"
    checks["frames_match_rule"] = all(f == 1 + W // d["hop_length"] for f in checks["frames"])
    meta["batched"] = {"batch_size": BATCH, "how": f"torch DataLoader(SpectrogramDataset, batch_size={BATCH}, shuffle=False, "
                                                   "num_workers=0) over the windows; model(batch) in eval",
                       "batches": [int(b.shape[0]) for b in batched]}
    tensors = {"all.logits": all_logits, "all.probs": all_probs}
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    total, chosen = nbytes(tensors.values()), []
    full = [i for i, p in enumerate(plan["partial"]) if not p]
    must = {full[0]} | {i for i, p in enumerate(plan["partial"]) if p}
    for i in [c for c in candidates if c in must] + [c for c in candidates if c not in must]:
        b = nbytes(per_window[i].values())
        if i in must or max_bytes is None or total + b <= max_bytes:
            chosen.append(i)
            total += b
    keep_w = sorted(chosen)
    for i in keep_w:
        tensors.update({f"w{i}/{k}": v for k, v in per_window[i].items()})
    for k, v in tensors.items():
        if v.dtype != torch.float32:
            raise RuntimeError(f"{k}: unexpected dtype {v.dtype}")
    meta["stored_windows"] = keep_w
    meta["stages"] = list(STAGES)
    meta["hooks"] = hooks_doc(name)
    meta["store_budget"] = {"max_bytes": max_bytes, "priority": candidates, "payload_bytes": total,
                            "rule": "window 0 and the partial tail always; then the last full window if the tensor payload "
                                    "still fits max_bytes"}
    meta["tensor_shapes"] = {k: list(v.shape) for k, v in sorted(tensors.items())}
    meta["tensor_dtypes"] = {k: _dtype(v) for k, v in sorted(tensors.items())}
    P = all_probs.numpy()
    meta["scores"] = [
        {"index": i, "start": s_, "length": n, "start_s": s_ / sr, "partial": p,
         "ranked": [[labels[j], float(P[i, j])] for j in np.argsort(-P[i], kind="stable")],
         "probs_min": float(P[i].min()), "probs_max": float(P[i].max())}
        for i, (s_, n, p) in enumerate(zip(plan["starts"], plan["lengths"], plan["partial"]))
    ]
    checks["probs_spread"] = prob_spread(P)
    if s is not None:
        checks["s_cos_range"] = [float(all_logits.min()), float(all_logits.max())]
    meta["checks"] = checks
    meta["provenance"] = prov
    meta["capture_date"] = capture_date
    meta["note_floats"] = NOTE_FLOATS
    meta = {k: meta[k] for k in KEY_ORDER if k in meta} | {k: v for k, v in meta.items() if k not in KEY_ORDER}
    cases = store / "cases"
    _atomic_write(cases / f"{case}.safetensors", st_save(tensors, metadata={"case": case}))
    out = cases / f"{case}.json"
    _atomic_write(out, _json_bytes(meta))
    return out


# ------------------------------------------------------------------------------- env, fingerprint


def write_fingerprint(store: Path, threads: int) -> Path:
    import torch

    torch.set_num_threads(threads)
    mod = _load_by_path("_porting_fingerprint", ROOT / "porting" / "parity" / "fingerprint.py")
    return mod.write_fingerprint(store)


def write_env(store: Path, threads: int) -> Path:
    import torch

    torch.set_num_threads(threads)
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}, key=str.lower)
    env = {
        **_versions(),
        **_platform(),
        "threads": torch.get_num_threads(),
        "executable": "python " + platform.python_version(),
        "upstream": {"repo": ECHO_REPO, "prefix": ECHO_PREFIX,
                     "files": {rel: {"commit": c, "sha256": h} for rel, (c, h) in ECHO_FILES.items()}},
        "stubbed_modules": _install_stubs(),
        "requirements": "reference/melcnn/requirements.txt",
        "distributions": dists,
    }
    path = store / "env.json"
    _atomic_write(path, _json_bytes(env))
    return path


def _parse_case(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or parts[0] not in MODELS:
        raise argparse.ArgumentTypeError(f"--case {text!r}: expected MODEL:RECORDING, MODEL one of {sorted(MODELS)}")
    return parts[0], parts[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="melcnn_capture", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audio", help="synthesize the recording")
    a.add_argument("--out", type=Path, required=True)
    echo_help = f"folder holding Project-Echo's torch_impl files (default {DEFAULT_ECHO})"
    m = sub.add_parser("models", help="build, condition and write the generated model descriptions + run configs")
    m.add_argument("--echo", type=Path, default=DEFAULT_ECHO, help=echo_help)
    m.add_argument("--store", type=Path, required=True)
    m.add_argument("--cache", type=Path, required=True, help="where the run dirs with best_<model.name>.pth go (not the store)")
    m.add_argument("--model", action="append", default=None, choices=sorted(MODELS))
    m.add_argument("--threads", type=int, default=THREADS)
    ic = sub.add_parser("isa-check", help="forced-ISA check of a store's models (checkpoints from --cache); writes nothing")
    ic.add_argument("--echo", type=Path, default=DEFAULT_ECHO, help=echo_help)
    ic.add_argument("--store", type=Path, required=True)
    ic.add_argument("--cache", type=Path, required=True)
    ic.add_argument("--model", action="append", default=None, choices=sorted(MODELS))
    ic.add_argument("--threads", type=int, default=THREADS)
    gp = sub.add_parser("golden-probs", help="(internal to the forced-ISA check) Y.probs on the golden windows")
    gp.add_argument("--echo", type=Path, default=DEFAULT_ECHO, help=echo_help)
    gp.add_argument("--store", type=Path, required=True)
    gp.add_argument("--model", required=True, choices=sorted(MODELS))
    gp.add_argument("--checkpoint", type=Path, required=True)
    gp.add_argument("--out", type=Path, required=True, help=".npz to write")
    gp.add_argument("--threads", type=int, default=THREADS)
    c = sub.add_parser("capture", help="capture cases")
    c.add_argument("--echo", type=Path, default=DEFAULT_ECHO, help=echo_help)
    c.add_argument("--store", type=Path, required=True)
    c.add_argument("--case", type=_parse_case, action="append", required=True, help="MODEL:RECORDING")
    c.add_argument("--capture-date", action="append", default=None,
                   help="UTC ISO date per --case (same order) or one for all; default: now")
    c.add_argument("--threads", type=int, default=THREADS)
    c.add_argument("--max-bytes", type=int, default=-1, help="tensor payload budget per case; -1: none (default)")
    for nm in ("fingerprint", "env"):
        f = sub.add_parser(nm, help=f"write {nm}.json")
        f.add_argument("--store", type=Path, required=True)
        f.add_argument("--threads", type=int, default=THREADS)
    args = p.parse_args(argv)
    if args.cmd == "audio":
        args.out.mkdir(parents=True, exist_ok=True)
        for name in RECORDINGS:
            print(write_recording(name, args.out))
        return 0
    if args.cmd == "models":
        outs = [make_model(args.echo, args.store, args.cache, name, args.threads) for name in args.model or list(MODELS)]
        for out in outs:
            print(out, flush=True)
        worst = {o.stem: json.loads(o.read_text())["forced_isa"] for o in outs}
        print("forced-ISA max |dprob|: " + ", ".join(f"{k} {v['max_abs_dprob']:.3g}" for k, v in worst.items()), flush=True)
        over = [k for k, v in worst.items() if not v["within_limit"]]
        if over:
            print(f"error: above {FORCED_ISA_LIMIT:g} or argmax changed: {', '.join(over)}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "golden-probs":
        r = golden_probs(args.echo, args.store, args.model, args.checkpoint, args.threads)
        with open(args.out, "wb") as f:
            np.savez(f, **r)
        return 0
    if args.cmd == "isa-check":
        bad = 0
        for name in args.model or list(MODELS):
            meta = json.loads((args.store / "models" / f"{name}.json").read_text())
            r = forced_isa_check(args.echo, args.store.resolve(), name, run_dir(args.cache, name) / meta["checkpoint"],
                                 args.threads, meta["state_sha256"])
            bad += not r["within_limit"]
            print(json.dumps({"model": name, **{k: r[k] for k in ("max_abs_dprob", "mean_abs_dprob", "same_argmax",
                                                                    "cpu_capability")}}))
        return 1 if bad else 0
    if args.cmd == "fingerprint":
        print(write_fingerprint(args.store, args.threads))
        return 0
    if args.cmd == "env":
        print(write_env(args.store, args.threads))
        return 0
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    dates = args.capture_date or [now]
    if len(dates) not in (1, len(args.case)):
        p.error("--capture-date: give one, or one per --case")
    for i, (name, rec) in enumerate(args.case):
        out = capture(args.echo, args.store, name, rec, dates[i if len(dates) > 1 else 0], args.threads,
                      None if args.max_bytes < 0 else args.max_bytes)
        print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
