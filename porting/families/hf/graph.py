"""The Hugging Face family's stage graph, declared once: ``A.waveform`` -> ``F.input_values`` (+ mask) -> model ->
activation (golden/hf/README.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...errors import UnsupportedModelError
from ...stages import ACTIVATIONS, activate

FBANK_BACKENDS = ("torchaudio-kaldi", "numpy")  # ASTFeatureExtractor's two code paths (porting.families.hf.features)
MIN_WINDOW_S, MAX_WINDOW_S, MIN_HOP_S = 0.05, 3600.0, 0.01


def _seconds(value, param: str) -> float:
    """A finite number of seconds (NaN and inf are refused here: ``round(nan * rate)`` raises deep inside)."""
    import math

    from ...outputs import spell

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnsupportedModelError(f"{spell(param, value)}: not a finite number of seconds; pass seconds "
                                    "such as 1 or 0.5")
    return float(value)


@dataclass(frozen=True)
class HFStageGraph:
    """The Hugging Face family chain: ``A.waveform`` (a window at the feature extractor's rate) -> ``F.input_values``
    (+ ``F.attention_mask``; ``Wav2Vec2FeatureExtractor`` or ``ASTFeatureExtractor``) -> model -> activation
    (golden/hf/README.md). Declared once, like ``StageGraph``; its fields come from config.json only.
    """

    kind: str  # "wav2vec2" | "ast": which feature extractor
    feature_config: object  # porting.families.hf.features.Wav2Vec2FEConfig | ASTFEConfig
    fbank_backend: str | None = None  # AST only: "torchaudio-kaldi" (transformers' default) | "numpy"
    activation: dict = field(default_factory=lambda: {"name": "softmax", "dim": -1})
    classes: tuple[str, ...] = ()
    window_s: float = 5.0
    hop_s: float = 5.0
    sample_rate: int = 16000
    source: str = "model"

    @classmethod
    def from_config(cls, config: dict, fbank_backend: str | None = None) -> "HFStageGraph":
        from .features import ASTFEConfig, Wav2Vec2FEConfig

        fe = config["frontend"]
        act = dict(config.get("activation") or {"name": "softmax", "dim": -1})
        if act.get("name") not in ACTIVATIONS:
            raise UnsupportedModelError(f"output activation {act.get('name')!r} is not supported")
        kind = fe["type"]
        if fbank_backend is not None and fbank_backend not in FBANK_BACKENDS:
            raise UnsupportedModelError(f"--fbank-backend {fbank_backend}: unknown; use {' or '.join(FBANK_BACKENDS)}")
        if fbank_backend is not None and kind != "ast":
            raise UnsupportedModelError(f"--fbank-backend: {kind} models have no fbank; drop the option")
        feature_config = (ASTFEConfig if kind == "ast" else Wav2Vec2FEConfig).from_dict(fe["preprocessor"])
        win = config.get("windows") or {}
        return cls(kind, feature_config, (fbank_backend or fe.get("fbank_backend")) if kind == "ast" else None, act,
                   tuple(config.get("classes") or ()), float(win.get("window_s", 5.0)), float(win.get("hop_s", 5.0)),
                   int(win.get("sample_rate", getattr(feature_config, "sampling_rate", 16000))),
                   (config.get("source") or {}).get("file") or "model")

    def with_windows(self, window_s: float | None = None, hop_s: float | None = None) -> "HFStageGraph":
        """The graph with ``window_s``/``hop_s`` (None: keep the model's). Both finite, the window from
        ``MIN_WINDOW_S`` (the CNN front end of wav2vec2 needs 400 samples, AST's fbank one 25-ms frame: 0.05 s leaves
        room for either) to ``MAX_WINDOW_S``, the hop from ``MIN_HOP_S`` (a window every 10 ms already repeats each
        sample 100 times per second of window) up to the window (every sample scored)."""
        from dataclasses import replace

        from ...outputs import spell

        w = self.window_s if window_s is None else _seconds(window_s, "window_s")
        h = _seconds(hop_s, "hop_s") if hop_s is not None else (w if window_s is not None else self.hop_s)
        if not MIN_WINDOW_S <= w <= MAX_WINDOW_S:
            raise UnsupportedModelError(f"{spell('window_s', window_s)}: out of range; pass a window of "
                                        f"{MIN_WINDOW_S:g} to {MAX_WINDOW_S:g} seconds")
        if not MIN_HOP_S <= h <= w:
            raise UnsupportedModelError(f"{spell('hop_s', h)}: out of range; pass a hop of {MIN_HOP_S:g} s to the "
                                        f"window ({w:g} s), so that every sample is scored")
        return replace(self, window_s=w, hop_s=h)

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)

    def features(self, waveform: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Windows ``[B, N]`` (valid lengths ``lengths``) -> ``{"F.input_values"[, "F.attention_mask"]}``."""
        from .features import ast_features, wav2vec2_features

        if self.kind == "ast":
            return {"F.input_values": ast_features(waveform, self.feature_config, backend=self.fbank_backend)}
        values, mask = wav2vec2_features(waveform, lengths, self.feature_config)
        return {"F.input_values": values} if mask is None else {"F.input_values": values, "F.attention_mask": mask}

    def activate(self, logits: Tensor) -> Tensor:
        return activate(logits, self.activation)
