"""Reading a Hugging Face model folder as data: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
``preprocessor_config.json``. Nothing in it is imported or executed: no ``trust_remote_code``, no ``auto_map``
module, and ``pytorch_model.bin`` goes through the restricted unpickler (``porting.io.unpickle``), which
refuses a payload naming ``os.system`` & co. with nothing run.

The head is recognised from the state-dict keys *and* ``config.architectures`` (``recognise``): the keys say what
the weights are (``classifier.dense.*`` + ``classifier.out_proj.*`` is the custom ``Wav2Vec2ForSpeechClassification``
head; ``projector.*`` + ``classifier.*`` the standard ``*ForSequenceClassification`` one), the config says what the
author called it; when they disagree, or either is unknown, the error names the class and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...io import files
from ...errors import MalformedModelError, PortingError, UnsafePickleError, UnsupportedModelError
from ...schema import show
from ...io.weights import check_weights, read_safetensors
from .schema import AST, CUSTOM_SPEECH, SEQUENCE_CLASSIFICATION, SUPPORTED  # noqa: F401 (the supported architectures)

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
BIN = "pytorch_model.bin"
PREPROCESSOR = "preprocessor_config.json"

# base-model attribute (state-dict prefix) -> model_type values transformers writes for it
BASES = {
    "wav2vec2": ("wav2vec2",),
    "hubert": ("hubert",),
    "wavlm": ("wavlm",),
    "sew_d": ("sew-d",),
    "audio_spectrogram_transformer": ("audio-spectrogram-transformer",),
}


@dataclass(frozen=True)
class HFSpec:
    """What an HF folder holds, read without executing anything."""

    dir: Path
    config: dict
    state: dict = field(repr=False)  # key -> torch.Tensor, as stored (weight-norm pairs not yet folded)
    preprocessor: dict | None
    architecture: str  # one of SUPPORTED
    weights_file: str
    sha256: dict  # file name -> sha256 of config, weights, preprocessor
    semantics: dict | None = None  # porting.families.hf.semantics.resolve: the transformers major followed, and why

    @property
    def labels(self) -> list[str]:
        return labels_of(self.config, self.architecture, self.state)


def is_hf_folder(path: str | Path) -> bool:
    """A folder whose config.json is a transformers config (``model_type``/``architectures``), not porting's own.
    Anything at config.json that is not a readable regular file (a FIFO, a device) is not taken for porting's own
    either: it answers True so that ``read_hf_folder`` reports it in one line instead of a later probe hanging."""
    cfg = Path(path) / CONFIG
    if not files.exists(cfg):
        return False
    if not files.is_regular(cfg):
        return True
    try:
        d = files.read_json(cfg, "the model config")
    except PortingError:
        return True
    return isinstance(d, dict) and "format" not in d and ("model_type" in d or "architectures" in d)


def _sha256(path: Path) -> str:
    from ...golden import file_digest

    return file_digest(path)["sha256"]


def _json(path: Path, what: str) -> dict:
    d = files.read_json(path, what, fix="restore the file the model was published with")
    if not isinstance(d, dict):
        raise MalformedModelError(f"{path}: {what} is {show(d)}, not a JSON object; restore the file the model was "
                                  "published with")
    return d


def read_weights(folder: Path) -> tuple[dict, str]:
    """``{key: tensor}`` from model.safetensors (preferred) or pytorch_model.bin (restricted unpickling)."""
    st, binf = folder / SAFETENSORS, folder / BIN
    if files.exists(st):
        return check_weights(read_safetensors(st, "re-download or re-save the model"), st), SAFETENSORS
    if files.exists(binf):
        from ...io.unpickle import TensorRef, describe, read_file, unpickle

        unp = unpickle(read_file(binf))
        if unp.refused:
            raise UnsafePickleError(f"{binf}: refused dangerous globals {', '.join(unp.refused)} "
                                    "(nothing was executed); do not load this file")
        root = unp.root
        if not (isinstance(root, dict) and root and all(isinstance(v, TensorRef) for v in root.values())):
            raise MalformedModelError(f"{binf}: holds {describe(root)}, not a state dict of tensors")
        return check_weights({str(k): v.tensor for k, v in root.items()}, binf), BIN
    if (folder / (SAFETENSORS + ".index.json")).is_file() or (folder / (BIN + ".index.json")).is_file():
        raise UnsupportedModelError(f"{folder}: sharded checkpoints are not supported; merge the shards into one "
                                    f"{SAFETENSORS}")
    raise MalformedModelError(f"{folder}: no {SAFETENSORS} or {BIN} beside {CONFIG}")


def _base_prefix(keys) -> str | None:
    heads = {k.split(".", 1)[0] for k in keys}
    found = [b for b in BASES if b in heads]
    return found[0] if len(found) == 1 else None


HEAD_KEYS = {
    **{cls: (base, ("projector.weight", "classifier.weight")) for base, cls in SEQUENCE_CLASSIFICATION.items()},
    CUSTOM_SPEECH: ("wav2vec2", ("classifier.dense.weight", "classifier.out_proj.weight")),
    AST: ("audio_spectrogram_transformer", ("classifier.dense.weight", "classifier.layernorm.weight")),
}


def recognise(config: dict, keys, where: str | Path = CONFIG) -> str:
    """The architecture from the state-dict keys, checked against ``config.architectures`` (already validated: a
    list of strings or absent). ``where`` names the config file in messages."""
    keys = set(keys)
    named = (config.get("architectures") or [None])[0]
    base = _base_prefix(keys)
    by_keys = None
    for cls, (cls_base, head) in HEAD_KEYS.items():
        if base == cls_base and set(head) <= keys and (by_keys is None or cls == named):
            by_keys = cls
    if by_keys is None:
        if named in HEAD_KEYS and base == HEAD_KEYS[named][0]:
            lacking = [k for k in HEAD_KEYS[named][1] if k not in keys]
            raise MalformedModelError(
                f"{where}: names class {named} but the weights lack its head key{'s' if len(lacking) > 1 else ''} "
                f"{', '.join(lacking)}; the weights are incomplete or of another head: export the whole model")
        what = f"class {named}" if named else "no architectures entry"
        head = sorted(k for k in keys if not k.startswith(f"{base}."))[:3] if base else sorted(keys)[:3]
        raise UnsupportedModelError(
            f"{where}: names {what} and the weights' head keys are {head or 'absent'}: not an audio "
            f"classifier porting rebuilds (supported: {', '.join(SUPPORTED)})")
    if named is not None and named != by_keys:
        if named in SUPPORTED:
            raise MalformedModelError(f"{where}: names class {named} but the weights hold a {by_keys} "
                                      f"(keys under {base}. and {sorted(k for k in keys if k.startswith('classifier.'))[0]}); "
                                      "fix architectures in config.json")
        raise UnsupportedModelError(f"{where}: names class {named}, which porting does not rebuild; its weights "
                                    f"look like {by_keys} (supported: {', '.join(SUPPORTED)})")
    model_type = config.get("model_type")
    if model_type is not None and model_type not in BASES[base]:
        raise MalformedModelError(f"{where}: model_type = {model_type!r} but the weights are a {base} model; must be "
                                  f"{' or '.join(map(repr, BASES[base]))}")
    return by_keys


def labels_of(config: dict, architecture: str, state: dict | None = None) -> list[str]:
    """``id2label`` in index order (transformers' default names ``LABEL_i`` when absent)."""
    from .base import num_labels

    id2label = config.get("id2label") or {}
    n = num_labels(config)
    if state is not None:
        w = state.get("classifier.out_proj.weight", state.get("classifier.dense.weight" if architecture == AST else
                                                              "classifier.weight"))
        if w is not None:
            n = int(w.shape[0])
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def read_hf_folder(path: str | Path, transformers_semantics=None) -> HFSpec:
    """Read an HF model folder without executing anything; one-line errors naming the file, class or key.
    ``transformers_semantics`` (4, 5 or None: what config.json's transformers_version says) picks the semantics."""
    from .semantics import resolve
    folder = Path(path)
    if not folder.is_dir():
        raise MalformedModelError(f"{folder}: not a directory; pass an HF model folder")
    if not files.exists(folder / CONFIG):
        raise MalformedModelError(f"{folder}: no {CONFIG}; an HF model folder holds {CONFIG} and {SAFETENSORS} "
                                  f"or {BIN}")
    from .schema import check_hf_config, check_preprocessor, hf_common_schema, validate  # noqa: F811

    config = validate(_json(folder / CONFIG, "the model config"), hf_common_schema(), folder / CONFIG)
    semantics = resolve(config, transformers_semantics, str(folder / CONFIG))
    state, weights_file = read_weights(folder)
    arch = recognise(config, state.keys(), folder / CONFIG)
    config = check_hf_config(config, arch, folder / CONFIG, sum(t.numel() for t in state.values()))
    pre = None
    if files.exists(folder / PREPROCESSOR):
        pre = check_preprocessor(_json(folder / PREPROCESSOR, "the preprocessor config"),
                                 "ast" if arch == AST else "wav2vec2", folder / PREPROCESSOR)
    sha = {CONFIG: _sha256(folder / CONFIG), weights_file: _sha256(folder / weights_file)}
    if pre is not None:
        sha[PREPROCESSOR] = _sha256(folder / PREPROCESSOR)
    return HFSpec(folder, config, state, pre, arch, weights_file, sha, semantics)


def inspect_folder(path: str | Path, transformers_semantics=None) -> dict:
    """JSON-safe report for ``port inspect DIR``: files, architecture, labels, tensors, preprocessor, problems."""
    from .semantics import check_override

    check_override(transformers_semantics)  # a bad option is an error, not a problem of the folder
    folder = Path(path)
    report: dict = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir()) if folder.is_dir() else [],
                    "problems": []}
    try:
        spec = read_hf_folder(folder, transformers_semantics)
    except (MalformedModelError, UnsupportedModelError, UnsafePickleError) as err:
        report["problems"].append(f"{type(err).__name__}: {err}")
        return report
    cfg = spec.config
    report.update(
        architecture=spec.architecture,
        config_architectures=cfg.get("architectures"),
        model_type=cfg.get("model_type"),
        weights=spec.weights_file,
        sha256=spec.sha256,
        labels=spec.labels,
        remote_code=bool(cfg.get("auto_map")),
        tensors={"count": len(spec.state), "elements": int(sum(t.numel() for t in spec.state.values()))},
        preprocessor=spec.preprocessor,
        transformers_semantics=spec.semantics,
        encoder={k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "feat_extract_norm", "do_stable_layer_norm", "pooling_mode",
                                         "use_weighted_layer_sum", "squeeze_factor", "max_length", "num_mel_bins")
                 if k in cfg},
    )
    if spec.preprocessor is None:
        report["problems"].append(f"MalformedModelError: {folder / PREPROCESSOR}: missing; the frontend is unknown")
    return report


def format_inspect(report: dict) -> str:
    from .semantics import describe as describe_semantics

    lines = [f"folder: {report['folder']}", f"files: {', '.join(report['files'])}"]
    if "architecture" in report:
        lines += [
            f"architecture: {report['architecture']} (config.architectures: {report['config_architectures']}, "
            f"model_type: {report['model_type']})",
            f"weights: {report['weights']} ({report['tensors']['count']} tensors, "
            f"{report['tensors']['elements']:,} elements; read as data, nothing executed)",
            f"labels: {report['labels']}",
            f"semantics: {describe_semantics(report['transformers_semantics'])}",
            "encoder: " + ", ".join(f"{k}={v}" for k, v in report["encoder"].items()),
            f"preprocessor: {report['preprocessor']}",
        ]
        if report["remote_code"]:
            lines.append("remote code: config.json names auto_map modules; never imported")
    for p in report["problems"]:
        lines.append(f"problem: {p}")
    return "\n".join(lines)
