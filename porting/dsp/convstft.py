"""A log-mel frontend whose STFT is a ``conv1d`` with stored DFT kernels, as torchlibrosa 0.1 computes it (the PANNs
frontend: issue 23), and the Slaney mel filterbank that identifies which published configuration made a stored one.

Why a conv and stored kernels, not ``torch.stft``: PANNs checkpoints carry the frontend in their state dict
(``spectrogram_extractor.stft.conv_real/conv_imag.weight``: the DFT rows times a periodic Hann window, computed in
float64 and rounded once to float32; ``logmel_extractor.melW``: ``librosa.filters.mel(...).T``). Loading overwrites
whatever the constructor computed, so the numbers that ran are the stored ones; the same conv over the same kernels
is what the original computed. ``torch.stft`` would sum in another order (an FFT) and move quiet bins in dB.

Steps (``log_mel``): reflect-pad ``n_fft // 2`` on both sides (``center=True, pad_mode="reflect"``; librosa's own
``stft`` pads with zeros since 0.9, so it is not an oracle for this step), one strided conv per real / imaginary
part, power ``re**2 + im**2``, ``power @ melW``, then ``power_to_db``:
``10 * log10(clamp(x, amin)) - 10 * log10(max(amin, ref))`` and, when ``top_db`` is set,
``max(x, m - top_db)`` where ``m`` is the maximum over the **whole batch** (torchlibrosa takes ``.max().item()`` of
the batch tensor): a clip's values then depend on the other clips of its batch, and a trace bakes ``m`` in as a
constant. ``top_db_scope="clip"`` takes ``m`` per clip instead, which is what a clip computed alone gets. The PANNs
models pass ``top_db=None``, so the question only arises for other users of the same frontend.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def power_spectrogram(waveform: torch.Tensor, real: torch.Tensor, imag: torch.Tensor, hop: int) -> torch.Tensor:
    """``[B, N]`` -> ``[B, T, n_fft // 2 + 1]`` power, ``T = 1 + N // hop``; ``real``/``imag`` are the stored kernels
    ``[n_fft // 2 + 1, 1, n_fft]``. Needs ``N > n_fft // 2`` (reflect padding)."""
    n_fft = int(real.shape[-1])
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(f"{waveform.shape[-1]} samples: reflect padding needs more than n_fft // 2 = {n_fft // 2}")
    x = F.pad(waveform[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
    re = F.conv1d(x, real, stride=hop).transpose(1, 2)
    im = F.conv1d(x, imag, stride=hop).transpose(1, 2)
    return re**2 + im**2


def power_to_db(x: torch.Tensor, amin: float = 1e-10, ref: float = 1.0, top_db: float | None = None,
                top_db_scope: str = "batch") -> torch.Tensor:
    """dB of a power spectrogram as torchlibrosa's ``LogmelFilterBank.power_to_db`` (module docstring); ``top_db``
    floors at the batch's maximum minus ``top_db`` (``"batch"``, the original) or each clip's (``"clip"``)."""
    out = 10.0 * torch.log10(torch.clamp(x, min=amin))
    out = out - 10.0 * math.log10(max(amin, ref))
    if top_db is None:
        return out
    if top_db < 0:
        raise ValueError(f"top_db {top_db}: must be non-negative")
    if top_db_scope == "batch":
        return torch.clamp(out, min=out.max().item() - top_db)
    if top_db_scope != "clip":
        raise ValueError(f"top_db_scope {top_db_scope!r}: 'batch' or 'clip'")
    peak = out.flatten(1).amax(1).reshape(-1, *([1] * (out.dim() - 1)))
    return torch.maximum(out, peak - top_db)


def log_mel(waveform: torch.Tensor, real: torch.Tensor, imag: torch.Tensor, mel_w: torch.Tensor, hop: int,
            amin: float = 1e-10, ref: float = 1.0, top_db: float | None = None, top_db_scope: str = "batch") -> torch.Tensor:
    """``[B, N]`` -> ``[B, T, n_mels]`` log-mel (dB): ``power_spectrogram`` projected on ``mel_w``
    ``[n_fft // 2 + 1, n_mels]``, then ``power_to_db``."""
    mel = torch.matmul(power_spectrogram(waveform, real, imag, hop), mel_w)
    return power_to_db(mel, amin, ref, top_db, top_db_scope)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """The Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    step = math.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) / step, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    step = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(step * (m - 15.0)), (200.0 / 3) * m)


def slaney_mel(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float | None = None) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` float32: triangles on the Slaney mel scale between ``fmin`` and ``fmax``
    (default ``sr / 2``), each scaled to unit area (``2 / width`` in Hz), the layout of ``librosa.filters.mel`` with
    its defaults (``htk=False, norm="slaney"``, float32 weights: the triangle rounded to float32, then scaled)."""
    fmax = sr / 2.0 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    weights = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / width[i], ramps[i + 2] / width[i + 1]))
    weights *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[:, None]
    return weights
