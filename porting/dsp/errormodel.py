"""The portable tier's error model for the FFT-dependent stages (B.mel_db, C.padded, X.model_input).

Two machines running the same float32 STFT on the same waveform (stage A is bitwise everywhere) get
results that differ only by FFT rounding, whose size depends on the code path MKL picks for the CPU.
Neither result is "right"; both lie within the FFT's rounding bound of the exact value. So the model
bounds each float32 result around the exact (float64) mel of the golden waveform, carries the bound
through power, the mel projection, the dB step and the per-window ``top_db`` floor, and gates
``|port - golden|`` at the width of the interval both must lie in. Every constant below is a property
of float32 and of the algorithm, none is fitted to a capture (``docs``: README "Parity").

Per frame ``t`` with windowed samples ``xw`` (n_fft of them), bin ``k``, mel band ``m``:

1. **FFT** (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm 24.2): the computed
   transform satisfies ``||dX||_2 <= L * eta * ||X||_2`` with ``L`` stages and
   ``eta = mu + gamma_4 (sqrt 2 + mu)``, ``mu`` the twiddle error. With ``mu = u`` (u = 2^-24), one more
   ``u`` for the ``x * window`` product and ``L = ceil(log2 n_fft) + 1`` (mixed radix, plus the real-input
   split), ``eta ~ 7.66 u``. The error is spread over the ``n_fft`` bins (every output depends on every
   butterfly), so per bin ``E|dX_k|^2 <= sigma^2 = (L eta)^2 ||X||^2 / n_fft = (L eta)^2 sum(xw^2)``
   (Parseval).
2. **Power** ``P = |X|^2``: ``dP = 2 Re(conj(X) dX) + |dX|^2``. Over a mel band the linear terms add
   like independent errors: sd ``s = sqrt(2 sigma^2 sum_k fb^2 P_k)``; the quadratic term is at most
   ``sigma^2 sum_k fb`` on average. Both are taken at ``K_SIGMA`` (6: a one-sided Gaussian tail of 1e-9 per
   element, about 0.01 expected exceedances over the ~10^7 elements of all golden cases).
3. **Rounding of the rest**: |X| and its square (3 u), the mel GEMM over the band's ``K_m`` non-zero
   weights (``gamma_{K_m}``): ``(K_m + 3) u M``.
4. **dB and floor**: each result lies in ``[10 log10(max(M - b, amin)), 10 log10(M + b)]``, then the
   window's floor ``max(dB) - top_db`` moves within the same interval of the window's maximum; plus
   two float32 ulps of the dB value for ``log10`` and the factor 10 on each side.
5. **C** (crop/pad) is exact: pad frames get tolerance 0. **X** = ``(C - mean) / std``: ``tol_C / std``
   plus two ulps of ``|X|``.

Validated both ways in tests/test_contract.py: it accepts the Intel-vs-AMD legacy captures of every
public case, and it rejects a filterbank laid out for 20 kHz, an STFT shifted by one hop, a 1e-3 dB bias
on one mel band and a dropped normalization.
"""

from __future__ import annotations

import math

import numpy as np

U = 2.0**-24  # float32 unit roundoff
K_SIGMA = 6.0


def _eta() -> float:
    gamma4 = 4 * U / (1 - 4 * U)
    return U + gamma4 * (math.sqrt(2.0) + U) + U


def _ulp32(x: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)


def _frames(wave: np.ndarray, n_fft: int, hop: int, center: bool, pad_mode: str) -> np.ndarray:
    """``[W, N]`` -> ``[W, T, n_fft]`` as torch.stft frames them (centred, reflect-padded)."""
    if center:
        wave = np.pad(wave, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    t = 1 + (wave.shape[-1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(t)[:, None]
    return wave[:, idx]


def mel_db_bounds(waveform, mel_cfg) -> np.ndarray:
    """Per-element tolerance ``[W, 1, n_mels, T]`` (dB) for two float32 stage-B results of ``waveform``."""
    import torch

    from ..dsp.mel import _build_window, mel_filterbank

    cfg = mel_cfg
    wave = np.asarray(waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else waveform, dtype=np.float64)
    window = _build_window(cfg).numpy().astype(np.float64)
    win = np.zeros(cfg.n_fft)
    left = (cfg.n_fft - window.size) // 2
    win[left:left + window.size] = window
    fb = mel_filterbank(cfg).numpy().astype(np.float64)  # [K, M]

    xw = _frames(wave, cfg.n_fft, cfg.hop_length, cfg.center, cfg.pad_mode) * win  # [W, T, n_fft]
    spec = np.fft.rfft(xw, axis=-1)
    power = spec.real**2 + spec.imag**2  # [W, T, K]
    if cfg.power != 2.0:
        raise ValueError("mel_db_bounds: the error model is derived for power spectrograms (power 2)")
    levels = math.ceil(math.log2(cfg.n_fft)) + 1
    sigma2 = (levels * _eta()) ** 2 * np.sum(xw * xw, axis=-1, keepdims=True)  # [W, T, 1]

    mel = power @ fb  # [W, T, M]
    linear = np.sqrt(2.0 * sigma2 * (power @ (fb * fb)))
    quadratic = sigma2 * fb.sum(axis=0)
    support = (fb != 0).sum(axis=0)
    b = K_SIGMA * (linear + quadratic) + (support + 3) * U * mel

    lo = 10.0 * np.log10(np.maximum(mel - b, cfg.amin))
    hi = 10.0 * np.log10(np.maximum(mel + b, cfg.amin))
    if cfg.top_db is not None:
        lo = np.maximum(lo, lo.max(axis=(1, 2), keepdims=True) - cfg.top_db)
        hi = np.maximum(hi, hi.max(axis=(1, 2), keepdims=True) - cfg.top_db)
    tol = (hi - lo) + 4.0 * _ulp32(np.maximum(np.abs(lo), np.abs(hi)))
    return np.ascontiguousarray(tol.transpose(0, 2, 1))[:, None]  # [W, 1, M, T]


def padded_bounds(tol_b: np.ndarray, pad_cfg) -> np.ndarray:
    """Stage C is exact: the data frames keep B's tolerance, the appended pad frames get 0."""
    t = tol_b.shape[-1]
    if t >= pad_cfg.frames:
        return tol_b[..., : pad_cfg.frames]
    return np.concatenate([tol_b, np.zeros(tol_b.shape[:-1] + (pad_cfg.frames - t,))], axis=-1)


def normalized_bounds(tol_c: np.ndarray, expected_x: np.ndarray, normalize: dict | None) -> np.ndarray:
    """``(C - mean) / std``: C's tolerance scaled by 1/std, plus the subtraction's and division's rounding."""
    if not normalize:
        return tol_c
    std = np.asarray(normalize["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    return tol_c / std + 2.0 * _ulp32(expected_x)


KALDI_FRAME, KALDI_SHIFT, KALDI_FFT = 400, 160, 512  # 25 / 10 ms at 16 kHz, padded to a power of two (AST's FE)
KALDI_PRE_STEPS = 3  # float32 steps before the FFT, each one more u per sample: DC removal, preemphasis, window


def fbank_bounds(waveform, cfg, input_delta: float = 0.0) -> np.ndarray:
    """Per-element tolerance ``[max_length, num_mel_bins]`` for two float32 ``ASTFeatureExtractor`` results of one
    window (golden ``F.input_values``), the same model as ``mel_db_bounds`` applied to the kaldi fbank:

    frames of 400 samples every 160, DC removed, preemphasis 0.97, symmetric Hann, zero-padded to 512; the FFT
    bound with ``L = log2(512) + 1 + 3`` (the three float32 steps before it) taken **per bin at its worst case**,
    ``|dX_k| <= ||dX||_2 <= L eta ||X||_2`` (not spread evenly over the bins as ``mel_db_bounds`` assumes): the Intel
    capture's own fbank is up to 5.6e-5 (log) off the float64 value in a loud band (ast__stereo44k1 window 3, band
    91, frames 40-42), 17x the even-spread sigma, while float32 torch/MKL on an AMD Zen 5 and pocketfft are within
    2e-7 of it; the error concentrates in some bins on some CPUs. Then power; the kaldi mel GEMM; natural log
    with the ``FLT_EPSILON`` floor as an interval; zero-padded frames past the signal are exact (tolerance 0);
    then ``(x - mean) / (2 std)``: the interval width over ``2 std`` plus two ulps.

    ``input_delta``: the largest |difference| of the two waveforms themselves (0 when both read the golden one),
    carried through the linear steps before the FFT as a deterministic per-bin bound ``d = 1.97 sum|w| delta``.
    """
    import torch

    from ..dsp.kaldi import FLT_EPSILON, kaldi_mel_banks

    x = np.asarray(waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else waveform, dtype=np.float64)
    x = x.reshape(-1)
    rate = int(getattr(cfg, "sampling_rate", 16000))
    frame, shift = round(KALDI_FRAME * rate / 16000), round(KALDI_SHIFT * rate / 16000)
    n_fft = 1 << max(frame - 1, 1).bit_length()
    n_frames = 0 if x.size < frame else 1 + (x.size - frame) // shift
    fb = kaldi_mel_banks(cfg.num_mel_bins, n_fft, float(rate)).numpy().astype(np.float64)  # [M, K]
    tol = np.zeros((cfg.max_length, cfg.num_mel_bins))
    if n_frames:
        idx = np.arange(frame)[None, :] + shift * np.arange(n_frames)[:, None]
        fr = x[idx]
        fr = fr - fr.mean(axis=1, keepdims=True)
        fr = np.concatenate([fr[:, :1] * (1 - 0.97), fr[:, 1:] - 0.97 * fr[:, :-1]], axis=1)
        w = np.hanning(frame)  # symmetric Hann, torch.hann_window(periodic=False)
        xw = np.zeros((n_frames, n_fft))
        xw[:, :frame] = fr * w
        power = np.abs(np.fft.rfft(xw, axis=-1)) ** 2  # [F, K]
        levels = math.ceil(math.log2(n_fft)) + 1 + KALDI_PRE_STEPS
        sigma2 = (levels * _eta()) ** 2 * np.sum(xw * xw, axis=-1, keepdims=True)
        mel = power @ fb.T  # [F, M]
        eps = np.sqrt(n_fft * sigma2)  # Parseval: ||X||_2 = sqrt(n_fft) ||xw||_2
        b = (2.0 * np.sqrt(power) * eps + eps * eps) @ fb.T  # dP_k <= 2 |X_k| eps + eps^2, summed over the band
        b += ((fb != 0).sum(axis=1) + 3) * U * mel
        if input_delta:
            d = 1.97 * np.abs(w).sum() * input_delta
            b += (2.0 * np.sqrt(power) * d + d * d) @ fb.T
        lo = np.log(np.maximum(mel - b, FLT_EPSILON))
        hi = np.log(np.maximum(mel + b, FLT_EPSILON))
        width = (hi - lo) + 4.0 * _ulp32(np.maximum(np.abs(lo), np.abs(hi)))
        n = min(n_frames, cfg.max_length)
        tol[:n] = width[:n]
    if getattr(cfg, "do_normalize", True):
        tol = tol / (2.0 * cfg.std)
    return tol


PROB_LAMBDA = 8.0  # probabilistic dot-product bound's lambda: failure probability <= 2 n exp(-lambda^2 / 2) per element


def convstft_db_bounds(waveform, real, imag, mel_w, hop: int, amin: float = 1e-10, input_delta: float = 0.0) -> np.ndarray:
    """Per-element tolerance ``[W, T, M]`` (dB) for two float32 conv-STFT log-mels (``porting.dsp.convstft.log_mel``,
    torchlibrosa's PANNs frontend, ``top_db`` None) of ``waveform`` ``[W, N]`` with the stored kernels.

    The STFT here is no FFT: each real / imaginary part is one dot product of ``n = n_fft`` float32 products, summed
    in whatever order the conv kernel (oneDNN, per ISA and batch) picks. For any order, with probability at least
    ``1 - 2 n exp(-lambda^2 (1 - u)^2 / 2)`` (Higham & Mary, *A new approach to probabilistic rounding error
    analysis*, SIAM J. Sci. Comput. 41 (2019), Thm 3.1) the computed value is within
    ``gamma(lambda) sum_j |w_j x_j|`` of the exact one, ``gamma(lambda) = exp(lambda sqrt(n) u + n u^2 / (1 - u)) - 1``;
    ``lambda = 8``: below 3e-11 per element at n = 1024 (the deterministic ``gamma_n = n u`` is 4x wider and never
    reached by blocked sums). Then, as ``mel_db_bounds``: power ``re^2 + im^2`` (``dP <= 2|re| e_re + e_re^2 + ...``
    plus 3 roundings), the mel GEMM over the band's ``K_m`` non-zero weights (``gamma_{K_m}``), the dB interval with
    the ``amin`` floor, two float32 ulps each side. ``input_delta``: the largest |difference| of the two waveforms
    themselves, carried as ``sum_j |w_j| delta`` per dot product. Exact values are float64 over the float32 kernels
    and waveform both machines hold."""
    import torch

    def arr(t):
        return np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float64)

    x, wr, wi, fb = arr(waveform), arr(real)[:, 0, :], arr(imag)[:, 0, :], arr(mel_w)
    x = x.reshape(-1, x.shape[-1])
    n_fft = wr.shape[-1]
    frames = _frames(x, n_fft, hop, True, "reflect")  # [W, T, n]
    re, im = frames @ wr.T, frames @ wi.T  # [W, T, K]
    gamma = math.expm1(PROB_LAMBDA * math.sqrt(n_fft) * U + n_fft * U * U / (1 - U))
    e_re = gamma * (np.abs(frames) @ np.abs(wr).T) + U * np.abs(re)
    e_im = gamma * (np.abs(frames) @ np.abs(wi).T) + U * np.abs(im)
    if input_delta:
        e_re += np.abs(wr).sum(-1) * input_delta
        e_im += np.abs(wi).sum(-1) * input_delta
    power = re * re + im * im
    d_power = 2 * np.abs(re) * e_re + e_re**2 + 2 * np.abs(im) * e_im + e_im**2 + 3 * U * power
    mel = power @ fb
    support = (fb != 0).sum(axis=0)
    gamma_k = support * U / (1 - support * U)
    b = d_power @ np.abs(fb) + gamma_k * (power @ np.abs(fb))
    lo = 10.0 * np.log10(np.maximum(mel - b, amin))
    hi = 10.0 * np.log10(np.maximum(mel + b, amin))
    return (hi - lo) + 4.0 * _ulp32(np.maximum(np.abs(lo), np.abs(hi)))


def librosa_mel_bounds(waveform, mel_basis, n_fft: int, hop: int, amin: float = 1e-10,
                       top_db: float | None = 80.0, eps: float = 1e-6) -> dict:
    """Per-element tolerances of one clip's ``F.mel`` / ``F.db`` / ``F.input`` (``[M, T]`` each) for two runs of
    ``porting.dsp.librosamel``'s steps (librosa's frontend) on ``waveform`` (the clip, ``[N]``).

    The same interval method as ``mel_db_bounds``, for librosa's arithmetic: the STFT is float64
    (``numpy.fft`` / ``torch.fft``: the FFT bound of step 1 with ``u = 2^-53``, negligible), rounded to complex64
    (``u`` per part), numpy's magnitude (ratio, fused multiply-add, root, product: 4 ``u``) squared (``u``): the
    power is within ``11 u`` relative of exact, plus the float64 FFT's share; the float32 mel GEMM adds
    ``gamma_{K_m}`` over the band's non-zero weights. Each mel result lies in ``[M - b, M + b]``; dB against the
    clip's maximum (whose own interval moves every element) and its ``top_db`` floor follow as intervals; the
    per-clip min-max maps the dB interval through the extreme numerators and denominators. Two float32 ulps of each
    value are added per side for the elementwise ``log10`` / divisions."""
    wave = np.asarray(waveform, dtype=np.float64).reshape(1, -1)
    fb = np.asarray(mel_basis, dtype=np.float64).T  # [K, M]
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    xw = _frames(wave, n_fft, hop, True, "constant") * win  # [1, T, n_fft]
    spec = np.fft.rfft(xw, axis=-1)
    power = spec.real**2 + spec.imag**2
    u64 = 2.0**-53
    levels = math.ceil(math.log2(n_fft)) + 1
    eta64 = u64 + 4 * u64 * (math.sqrt(2.0) + u64) + u64
    sigma2 = (levels * eta64) ** 2 * np.sum(xw * xw, axis=-1, keepdims=True)
    mel = power @ fb  # [1, T, M]
    linear = np.sqrt(2.0 * sigma2 * (power @ (fb * fb)))
    support = (fb != 0).sum(axis=0)
    b = K_SIGMA * (linear + sigma2 * fb.sum(axis=0)) + (support + 11) * U * mel
    tol_mel = 2.0 * b + 2.0 * _ulp32(mel)

    def db(m, ref):
        return 10.0 * np.log10(np.maximum(m, amin)) - 10.0 * np.log10(max(ref, amin))

    ref_lo, ref_hi = (mel - b).max(), (mel + b).max()
    lo, hi = db(mel - b, ref_hi), db(mel + b, max(ref_lo, amin))
    if top_db is not None:
        lo = np.maximum(lo, lo.max() - top_db)
        hi = np.maximum(hi, hi.max() - top_db)
    ulps = 2.0 * _ulp32(np.maximum(np.abs(lo), np.abs(hi))) + 2.0 * _ulp32(10.0 * np.log10(max(ref_hi, amin)))
    lo, hi = lo - ulps, hi + ulps
    tol_db = hi - lo
    mn_lo, mn_hi, mx_lo, mx_hi = lo.min(), hi.min(), lo.max(), hi.max()
    in_lo = np.maximum(lo - mn_hi, 0.0) / (mx_hi - mn_lo + eps)
    in_hi = np.maximum(hi - mn_lo, 0.0) / max(mx_lo - mn_hi + eps, eps)
    tol_in = (in_hi - in_lo) + 4.0 * _ulp32(in_hi)
    t = lambda a: np.ascontiguousarray(a[0].T)  # noqa: E731  [T, M] -> [M, T]
    return {"F.mel": t(tol_mel), "F.db": t(tol_db), "F.input": t(tol_in)}
