"""Rebuild an HF audio classifier in plain torch and the porting ``config.json`` that describes it.

``rebuild(spec)`` builds the module from ``config.json`` alone, folds weight norm (``base.fold_weight_norm``), checks
every tensor's shape against what the config implies (a mismatch is a one-line error naming the key, never a
partial load), then loads with ``strict=True``. The converted folder stores the folded state dict, so loading it
needs no fold and its keys are the rebuild's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import MalformedModelError, UnsupportedModelError
from .base import AudioClassifier, fold_weight_norm
from .folder import AST, SUPPORTED, HFSpec, labels_of

FAMILY = "hf"
DEFAULT_WINDOW_S = 5.0  # issue 12: "default: the model's clip length if recorded, else 5 s"


def architecture_class(architecture: str):
    """The rebuild class for a supported architecture name (imported on demand: each pulls only its own code)."""
    if architecture == AST:
        from .ast import ASTForAudioClassification

        return ASTForAudioClassification
    from .heads import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise UnsupportedModelError(f"architecture {architecture} is not rebuilt by porting; supported: "
                                    f"{', '.join(SUPPORTED)}")
    return ARCHITECTURES[architecture]


def weight_norm_prefixes(architecture: str, config: dict) -> dict[str, int]:
    """Full-key prefix of each weight-normed conv (the positional conv embedding) -> weight_norm's dim; AST has none."""
    if architecture == AST:
        return {}
    from .heads import weight_norm_dims

    return weight_norm_dims(architecture, config)


def build(architecture: str, config: dict, semantics: int = 4, where: str = "config.json") -> AudioClassifier:
    """The rebuild of ``architecture`` from the HF config dict, following transformers ``semantics``.x
    (``porting.families.hf.semantics``). The config was checked by ``porting.schema``, so a failure here is a porting bug's or
    a combination the schema does not know: still one line naming the file."""
    from .semantics import with_semantics

    try:
        return architecture_class(architecture)(with_semantics(config, semantics)).eval()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise MalformedModelError(f"{where}: cannot build {architecture} from it ({type(exc).__name__}: {why}); "
                                  "check the config against the weights") from exc


def load_weights(model: AudioClassifier, state: dict, where: str) -> AudioClassifier:
    """Strict load after checking names and shapes, so every problem is one line naming the key."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        what = (f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")) if missing else \
            (f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
        raise MalformedModelError(f"{where}: weights do not match config.json ({what}); the folder mixes two models")
    for k, t in want.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise MalformedModelError(f"{where}: tensor {k} has shape {list(state[k].shape)} but config.json implies "
                                      f"{list(t.shape)}; the weights do not belong to this config")
    model.load_state_dict({k: state[k].to(t.dtype) for k, t in want.items()}, strict=True)
    return model.eval()


def rebuild(spec: HFSpec) -> tuple[AudioClassifier, dict]:
    """``(model, folded state dict)`` for an HF folder read by ``read_hf_folder``."""
    state = fold_weight_norm(spec.state, weight_norm_prefixes(spec.architecture, spec.config))
    model = build(spec.architecture, spec.config, semantics_major(spec), str(spec.dir / "config.json"))
    return load_weights(model, state, str(spec.dir / spec.weights_file)), model.state_dict()


def frontend_config(architecture: str, preprocessor: dict | None, where: str) -> dict:
    """The frontend record of config.json: which feature extractor, its settings, the fbank backend."""
    if preprocessor is None:
        raise MalformedModelError(f"{where}: no preprocessor_config.json; the feature extractor (and sampling rate) is "
                                  "unknown: add the one the model was trained with")
    fe_type = preprocessor.get("feature_extractor_type")
    kind = "ast" if architecture == AST else "wav2vec2"
    expected = {"ast": "ASTFeatureExtractor", "wav2vec2": "Wav2Vec2FeatureExtractor"}[kind]
    if fe_type is not None and fe_type != expected:
        raise UnsupportedModelError(f"{where}: preprocessor_config.json names {fe_type}; {architecture} is ported with "
                                    f"{expected} only")
    out = {"type": kind, "preprocessor": dict(preprocessor)}
    if kind == "ast":
        # transformers uses torchaudio's kaldi fbank whenever torchaudio imports (AST checkpoints were trained
        # with it); its numpy fallback differs by float rounding. golden/hf/README.md records which a case used.
        out["fbank_backend"] = "torchaudio-kaldi"
    return out


def default_windows(architecture: str, preprocessor: dict | None) -> dict:
    """Window length: the clip length the model records (AST: ``max_length`` 10-ms frames), else 5 s; hop = window."""
    rate = int((preprocessor or {}).get("sampling_rate", 16000))
    if architecture == AST and preprocessor and preprocessor.get("max_length"):
        win = round(int(preprocessor["max_length"]) * 0.010, 6)
        why = f"ASTFeatureExtractor max_length {preprocessor['max_length']} frames x 10 ms"
    else:
        win, why = DEFAULT_WINDOW_S, "no clip length recorded: 5 s"
    return {"window_s": win, "hop_s": win, "sample_rate": rate, "why": why}


def make_config(spec: HFSpec, state: dict) -> dict:
    """porting's config.json for an HF model: the original config verbatim plus what the graph needs."""
    from ... import __version__
    from .semantics import resolve as resolve_semantics

    cfg = {
        "format": "porting.model/1",
        "family": FAMILY,
        "porting_version": __version__,
        "source": {"file": spec.dir.name, "kind": "hf-folder", "weights_file": spec.weights_file,
                   "sha256": dict(spec.sha256)},
        "hf_architecture": spec.architecture,
        "classes": labels_of(spec.config, spec.architecture, spec.state),
        "positive_index": None,
        "activation": ({"name": "sigmoid"} if spec.config.get("problem_type") == "multi_label_classification"
                       else {"name": "softmax", "dim": -1}),
        "frontend": frontend_config(spec.architecture, spec.preprocessor, str(spec.dir)),
        "windows": default_windows(spec.architecture, spec.preprocessor),
        "transformers_semantics": spec.semantics or resolve_semantics(spec.config),
        "hf_config": spec.config,
        "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in state.items()},
    }
    return json.loads(json.dumps(cfg))


def load_converted(path: Path, config: dict, state: dict | None = None) -> AudioClassifier:
    """The rebuild from a converted folder (folded weights, keys = the rebuild's); ``config`` was read and checked
    by ``porting.convert._load_dir`` (``porting.schema.check_converted``)."""
    from ...io.weights import check_weights, read_safetensors

    st = path / "model.safetensors"
    if state is None:
        state = check_weights(read_safetensors(st, "re-run `port convert`"), st)
    model = build(config["hf_architecture"], config["hf_config"], converted_semantics(config, path),
                  str(path / "config.json"))
    return load_weights(model, state, str(st))


def semantics_major(spec: HFSpec) -> int:
    from .semantics import resolve

    return int((spec.semantics or resolve(spec.config))["major"])


def converted_semantics(config: dict, path: Path | None = None) -> int:
    """The major a converted folder's config.json records (conversions older than issue 20 have none: they were
    rebuilt with 4.x semantics, so 4)."""
    from .semantics import MAJORS

    rec = config.get("transformers_semantics")
    major = rec.get("major") if isinstance(rec, dict) else (4 if rec is None else None)
    if major not in MAJORS:
        raise MalformedModelError(f"{path or 'config.json'}: transformers_semantics {rec!r} is not 4 or 5; re-run "
                                  "`port convert`")
    return int(major)


def load_hf(path: str | Path, transformers_semantics=None) -> tuple[AudioClassifier, dict]:
    """``(model, porting config)`` straight from an HF folder (what ``port convert`` would write, in memory);
    ``transformers_semantics`` 4/5 overrides what config.json's ``transformers_version`` says."""
    from .folder import read_hf_folder

    spec = read_hf_folder(path, transformers_semantics)
    model, state = rebuild(spec)
    return model, make_config(spec, state)


def check_converted_semantics(config: dict, path: Path, requested) -> None:
    """A converted folder holds one semantics (its config.json ``transformers_semantics``); asking for another is
    refused, since the conversion's parity.json verified the recorded one."""
    from .semantics import check_override

    want = check_override(requested)
    if config.get("family") != FAMILY:
        raise UnsupportedModelError(f"{path}: --transformers-semantics applies to Hugging Face models only")
    have = converted_semantics(config, path)
    if want is not None and want != have:
        raise UnsupportedModelError(f"{path}: converted with transformers {have}.x semantics; re-run `port convert "
                                    f"--transformers-semantics {want}` on the HF folder for {want}.x")


def model_card(config: dict, parity: dict | None = None) -> str:
    """``README.md`` of a converted HF folder: what it is, which transformers semantics it follows and why, how to
    run it; parity.json holds the numbers."""
    from .semantics import DIFFERENCES, describe

    sem = config["transformers_semantics"]
    lines = [
        f"# {config['source']['file']} (ported by porting {config['porting_version']})",
        "",
        f"- architecture: {config['hf_architecture']}",
        f"- labels: {', '.join(config['classes'])} ({config['activation']['name']})",
        f"- source weights: {config['source']['weights_file']} (sha256 "
        f"{config['source']['sha256'].get(config['source']['weights_file'], '?')})",
        f"- windows: {config['windows']['window_s']} s, hop {config['windows']['hop_s']} s at "
        f"{config['windows']['sample_rate']} Hz ({config['windows']['why']})",
        f"- semantics: {describe(sem)}",
        "",
        "## transformers semantics",
        "",
        f"This conversion computes what transformers {sem['major']}.x computes for this checkpoint (config.json "
        "`transformers_semantics`). transformers 4.x and 5.x differ for these architectures in:",
        "",
    ]
    lines += [f"- `{k}`: {v}" for k, v in DIFFERENCES.items()]
    lines += [
        "",
        "To follow the other major, convert again with `port convert HF_DIR --out DIR --transformers-semantics 4|5`.",
        "",
        "## Run",
        "",
        "    port detect REC.wav --model DIR [--json OUT]",
        "",
    ]
    if parity is not None:
        lines += ["## Parity", "", f"parity.json: {'every artifact passed' if parity['passed'] else 'SOME ARTIFACT FAILED'}"
                  f" ({', '.join(parity['artifacts']) or 'no artifact'}); golden: {parity['golden'] or 'none'}", ""]
    return "\n".join(lines)
