"""HF-style folder files beside ``model.safetensors`` + ``config.json``: ``preprocessor_config.json`` and a
``README.md`` model card (architecture, classes, preprocessing with its quirks, the parity table, how to run
each artifact). Both are pure functions of config.json and parity.json.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from .graph import StageGraph

PREPROCESSOR_NAME = "preprocessor_config.json"
CARD_NAME = "README.md"
PREPROCESSOR_FORMAT = "porting.preprocessor/1"


def preprocessor_config(config: dict) -> dict:
    """Stage A-C parameters and normalization, each quirk named with its golden/README.md section."""
    fe = StageGraph.from_config(config).frontend
    w, m, p = fe.windows, fe.mel, fe.pad
    norm = config.get("normalize")
    return {
        "format": PREPROCESSOR_FORMAT,
        "feature_extractor_type": "porting.OrcaHelloLegacyFrontend",
        "sampling_rate": w.sample_rate,
        "spec": "golden/README.md §1-§4 (the legacy fastai 1.0.61 + fastai_audio 0.1 flow, with evidence)",
        "windows": {
            "window_s": w.window_s, "hop_s": w.hop_s, "sample_rate": w.sample_rate, "downmix": w.downmix,
            "pcm16_cache_round_trips": w.cache_round_trips, "window_samples": w.window_samples,
            "quirks": [
                "windows [i, i+2] s for i in range(int(floor(duration) - 1)); the tail past the last whole second is "
                "never scored; < 2 s gives no window (legacy crashed with KeyError: 0) (§1)",
                "pydub ms slicing/re-encoding: PCM_24 becomes PCM_32 with the sign byte as low byte; FLOAT is clipped "
                "to [-1, 1] by ffmpeg's s32 export (§2)",
                "downmix = float32 mean over channels, then a PCM_16 cache write/read; resample_poly(20000/g, sr/g) "
                "(Kaiser beta 5), then another PCM_16 write/read: int16 = floor(rint(x*2^31)/2^16), a truncation (§3)",
            ],
        },
        "mel": {
            "n_fft": m.n_fft, "hop_length": m.hop_length, "win_length": m.win_length or m.n_fft,
            "window": "hann, periodic, float32", "center": m.center, "pad_mode": m.pad_mode, "power": m.power,
            "n_mels": m.n_mels, "f_min": m.f_min, "f_max": m.f_max, "mel_scale": "htk", "mel_norm": None,
            "mel_sample_rate": m.mel_sample_rate, "db_ref": 1.0, "amin": m.amin, "top_db": m.top_db,
            "frames_per_window": 1 + w.window_samples // m.hop_length,
            "quirks": [
                f"filterbank laid out for sample_rate {m.mel_sample_rate} (torchaudio's default; fastai_audio never "
                f"passed the real {w.sample_rate}): bins labelled 0..{m.mel_sample_rate // 2} Hz, analysed frequencies "
                "are x1.25, the top 18 of 256 filters are all-zero (§3)",
                "power = |X| ** 2; dB = 10*log10(clamp(x, 1e-10)); the top_db clamp is per window (legacy called "
                "AmplitudeToDB one window at a time) (§3)",
                "the STFT is float32 on the CPU FFT: any other FFT (float64 included) moves quiet bands by up to "
                "0.016 dB (§3, porting.dsp.mel)",
            ],
        },
        "pad": {
            "frames": p.frames, "pad_value_db": p.pad_value, "position": "after",
            "quirks": [
                f"crop_width = int({p.sample_rate} * {p.duration_ms / 1000:g} / {p.hop_length}) = {p.frames} frames; "
                "0.0 dB (usually above the spectrogram's own values) is appended after ('zeros-after') (§3)",
            ],
        },
        "normalize": None if not norm else {
            "mean": norm["mean"], "std": norm["std"], "formula": "(x - mean[c]) / std[c] per channel, float32",
            "quirks": ["applied after padding, so the 0.0 dB padding becomes -mean/std; a fastai_audio export only "
                       "loads with the ImageDataBunch.normalize shim (§4)"],
        },
        "model_input_shape": [1, m.n_mels, p.frames],
        "activation": config.get("activation") or {"name": "softmax", "dim": -1},
        "activation_note": "the loss's activation as Learner.predict applied it (CrossEntropyFlat: softmax over the last axis) (§4)",
        "classes": config.get("classes"),
        "positive_index": config.get("positive_index"),
        "aggregation": "per-second score = mean of the two windows covering it; local = conf > 0.5; global = "
                       "sum(local) >= 3 (§5)",
    }


def _architecture(config: dict) -> tuple[str, Counter, int]:
    """(root class, leaf-layer counts by short class name, parameter count) from config.json alone."""
    counts: Counter = Counter()

    def walk(node: dict) -> None:
        children = [c for _, c in node.get("children", []) if c is not None]
        if not children:
            counts[node["class"].rsplit(".", 1)[-1]] += 1
        for child in children:
            walk(child)

    arch = config.get("architecture") or {"class": "?", "children": []}
    walk(arch)
    params = sum(math.prod(v["shape"]) for k, v in config.get("state_dict", {}).items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return arch["class"], counts, params


def _fmt(d) -> str:
    return "-" if d is None else f"{d:.2e}"


def parity_table(parity: dict) -> list[str]:
    """Markdown rows: artifact, runtime, worst gating diff vs eager (probe) and vs goldens, PASS/FAIL."""
    rows = ["| artifact | runtime | max abs diff vs eager (probe) | vs goldens | worst diff / tolerance | result |",
            "|---|---|---|---|---|---|"]
    for name, art in parity.get("artifacts", {}).items():
        if art.get("error"):
            rows.append(f"| {name} | - | - | - | - | **FAILED**: {art['error']} |")
            continue
        for entry, gating in [(art, True)] + [(x, False) for x in art.get("informational", [])]:
            eager = [c["max_abs_diff"] for c in entry["checks"] if c["against"] == "eager"]
            golden = [c["max_abs_diff"] for c in entry["checks"] if c["against"] == "golden"]
            margins = [c.get("margin") for c in entry["checks"]]
            worst = lambda v: "inf" if any(d is None for d in v) else _fmt(max(v) if v else None)  # noqa: E731
            result = ("PASS" if entry["passed"] else "**FAILED**") if gating else \
                ("within the contract (not gating)" if entry["passed"] else "misses the contract (not gating)")
            rows.append(f"| {name if gating else ''} | {entry['runtime']} | {worst(eager)} | {worst(golden)} | "
                        f"{worst(margins)} | {result} |")
    return rows


def model_card(config: dict, parity: dict) -> str:
    """The README.md model card."""
    src = config.get("source", {})
    root, counts, params = _architecture(config)
    fe = StageGraph.from_config(config).frontend
    norm = config.get("normalize")
    classes = config.get("classes")
    pos = config.get("positive_index")
    act = (config.get("activation") or {"name": "softmax"}).get("name")
    layers = ", ".join(f"{n} x{c}" for n, c in counts.most_common())
    golden = parity.get("golden") or {}
    n_cases = len(golden.get("cases", []))
    golden_line = (f"Goldens: {n_cases} case{'s' if n_cases != 1 else ''} from `{golden.get('dir')}` "
                   f"({', '.join(golden.get('cases', [])) or 'none for this model sha256'})." if golden else
                   "Goldens: none given (`port convert --golden DIR` adds them).")
    lines = [
        f"# {Path(src.get('file', 'model')).stem} (ported from {src.get('kind', '?')})",
        "",
        f"Plain-torch port of `{src.get('file')}` (sha256 `{src.get('sha256')}`), written by "
        f"`porting {config.get('porting_version', '?')}`: no fastai, no pickle execution. Every artifact below was "
        f"run in its own runtime and compared with the eager port and the goldens by the parity contract "
        f"({parity.get('rules', 'logits by the row rule, probabilities 1e-5 absolute')}).",
        "",
        "## Architecture",
        "",
        f"`{root}`: {params:,} parameters; layers: {layers}.",
        "",
        "## Classes",
        "",
        f"{classes}; the detector's confidence is the {act} output of index {pos}"
        f" ({classes[pos] if classes and pos is not None and pos < len(classes) else '?'}).",
        "",
        "## Preprocessing (see preprocessor_config.json, golden/README.md §1-§4)",
        "",
        f"1. A: 2-s windows, 1-s hop, downmixed and resampled to {fe.windows.sample_rate} Hz with the legacy PCM_16 "
        "cache round trips (truncating, not rounding); recordings < 2 s give no window.",
        f"2. B: STFT n_fft {fe.mel.n_fft}, hop {fe.mel.hop_length}, periodic Hann, reflect-centred; power; {fe.mel.n_mels} "
        f"HTK mel filters **laid out for {fe.mel.mel_sample_rate} Hz** (legacy quirk: top 18 filters all-zero); "
        f"10*log10, clamped per window at max - {fe.mel.top_db:g} dB.",
        f"3. C: **0.0 dB appended** after the 157 frames up to {fe.pad.frames}.",
        (f"4. Normalization `(x - {norm['mean']}) / {norm['std']}`, padding included." if norm else
         "4. No normalization (the learner carried no stats)."),
        f"5. Model, then {act} (the loss's activation, as `Learner.predict` applied it).",
        "",
        "## Artifacts and parity",
        "",
        "`model.*` take the model input AFTER normalization, `[B, 1, 256, 312]` float32 (input `spectrogram`, "
        "output `logits`); normalization is NOT inside them. `pipeline.*` take stage-A windows `[B, 40000]` float32 "
        "(input `waveform`) and contain stages B, C, normalization, model and softmax (outputs `confidence`, "
        "`probs`, `logits`). ONNX/TFLite pipelines compute the STFT as a conv1d DFT, which cannot be bitwise with "
        "the CPU FFT the legacy used; TorchScript/pt2 pipelines keep torch.stft. `detector.onnx` (where written) "
        "is `model.onnx` for 2-s windows only: frames 157.. must be stage C's pad, which it does not read "
        "(computed once, `porting.families.orcahello.padfold`); `port detect` runs it. `winograd` is a backend with no file: "
        "`port detect --backend winograd` rebuilds it from `model.safetensors` at load (BN folded, ReLU/residual "
        "fused, Winograd F(2,3) convolutions, `porting.families.orcahello.winograd`), checked here like the artifacts.",
        "",
        f"Probe: {parity.get('probe', {}).get('description', '-')}. {golden_line}",
        "",
        *parity_table(parity),
        "",
        "Full per-output numbers and runtime versions: `parity.json`. A FAILED artifact must not be deployed.",
        "",
        "## How to run",
        "",
        "```python",
        "import numpy as np, onnxruntime as ort, torch",
        "x = np.zeros((2, 1, 256, 312), np.float32)   # normalized model input",
        "w = np.zeros((2, 40000), np.float32)         # 20 kHz stage-A windows",
        "ort.InferenceSession('model.onnx').run(['logits'], {'spectrogram': x})",
        "ort.InferenceSession('pipeline.onnx').run(['confidence', 'probs'], {'waveform': w})",
        "torch.jit.load('model.torchscript.pt')(torch.from_numpy(x))               # logits",
        "torch.export.load('pipeline.pt2').module()(torch.from_numpy(w))           # (confidence, probs, logits)",
        "from ai_edge_litert.interpreter import Interpreter, OpResolverType",
        "it = Interpreter('pipeline.tflite', experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
        "it.get_signature_runner('batch_1')(waveform=w[:1])   # fixed batch: one signature batch_N per batch size",
        "```",
        "",
        "From recordings: `port detect rec.wav --model THIS_DIR [--backend onnx]`.",
        "",
    ]
    return "\n".join(lines)


def write_hf_files(config: dict, parity: dict, out_dir: str | Path) -> list[Path]:
    """Write ``preprocessor_config.json`` and ``README.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    pre = out_dir / PREPROCESSOR_NAME
    pre.write_text(json.dumps(preprocessor_config(config), indent=1) + "\n")
    card = out_dir / CARD_NAME
    card.write_text(model_card(config, parity))
    return [pre, card]
