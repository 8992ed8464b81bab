"""Hugging Face audio feature extractors (``Wav2Vec2FeatureExtractor``, ``ASTFeatureExtractor``) in plain torch.

Configs are read from the model's ``preprocessor_config.json`` dict; nothing here imports transformers.

Wav2Vec2 (transformers ``models/wav2vec2/feature_extraction_wav2vec2.py``), quirks reproduced:

* ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` works on float32 numpy arrays: ``x.mean()`` and
  ``x.var()`` are float32 *pairwise* sums (numpy ``_methods._mean`` / ``_var``), each divided by the count
  in float64 (float32 scalar / ``np.intp``) and rounded back to float32; ``var + 1e-7`` is a float32 add
  (NEP 50: the Python float is weak); then ``(x - mean) / sqrt(var + 1e-7)`` in float32. Reproduced
  bitwise with ``numpy_pairwise_sum`` (numpy's addition tree); ``exact=False`` uses a float64 masked sum
  instead (traceable with dynamic lengths), which is a few float32 ulps off the mean.
* Padding (``SequenceFeatureExtractor.pad`` / ``_pad``): right-padded with ``padding_value``. The mean and
  variance skip the padding **only if an attention mask exists**, i.e. only when ``return_attention_mask``
  is true; then padded positions are set back to ``padding_value`` after normalising. Without the mask
  (the default, e.g. wav2vec2-base) the statistics include the padded values and the padded positions
  come out as ``(padding_value - mean) / std``.
* ``attention_mask`` is built as ``np.int32`` (``_pad``) and ``return_tensors="pt"`` keeps it int32
  (``torch.from_numpy``); here it is returned as int64, the dtype the models' index arithmetic prefers.

AST (``models/audio_spectrogram_transformer/feature_extraction_audio_spectrogram_transformer.py``):

* ``_extract_fbank_features``: fbank of the *unscaled* float waveform (see ``kaldi.py``), then the frames
  are padded with **zeros** (``torch.nn.ZeroPad2d``, log-mel domain, not ``padding_value``) or truncated
  to ``max_length``; ``normalize`` then maps every frame, padding included, to ``(x - mean) / (std * 2)``
  in float32 (float32 array and Python floats, so ``std * 2`` is a double rounded to float32 once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor

from ...dsp.kaldi import kaldi_fbank, numpy_fbank, numpy_pairwise_sum

__all__ = ["ASTFEConfig", "Wav2Vec2FEConfig", "ast_features", "wav2vec2_features"]


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class Wav2Vec2FEConfig:
    """The fields of a ``Wav2Vec2FeatureExtractor`` preprocessor_config.json that change its output."""

    feature_size: int = 1
    sampling_rate: int = 16000
    padding_value: float = 0.0
    do_normalize: bool = True
    return_attention_mask: bool = False
    padding_side: str = "right"

    def __post_init__(self):
        if self.feature_size != 1:
            raise ValueError(f"Wav2Vec2FEConfig: feature_size must be 1 (mono samples), got {self.feature_size}")
        if self.padding_side != "right":
            # Left padding with an attention mask normalises over vector[:length], i.e. over the padding
            # (zero_mean_unit_var_norm slices from the left): refuse rather than copy that.
            raise ValueError("Wav2Vec2FEConfig: only padding_side='right' is supported")

    @classmethod
    def from_dict(cls, d: dict) -> "Wav2Vec2FEConfig":
        """From a preprocessor_config.json dict (unknown keys such as ``feature_extractor_type`` ignored)."""
        return cls(**_known(cls, d))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ASTFEConfig:
    """The fields of an ``ASTFeatureExtractor`` preprocessor_config.json that change its output."""

    feature_size: int = 1
    sampling_rate: int = 16000
    num_mel_bins: int = 128
    max_length: int = 1024
    padding_value: float = 0.0  # stored by transformers, never used by ASTFeatureExtractor
    do_normalize: bool = True
    mean: float = -4.2677393
    std: float = 4.5689974
    return_attention_mask: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "ASTFEConfig":
        return cls(**_known(cls, d))

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Wav2Vec2
# --------------------------------------------------------------------------------------------------


def _f32_div_count(total: Tensor, count: Tensor | int) -> Tensor:
    # numpy: float32 scalar / np.intp -> float64 division, rounded to float32 (``ret.dtype.type(ret / n)``).
    if isinstance(count, Tensor):
        count = count.to(torch.float64)
    return (total.to(torch.float64) / count).to(torch.float32)


def _stats_exact(x: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """numpy float32 ``mean``/``var`` of each row of ``x[:, :n]``, bitwise."""
    v = x[:, :n]
    cnt = int(n)
    mean = _f32_div_count(numpy_pairwise_sum(v), cnt)
    d = v - mean.unsqueeze(-1)
    var = _f32_div_count(numpy_pairwise_sum(d * d), cnt)
    return mean, var


def _stats_f64(x: Tensor, valid: Tensor | None, count: Tensor | int) -> tuple[Tensor, Tensor]:
    """Traceable mean/var over the valid samples: float64 accumulation instead of numpy's float32 tree."""
    w = 1.0 if valid is None else valid.to(torch.float64)
    mean = _f32_div_count((x.to(torch.float64) * w).sum(-1), count)
    d = x - mean.unsqueeze(-1)
    var = _f32_div_count(((d * d).to(torch.float64) * w).sum(-1), count)
    return mean, var


def wav2vec2_features(
    windows: Tensor, lengths: Tensor | None = None, cfg: Wav2Vec2FEConfig = Wav2Vec2FEConfig(), *, exact: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``[B, N]`` float32 -> ``(input_values [B, N] float32, attention_mask [B, N] int64 | None)``.

    Equals ``Wav2Vec2FeatureExtractor(**cfg)(rows)``: with ``lengths=None`` each row is a whole utterance
    (``rows = list(windows)``); with ``lengths`` row ``i`` is the utterance ``windows[i, :lengths[i]]``
    padded to N (``padding="max_length", max_length=N``); samples past a length are ignored. The mask is
    returned only when ``cfg.return_attention_mask`` (all ones when ``lengths`` is None).

    ``exact=True`` sums in numpy's order: bitwise transformers. Its addition tree depends on the length,
    so with ``lengths`` it groups rows by their (concrete) length -- eager only. ``exact=False`` is one
    masked float64 reduction, traceable with dynamic lengths, a few float32 ulps off the numpy mean.
    """
    if not torch.is_tensor(windows) or windows.dim() != 2 or not windows.is_floating_point():
        raise ValueError("wav2vec2_features: windows must be a float tensor [B, N]")
    x = windows.to(torch.float32)
    b, n = x.shape
    pad = float(cfg.padding_value)
    pos = torch.arange(n, device=x.device)
    if lengths is None:
        valid = None
    else:
        lengths = lengths.to(device=x.device, dtype=torch.int64)
        if lengths.shape != (b,):
            raise ValueError(f"wav2vec2_features: lengths must be [B] = [{b}], got {tuple(lengths.shape)}")
        valid = pos.unsqueeze(0) < lengths.unsqueeze(1)
        x = torch.where(valid, x, pad)  # SequenceFeatureExtractor._pad: np.pad(constant_values=padding_value)
    mask = None
    if cfg.return_attention_mask:
        mask = valid.to(torch.int64) if valid is not None else torch.ones((b, n), dtype=torch.int64, device=x.device)
    if not cfg.do_normalize:
        return x, mask

    masked_stats = valid is not None and cfg.return_attention_mask
    if not masked_stats:
        # No mask -> zero_mean_unit_var_norm over the whole (padded) row.
        if exact:
            mean, var = _stats_exact(x, n)
        else:
            mean, var = _stats_f64(x, None, n)
    elif exact:
        if bool((lengths < 0).any()) or bool((lengths > n).any()):
            raise ValueError(f"wav2vec2_features: lengths must lie in [0, {n}]")
        mean = torch.empty(b, dtype=torch.float32, device=x.device)
        var = torch.empty(b, dtype=torch.float32, device=x.device)
        for length in sorted(set(lengths.tolist())):
            rows = (lengths == length).nonzero().flatten()
            m, v = _stats_exact(x[rows], int(length))
            mean[rows], var[rows] = m, v
    else:
        mean, var = _stats_f64(x, valid, lengths.to(torch.float64))
    # var + 1e-7 is a float32 add in numpy (a Python float is weak under NEP 50); torch does the same.
    out = (x - mean.unsqueeze(-1)) / torch.sqrt(var + 1e-7).unsqueeze(-1)
    if masked_stats:
        out = torch.where(valid, out, pad)  # normed_slice[length:] = padding_value
    return out, mask


# --------------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------------


def ast_features(
    windows: Tensor, cfg: ASTFEConfig = ASTFEConfig(), backend: str = "torchaudio-kaldi", *,
    per_utterance_gemm: bool = True,
) -> Tensor:
    """``[B, N]`` float32 -> ``input_values [B, max_length, num_mel_bins]`` float32, as ``ASTFeatureExtractor``.

    ``backend="torchaudio-kaldi"`` reproduces transformers with torchaudio installed (``kaldi_fbank``,
    float32), ``"numpy"`` its fallback without torchaudio (``numpy_fbank``, float64). Each is bitwise its
    own reference; they differ from *each other* by up to ~8e-3 in the fbank (~1e-3 after normalising) on
    tonal audio, in bins near the FLT_EPSILON floor, where float32 FFT round-off is a large part of the
    energy. Use the backend the model's goldens were captured with. ``per_utterance_gemm`` is passed to
    ``kaldi_fbank`` (False: one batched GEMM, <= ~1e-6 off for utterances of a few frames).
    """
    if not torch.is_tensor(windows) or windows.dim() != 2 or not windows.is_floating_point():
        raise ValueError("ast_features: windows must be a float tensor [B, N]")
    x = windows.to(torch.float32)
    if backend == "torchaudio-kaldi":
        fb = kaldi_fbank(x, sample_frequency=cfg.sampling_rate, window_type="hanning", num_mel_bins=cfg.num_mel_bins,
                         per_utterance_gemm=per_utterance_gemm)
    elif backend == "numpy":
        fb = numpy_fbank(x, num_mel_bins=cfg.num_mel_bins, sampling_rate=cfg.sampling_rate)
    else:
        raise ValueError(f"ast_features: backend must be 'torchaudio-kaldi' or 'numpy', got {backend!r}")
    frames = fb.shape[1]
    if frames < cfg.max_length:  # ZeroPad2d((0, 0, 0, difference)): zero log-mel frames at the end
        fb = torch.nn.functional.pad(fb, (0, 0, 0, cfg.max_length - frames), mode="constant", value=0.0)
    else:
        fb = fb[:, : cfg.max_length, :]
    if cfg.do_normalize:
        # Shape-[1] tensors, not scalars: CUDA turns division by a scalar into a reciprocal multiply.
        mean = fb.new_full((1,), cfg.mean)
        scale = fb.new_full((1,), cfg.std * 2)  # std * 2 in double, rounded to float32 once, as numpy does
        fb = (fb - mean) / scale
    return fb
