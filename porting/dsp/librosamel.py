"""librosa's mel spectrogram, its ``power_to_db(ref=np.max, top_db)`` and a per-clip min-max, in torch, op for op.

What ``librosa.feature.melspectrogram(y, sr, n_fft, hop_length, n_mels, fmin, fmax)`` computes for float32 ``y``
(librosa 0.10-0.11 defaults: ``window='hann'``, ``center=True``, ``pad_mode='constant'``, ``power=2``, Slaney mel
with Slaney area norm), and what this reproduces:

1. **zero padding**, ``n_fft // 2`` each side (``pad_mode='constant'`` since librosa 0.10; torchlibrosa and
   ``torch.stft`` reflect): frames ``T = 1 + N // hop``;
2. each frame (float32) times the periodic Hann window (**float64**: ``get_window`` returns float64, so numpy
   promotes the product), ``numpy.fft.rfft`` in float64, stored into a complex64 matrix (each part rounded once);
3. ``np.abs(D) ** 2``: numpy's float32 complex magnitude (``magnitude``: not ``hypotf``), squared in float32;
4. ``einsum('ft,mf->mt', S, mel_basis)`` in float32 (BLAS: the one order-dependent step; see
   ``porting.dsp.errormodel.librosa_mel_bounds``), ``mel_basis`` = ``librosa.filters.mel`` (``convstft.slaney_mel``);
5. ``power_to_db``: ``10 log10(max(amin, S)) - 10 log10(max(amin, ref))`` in float32 with ``ref = S.max()`` **of
   the clip**, then ``max(dB, dB.max() - top_db)`` (``dB.max()`` is exactly 0: the reference is the clip's maximum);
6. Project-Echo's min-max: ``(dB - min) / (max - min + 1e-6)``, per clip. Under numpy 1.x the denominator is
   ``max - min`` (a float32 scalar) plus the Python float in float64, rounded to float32 for the division; numpy 2
   adds in float32. Both round ``80 + 1e-6`` (the usual span, with ``top_db`` 80) to 80; elsewhere they can differ by
   one float32 ulp of the denominator (relative 6e-8). This follows numpy 1.x (the reference venv's).

Every reduction (``ref``, ``top_db``'s max, the min-max) is over **one clip**: a long recording's windows are each
normalised alone, and a batch changes nothing (unlike torchlibrosa's batch-wide ``top_db``).
"""

from __future__ import annotations

import torch


def frames(waveform: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``[B, N]`` -> ``[B, T, n_fft]`` zero-padded centred frames (float32), ``T = 1 + N // hop``."""
    pad = n_fft // 2
    x = torch.nn.functional.pad(waveform, (pad, pad))
    return x.unfold(-1, n_fft, hop)


def power_spectrogram(waveform: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``[B, N]`` float32 -> ``|STFT|^2`` ``[B, T, n_fft // 2 + 1]`` float32 (steps 1-3)."""
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=waveform.device)
    spec = torch.fft.rfft(frames(waveform.float(), n_fft, hop).double() * window, dim=-1).to(torch.complex64)
    return magnitude(spec.real, spec.imag) ** 2


def magnitude(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """numpy's float32 ``np.abs`` of complex64, not ``hypotf``: its SIMD loop (``loops_unary_complex``) computes
    ``larger * sqrt(fma(ratio, ratio, 1))`` with ``ratio = smaller / larger``; this matches it on every element
    measured (numpy 1.26 and 2.4, AVX2 + FMA3), where a correctly rounded magnitude differs in 35 % of them. The
    fused multiply-add is emulated in float64 (``ratio**2`` is exact there; the sum rounds to float32 once but for
    a double-rounding tie). Without FMA3 numpy multiplies and adds: an ulp apart, which the portable tier allows."""
    re, im = re.abs(), im.abs()
    larger, smaller = torch.maximum(re, im), torch.minimum(re, im)
    safe = torch.where(larger == 0, torch.ones_like(larger), larger)
    ratio = torch.where(larger == 0, torch.zeros_like(larger), smaller / safe).double()
    # the root of a float32 in float64, rounded once, is the correctly rounded float32 root (numpy's ``sqrtps``);
    # torch's float32 sqrt is not (11 % of these elements an ulp off, torch 2.13 on AVX2)
    return torch.sqrt((ratio * ratio + 1.0).float().double()).float() * larger


def mel_power(power: torch.Tensor, mel_basis: torch.Tensor) -> torch.Tensor:
    """``[B, T, bins]`` -> ``[B, n_mels, T]`` float32 (step 4; ``mel_basis`` ``[n_mels, bins]``)."""
    return torch.matmul(mel_basis, power.transpose(1, 2))


def power_to_db_clip(mel: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """``[B, M, T]`` power -> dB against **each clip's** maximum (``librosa.power_to_db(ref=np.max)``), floored at
    ``top_db`` below the clip's maximum dB (step 5). The array part is float32; the two scalar parts follow numpy
    1.x's scalar promotion (a float32 scalar with a Python number computes in float64): the reference's dB is
    ``10 log10`` of the clip maximum in float64, rounded once, and the floor is ``max - top_db`` in float64, rounded
    once; so the maximum element is 0 within an ulp, not exactly."""
    amin32 = torch.tensor(amin, dtype=mel.dtype, device=mel.device)
    log_spec = 10.0 * torch.log10(torch.maximum(mel, amin32))
    ref = mel.flatten(1).amax(1).double().clamp_min(amin)
    log_spec = log_spec - (10.0 * torch.log10(ref)).to(mel.dtype)[:, None, None]
    if top_db is not None:
        floor = (log_spec.flatten(1).amax(1).double() - float(top_db)).to(mel.dtype)
        log_spec = torch.maximum(log_spec, floor[:, None, None])
    return log_spec


def minmax_clip(db: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - min) / (max - min + eps)`` per clip, the denominator's ``+ eps`` in float64 as numpy 1.x (step 6)."""
    lo, hi = db.flatten(1).amin(1), db.flatten(1).amax(1)
    span = ((hi - lo).double() + eps).to(db.dtype)
    return (db - lo[:, None, None]) / span[:, None, None]


def fit_clip(waveform: torch.Tensor, clip: int) -> torch.Tensor:
    """Project-Echo's eval rule for a clip of another length: a longer one centre-cropped at ``(N - clip) // 2``, a
    shorter one zero-padded on the right (``dataset.py``: ``np.pad(..., (0, clip - N), 'constant')``)."""
    n = waveform.shape[-1]
    if n > clip:
        start = (n - clip) // 2
        return waveform[..., start:start + clip]
    if n < clip:
        return torch.nn.functional.pad(waveform, (0, clip - n))
    return waveform
