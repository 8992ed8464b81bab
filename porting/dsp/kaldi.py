"""Kaldi-style log-mel filterbanks as Hugging Face's ``ASTFeatureExtractor`` computes them, in plain torch.

transformers (``models/audio_spectrogram_transformer/feature_extraction_audio_spectrogram_transformer.py``,
``ASTFeatureExtractor._extract_fbank_features``) has two backends and picks one at *import/construction*
time with ``is_speech_available()`` (= "torchaudio is importable"):

* torchaudio present -> ``torchaudio.compliance.kaldi.fbank(waveform[None], sample_frequency=sr,
  window_type="hanning", num_mel_bins=n)``, every other option at its default. ``kaldi_fbank`` redoes
  that float32 arithmetic op for op, batched.
* torchaudio absent -> ``transformers.audio_utils.spectrogram`` with a numpy filterbank
  (``mel_filter_bank(..., mel_scale="kaldi", triangularize_in_mel_space=True)``) and a symmetric numpy
  Hann window, all in float64 until one final cast. ``numpy_fbank`` redoes that, batched, in torch float64
  (constants built with numpy, the same functions transformers calls, so they are bitwise the same).

Neither backend scales the waveform: the ``waveform * 2**15`` line in ``_extract_fbank_features`` is
commented out, so float audio in [-1, 1] goes straight in (Kaldi itself expects int16-range samples),
which puts quiet frames near the ``FLT_EPSILON`` floor (log = -15.942).

Quirks of ``torchaudio.compliance.kaldi`` (torchaudio 2.9, ``compliance/kaldi.py``) reproduced here:

* ``_get_waveform_and_window_properties``: window = ``int(sr * 25.0 * 0.001)`` = 400, shift =
  ``int(sr * 10.0 * 0.001)`` = 160 (at 16 kHz), FFT size rounded up to the next power of two (512).
* ``_get_strided`` with ``snip_edges=True``: ``1 + (N - 400) // 160`` frames, only whole frames; N < 400
  is an error (``assert 2 <= window_size <= len(waveform)``).
* ``_get_window``: ``dither=0.0`` (no noise); ``remove_dc_offset``: each frame minus its float32
  ``torch.mean``; preemphasis 0.97 through a *replicate* pad, so sample 0 becomes ``x0 - 0.97 * x0``;
  window ``torch.hann_window(400, periodic=False)`` (``_feature_window_function``, "hanning" = symmetric
  Hann, not Kaldi's default povey ``hann ** 0.85``); zero-pad 400 -> 512. The raw log energy is computed
  there too but unused (``use_energy=False``).
* ``fbank``: ``rfft(...).abs().pow(2.0)`` (|X| then squared, not re^2 + im^2); ``get_mel_banks`` built in
  float32 from Python-double mel endpoints, ``low_freq=20``, ``high_freq=0`` -> Nyquist, no VTLN,
  ``num_fft_bins = 512 / 2`` bins, then a zero column for the Nyquist bin; ``torch.mm(power, banks.T)``;
  ``max(x, FLT_EPSILON).log()`` (``_get_epsilon``); no energy column, ``htk_compat`` irrelevant, no
  ``subtract_mean``.

Quirks of the numpy fallback (transformers ``audio_utils.py``):

* ``ASTFeatureExtractor.__init__``: frame 400, hop 160, FFT 512 and 257 bins are hard-coded *samples*,
  not derived from ``sampling_rate`` (only the filterbank's Nyquist is) -- at 16 kHz both backends agree
  on the framing, at other rates they do not.
* ``window_function(400, "hann", periodic=False)`` = ``np.hanning(400)`` in float64.
* ``mel_filter_bank``: kaldi mel ``1127 ln(1 + f/700)``, 130 points by ``np.linspace(mel(20), mel(sr//2))``,
  triangles in mel space over 257 bins (the Nyquist bin is included; its weight comes out exactly 0).
* ``spectrogram``: frames copied to float64; DC removed with numpy's float64 (pairwise) mean; preemphasis
  ``buf[1:] -= 0.97 * buf[:-1]`` then ``buf[0] *= 1 - 0.97`` (same idea as Kaldi, different rounding);
  window; ``np.fft.rfft`` in float64 **stored into a complex64 array** (the one float32 rounding inside);
  ``np.abs(..., dtype=float64) ** 2``; ``np.dot(filters.T, power)`` in float64; ``np.maximum(1.1920929e-07,
  .)``; ``np.log``; cast to float32.

Both filterbanks leave mel filter 3 (of 128, at 16 kHz) with no FFT bin inside it (31.25 Hz bins), so that
feature is always ``log(FLT_EPSILON)`` = -15.942 (transformers warns "At least one mel filter has all zero
values" on the numpy path). The two backends are each bitwise their reference but differ from each other
(measured, 1 s clips): up to 2e-4 on speech-like noise, 1.4e-3 on a loud tone, 7.9e-3 on a two-tone mix,
always in bins within ~1 of the floor, where float32 FFT round-off (kaldi) is a large share of the energy;
the numpy path is within 7.6e-5 of a float64 run of the kaldi arithmetic. The filterbanks themselves
differ by up to 1.4e-5 (float32 ``low + i * delta`` vs float64 ``linspace``).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

FLT_EPSILON = 1.1920928955078125e-07  # torchaudio kaldi EPSILON = torch.finfo(torch.float).eps

__all__ = ["FLT_EPSILON", "kaldi_fbank", "kaldi_mel_banks", "numpy_fbank", "numpy_mel_filters", "numpy_pairwise_sum"]


# --------------------------------------------------------------------------------------------------
# numpy's summation order
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _pairwise_plan(n: int):
    """The fixed addition tree numpy's ``pairwise_sum`` (``loops_utils.h.src``) uses for ``n`` elements.

    numpy sums a contiguous float array recursively: blocks of <= 128 elements are summed with 8 running
    lanes (``r[j] += a[i + j]``), the lanes combined as ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, then the
    ``n % 8`` tail added one by one; longer blocks split at ``n//2`` rounded down to a multiple of 8. The
    tree depends only on ``n`` (checked: ``np.sum`` of float32 is exactly this, no 8192-chunking, initial 0).

    Returns ``(groups, levels, root)``: ``groups`` = ((size, starts), ...) of the leaves, whose results are
    concatenated in that order into a value table; ``levels`` = ((left_cols, right_cols), ...) appended
    level by level; ``root`` = the table column of the total.
    """
    leaves: list[tuple[int, int, int]] = []  # (node, start, size)
    inner: list[tuple[int, int, int, int]] = []  # (node, left, right, height)
    height: dict[int, int] = {}

    def build(start: int, size: int) -> int:
        node = len(height)
        height[node] = 0
        if size <= 128:
            leaves.append((node, start, size))
            return node
        half = size // 2
        half -= half % 8
        left = build(start, half)
        right = build(start + half, size - half)
        height[node] = 1 + max(height[left], height[right])
        inner.append((node, left, right, height[node]))
        return node

    root = build(0, n)
    col: dict[int, int] = {}
    groups = []
    for size in sorted({s for _, _, s in leaves}):
        nodes = [(node, start) for node, start, s in leaves if s == size]
        for node, _ in nodes:
            col[node] = len(col)
        groups.append((size, tuple(start for _, start in nodes)))
    levels = []
    for h in range(1, height[root] + 1):
        at_h = [(node, left, right) for node, left, right, hh in inner if hh == h]
        levels.append((tuple(col[left] for _, left, _ in at_h), tuple(col[right] for _, _, right in at_h)))
        for node, _, _ in at_h:
            col[node] = len(col)
    return tuple(groups), tuple(levels), col[root]


def _leaf_sums(blocks: Tensor, s: int) -> Tensor:
    """``[..., k, s]`` -> ``[..., k]``: numpy's sum of each length-``s`` block (``s <= 128``)."""
    if s < 8:
        acc = blocks[..., 0]  # numpy starts from 0.0; 0.0 + x0 == x0
        for i in range(1, s):
            acc = acc + blocks[..., i]
        return acc
    lanes = blocks[..., 0:8]
    body = s - s % 8
    for i in range(8, body, 8):
        lanes = lanes + blocks[..., i : i + 8]
    r = lanes.unbind(-1)
    acc = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for i in range(body, s):
        acc = acc + blocks[..., i]
    return acc


@lru_cache(maxsize=64)
def _pairwise_index(n: int):
    """``_pairwise_plan(n)`` as CPU index tensors (built once, so a trace sees them as constants)."""
    groups, levels, root = _pairwise_plan(n)
    with warnings.catch_warnings():  # built inside a trace the tracer warns; they are constants indeed
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        gidx = tuple((size, torch.tensor(starts).unsqueeze(1) + torch.arange(size)) for size, starts in groups)
        lidx = tuple((torch.tensor(left), torch.tensor(right)) for left, right in levels)
    return gidx, lidx, root


def numpy_pairwise_sum(x: Tensor) -> Tensor:
    """Sum over the last dim in numpy's order and in ``x``'s dtype: bitwise ``np.sum(row)`` per row.

    ``torch.sum`` uses another order, which in float32 is a few ulps away from numpy; that matters
    where a sum feeds a subtraction of nearly equal numbers (a mean removed from DC-offset audio). The
    tree is static for a given length, so this traces (into ONNX) for a fixed last dim.
    """
    n = int(x.shape[-1])
    if n == 0:
        return x.new_zeros(x.shape[:-1])
    groups, levels, root = _pairwise_index(n)
    table = torch.cat([_leaf_sums(x[..., idx.to(x.device)], size) for size, idx in groups], dim=-1)
    for left, right in levels:
        table = torch.cat([table, table[..., left.to(x.device)] + table[..., right.to(x.device)]], dim=-1)
    return table[..., root]


# --------------------------------------------------------------------------------------------------
# torchaudio.compliance.kaldi.fbank
# --------------------------------------------------------------------------------------------------


def _kaldi_mel(freq):
    # torchaudio kaldi.mel_scale_scalar / mel_scale: 1127 ln(1 + f / 700)
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=16)
def _kaldi_mel_banks_cpu(num_bins: int, padded: int, sample_freq: float, low_freq: float, high_freq: float) -> Tensor:
    if num_bins <= 3:
        raise ValueError("kaldi_fbank: need at least 4 mel bins (torchaudio get_mel_banks asserts num_bins > 3)")
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"kaldi_fbank: bad low_freq {low_freq} / high_freq {high_freq} for Nyquist {nyquist}")
    f32 = torch.float32
    # Mel endpoints in Python doubles, the per-bin arithmetic in float32 tensors, as get_mel_banks does
    # (its tensors take the default dtype; float32 here, explicitly).
    mel_low = _kaldi_mel(low_freq)
    delta = (_kaldi_mel(high_freq) - mel_low) / (num_bins + 1)
    idx = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + idx * delta
    center = mel_low + (idx + 1.0) * delta
    right = mel_low + (idx + 2.0) * delta
    # num_fft_bins = padded / 2 is a Python float, so arange() is already float32.
    fft_mel = _kaldi_mel((sample_freq / padded) * torch.arange(padded / 2, dtype=f32)).unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.max(torch.zeros(1, dtype=f32), torch.min(up, down))
    # The Nyquist bin gets a zero column.
    return torch.nn.functional.pad(banks, (0, 1), mode="constant", value=0.0)


def kaldi_mel_banks(num_mel_bins: int = 128, padded_window_size: int = 512, sample_frequency: float = 16000.0,
                    low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """torchaudio ``get_mel_banks`` (no VTLN) plus its Nyquist zero column: ``[num_mel_bins, padded//2 + 1]``."""
    return _kaldi_mel_banks_cpu(int(num_mel_bins), int(padded_window_size), float(sample_frequency),
                                float(low_freq), float(high_freq)).clone()


def _kaldi_window(window_type: str, size: int, blackman_coeff: float, device, dtype) -> Tensor:
    # torchaudio kaldi._feature_window_function
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, device=device, dtype=dtype)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, device=device, dtype=dtype).pow(0.85)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, device=device, dtype=dtype)
    if window_type == "rectangular":
        return torch.ones(size, device=device, dtype=dtype)
    if window_type == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, device=device, dtype=dtype)
        return (blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)).to(dtype)
    raise ValueError(f"kaldi_fbank: unknown window_type {window_type!r}")


def _as_batch(waveform: Tensor, who: str) -> Tensor:
    if not torch.is_tensor(waveform) or not waveform.is_floating_point():
        raise TypeError(f"{who}: waveform must be a floating-point torch.Tensor [B, N]")
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2:
        raise ValueError(f"{who}: waveform must be [B, N], got shape {tuple(waveform.shape)}")
    return waveform


def kaldi_fbank(
    waveform: Tensor,
    *,
    sample_frequency: float = 16000.0,
    num_mel_bins: int = 128,
    window_type: str = "hanning",
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_power: bool = True,
    use_log_fbank: bool = True,
    blackman_coeff: float = 0.42,
    dither: float = 0.0,
    snip_edges: bool = True,
    vtln_warp: float = 1.0,
    use_energy: bool = False,
    subtract_mean: bool = False,
    per_utterance_gemm: bool = True,
) -> Tensor:
    """``[B, N]`` -> ``[B, frames, num_mel_bins]``: ``torchaudio.compliance.kaldi.fbank`` per row, batched.

    Defaults are what ``ASTFeatureExtractor`` passes (``window_type="hanning"``, 128 bins at 16 kHz; all
    else torchaudio's defaults). The arithmetic is torchaudio's op for op in the waveform's dtype (float32
    for AST), so in the same torch build it matches torchaudio bitwise per row. Options that would need
    randomness or other framing (dither, ``snip_edges=False``, VTLN, energy column, CMS) are rejected
    rather than half-supported. ``per_utterance_gemm`` (default) runs the mel projection one utterance at
    a time, the GEMM shape torchaudio runs: bitwise. ``False`` is one batched GEMM (traceable with a
    dynamic batch); for utterances of few frames the BLAS then takes another kernel than torchaudio's
    (measured: up to 9.5e-7 off for 1-6 frames, 0 from ~11 frames on).
    """
    if dither != 0.0:
        raise ValueError("kaldi_fbank: dither != 0 is random; ASTFeatureExtractor uses torchaudio's 0.0")
    if not snip_edges:
        raise ValueError("kaldi_fbank: only snip_edges=True (what ASTFeatureExtractor uses) is implemented")
    if vtln_warp != 1.0 or use_energy or subtract_mean:
        raise ValueError("kaldi_fbank: VTLN, use_energy and subtract_mean are not used by ASTFeatureExtractor")
    if not 0.0 <= preemphasis_coefficient <= 1.0:
        raise ValueError("kaldi_fbank: preemphasis_coefficient must be in [0, 1]")
    x = _as_batch(waveform, "kaldi_fbank")
    device, dtype = x.device, x.dtype
    # Same float expressions as torchaudio's _get_waveform_and_window_properties (left to right).
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded = (1 if size == 0 else 2 ** (size - 1).bit_length()) if round_to_power_of_two else size
    n = x.shape[-1]
    if not 2 <= size <= n:
        raise ValueError(f"kaldi_fbank: waveform of {n} samples is shorter than one {size}-sample frame")
    if shift <= 0 or padded % 2:
        raise ValueError("kaldi_fbank: bad frame_shift / frame_length")
    eps = torch.tensor(FLT_EPSILON, device=device, dtype=dtype)

    frames = x.unfold(-1, size, shift)  # [B, m, size], frames overlap (a view, like torchaudio's as_strided)
    if remove_dc_offset:
        frames = frames - torch.mean(frames, dim=-1).unsqueeze(-1)
    if preemphasis_coefficient != 0.0:
        # x[j] - c * x[max(0, j-1)]: the replicate pad makes sample 0 "x0 - c * x0".
        prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - preemphasis_coefficient * prev
    frames = frames * _kaldi_window(window_type, size, blackman_coeff, device, dtype).unsqueeze(0)
    if padded != size:
        frames = torch.nn.functional.pad(frames, (0, padded - size), mode="constant", value=0.0)

    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = _kaldi_mel_banks_cpu(int(num_mel_bins), int(padded), float(sample_frequency), float(low_freq),
                                 float(high_freq)).to(device=device, dtype=dtype)
    if per_utterance_gemm:
        mel = torch.stack([torch.mm(s, banks.T) for s in spectrum.unbind(0)])
    else:
        b, m, f = spectrum.shape
        mel = torch.mm(spectrum.reshape(b * m, f), banks.T).reshape(b, m, -1)
    if use_log_fbank:
        mel = torch.max(mel, eps).log()
    return mel


# --------------------------------------------------------------------------------------------------
# transformers' numpy fallback (audio_utils.spectrogram + mel_filter_bank)
# --------------------------------------------------------------------------------------------------

_NP_FRAME, _NP_HOP, _NP_FFT = 400, 160, 512  # hard-coded in ASTFeatureExtractor (samples, any sampling rate)


def _np_hertz_to_mel_kaldi(freq):
    return 1127.0 * np.log(1.0 + (freq / 700.0))


@lru_cache(maxsize=16)
def _numpy_mel_filters_np(num_mel_bins: int, sampling_rate: int, num_frequency_bins: int = 257,
                          min_frequency: float = 20.0) -> np.ndarray:
    # audio_utils.mel_filter_bank(norm=None, mel_scale="kaldi", triangularize_in_mel_space=True) and
    # _create_triangular_filter_bank, in float64 numpy: the same numpy calls give the same bits.
    max_frequency = sampling_rate // 2
    mel_pts = np.linspace(_np_hertz_to_mel_kaldi(min_frequency), _np_hertz_to_mel_kaldi(max_frequency),
                          num_mel_bins + 2)
    bin_width = sampling_rate / ((num_frequency_bins - 1) * 2)
    fft_mel = _np_hertz_to_mel_kaldi(bin_width * np.arange(num_frequency_bins))
    diff = np.diff(mel_pts)
    slopes = np.expand_dims(mel_pts, 0) - np.expand_dims(fft_mel, 1)
    rising = -slopes[:, :-2] / diff[:-1]
    falling = slopes[:, 2:] / diff[1:]
    out = np.maximum(np.zeros(1), np.minimum(rising, falling))
    out.setflags(write=False)
    return out


def numpy_mel_filters(num_mel_bins: int = 128, sampling_rate: int = 16000) -> Tensor:
    """The numpy-path filterbank ``[257, num_mel_bins]`` float64, bitwise transformers' ``mel_filters``."""
    return torch.from_numpy(_numpy_mel_filters_np(int(num_mel_bins), int(sampling_rate)).copy())


@lru_cache(maxsize=4)
def _numpy_window_np(length: int) -> np.ndarray:
    # audio_utils.window_function(400, "hann", periodic=False) == np.hanning(400), float64
    w = np.hanning(length).astype(np.float64)
    w.setflags(write=False)
    return w


def numpy_fbank(waveform: Tensor, *, num_mel_bins: int = 128, sampling_rate: int = 16000,
                mel_floor: float = FLT_EPSILON) -> Tensor:
    """``[B, N]`` -> ``[B, frames, num_mel_bins]`` float32: the fbank of ``ASTFeatureExtractor``'s numpy path.

    Computed in torch float64 like transformers' numpy float64, with the same single complex64 rounding
    of the FFT output. The DC mean uses numpy's summation order (``numpy_pairwise_sum``) so it is bitwise;
    what can still differ is the FFT and the filterbank dot product (torch's vs numpy/OpenBLAS float64
    order, ~1e-16 relative), which reaches the float32 output only as an occasional 1-ulp flip.
    """
    x = _as_batch(waveform, "numpy_fbank")
    n = x.shape[-1]
    if n < _NP_FRAME:
        raise ValueError(f"numpy_fbank: waveform of {n} samples is shorter than one {_NP_FRAME}-sample frame")
    device = x.device
    f64 = torch.float64
    # audio_utils.spectrogram: waveform.astype(np.float64) (the float32 samples, exactly).
    frames = x.to(f64).unfold(-1, _NP_FRAME, _NP_HOP)  # 1 + (N - 400) // 160 frames, center=False
    frames = frames - (numpy_pairwise_sum(frames) / _NP_FRAME).unsqueeze(-1)  # remove_dc_offset
    # preemphasis: buffer[1:400] -= 0.97 * buffer[:399]; buffer[0] *= 1 - 0.97
    frames = torch.cat([frames[..., :1] * (1 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], dim=-1)
    window = torch.from_numpy(_numpy_window_np(_NP_FRAME).copy()).to(device)
    frames = frames * window
    spec = torch.fft.rfft(frames, n=_NP_FFT)  # zero-padded 400 -> 512, as the float64 buffer is
    # `spectrogram = np.empty(..., dtype=np.complex64)`: the float64 FFT is stored rounded to complex64,
    # then np.abs(..., dtype=np.float64) ** 2.0 widens it back.
    power = spec.to(torch.complex64).to(torch.complex128).abs() ** 2.0
    fb = numpy_mel_filters(num_mel_bins, sampling_rate).to(device)  # [257, n_mels]
    mel = torch.matmul(power, fb)  # np.dot(mel_filters.T, spectrogram), transposed
    mel = torch.clamp(mel, min=mel_floor)  # np.maximum(mel_floor, .)
    return torch.log(mel).to(torch.float32)
