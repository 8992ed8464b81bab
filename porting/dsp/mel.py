"""Stage B: waveform -> mel power spectrogram in dB, as fastai_audio 0.1 computed it (golden/README.md §3).

Legacy called torchaudio 2.11 ``MelSpectrogram(**mel_args)`` then ``AmplitudeToDB(top_db=100)`` on one
``[1, 40000]`` window at a time. This module redoes that arithmetic in plain torch, step for step and in
the same dtypes, so the result is bitwise-close to the capture:

* STFT with a periodic Hann window, ``center=True``, reflect padding; power = ``|X|`` then ``** 2``
  (torchaudio's ``abs().pow(2.0)``, not ``re² + im²``). Always on the CPU FFT: any other FFT misses
  1e-5 in quiet bands (see ``_stft_power``).
* Mel filterbank built in float32 on the CPU exactly as torchaudio's ``melscale_fbanks`` does, **laid out
  for sample_rate 16000** (``MelConfig.mel_sample_rate``): fastai_audio never passed the real 20 kHz, so
  the bins are labelled 0..8000 Hz and the top 18 of 256 filters (f_max 10000 Hz) are all-zero.
* Mel projection as ``spec.transpose(-1, -2) @ fb`` transposed back (torchaudio ``MelScale``), one
  GEMM per window as legacy ran it.
* ``10 * log10(clamp(x, amin))`` (ref 1.0, so no offset), then each window is clamped at its own
  ``max - top_db``: legacy ran one window per call, so the clamp is per window, never per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor


def _hz_to_mel_htk(freq: float) -> float:
    # Python float (double) arithmetic, like torchaudio's _hz_to_mel.
    return 2595.0 * math.log10(1.0 + freq / 700.0)


@dataclass(frozen=True)
class MelConfig:
    """Stage B: torchaudio-style MelSpectrogram + AmplitudeToDB as fastai_audio called them (README §3).

    ``mel_sample_rate`` is the quirk: fastai_audio never passed ``sample_rate``, so the filterbank was
    laid out for torchaudio's default 16000 although the audio is at 20 kHz (top 18 filters all-zero).
    """

    n_fft: int = 2560
    hop_length: int = 256
    win_length: int | None = None  # None -> n_fft
    n_mels: int = 256
    f_min: float = 0.0
    f_max: float = 10000.0
    mel_sample_rate: int = 16000
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"
    top_db: float | None = 100.0
    amin: float = 1e-10

    def n_frames(self, n_samples: int) -> int:
        """STFT frames of ``n_samples`` samples (157 for a 2-s window at 20 kHz, centred, hop 256)."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + (n_samples - self.n_fft) // self.hop_length


def _build_filterbank(cfg: MelConfig) -> Tensor:
    """The HTK, un-normalized triangular filterbank ``[n_fft//2+1, n_mels]`` in float32 on the CPU.

    Dtypes and operation order follow torchaudio 2.11 ``melscale_fbanks`` /
    ``_create_triangular_filterbank`` (default float32 tensors, Python-double mel endpoints), because a
    different order changes the last bits of the filter weights (golden/README.md §3).
    """
    n_freqs = cfg.n_fft // 2 + 1
    f32 = torch.float32
    # The quirk: bins labelled 0..mel_sample_rate//2 (8000 Hz), not 0..10000 Hz.
    all_freqs = torch.linspace(0, cfg.mel_sample_rate // 2, n_freqs, dtype=f32)
    m_min = _hz_to_mel_htk(cfg.f_min)
    m_max = _hz_to_mel_htk(cfg.f_max)
    m_pts = torch.linspace(m_min, m_max, cfg.n_mels + 2, dtype=f32)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)

    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1, dtype=f32), torch.min(down, up))


def _build_window(cfg: MelConfig) -> Tensor:
    """Periodic Hann window of ``win_length`` (default ``n_fft``), float32 on the CPU (torch.hann_window default)."""
    return torch.hann_window(cfg.win_length or cfg.n_fft, periodic=True, dtype=torch.float32)


@lru_cache(maxsize=32)
def _constants(cfg: MelConfig, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(window, filterbank) for one (config, device, dtype), built once.

    Both are always built in float32 on the CPU, as legacy did, then moved/cast: the constants are the
    legacy ones on every device and dtype.
    """
    window = _build_window(cfg).to(device=device, dtype=dtype)
    fb = _build_filterbank(cfg).to(device=device, dtype=dtype)
    return window, fb


def mel_filterbank(cfg: MelConfig = MelConfig(), device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The legacy mel filterbank ``[n_fft//2+1, n_mels]`` (a copy; the cached one stays untouched)."""
    device = torch.device("cpu") if device is None else torch.device(device)
    return _constants(cfg, device, dtype)[1].clone()


def _as_batch(waveform: Tensor) -> Tensor:
    """``[B, N]`` -> ``[B, 1, N]``; ``[B, C, N]`` is kept (the dB clamp then spans C, as torchaudio's did)."""
    if not torch.is_tensor(waveform) or not waveform.is_floating_point():
        raise TypeError("mel_db: waveform must be a floating-point torch.Tensor of shape [B, N] or [B, 1, N]")
    if waveform.dim() == 2:
        return waveform.unsqueeze(1)
    if waveform.dim() == 3:
        return waveform
    raise ValueError(f"mel_db: waveform must be [B, N] or [B, 1, N], got shape {tuple(waveform.shape)}")


def _stft_power(waveform: Tensor, window: Tensor, cfg: MelConfig) -> Tensor:
    """``[B, C, N]`` -> ``[B, C, n_fft//2+1, frames]`` power, always computed by the CPU FFT.

    Why the CPU: the log turns tiny FFT round-off into large dB errors in quiet bands. Measured on the
    goldens: the same STFT in float64, or with another float32 FFT (scipy/pocketfft), misses
    ``B.mel_db`` by up to 0.0156 / 0.0197 dB in bands ~100 dB below the window max; only torch's x86
    CPU FFT (MKL, what legacy ran) lands within 1e-5 (bitwise here). So a CUDA waveform is transformed
    on the CPU and the power moved back; the rest of the stage runs on the waveform's device.
    """
    b, c, n = waveform.shape
    x = waveform.reshape(b * c, n)
    spec = torch.stft(
        x.cpu(),
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length or cfg.n_fft,
        window=window.cpu(),
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    # torchaudio's power: |X| first, then ** power (not re^2 + im^2, which rounds differently).
    power = spec.abs() if cfg.power == 1.0 else spec.abs().pow_(cfg.power)  # in place: the same kernel, one buffer less
    return power.to(waveform.device).reshape(b, c, power.shape[-2], power.shape[-1])


def _mel_project(power: Tensor, fb: Tensor, per_window: bool) -> Tensor:
    """``[B, C, freq, T]`` -> ``[B, C, n_mels, T]`` as torchaudio ``MelScale``: ``(spec^T @ fb)^T``.

    ``per_window`` runs one GEMM per window, the exact shape legacy ran (one window per call), so the
    result is bitwise the legacy one (same BLAS, same thread count) and never depends on batch mates.
    One batched GEMM lets the BLAS block differently: measured up to 1 float32 ulp of the dB value
    (<= 3.8e-6 on the goldens; 1 ulp is 7.6e-6 for |dB| in [64, 128)).
    """
    if per_window:
        return torch.stack([torch.matmul(p.transpose(-1, -2), fb).transpose(-1, -2) for p in power.unbind(0)])
    return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)


def _mel_db(waveform: Tensor, window: Tensor, fb: Tensor, cfg: MelConfig, per_window: bool = True) -> Tensor:
    """Shared body of ``mel_db`` and ``MelDB.forward``; ``waveform`` is ``[B, C, N]``."""
    b, c, n = waveform.shape
    if b * c == 0:  # torch.stft rejects an empty batch; an empty batch of windows is still valid
        return waveform.new_zeros((b, c, cfg.n_mels, cfg.n_frames(n)))
    power = _stft_power(waveform, window, cfg)
    mel = _mel_project(power, fb, per_window)

    db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))  # ref 1.0: torchaudio subtracts 10*log10(1) = 0
    if cfg.top_db is not None:
        # Per window (per leading item), over (C, mel, time): legacy called AmplitudeToDB per window.
        floor = db.amax(dim=(-3, -2, -1)) - cfg.top_db
        db = torch.max(db, floor.view(-1, 1, 1, 1))
    return db


def mel_db(waveform: Tensor, cfg: MelConfig = MelConfig()) -> Tensor:
    """Stage B: ``[B, N]`` or ``[B, 1, N]`` float waveforms -> ``[B, 1, n_mels, frames]`` dB (README §3).

    For a 2-s window at 20 kHz (N = 40000): frames = 1 + N // hop = 157. Each window's dB floor is its
    own max - top_db, so results do not depend on how windows are batched.
    """
    x = _as_batch(waveform)
    window, fb = _constants(cfg, x.device, x.dtype)
    return _mel_db(x, window, fb, cfg)


class MelDB(torch.nn.Module):
    """``mel_db`` as a module (for export): window and filterbank are buffers, same arithmetic.

    ``per_window=False`` uses one batched GEMM (traceable with a dynamic batch) at the cost of up to
    one float32 ulp against the legacy values; see ``_mel_project``.
    """

    def __init__(self, cfg: MelConfig = MelConfig(), per_window: bool = True):
        super().__init__()
        self.cfg = cfg
        self.per_window = per_window
        self.register_buffer("window", _build_window(cfg))
        self.register_buffer("fb", _build_filterbank(cfg))

    def forward(self, waveform: Tensor) -> Tensor:
        return _mel_db(_as_batch(waveform), self.window, self.fb, self.cfg, self.per_window)
