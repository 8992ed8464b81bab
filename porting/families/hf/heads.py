"""Classification heads over the rebuilt speech encoders, one implementation per head.

A head is generic over its base model class (``base_model_class``, registered under ``base_model_prefix``,
transformers' attribute name: ``wav2vec2``, ``hubert``, ``wavlm``, ``sew_d``, so state-dict keys match the
transformers class of the same name). The protocol a base model meets: built as ``Base(config)``;
``encode(input_values, attention_mask) -> porting.families.hf.base.EncoderOutput`` whose ``last`` (``last_hidden_state``,
by default ``hidden_states[-1]``) is what the head pools; ``frame_mask(num_frames, attention_mask)``, the frame
mask at any frame count (transformers ``_get_feature_vector_attention_mask``); ``.config``, the config dict with
transformers' defaults filled in (``hidden_size``, ``num_hidden_layers``, ``classifier_proj_size``,
``use_weighted_layer_sum``); and ``weight_norm_dims(config=..., prefix=...) -> dict[str, int]``, called by
keyword (``porting.families.hf.wav2vec2`` models take ``(config, prefix)``, ``SEWDModel`` ``(prefix, config)``).

* ``SequenceClassificationHead`` -- transformers ``Wav2Vec2ForSequenceClassification`` (and the identical
  Hubert/WavLM/SEWD ``*ForSequenceClassification``).
* ``SpeechClassificationHead`` -- the widespread user class ``Wav2Vec2ForSpeechClassification`` (not in
  transformers; from the "emotion recognition in Greek speech" notebook and its many copies).

``ARCHITECTURES`` maps the config's ``architectures[0]`` to a constructor ``config -> AudioClassifier``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from porting.errors import UnsupportedModelError
from porting.families.hf.base import AudioClassifier, num_labels, stage_dict
from porting.families.hf.sewd import SEWDModel
from porting.families.hf.wav2vec2 import HubertModel, Wav2Vec2Model, WavLMModel


class _Head(AudioClassifier):
    """Holds the base model under ``base_model_prefix`` (one registration only: a second attribute pointing at the
    same module would duplicate every key in ``state_dict``)."""

    base_model_class: type = None
    base_model_prefix: str = ""

    def __init__(self, config: dict):
        super().__init__()
        if self.base_model_class is None:
            raise TypeError(f"{type(self).__name__} names no base_model_class")
        self.add_module(self.base_model_prefix, self.base_model_class(config))

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @classmethod
    def weight_norm_dims(cls, config: dict | None = None) -> dict[str, int]:
        """Full-key prefixes of weight-normed modules (for ``porting.families.hf.base.fold_weight_norm``)."""
        return cls.base_model_class.weight_norm_dims(config=config, prefix=cls.base_model_prefix)

    def _num_labels(self, config: dict) -> int:
        return num_labels(config, f"{type(self).__name__} config")


class SequenceClassificationHead(_Head):
    """transformers ``*ForSequenceClassification`` (``Wav2Vec2ForSequenceClassification.forward``, same code in
    ``HubertFor...``, ``WavLMFor...``, ``SEWDFor...``):

    1. ``use_weighted_layer_sum``: stack *all* ``num_hidden_layers + 1`` hidden states (entry 0 included: transformers
       picks ``outputs[_HIDDEN_STATES_START_POSITION]``, the full ``hidden_states`` tuple -- index 2 for
       wav2vec2/WavLM whose output also carries ``extract_features``, 1 for HuBERT/SEW-D) and sum them with
       ``softmax(layer_weights)``; otherwise the last hidden state.
    2. ``projector`` (hidden -> ``classifier_proj_size``).
    3. Pool over time. Without an attention mask: ``mean(dim=1)`` over every frame. With one: the frame mask built
       at the length of the pooled tensor (``_get_feature_vector_attention_mask(hidden_states.shape[1], ...)``),
       padded frames zeroed, ``sum(dim=1) / mask.sum(dim=1)`` -- the frame count, not the sample count, as the
       divisor. For wav2vec2/HuBERT/WavLM that length is T', so the mask is ``EncoderOutput.frame_mask``; SEW-D's
       weighted sum pools its squeezed hidden states, and gets transformers' mask at T'//sf from T'-resolution
       lengths (``porting.families.hf.sewd`` module docstring).
    4. ``classifier``. ``M.pooled`` is the pooled vector the classifier reads.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        cfg = self.base_model.config
        self.use_weighted_layer_sum = bool(cfg.get("use_weighted_layer_sum", False))
        if self.use_weighted_layer_sum:
            n = cfg["num_hidden_layers"] + 1
            self.layer_weights = nn.Parameter(torch.ones(n) / n)
        proj = int(cfg["classifier_proj_size"])
        self.projector = nn.Linear(cfg["hidden_size"], proj)
        self.classifier = nn.Linear(proj, self._num_labels(config))

    def stages(self, input_values: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        enc = self.base_model.encode(input_values, attention_mask)
        if self.use_weighted_layer_sum:
            stacked = torch.stack(enc.hidden_states, dim=1)
            weights = torch.softmax(self.layer_weights, dim=-1)
            h = (stacked * weights.view(-1, 1, 1)).sum(dim=1)
        else:
            h = enc.last
        h = self.projector(h)
        if attention_mask is None:
            pooled = h.mean(dim=1)
        else:
            m = self.base_model.frame_mask(h.shape[1], attention_mask)
            h = torch.where(m[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
            pooled = h.sum(dim=1) / m.sum(dim=1).view(-1, 1)
        return stage_dict(enc, pooled, self.classifier(pooled))


class Wav2Vec2ForSequenceClassification(SequenceClassificationHead):
    base_model_class = Wav2Vec2Model
    base_model_prefix = "wav2vec2"


class HubertForSequenceClassification(SequenceClassificationHead):
    base_model_class = HubertModel
    base_model_prefix = "hubert"


class WavLMForSequenceClassification(SequenceClassificationHead):
    base_model_class = WavLMModel
    base_model_prefix = "wavlm"


class SEWDForSequenceClassification(SequenceClassificationHead):
    """transformers ``SEWDForSequenceClassification``, which refuses ``add_adapter`` (a setting SEW-D has no
    module for) in its ``__init__``."""

    base_model_class = SEWDModel
    base_model_prefix = "sew_d"

    def __init__(self, config: dict):
        if config.get("add_adapter"):
            raise UnsupportedModelError("SEW-D sequence classification does not support add_adapter=True")
        super().__init__(config)


POOLING_MODES = ("mean", "sum", "max")


class _DenseTanhHead(nn.Module):
    """The user class's ``Wav2Vec2ClassificationHead``: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, hidden: int, n_labels: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, n_labels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(torch.tanh(self.dense(x)))


class SpeechClassificationHead(_Head):
    """The user class ``Wav2Vec2ForSpeechClassification``: base model, then ``config["pooling_mode"]`` in
    ``mean``/``sum``/``max`` over the time axis of the last hidden state (``torch.mean``/``sum``/``max(...)[0]``,
    dim 1), then ``classifier.dense`` -> tanh -> ``classifier.out_proj``. ``M.pooled`` is the pooled vector (the
    input of ``classifier.dense``).

    Quirk reproduced: the user class passes ``attention_mask`` to the base model (so attention ignores padded frames)
    but its ``merged_strategy`` pools over *all* frames, padded ones included: a padded batch does not give the
    logits of the unpadded inputs. We pool exactly so.
    """

    def __init__(self, config: dict):
        mode = config.get("pooling_mode")
        if mode not in POOLING_MODES:
            raise UnsupportedModelError(
                f"{type(self).__name__}: pooling_mode {mode!r} is not one of {', '.join(POOLING_MODES)}"
            )
        super().__init__(config)
        self.pooling_mode = mode
        self.classifier = _DenseTanhHead(self.base_model.config["hidden_size"], self._num_labels(config))

    def stages(self, input_values: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        enc = self.base_model.encode(input_values, attention_mask)
        h = enc.last
        if self.pooling_mode == "mean":
            pooled = torch.mean(h, dim=1)
        elif self.pooling_mode == "sum":
            pooled = torch.sum(h, dim=1)
        else:
            pooled = torch.max(h, dim=1)[0]
        return stage_dict(enc, pooled, self.classifier(pooled))


class Wav2Vec2ForSpeechClassification(SpeechClassificationHead):
    base_model_class = Wav2Vec2Model
    base_model_prefix = "wav2vec2"


ARCHITECTURES: dict[str, type] = {
    "Wav2Vec2ForSequenceClassification": Wav2Vec2ForSequenceClassification,
    "HubertForSequenceClassification": HubertForSequenceClassification,
    "WavLMForSequenceClassification": WavLMForSequenceClassification,
    "SEWDForSequenceClassification": SEWDForSequenceClassification,
    "Wav2Vec2ForSpeechClassification": Wav2Vec2ForSpeechClassification,
}


def weight_norm_dims(architecture: str, config: dict) -> dict[str, int]:
    """Full-key module prefixes to fold (``porting.families.hf.base.fold_weight_norm``) for a checkpoint of
    ``architecture``; ``{}`` for a registered constructor that says nothing about weight norm."""
    try:
        ctor = ARCHITECTURES[architecture]
    except KeyError:
        raise UnsupportedModelError(f"architecture {architecture!r} has no rebuild") from None
    fn = getattr(ctor, "weight_norm_dims", None)
    return fn(config) if fn is not None else {}
