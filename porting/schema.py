"""Declared schemas for every JSON document porting reads, checked once, when the file is read.

Each file (an HF ``config.json`` per architecture, ``preprocessor_config.json`` per feature extractor, the
``config.json`` that ``port convert`` writes, a golden ``MANIFEST.json``, ``parity.json``) has one ``Schema``: the
fields the code reads, each with its type and the range that makes sense for the architecture, plus cross-field
rules (``num_attention_heads`` divides ``hidden_size``, the CNN lists have one length, ...). ``validate`` turns the
first violation into one ``PortingError`` line: ``<file>: <field> = <value>; must be <allowed values>``, so
everything after the read can index the document without re-checking it. Unknown fields are kept and ignored (HF
configs carry dozens the rebuild never reads).

Size limits: each dimension is bounded far above any published checkpoint, and ``hf_parameter_floor`` gives a lower
bound of the parameter count a config implies, refused before anything is built when it exceeds
``MAX_PARAMETERS`` or the elements the weights file actually holds (a config claiming 100,000 layers over a
40,000-element checkpoint is refused at once instead of building for minutes and failing on the load).

Written as plain dataclasses (no schema library) so it costs nothing at import and messages read as the CLI wants.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import MalformedModelError, PortingError, UnsupportedModelError

# Limits (documented in README.md, "Safety"). The largest published audio checkpoints (wav2vec2 XLS-R 2B: hidden 1920,
# 48 layers, FFN 7680; AST: 12 layers, hidden 768) sit far inside every one of them.
MAX_HIDDEN = 16_384
MAX_INTERMEDIATE = 65_536
MAX_LAYERS = 256
MAX_LABELS = 100_000
MAX_CONV_LAYERS = 64
MAX_CONV_DIM = 65_536
MAX_KERNEL = 4_096
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32: the weights and the rebuild together must fit in memory
# A config implying more than twice the weights' elements (plus this much: a build that small takes well under a
# second, and the shape check then names the exact key) is refused before building.
SLACK_PARAMETERS = 16_000_000
MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz; the highest rate audio hardware records


class Invalid(Exception):
    """A rule broken; ``validate`` adds the file. ``field`` is the dotted path inside the document."""

    def __init__(self, field: str, value: Any, allowed: str, error: type[PortingError] = MalformedModelError):
        super().__init__(field)
        self.field, self.value, self.allowed, self.error = field, value, allowed, error


class _Bad(Exception):
    def __init__(self, allowed: str, error: type[PortingError] = MalformedModelError):
        super().__init__(allowed)
        self.allowed, self.error = allowed, error


def show(value: Any) -> str:
    """A value as JSON, cut to 60 characters (a message stays one short line)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"from {lo:,} to {hi:,}" if isinstance(lo, int) and isinstance(hi, int) else f"from {lo} to {hi}"
    if lo is not None:
        return f">= {lo:,}" if isinstance(lo, int) else f">= {lo}"
    if hi is not None:
        return f"<= {hi:,}" if isinstance(hi, int) else f"<= {hi}"
    return ""


def _or_null(text: str, null: bool) -> str:
    return f"{text} or null" if null else text


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None
    null: bool = False
    text: str | None = None  # the allowed values in words, where a cross-field rule also applies

    def allowed(self) -> str:
        if self.text:
            return _or_null(self.text, self.null)
        return _or_null(" ".join(filter(None, ("an integer", _range(self.lo, self.hi)))), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(self.allowed())
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise _Bad(self.allowed())
        return v


@dataclass(frozen=True)
class Num:
    """A finite real (JSON int or float, never a bool); ``lo_open`` excludes ``lo``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    null: bool = False

    def allowed(self) -> str:
        if self.lo_open and self.hi is None:
            rng = f"> {self.lo}"
        elif self.lo_open:
            rng = f"> {self.lo} and <= {self.hi}"
        else:
            rng = _range(self.lo, self.hi)
        return _or_null(" ".join(filter(None, ("a finite number", rng))), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad(self.allowed())
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise _Bad(self.allowed())
        if self.hi is not None and v > self.hi:
            raise _Bad(self.allowed())
        return v


@dataclass(frozen=True)
class Bool:
    null: bool = False
    only: bool | None = None  # the one value porting supports (the other is valid HF but not rebuilt)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, bool):
            raise _Bad(_or_null("true or false", self.null))
        if self.only is not None and v is not self.only:
            raise _Bad(f"{str(self.only).lower()} (porting does not rebuild the other setting)", UnsupportedModelError)
        return v


@dataclass(frozen=True)
class Str:
    choices: tuple | None = None
    null: bool = False
    unsupported: tuple = ()  # valid values porting does not rebuild (UnsupportedModelError)

    def allowed(self) -> str:
        if self.choices is None:
            return _or_null("a string", self.null)
        return _or_null("one of " + ", ".join(json.dumps(c) for c in self.choices), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, str) or len(v) > 10_000:
            raise _Bad(self.allowed())
        if self.choices is not None and v not in self.choices:
            raise _Bad(self.allowed(), UnsupportedModelError if v in self.unsupported or self.unsupported == ("*",)
                       else MalformedModelError)
        return v


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 0
    max_len: int = 1_000_000
    null: bool = False

    def allowed(self) -> str:
        n = _range(self.min_len or None, self.max_len if self.max_len < 1_000_000 else None)
        return _or_null(f"a list of {n + ' ' if n else ''}items, each {self.item.allowed()}".replace("  ", " "),
                        self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, list) or not self.min_len <= len(v) <= self.max_len:
            raise _Bad(self.allowed())
        out = []
        for i, x in enumerate(v):
            try:
                out.append(self.item.check(x))
            except _Bad as bad:
                raise Invalid(f"[{i}]", x, bad.allowed, bad.error) from None
        return out


@dataclass(frozen=True)
class Any_:
    """Any JSON value (the field is read by code that checks it itself, or not at all)."""

    def check(self, v):
        return v


@dataclass(frozen=True)
class Schema:
    """A JSON object: declared ``fields`` (name -> spec), which are ``required``, cross-field ``rules`` run on the
    effective document (``defaults`` under the given values), and ``values`` for the entries of a map-like object
    whose keys are data (a manifest's file names)."""

    fields: dict = field(default_factory=dict)
    required: tuple = ()
    rules: tuple = ()
    defaults: dict = field(default_factory=dict)
    values: Any = None
    key: Callable[[str], bool] | None = None
    key_allowed: str = "a valid key"
    what: str = "a JSON object"
    null: bool = False

    def allowed(self) -> str:
        return _or_null(self.what, self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, dict):
            raise _Bad(self.allowed())
        out = dict(v)
        for name in self.required:
            if name not in v:
                raise Invalid(name, None, f"present ({self.fields[name].allowed() if name in self.fields else 'required'})")
        for name, spec in self.fields.items():
            if name in v:
                out[name] = _sub(name, v[name], spec)
        if self.values is not None:
            for k, x in v.items():
                if self.key is not None and not self.key(k):
                    raise Invalid(k, k, f"keyed by {self.key_allowed}")
                out[k] = _sub(k, x, self.values)
        eff = {**self.defaults, **out}
        for rule in self.rules:
            rule(eff)
        return out


def _sub(name: str, value, spec):
    """``spec.check(value)`` with a nested failure's field path prefixed by ``name``."""
    try:
        return spec.check(value)
    except _Bad as bad:
        raise Invalid(name, value, bad.allowed, bad.error) from None
    except Invalid as inner:
        sep = "" if inner.field.startswith("[") else "."
        raise Invalid(f"{name}{sep}{inner.field}", inner.value, inner.allowed, inner.error) from None


def validate(doc, schema: Schema, path: str | Path, error: type[PortingError] | None = None, prefix: str = ""):
    """``doc`` checked against ``schema``; the first violation is one ``PortingError`` line naming ``path`` and the
    field. ``error`` overrides the error class (a golden store raises ``GoldenError``)."""
    try:
        return schema.check(doc)
    except _Bad as bad:
        cls = error or bad.error
        raise cls(f"{path}: {prefix.rstrip('.') or 'the document'} is {show(doc)}; must be {bad.allowed}") from None
    except Invalid as bad:
        cls = error or bad.error
        raise cls(f"{path}: {prefix}{bad.field} = {show(bad.value)}; must be {bad.allowed}") from None


def rule(fn: Callable[[dict], tuple | None]) -> Callable[[dict], None]:
    """A cross-field rule: ``fn(eff)`` returns ``(field, allowed)`` when broken (or ``(field, allowed, error)``)."""

    def run(eff: dict) -> None:
        broken = fn(eff)
        if broken:
            name, allowed, *cls = broken
            raise Invalid(name, eff.get(name), allowed, *cls)

    return run


# ------------------------------------------------------------------------------------------------ HF config.json


def _labels_rule(eff: dict):
    id2label = eff.get("id2label")
    if id2label is None:
        n = eff.get("num_labels")
        return None if n is None or n >= 1 else ("num_labels", "an integer >= 1 (a classifier needs a label)")
    if not isinstance(id2label, dict):
        return ("id2label", 'an object {"0": "first label", "1": ...}')
    if not 1 <= len(id2label) <= MAX_LABELS:
        return ("id2label", f"an object with 1 to {MAX_LABELS:,} labels (a classifier needs a label)")
    if sorted(id2label) != sorted(str(i) for i in range(len(id2label))):
        return ("id2label", f'an object keyed "0" to "{len(id2label) - 1}", each once')
    if not all(isinstance(v, str) for v in id2label.values()):
        return ("id2label", "an object whose labels are strings")
    return None


def _divides(name: str, of: str = "hidden_size"):
    def check(eff):
        n, h = eff.get(name), eff.get(of)
        if isinstance(n, int) and isinstance(h, int) and n >= 1 and h % n:
            return (name, f"an integer >= 1 that divides {of} ({h})")
        return None

    return rule(check)


def _same_lengths(eff):
    lens = {k: len(eff[k]) for k in ("conv_dim", "conv_stride", "conv_kernel") if isinstance(eff.get(k), list | tuple)}
    if len(set(lens.values())) > 1:
        return ("conv_kernel" if lens.get("conv_kernel") != lens.get("conv_dim") else "conv_stride",
                f"a list as long as conv_dim ({lens.get('conv_dim')} entries; conv_stride has {lens.get('conv_stride')}, "
                f"conv_kernel {lens.get('conv_kernel')})")
    return None


def _activations() -> tuple:
    from .families.hf.base import ACTIVATIONS

    return tuple(sorted(ACTIVATIONS))


def _common_fields() -> dict:
    acts = _activations()
    return {
        "architectures": ListOf(Str(), 1, 16, null=True),
        "model_type": Str(null=True),
        "id2label": Any_(),  # checked with num_labels by _labels_rule
        "num_labels": Int(1, MAX_LABELS),
        "problem_type": Str(("regression", "single_label_classification", "multi_label_classification"), null=True),
        "hidden_size": Int(1, MAX_HIDDEN),
        "num_hidden_layers": Int(1, MAX_LAYERS),
        "num_attention_heads": Int(1, MAX_HIDDEN, text=f"an integer from 1 to {MAX_HIDDEN:,} that divides hidden_size"),
        "intermediate_size": Int(1, MAX_INTERMEDIATE),
        "hidden_act": Str(acts, unsupported=("*",)),
        "layer_norm_eps": Num(0.0, 1.0, lo_open=True),
    }


def hf_common_schema() -> Schema:
    """What is checked before the architecture is known: the fields every HF config shares, and the labels."""
    return Schema(_common_fields(), rules=(rule(_labels_rule),))


def _cnn_fields() -> dict:
    acts = _activations()
    return {
        "feat_extract_norm": Str(("group", "layer"), unsupported=("*",)),
        "feat_extract_activation": Str(acts, unsupported=("*",)),
        "conv_dim": ListOf(Int(1, MAX_CONV_DIM), 1, MAX_CONV_LAYERS),
        "conv_stride": ListOf(Int(1, MAX_KERNEL), 1, MAX_CONV_LAYERS),
        "conv_kernel": ListOf(Int(1, MAX_KERNEL), 1, MAX_CONV_LAYERS),
        "conv_bias": Bool(),
        "num_conv_pos_embeddings": Int(1, MAX_KERNEL),
        "num_conv_pos_embedding_groups": Int(1, MAX_HIDDEN, text="an integer >= 1 that divides hidden_size"),
        "mask_time_prob": Num(0.0, 1.0),
        "mask_feature_prob": Num(0.0, 1.0),
        "add_adapter": Bool(only=False, null=True),
        "classifier_proj_size": Int(1, MAX_HIDDEN),
        "use_weighted_layer_sum": Bool(),
    }


def hf_schema(architecture: str) -> Schema:
    """The schema of an HF ``config.json`` for one supported architecture (defaults: transformers' config class)."""
    from .families.hf.folder import AST, CUSTOM_SPEECH, SEQUENCE_CLASSIFICATION

    common = [rule(_labels_rule), _divides("num_attention_heads")]
    if architecture == AST:
        from .families.hf.ast import AST_DEFAULTS

        fields = {**_common_fields(), "patch_size": Int(1, MAX_KERNEL), "frequency_stride": Int(1, MAX_KERNEL),
                  "time_stride": Int(1, MAX_KERNEL), "max_length": Int(1, 100_000), "num_mel_bins": Int(1, 4_096),
                  "qkv_bias": Bool()}

        def patch_fits(eff):
            for name in ("num_mel_bins", "max_length"):
                if eff[name] < eff["patch_size"]:
                    return (name, f"an integer >= patch_size ({eff['patch_size']}): the patch grid would be empty")
            return None

        return Schema(fields, rules=tuple(common) + (rule(patch_fits),), defaults=AST_DEFAULTS)
    from .families.hf.sewd import SEWD_DEFAULTS
    from .families.hf.wav2vec2 import HUBERT_DEFAULTS, WAV2VEC2_DEFAULTS, WAVLM_DEFAULTS

    fields = {**_common_fields(), **_cnn_fields()}
    rules = common + [rule(_same_lengths), _divides("num_conv_pos_embedding_groups")]
    if architecture == SEQUENCE_CLASSIFICATION["sew_d"]:
        fields.update(
            squeeze_factor=Int(1, 64), max_position_embeddings=Int(1, 1_000_000), position_buckets=Int(-1, 1_000_000),
            share_att_key=Bool(), relative_attention=Bool(), norm_rel_ebd=Str(),
            pos_att_type=Any_(), feature_layer_norm_eps=Num(0.0, 1.0, lo_open=True),
            max_relative_positions=Int(-1, 1_000_000), attention_head_size=Int(1, MAX_HIDDEN, null=True),
            conv_kernel_size=Int(0, MAX_KERNEL), conv_groups=Int(1, MAX_HIDDEN),
            conv_act=Str(_activations(), unsupported=("*",)),
        )

        def pos_att(eff):
            v = eff.get("pos_att_type")
            ok = v is None or (isinstance(v, str) and len(v) <= 64) or (
                isinstance(v, list) and len(v) <= 8 and all(isinstance(x, str) for x in v))
            return None if ok else ("pos_att_type", 'a list of strings such as ["p2c", "c2p"], or null')

        rules += [rule(pos_att), _divides("conv_groups")]
        defaults = SEWD_DEFAULTS
    elif architecture == SEQUENCE_CLASSIFICATION["hubert"]:
        fields.update(feat_proj_layer_norm=Bool(), conv_pos_batch_norm=Bool(), do_stable_layer_norm=Bool())
        defaults = HUBERT_DEFAULTS
    elif architecture == SEQUENCE_CLASSIFICATION["wavlm"]:
        fields.update(num_buckets=Int(1, 1_000_000), max_bucket_distance=Int(1, 10_000_000), do_stable_layer_norm=Bool(),
                      adapter_attn_dim=Int(1, MAX_HIDDEN, null=True))
        defaults = WAVLM_DEFAULTS
    else:
        fields.update(do_stable_layer_norm=Bool(), adapter_attn_dim=Int(1, MAX_HIDDEN, null=True))
        if architecture == CUSTOM_SPEECH:
            from .families.hf.heads import POOLING_MODES

            fields["pooling_mode"] = Str(tuple(POOLING_MODES))
        defaults = WAV2VEC2_DEFAULTS
    required = ("pooling_mode",) if architecture == CUSTOM_SPEECH else ()
    return Schema(fields, required=required, rules=tuple(rules), defaults=defaults)


def _num_labels(cfg: dict) -> int:
    id2label = cfg.get("id2label")
    return len(id2label) if isinstance(id2label, dict) else int(cfg.get("num_labels") or 2)


def hf_parameter_floor(architecture: str, config: dict) -> int:
    """A lower bound of the parameters the config builds (the largest matrices only), from validated values."""
    from .families.hf.folder import AST

    eff = {**hf_schema(architecture).defaults, **config}
    h, i, n = eff["hidden_size"], eff["intermediate_size"], eff["num_hidden_layers"]
    total = n * (2 * h * i + 2 * h * h)  # feed-forward in/out, and at least the query and output projections
    if architecture == AST:
        total += h * eff["patch_size"] ** 2
    else:
        dims = list(eff["conv_dim"])
        total += sum(a * b * k for a, b, k in zip([1] + dims[:-1], dims, eff["conv_kernel"]))
        total += h * (h // eff["num_conv_pos_embedding_groups"]) * eff["num_conv_pos_embeddings"]
    return total + h * _num_labels(eff)


def check_hf_config(config, architecture: str, path: str | Path, elements: int | None = None,
                    prefix: str = "") -> dict:
    """Validate an HF config for ``architecture`` and refuse sizes beyond ``MAX_PARAMETERS`` or far beyond the
    ``elements`` the weights file holds (``SLACK_PARAMETERS``), before anything is built."""
    out = validate(config, hf_schema(architecture), path, prefix=prefix)
    floor = hf_parameter_floor(architecture, out)
    if floor > MAX_PARAMETERS:
        raise MalformedModelError(
            f"{path}: hidden_size/intermediate_size/num_hidden_layers imply at least {floor:,} parameters, over the "
            f"{MAX_PARAMETERS:,} porting builds; check {prefix}num_hidden_layers and the sizes")
    if elements is not None and floor > 2 * elements + SLACK_PARAMETERS:
        raise MalformedModelError(
            f"{path}: {prefix}hidden_size/intermediate_size/num_hidden_layers/conv_* imply at least {floor:,} "
            f"parameters but the weights hold {elements:,}; the config does not belong to these weights")
    return out


# ----------------------------------------------------------------------------------------- preprocessor_config.json

_FE_COMMON = {
    "feature_extractor_type": Str(null=True),
    "feature_size": Int(1, 1),
    "sampling_rate": Int(MIN_RATE, MAX_RATE),
    "padding_value": Num(),
    "do_normalize": Bool(),
    "return_attention_mask": Bool(),
}
WAV2VEC2_PREPROCESSOR = Schema({**_FE_COMMON, "padding_side": Str(("right",), unsupported=("left",))})
AST_PREPROCESSOR = Schema({**_FE_COMMON, "num_mel_bins": Int(1, 4_096), "max_length": Int(1, 100_000),
                           "mean": Num(), "std": Num(0.0, lo_open=True)})


def check_preprocessor(pre, kind: str, path: str | Path, prefix: str = "") -> dict:
    """``kind``: "ast" or "wav2vec2" (the feature extractor family)."""
    return validate(pre, AST_PREPROCESSOR if kind == "ast" else WAV2VEC2_PREPROCESSOR, path, prefix=prefix)


# ------------------------------------------------------------------------------------- porting's own config.json

_ACTIVATION = Schema({"name": Str(("softmax", "sigmoid", "exp", "identity")), "dim": Int(-8, 8)},
                     required=("name",))
_TENSOR_INFO = Schema({"shape": ListOf(Int(0, 1 << 40), 0, 8), "dtype": Str()}, required=("shape",))
_COMMON_CONVERTED = {
    "format": Str(("porting.model/1",)),
    "family": Str(("hf",), null=True),
    "classes": ListOf(Str(), 1, MAX_LABELS, null=True),
    "positive_index": Int(0, MAX_LABELS, null=True),
    "activation": _ACTIVATION,
    "state_dict": Schema(values=_TENSOR_INFO, what="an object tensor name -> {shape, dtype}"),
}


def _positive_in_classes(eff):
    p, classes = eff.get("positive_index"), eff.get("classes")
    if p is not None and (classes is None or p >= len(classes)):
        return ("positive_index", f"null or an index into classes (0 to {len(classes or []) - 1})")
    return None


_NORMALIZE = Schema({"mean": ListOf(Num(), 1, 4096), "std": ListOf(Num(0.0, lo_open=True), 1, 4096)},
                    required=("mean", "std"), null=True)
_FRONTEND_LEGACY = Schema({
    "windows": Schema({"window_s": Int(1, 3600), "hop_s": Int(1, 3600), "sample_rate": Int(MIN_RATE, MAX_RATE),
                       "downmix": Bool(), "cache_round_trips": Bool()}),
    "mel": Schema({"n_fft": Int(2, 1 << 16), "hop_length": Int(1, 1 << 16), "win_length": Int(1, 1 << 16, null=True),
                   "n_mels": Int(1, 4096), "f_min": Num(0.0), "f_max": Num(0.0), "mel_sample_rate": Int(MIN_RATE, MAX_RATE),
                   "power": Num(0.0, lo_open=True), "center": Bool(), "pad_mode": Str(("reflect", "constant")),
                   "top_db": Num(0.0, null=True), "amin": Num(0.0, lo_open=True)}),
    "pad": Schema({"duration_ms": Int(1, 3_600_000), "sample_rate": Int(MIN_RATE, MAX_RATE),
                   "hop_length": Int(1, 1 << 16), "pad_value": Num()}),
})
LEGACY_CONVERTED = Schema(
    {**_COMMON_CONVERTED, "normalize": _NORMALIZE, "frontend": _FRONTEND_LEGACY,
     "architecture": Schema({"class": Str()}, required=("class",))},
    required=("format", "architecture", "frontend", "state_dict"), rules=(rule(_positive_in_classes),))
_WINDOWS = Schema({"window_s": Num(0.0, 3600.0, lo_open=True), "hop_s": Num(0.0, 3600.0, lo_open=True),
                   "sample_rate": Int(MIN_RATE, MAX_RATE)}, required=("window_s", "hop_s"))


def _hf_converted() -> Schema:
    from .families.hf.folder import SUPPORTED

    return Schema(
        {**_COMMON_CONVERTED, "hf_architecture": Str(SUPPORTED), "hf_config": Schema(),
         "frontend": Schema({"type": Str(("ast", "wav2vec2")), "preprocessor": Schema(),
                             "fbank_backend": Str(("torchaudio-kaldi", "numpy"))}, required=("type", "preprocessor")),
         "windows": _WINDOWS},
        required=("format", "family", "hf_architecture", "hf_config", "frontend", "windows", "classes"),
        rules=(rule(_positive_in_classes),))


def check_converted(config, path: str | Path, elements: int | None = None) -> dict:
    """A ``config.json`` written by ``port convert``: the legacy or HF layout, the embedded HF config and
    preprocessor checked by their own schemas (field paths ``hf_config.*``, ``frontend.preprocessor.*``)."""
    if not isinstance(config, dict):
        raise MalformedModelError(f"{path}: holds {show(config)}, not a porting model config (a JSON object); "
                                  "re-run `port convert`")
    if config.get("format") != "porting.model/1":
        raise MalformedModelError(f"{path}: format = {show(config.get('format'))}, not \"porting.model/1\": not a "
                                  "porting model config; re-run `port convert`")
    if config.get("family") == "hf":
        out = validate(config, _hf_converted(), path)
        out["hf_config"] = check_hf_config(out["hf_config"], out["hf_architecture"], path, elements, "hf_config.")
        fe = out["frontend"]
        fe["preprocessor"] = check_preprocessor(fe["preprocessor"], fe["type"], path, "frontend.preprocessor.")
        return out
    return validate(config, LEGACY_CONVERTED, path)


# ---------------------------------------------------------------------------------------------- MANIFEST.json

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Sha256(Str):
    def allowed(self) -> str:
        return "a sha256 (64 lowercase hex digits)"

    def check(self, v):
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise _Bad(self.allowed())
        return v


def _relative(k: str) -> bool:
    p = Path(k)
    return bool(k) and not p.is_absolute() and ".." not in p.parts and "\\" not in k


_FILE_REF = Schema({"file": Str(), "sha256": Sha256()}, required=("file", "sha256"), what="an object {file, sha256}")
MANIFEST = Schema(
    {"format": Str(), "algorithm": Str(("sha256",)),
     "files": Schema(values=Schema({"sha256": Sha256(), "bytes": Int(0)}, required=("sha256", "bytes"),
                                   what="an object {sha256, bytes}"),
                     key=_relative, key_allowed="a relative path inside the store", what="an object relative path -> {sha256, bytes}"),
     "cases": Schema(values=Schema({"model": _FILE_REF, "audio": _FILE_REF, "files": ListOf(Str()), "outcome": Str()},
                                   what="an object {model, audio, files, outcome}"),
                     what="an object case name -> {model, audio, files, outcome}")},
    required=("format", "files"))

# --------------------------------------------------------------------------------------------------- parity.json

PARITY = Schema({"passed": Bool(), "artifacts": Schema(values=Schema({"passed": Bool()}, required=("passed",),
                                                                     what="an object {passed, ...}"),
                                                       what="an object artifact name -> {passed, ...}")},
                required=("artifacts",))
