"""Capture the Hugging Face family goldens: run the user's transformers path unchanged and record every stage.

Runs under the reference venv (torch 2.9.1, torchaudio 2.9.1, transformers 4.57.1, librosa 0.11); driven by
``tools/regenerate_golden_hf``. It never imports ``porting`` (only ``porting/parity/fingerprint.py``, by file
path, to write ``fingerprint.json``). The flow recorded per window is what a user writes::

    y, sr = librosa.load(path, sr=16000)                         # A.waveform (per window)
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    inputs = fe(window, sampling_rate=16000, return_tensors="pt")  # F.input_values (+ F.attention_mask)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)          # M.hidden_states.i, Y.logits
    probs = out.logits.softmax(-1)                                # Y.probs

with a forward hook on the base model's CNN ``feature_extractor`` (AST: ``embeddings``) for ``M.features``
and a forward pre-hook on the classification layer for ``M.pooled``; nothing is re-implemented. The case
format is documented in reference/README.md ("Hugging Face family") and golden/hf/README.md.

Subcommands::

    python reference/hf_capture.py audio --out golden/hf/audio
    python reference/hf_capture.py capture --store golden/hf --case w2v2-base:tones16k [--case ast:stereo48k:numpy-fbank ...]
    python reference/hf_capture.py fingerprint --store golden/hf
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness_common.py beside this file
from harness_common import TooShort, audio_record, sha256_file, window_plan, window_priority  # noqa: E402
from harness_common import atomic_write as _atomic_write, hann_burst as _hann_burst  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAMILY = "hf"
SR = 16000
HARNESS_FILE = "reference/hf_capture.py"
MODELS_FILE = "reference/hf_models.py"
NOTE_FLOATS = "JSON numbers are the float32 values promoted to double, written with round-trip precision (exact)"

# Variants of a case (the third field of --case): what they change in the user's flow.
VARIANTS = {
    None: {},
    "numpy-fbank": {"fbank": "numpy"},  # AST only: transformers' numpy fbank instead of torchaudio's kaldi
    "hop1": {"hop_s": 1.0},  # non-overlapping windows: the tail is shorter than half a window and not scored
}
WINDOW_S, HOP_S = 1.0, 0.5
AST_FRAME_S = 0.010  # ASTFeatureExtractor frames every 160 samples (10 ms) at 16 kHz


# ------------------------------------------------------------------------------------------ audio


def _chirp(t: np.ndarray, f0: float, f1: float, dur: float, amp: float) -> np.ndarray:
    k = (f1 - f0) / dur
    return amp * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))


SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile sndfile.h (soundfile does not export it)

# name -> (sample rate, channels, seconds, format, subtype)
RECORDINGS = {
    "tones16k.wav": (16000, 1, 3.3, "WAV", "PCM_16"),
    "stereo44k1.flac": (44100, 2, 2.7, "FLAC", "PCM_24"),
    "stereo48k.wav": (48000, 2, 2.2, "WAV", "FLOAT"),
    "short16k.wav": (16000, 1, 0.6, "WAV", "PCM_16"),  # shorter than one window: the error case
}


def synth(name: str) -> np.ndarray:
    """The float64 signal [frames, channels] of one recording (seeded; before quantisation)."""
    sr, ch, dur, _, _ = RECORDINGS[name]
    n = int(round(dur * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(20240 + n)
    if name in ("tones16k.wav", "short16k.wav"):
        x = _chirp(t, 200, 3000, dur, 0.25)
        for t0, f in ((0.4, 700), (1.1, 1400), (1.7, 2600), (2.4, 500), (2.9, 1900)):
            x = x + _hann_burst(t, t0, 0.25, f, 0.3)
        x = x + 0.01 * rng.standard_normal(n)
        return x[:, None]
    if name == "stereo44k1.flac":
        left = _chirp(t, 300, 5000, dur, 0.3) + 0.05 * np.sin(2 * np.pi * 9000 * t)  # 9 kHz: above 16 k's Nyquist
        right = 0.2 * np.sin(2 * np.pi * 440 * t)
        for t0 in (0.3, 1.0, 1.8):
            right = right + _hann_burst(t, t0, 0.3, 1200, 0.4)
        noise = 0.01 * rng.standard_normal((n, 2))
        return np.stack([left, right], axis=1) + noise
    if name == "stereo48k.wav":
        left = np.zeros(n)
        for t0, f in ((0.2, 900), (0.9, 3100), (1.5, 600)):
            left = left + _hann_burst(t, t0, 0.35, f, 0.5)
        right = _chirp(t, 4000, 300, dur, 0.3) + 0.05 * np.sin(2 * np.pi * 11000 * t)
        noise = 0.01 * rng.standard_normal((n, 2))
        return np.stack([left, right], axis=1) + noise
    raise KeyError(name)


def write_recording(name: str, out_dir: Path) -> Path:
    """Quantise exactly (PCM codes chosen here, not by libsndfile's float conversion) and write."""
    import soundfile as sf

    sr, ch, _, fmt, subtype = RECORDINGS[name]
    x = synth(name)
    path = out_dir / name
    if subtype == "PCM_16":
        data = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    elif subtype == "PCM_24":
        codes = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype(np.int32)
        data = codes << 8  # libsndfile keeps the top 24 bits of an int32 write
    else:
        data = x.astype(np.float32)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=ch, format=fmt, subtype=subtype) as f:
        if subtype == "FLOAT":
            # libsndfile adds a PEAK chunk holding the write TIME to float WAVs; switch it off so the file
            # (and every case's audio sha256) is reproducible
            sf._snd.sf_command(f._file, SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        f.write(data)
    back, _ = sf.read(str(path), dtype=data.dtype, always_2d=True)
    if not np.array_equal(back, data):
        raise RuntimeError(f"{path}: read-back differs from what was written")
    return path


# ---------------------------------------------------------------------------------------- windows


def select_windows(partial: list[bool], window_bytes: dict[int, int], fixed_bytes: int, max_bytes: int | None) -> list[int]:
    """``stored_windows``: ``window_priority`` taken in order while the tensor payload (``fixed_bytes`` of the
    ``all.*`` tensors + each stored window's tensors) fits ``max_bytes`` (None: no budget); ascending."""
    total, chosen = fixed_bytes, []
    for i in window_priority(partial):
        if max_bytes is None or total + window_bytes[i] <= max_bytes:
            chosen.append(i)
            total += window_bytes[i]
    return sorted(chosen)


# ------------------------------------------------------------------------------------------ hashing


# ------------------------------------------------------------------------------------ the capture

# Top-level keys of a case JSON, in file order (an error case has no results and carries ``error``).
KEY_ORDER = ("case", "family", "model", "audio", "frontend", "windows", "n_windows", "stored_windows", "labels",
             "activation", "stages", "store_budget", "tensor_shapes", "tensor_dtypes", "scores", "checks",
             "provenance", "note_floats")


@contextlib.contextmanager
def numpy_fbank():
    """Make transformers' AST feature extractor take its numpy fbank path.

    ``feature_extraction_audio_spectrogram_transformer.py`` imports ``is_speech_available`` into its module
    namespace and calls it both in ``ASTFeatureExtractor.__init__`` (to build ``mel_filters``/``window``
    only when False) and in ``_extract_fbank_features`` (to choose ``ta_kaldi.fbank`` vs
    ``audio_utils.spectrogram``); ``is_speech_available`` is ``_torchaudio_available`` (utils/import_utils.py).
    Patching that module-level name for the lifetime of the extractor is exactly "torchaudio absent".
    """
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as m

    saved = m.is_speech_available
    m.is_speech_available = lambda: False
    try:
        yield m
    finally:
        m.is_speech_available = saved


def _versions() -> dict:
    import librosa
    import soundfile
    import soxr
    import torch
    import torchaudio
    import transformers

    return {
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "librosa": librosa.__version__,
        "soxr": soxr.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "numpy": np.__version__,
    }


def load_model(model_dir: Path):
    """The user's loading code: AutoModelForAudioClassification, or the user's own class for the custom head."""
    import torch  # noqa: F401
    from transformers import AutoModelForAudioClassification

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = (cfg.get("architectures") or [None])[0]
    if arch == "Wav2Vec2ForSpeechClassification":
        sys.path.insert(0, str(HERE))
        from hf_models import Wav2Vec2ForSpeechClassification

        return Wav2Vec2ForSpeechClassification.from_pretrained(model_dir), arch, "hf_models.Wav2Vec2ForSpeechClassification.from_pretrained"
    return AutoModelForAudioClassification.from_pretrained(model_dir), arch, "transformers.AutoModelForAudioClassification.from_pretrained"


# Where M.features and M.pooled are taken (module paths inside the loaded model), per architecture.
FEATURES_MODULE = {
    "Wav2Vec2ForSequenceClassification": "wav2vec2.feature_extractor",
    "Wav2Vec2ForSpeechClassification": "wav2vec2.feature_extractor",
    "HubertForSequenceClassification": "hubert.feature_extractor",
    "WavLMForSequenceClassification": "wavlm.feature_extractor",
    "SEWDForSequenceClassification": "sew_d.feature_extractor",
    "ASTForAudioClassification": "audio_spectrogram_transformer.embeddings",
}
POOLED_MODULE = {
    "Wav2Vec2ForSequenceClassification": "classifier",
    "Wav2Vec2ForSpeechClassification": "classifier.dense",
    "HubertForSequenceClassification": "classifier",
    "WavLMForSequenceClassification": "classifier",
    "SEWDForSequenceClassification": "classifier",
    "ASTForAudioClassification": "classifier.dense",
}


def _weight_norm_keys(model_dir: Path, weights_file: str) -> list[str]:
    import torch

    path = model_dir / weights_file
    if weights_file.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
    else:
        keys = list(torch.load(str(path), map_location="cpu", weights_only=True))
    marks = ("weight_g", "weight_v", "parametrizations.")
    return sorted(k for k in keys if any(m in k for m in marks))


def capture(store: Path, model_name: str, rec: str, variant: str | None, capture_date: str, threads: int,
            max_bytes: int | None = None) -> Path:
    """One case ``<model>__<recording stem>[__<variant>]``: JSON (+ safetensors unless it is an error case)."""
    import librosa
    import soundfile as sf
    import torch
    from safetensors.torch import save as st_save
    from transformers import AutoFeatureExtractor

    torch.set_num_threads(threads)
    opts = VARIANTS[variant]
    model_dir = store / "models" / model_name
    if not (store / "audio" / rec).is_file():  # a stem: tones16k -> tones16k.wav
        rec = next((r for r in RECORDINGS if Path(r).stem == rec), rec)
    audio_path = store / "audio" / rec
    case = f"{model_name}__{Path(rec).stem}" + (f"__{variant}" if variant else "")

    fbank_ctx = numpy_fbank() if opts.get("fbank") == "numpy" else contextlib.nullcontext()
    with fbank_ctx:
        fe = AutoFeatureExtractor.from_pretrained(model_dir)
        model, arch, loader = load_model(model_dir)
        model.eval()
        is_ast = arch == "ASTForAudioClassification"
        if opts.get("fbank") == "numpy" and not (is_ast and hasattr(fe, "mel_filters")):
            raise RuntimeError("numpy-fbank variant: the extractor did not take transformers' numpy path")
        weights_file = "model.safetensors" if (model_dir / "model.safetensors").is_file() else "pytorch_model.bin"
        info = sf.info(str(audio_path))
        preprocessor = json.loads((model_dir / "preprocessor_config.json").read_text())
        window_s = preprocessor["max_length"] * AST_FRAME_S if is_ast else WINDOW_S
        hop_s = opts.get("hop_s", HOP_S)
        W, H = int(round(window_s * SR)), int(round(hop_s * SR))
        activation = "sigmoid" if model.config.problem_type == "multi_label_classification" else "softmax"
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        meta = {
            "case": case,
            "family": FAMILY,
            "model": {
                "dir": model_name,
                "architecture": arch,
                "weights_file": weights_file,
                "weights_sha256": sha256_file(model_dir / weights_file),
                "config_sha256": sha256_file(model_dir / "config.json"),
                "preprocessor_sha256": sha256_file(model_dir / "preprocessor_config.json"),
                # what the store's manifest checks (porting.golden: models/<file> must keep this sha256)
                "file": f"{model_name}/{weights_file}",
                "sha256": sha256_file(model_dir / weights_file),
                "weight_norm_keys": _weight_norm_keys(model_dir, weights_file),
                "loaded_with": loader,
                "attn_implementation": model.config._attn_implementation,
                "features_module": FEATURES_MODULE[arch],
                "pooled_module": POOLED_MODULE[arch],
                "pooled_is": "input of " + POOLED_MODULE[arch],
            },
            "audio": audio_record(audio_path, rec, info),
            "frontend": {
                "load": "librosa.load(path, sr=16000)  (mono=True: channel mean; res_type soxr_hq)",
                "sampling_rate": SR,
                "feature_extractor_type": type(fe).__name__,
                "fbank_backend": (("numpy" if opts.get("fbank") == "numpy" else "torchaudio-kaldi") if is_ast else None),
                "preprocessor": preprocessor,
            },
        }
        prov = {
            **_versions(),
            "harness": {"file": HARNESS_FILE, "sha256": sha256_file(HERE / "hf_capture.py")},
            "models_module": {"file": MODELS_FILE, "sha256": sha256_file(HERE / "hf_models.py")},
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "capture_date": capture_date,
            "command": f"python {HARNESS_FILE} capture --store <store> --case {model_name}:{rec}" + (f":{variant}" if variant else "")
            + (f" --max-bytes {max_bytes}" if max_bytes is not None else ""),
        }

        y, sr = librosa.load(str(audio_path), sr=SR)
        assert sr == SR and y.dtype == np.float32 and y.ndim == 1
        wmeta = {"window_s": window_s, "hop_s": hop_s, "window_samples": W, "hop_samples": H,
                 "resampled_samples": int(y.shape[0])}
        try:
            plan = window_plan(int(y.shape[0]), W, H, SR)
        except TooShort as exc:
            meta["windows"] = {**wmeta, "starts": [], "lengths": [], "partial": [], "unscored_tail_samples": int(y.shape[0])}
            meta["labels"] = labels
            meta["activation"] = activation
            meta["provenance"] = prov
            meta["error"] = {"type": type(exc).__name__, "module": "hf_capture", "message": str(exc)}
            out = store / "cases" / f"{case}.json"
            (store / "cases" / f"{case}.safetensors").unlink(missing_ok=True)
            _atomic_write(out, json.dumps(meta, indent=1).encode())
            return out
        meta["windows"] = {**wmeta, **plan}
        candidates = window_priority(plan["partial"])
        meta["n_windows"] = len(plan["starts"])
        meta["labels"] = labels
        meta["activation"] = activation

        modules = dict(model.named_modules())
        grabbed: dict = {}
        h1 = modules[FEATURES_MODULE[arch]].register_forward_hook(lambda m, a, o: grabbed.__setitem__("M.features", o.detach().clone()))
        h2 = modules[POOLED_MODULE[arch]].register_forward_pre_hook(lambda m, a: grabbed.__setitem__("M.pooled", a[0].detach().clone()))
        per_window: dict[int, dict[str, torch.Tensor]] = {}
        all_logits, all_probs, stage_names = [], [], None
        checks = {"input_values_dtype": None, "attention_mask_dtype": None, "attention_mask_all_ones": None}
        for i, (s, n) in enumerate(zip(plan["starts"], plan["lengths"])):
            window = y[s : s + n]
            inputs = fe(window, sampling_rate=SR, return_tensors="pt")
            iv = inputs["input_values"]
            am = inputs.get("attention_mask")
            checks["input_values_dtype"] = str(iv.dtype).replace("torch.", "")
            grabbed.clear()
            with torch.no_grad():
                kwargs = {"attention_mask": am} if am is not None else {}
                out = model(iv, output_hidden_states=True, **kwargs)
            logits = out.logits.detach().clone()
            probs = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)
            all_logits.append(logits[0])
            all_probs.append(probs[0])
            rec_t = {"A.waveform": torch.from_numpy(window.copy())[None], "F.input_values": iv.detach().clone()}
            if am is not None:
                rec_t["F.attention_mask"] = am.detach().clone()
                checks["attention_mask_dtype"] = str(am.dtype).replace("torch.", "")
                checks["attention_mask_all_ones"] = checks["attention_mask_all_ones"] in (None, True) and bool((am == 1).all())
            rec_t["M.features"] = grabbed["M.features"]
            for j, hs in enumerate(out.hidden_states):
                rec_t[f"M.hidden_states.{j}"] = hs.detach().clone()
            rec_t["M.pooled"] = grabbed["M.pooled"]
            rec_t["Y.logits"] = logits
            rec_t["Y.probs"] = probs
            names = list(rec_t)
            if stage_names is None:
                stage_names = names
            elif names != stage_names:
                raise RuntimeError(f"window {i} has stages {names}, window 0 had {stage_names}")
            if i in candidates:
                per_window[i] = {k: v.contiguous() for k, v in rec_t.items()}
        h1.remove()
        h2.remove()
    tensors = {"all.logits": torch.stack(all_logits).contiguous(), "all.probs": torch.stack(all_probs).contiguous()}
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    keep = select_windows(plan["partial"], {i: nbytes(d.values()) for i, d in per_window.items()},
                          nbytes(tensors.values()), max_bytes)
    for i in keep:
        tensors.update({f"w{i}/{k}": v for k, v in per_window[i].items()})
    meta["stored_windows"] = keep
    for k, v in tensors.items():
        if v.dtype not in (torch.float32, torch.int32, torch.int64):
            raise RuntimeError(f"{k}: unexpected dtype {v.dtype}")
    meta["stages"] = stage_names
    meta["store_budget"] = {"max_bytes": max_bytes, "priority": candidates,
                            "rule": "window 0, the last full window, the partial tail; each stored while the tensor payload fits"}
    meta["tensor_shapes"] = {k: list(v.shape) for k, v in sorted(tensors.items())}
    meta["tensor_dtypes"] = {k: str(v.dtype).replace("torch.", "") for k, v in sorted(tensors.items())}
    meta["scores"] = [
        {"index": i, "start": s, "length": n, "start_s": s / SR, "partial": p,
         "logits": all_logits[i].tolist(), "probs": all_probs[i].tolist(), "top": labels[int(all_logits[i].argmax())]}
        for i, (s, n, p) in enumerate(zip(plan["starts"], plan["lengths"], plan["partial"]))
    ]
    meta["checks"] = checks
    meta["provenance"] = prov
    meta["note_floats"] = NOTE_FLOATS
    meta = {k: meta[k] for k in KEY_ORDER if k in meta} | {k: v for k, v in meta.items() if k not in KEY_ORDER}
    cases = store / "cases"
    _atomic_write(cases / f"{case}.safetensors", st_save(tensors, metadata={"case": case}))
    out = cases / f"{case}.json"
    _atomic_write(out, json.dumps(meta, indent=1).encode())
    return out


def write_fingerprint(store: Path, threads: int) -> Path:
    """fingerprint.json of the reference venv on this machine, by porting/parity/fingerprint.py (stdlib+torch)."""
    import torch

    torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("_porting_fingerprint", ROOT / "porting" / "parity" / "fingerprint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_fingerprint(store)


def _parse_case(text: str) -> tuple[str, str, str | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--case {text!r}: expected MODEL:RECORDING[:VARIANT]")
    variant = parts[2] if len(parts) == 3 else None
    if variant not in VARIANTS:
        raise argparse.ArgumentTypeError(f"--case {text!r}: unknown variant {variant!r} (one of {[v for v in VARIANTS if v]})")
    return parts[0], parts[1], variant


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hf_capture", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audio", help="synthesize the recordings")
    a.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("capture", help="capture cases")
    c.add_argument("--store", type=Path, required=True)
    c.add_argument("--case", type=_parse_case, action="append", required=True, help="MODEL:RECORDING[:VARIANT]")
    c.add_argument("--capture-date", action="append", default=None,
                   help="UTC ISO date per --case (same order) or one for all; default: now")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--max-bytes", type=int, action="append", default=None,
                   help="tensor payload budget per --case (same order) or one for all; -1: none (default)")
    f = sub.add_parser("fingerprint", help="write fingerprint.json")
    f.add_argument("--store", type=Path, required=True)
    f.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "audio":
        args.out.mkdir(parents=True, exist_ok=True)
        for name in RECORDINGS:
            print(write_recording(name, args.out))
        return 0
    if args.cmd == "fingerprint":
        print(write_fingerprint(args.store, args.threads))
        return 0
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    dates = args.capture_date or [now]
    if len(dates) not in (1, len(args.case)):
        p.error("--capture-date: give one, or one per --case")
    budgets = args.max_bytes or [-1]
    if len(budgets) not in (1, len(args.case)):
        p.error("--max-bytes: give one, or one per --case")
    for i, (model_name, rec, variant) in enumerate(args.case):
        b = budgets[i if len(budgets) > 1 else 0]
        out = capture(args.store, model_name, rec, variant, dates[i if len(dates) > 1 else 0], args.threads,
                      None if b < 0 else b)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
