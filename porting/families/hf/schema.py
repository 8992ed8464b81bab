"""Schemas of the Hugging Face family's files: ``config.json`` per architecture, ``preprocessor_config.json`` per
feature extractor, and the config.json ``port convert`` writes for an HF model (``porting.schema``'s machinery)."""

from __future__ import annotations

from pathlib import Path

from ...errors import MalformedModelError
from ...schema import (COMMON_CONVERTED, MAX_CONV_DIM, MAX_CONV_LAYERS, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_KERNEL,
                       MAX_LABELS, MAX_LAYERS, MAX_PARAMETERS, MAX_RATE, MIN_RATE, SLACK_PARAMETERS, Any_, Bool, Int,
                       ListOf, Num, Schema, Str, check_converted_header, positive_in_classes, rule, validate)

# The architectures the family rebuilds (``config.architectures[0]``), by transformers model type.
SEQUENCE_CLASSIFICATION = {
    "wav2vec2": "Wav2Vec2ForSequenceClassification",
    "hubert": "HubertForSequenceClassification",
    "wavlm": "WavLMForSequenceClassification",
    "sew_d": "SEWDForSequenceClassification",
}
CUSTOM_SPEECH = "Wav2Vec2ForSpeechClassification"
AST = "ASTForAudioClassification"
SUPPORTED = tuple(SEQUENCE_CLASSIFICATION.values()) + (CUSTOM_SPEECH, AST)

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
    from .base import ACTIVATIONS

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

    common = [rule(_labels_rule), _divides("num_attention_heads")]
    if architecture == AST:
        from .ast import AST_DEFAULTS

        fields = {**_common_fields(), "patch_size": Int(1, MAX_KERNEL), "frequency_stride": Int(1, MAX_KERNEL),
                  "time_stride": Int(1, MAX_KERNEL), "max_length": Int(1, 100_000), "num_mel_bins": Int(1, 4_096),
                  "qkv_bias": Bool()}

        def patch_fits(eff):
            for name in ("num_mel_bins", "max_length"):
                if eff[name] < eff["patch_size"]:
                    return (name, f"an integer >= patch_size ({eff['patch_size']}): the patch grid would be empty")
            return None

        return Schema(fields, rules=tuple(common) + (rule(patch_fits),), defaults=AST_DEFAULTS)
    from .sewd import SEWD_DEFAULTS
    from .wav2vec2 import HUBERT_DEFAULTS, WAV2VEC2_DEFAULTS, WAVLM_DEFAULTS

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
            from .heads import POOLING_MODES

            fields["pooling_mode"] = Str(tuple(POOLING_MODES))
        defaults = WAV2VEC2_DEFAULTS
    required = ("pooling_mode",) if architecture == CUSTOM_SPEECH else ()
    return Schema(fields, required=required, rules=tuple(rules), defaults=defaults)


def _num_labels(cfg: dict) -> int:
    id2label = cfg.get("id2label")
    return len(id2label) if isinstance(id2label, dict) else int(cfg.get("num_labels") or 2)


def hf_parameter_floor(architecture: str, config: dict) -> int:
    """A lower bound of the parameters the config builds (the largest matrices only), from validated values."""

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


_WINDOWS = Schema({"window_s": Num(0.0, 3600.0, lo_open=True), "hop_s": Num(0.0, 3600.0, lo_open=True),
                   "sample_rate": Int(MIN_RATE, MAX_RATE)}, required=("window_s", "hop_s"))


def _hf_converted() -> Schema:

    return Schema(
        {**COMMON_CONVERTED, "family": Str(("hf",)), "hf_architecture": Str(SUPPORTED), "hf_config": Schema(),
         "frontend": Schema({"type": Str(("ast", "wav2vec2")), "preprocessor": Schema(),
                             "fbank_backend": Str(("torchaudio-kaldi", "numpy"))}, required=("type", "preprocessor")),
         "windows": _WINDOWS},
        required=("format", "family", "hf_architecture", "hf_config", "frontend", "windows", "classes"),
        rules=(rule(positive_in_classes),))


def check_converted(config, path: str | Path, elements: int | None = None) -> dict:
    """An HF model's ``config.json`` written by ``port convert``: the embedded HF config and preprocessor checked by
    their own schemas (field paths ``hf_config.*``, ``frontend.preprocessor.*``)."""
    out = validate(check_converted_header(config, path), _hf_converted(), path)
    out["hf_config"] = check_hf_config(out["hf_config"], out["hf_architecture"], path, elements, "hf_config.")
    fe = out["frontend"]
    fe["preprocessor"] = check_preprocessor(fe["preprocessor"], fe["type"], path, "frontend.preprocessor.")
    return out
