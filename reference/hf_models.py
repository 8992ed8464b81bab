"""The tiny Hugging Face audio classifiers of the HF golden store, built in the reference venv.

Runs under the reference venv (torch 2.9.1, transformers 4.57.1 or 5.x: the same code builds and saves with either
major, so a store's models are SAVED by the transformers it is captured with); never imported by ``porting``.
Every model is built from a transformers configuration class with a seeded random init (no hub download),
then made "trained-looking" so that a port that gets a parameter wrong cannot hide:

* every ``*.bias`` gets N(0, 0.05) added and every LayerNorm/GroupNorm ``weight`` is multiplied by
  1 + N(0, 0.1) (transformers' ``_init_weights`` leaves them 0 and 1, so a swapped or missing affine
  would be invisible);
* ``initializer_range`` 0.2 (config default 0.02) so attention is not uniform and the transformer layers
  are not a near-identity around the residual;
* ``layer_weights`` (``use_weighted_layer_sum``) drawn N(0, 0.5) instead of the uniform init;
* the final classification layer's ``weight`` is multiplied by a power of two chosen so that the
  largest |weight . pooled| over a seeded probe (three 1-s windows of N(0, 1) noise and a 0.8-s one;
  AST: N(0, 0.25) fbank-shaped inputs) is about 3 (the factor is written to ``models/build.json``).

``Wav2Vec2ForSpeechClassification`` is a rendition of the user class many fine-tuning notebooks define
(it is not in transformers): mean/sum/max pooling over time of the last hidden state, ignoring the
attention mask, then dropout -> dense -> tanh -> dropout -> out_proj.

    python reference/hf_models.py --out golden/hf/models      # writes every model folder + build.json
"""

from __future__ import annotations

import argparse
import json
import math
import zlib
from pathlib import Path

import torch
from torch import nn
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
    SEWDConfig,
    SEWDForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMForSequenceClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PreTrainedModel

ID2LABEL = {0: "noise", 1: "owl", 2: "other"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

# Shared shape of the wav2vec2-family encoders: tiny widths, wav2vec2's real CNN kernels and strides.
CONV = dict(
    conv_dim=(32,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
)
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    classifier_proj_size=16,
    initializer_range=0.2,
    num_labels=3,
    id2label=ID2LABEL,
    label2id=LABEL2ID,
    **CONV,
)


class Wav2Vec2ClassificationHead(nn.Module):
    """dense (hidden -> hidden), dropout (final_dropout), out_proj (hidden -> num_labels), as the user class has it."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features):
        x = self.dropout(features)
        x = self.dense(x)
        x = torch.tanh(x)
        x = self.dropout(x)
        return self.out_proj(x)


class Wav2Vec2ForSpeechClassification(Wav2Vec2PreTrainedModel):
    """The community head (e.g. the "speech emotion recognition" notebooks): pool the LAST hidden state over
    time with torch.mean / torch.sum / torch.max(...)[0] per ``config.pooling_mode`` and classify.

    Like the original, the pooling ignores ``attention_mask`` (padded frames are pooled too).
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pooling_mode = config.pooling_mode
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = Wav2Vec2ClassificationHead(config)
        self.post_init()

    def merged_strategy(self, hidden_states, mode="mean"):
        if mode == "mean":
            return torch.mean(hidden_states, dim=1)
        if mode == "sum":
            return torch.sum(hidden_states, dim=1)
        if mode == "max":
            return torch.max(hidden_states, dim=1)[0]
        raise ValueError(f"undefined pooling_mode {mode!r}: one of 'mean', 'sum', 'max'")

    def forward(self, input_values, attention_mask=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, labels=None):
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        outputs = self.wav2vec2(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        hidden_states = outputs[0]
        hidden_states = self.merged_strategy(hidden_states, mode=self.pooling_mode)
        logits = self.classifier(hidden_states)
        if not return_dict:
            return (logits,) + outputs[2:]
        return SequenceClassifierOutput(logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


# ------------------------------------------------------------------------------------------ models


def _w2v2_fe(return_attention_mask: bool) -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=return_attention_mask)


def _custom(mode: str):
    cfg = Wav2Vec2Config(**TINY, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                         final_dropout=0.1, pooling_mode=mode, architectures=["Wav2Vec2ForSpeechClassification"])
    return cfg, Wav2Vec2ForSpeechClassification, _w2v2_fe(False)


def spec(name: str):
    """(config, model class, feature extractor) of one store model; see ``MODELS``."""
    if name == "w2v2-base":
        cfg = Wav2Vec2Config(**TINY, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
        return cfg, Wav2Vec2ForSequenceClassification, _w2v2_fe(False)
    if name == "w2v2-large":
        cfg = Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                             use_weighted_layer_sum=True)
        return cfg, Wav2Vec2ForSequenceClassification, _w2v2_fe(True)
    if name == "hubert":
        cfg = HubertConfig(**TINY, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
        return cfg, HubertForSequenceClassification, _w2v2_fe(False)
    if name == "wavlm":
        # base style (group norm, post-LN encoder: WavLMEncoder); small buckets so that both the exact and the
        # logarithmic branch of WavLMAttention.compute_bias, and the clamp at max_bucket_distance, are used on
        # 1-s windows (49 frames: |relative position| up to 48).
        cfg = WavLMConfig(**TINY, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                          num_buckets=16, max_bucket_distance=32)
        return cfg, WavLMForSequenceClassification, _w2v2_fe(False)
    if name == "sewd":
        # pos_att_type as a LIST: SEWDConfig.__init__ does list(pos_att_type), so the string "p2c|c2p" would
        # become a list of characters and silently disable both relative terms (README "Hugging Face family").
        # position_buckets 8 / max_position_embeddings 64: the log-bucket branch of make_log_bucket_position is
        # used on 1-s windows (24 squeezed frames).
        cfg = SEWDConfig(**TINY, squeeze_factor=2, max_position_embeddings=64, position_buckets=8,
                         share_att_key=True, relative_attention=True, pos_att_type=["p2c", "c2p"],
                         norm_rel_ebd="layer_norm", feat_extract_norm="group", conv_bias=False)
        return cfg, SEWDForSequenceClassification, _w2v2_fe(False)
    if name == "ast":
        cfg = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        patch_size=16, frequency_stride=10, time_stride=10, max_length=100, num_mel_bins=128,
                        initializer_range=0.2, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID)
        fe = ASTFeatureExtractor(feature_size=1, sampling_rate=16000, num_mel_bins=128, max_length=100,
                                 padding_value=0.0, do_normalize=True, return_attention_mask=False)
        return cfg, ASTForAudioClassification, fe
    if name.startswith("custom-"):
        return _custom(name.split("-", 1)[1])
    if name in WLS:
        return _weighted(name)
    raise KeyError(name)


# Weighted-layer-sum variants (issue 20): use_weighted_layer_sum on every encoder kind, post-LN ("base") and pre-LN
# ("large": layer norm after every conv, conv bias, do_stable_layer_norm), so that every way transformers 4.x and
# 5.x fill hidden_states reaches the logits. w2v2-large (golden/hf) is already the pre-LN wav2vec2 one.
WLS = ("w2v2-base-wls", "hubert-wls", "hubert-large-wls", "wavlm-wls", "wavlm-large-wls", "sewd-wls")
_LARGE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
_BASE = dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)


def _weighted(name: str):
    if name == "w2v2-base-wls":
        cfg = Wav2Vec2Config(**TINY, **_BASE, use_weighted_layer_sum=True)
        return cfg, Wav2Vec2ForSequenceClassification, _w2v2_fe(False)
    if name.startswith("hubert"):
        cfg = HubertConfig(**TINY, **(_LARGE if "large" in name else _BASE), use_weighted_layer_sum=True)
        return cfg, HubertForSequenceClassification, _w2v2_fe(False)
    if name.startswith("wavlm"):
        cfg = WavLMConfig(**TINY, **(_LARGE if "large" in name else _BASE), num_buckets=16, max_bucket_distance=32,
                          use_weighted_layer_sum=True)
        return cfg, WavLMForSequenceClassification, _w2v2_fe(True)
    # SEW-D with the DeBERTa encoder's conv module (conv_kernel_size > 0; ConvLayer also reads hidden_dropout_prob,
    # which SEWDConfig does not define) after layer 0: hidden_states[1] is taken after it in 4.x, before it in 5.x.
    cfg = SEWDConfig(**TINY, squeeze_factor=2, max_position_embeddings=64, position_buckets=8,
                     share_att_key=True, relative_attention=True, pos_att_type=["p2c", "c2p"],
                     norm_rel_ebd="layer_norm", feat_extract_norm="group", conv_bias=False,
                     use_weighted_layer_sum=True)
    cfg.conv_kernel_size = 3
    cfg.hidden_dropout_prob = 0.1
    return cfg, SEWDForSequenceClassification, _w2v2_fe(False)


# name -> (weights written as safetensors?, final classification layer, base model attribute)
MODELS = {
    "w2v2-base": (True, "classifier", "wav2vec2"),
    "w2v2-large": (True, "classifier", "wav2vec2"),
    "hubert": (True, "classifier", "hubert"),
    "wavlm": (True, "classifier", "wavlm"),
    "sewd": (True, "classifier", "sew_d"),
    "ast": (True, "classifier.dense", "audio_spectrogram_transformer"),
    "custom-mean": (True, "classifier.out_proj", "wav2vec2"),
    "custom-sum": (True, "classifier.out_proj", "wav2vec2"),
    "custom-max": (False, "classifier.out_proj", "wav2vec2"),  # pytorch_model.bin
    "w2v2-base-wls": (True, "classifier", "wav2vec2"),
    "hubert-wls": (True, "classifier", "hubert"),
    "hubert-large-wls": (True, "classifier", "hubert"),
    "wavlm-wls": (True, "classifier", "wavlm"),
    "wavlm-large-wls": (True, "classifier", "wavlm"),
    "sewd-wls": (True, "classifier", "sew_d"),
}


# The models of golden/hf (transformers 4.57.1), in build.json order.
HF_STORE_MODELS = ("w2v2-base", "w2v2-large", "hubert", "wavlm", "sewd", "ast", "custom-mean", "custom-sum", "custom-max")


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _probe_inputs(name: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    waves = [torch.randn(1, 16000, generator=g) for _ in range(3)] + [torch.randn(1, 12800, generator=g)]
    if name != "ast":
        return waves
    # AST reads fbank features [1, 100, 128]; the probe is normalised-fbank-like noise
    return [torch.randn(1, 100, 128, generator=g) * 0.5 for _ in range(4)]


def build(name: str):
    """(model in eval mode, feature extractor, build record) — deterministic for a given torch/transformers."""
    cfg, cls, fe = spec(name)
    torch.manual_seed(seed_of(name))
    model = cls(cfg)
    gen = torch.Generator().manual_seed(seed_of(name) + 1)
    norm_types = (nn.LayerNorm, nn.GroupNorm)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for pname, p in model.named_parameters():
            owner = modules[pname.rsplit(".", 1)[0]] if "." in pname else model
            if pname.endswith(".bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            elif pname.endswith(".weight") and isinstance(owner, norm_types):
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        if getattr(cfg, "use_weighted_layer_sum", False):
            model.layer_weights.copy_(0.5 * torch.randn(model.layer_weights.shape, generator=gen))
    model.eval()
    final = modules[MODELS[name][1]]
    with torch.no_grad():
        probes = _probe_inputs(name)
        # the weight part of the logits (bias left as drawn): scale it by 2^k so its peak is about 3
        peak = max(float((model(x).logits - final.bias).abs().max()) for x in probes)
        factor = 2.0 ** round(math.log2(3.0 / max(peak, 1e-12)))
        final.weight.mul_(factor)
        peak_after = max(float(model(x).logits.abs().max()) for x in probes)
    record = {
        "class": cls.__name__,
        "seed": seed_of(name),
        "final_layer": MODELS[name][1],
        "final_weight_factor": factor,
        "probe_max_abs_logit_before": peak,
        "probe_max_abs_logit_after": peak_after,
    }
    return model, fe, record


def save(name: str, folder: Path) -> dict:
    """Write ``folder`` = config.json + weights (save_pretrained) + preprocessor_config.json."""
    model, fe, record = build(name)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("model.safetensors", "pytorch_model.bin"):
        (folder / stale).unlink(missing_ok=True)
    safe = MODELS[name][0]
    model.save_pretrained(folder, safe_serialization=safe)
    fe.save_pretrained(folder)
    # transformers 5.x writes safetensors whatever safe_serialization says: record what was written
    record["weights_file"] = next(f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file())
    record["files"] = sorted(p.name for p in folder.iterdir())
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description="build the tiny HF models of golden/hf/models")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="*", default=None,
                   help="build exactly these models and write build.json for them (default: the golden/hf set)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    records = {}
    for name in a.only or a.models or list(HF_STORE_MODELS):
        records[name] = save(name, a.out / name)
        print(f"{name}: x{records[name]['final_weight_factor']:g} -> probe max|logit| "
              f"{records[name]['probe_max_abs_logit_after']:.3f}")
    if not a.only:
        (a.out / "build.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
