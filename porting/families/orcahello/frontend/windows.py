"""Stage A: 2-s windows at 20 kHz, sample for sample as the legacy flow produced them (golden/README.md §1-§3).

Per window: pydub's millisecond slice of the source (``decode.read_segments``), channel mean, the
fastai_audio "dm" cache write/read as PCM_16, ``scipy.signal.resample_poly`` to 20 kHz (computed bitwise
without scipy by ``resample.resample_poly``), and the "rs" cache write/read as PCM_16. Output ``[W, 40000]``
float32 = golden ``A.waveform``.

Recordings are streamed: ``iter_windows`` reads only the frames of one batch of windows at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ....errors import AudioError
from .config import WindowConfig
from ....io.decode import AudioInfo, read_segments
from ....dsp.resample import resample_poly


def plan_windows(duration_s: float, cfg: WindowConfig = WindowConfig()) -> list[tuple[int, int]]:
    """(start_s, end_s) of every scored window: ``[i, i+2]`` for ``i in range(int(floor(duration) - 1))``.

    Only whole seconds count: the tail after the last whole second is never scored (README §1).
    Legacy crashed with ``KeyError: 0`` below 2 s (no window); we raise ``AudioError`` instead.
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise AudioError(f"recording duration {duration_s!r} s is invalid; check the file header")
    whole = math.floor(duration_s)
    if whole < cfg.window_s:
        raise AudioError(
            f"recording is {duration_s:.3f} s long, shorter than {cfg.window_s} s, so no {cfg.window_s}-s window "
            f"fits; use a recording of at least {cfg.window_s} s"
        )
    count = (whole - cfg.window_s) // cfg.hop_s + 1  # = int(floor(duration) - 1) for the legacy 2 s / 1 s
    return [(i * cfg.hop_s, i * cfg.hop_s + cfg.window_s) for i in range(count)]


def pydub_frame(seconds: int, sample_rate: int) -> int:
    """Frame index pydub slices at for ``audio[seconds * 1000]``: ``int(ms * (sr / 1000.0))`` (README §2).

    Float arithmetic, truncated: exact ``seconds * sr`` at common rates, one frame early at some odd ones
    (e.g. 37800 Hz, 3 s).
    """
    return int(seconds * 1000 * (sample_rate / 1000.0))


def _check_slicing(info: AudioInfo, windows: list[tuple[int, int]], window_frames: int) -> list[int]:
    """Start frames of ``windows``; refuse rates where pydub's ms slicing is not ``[s*sr, e*sr)``.

    There legacy windows differ in length by a frame, which changes the resampled length; not ported.
    """
    sr = info.sample_rate
    starts = []
    for s, e in windows:
        a, b = pydub_frame(s, sr), pydub_frame(e, sr)
        if a != s * sr or b - a != window_frames:
            raise AudioError(
                f"{info.path}: at {sr} Hz legacy ms slicing cuts window [{s}, {e}] s at frames [{a}, {b}) "
                f"instead of [{s * sr}, {e * sr}); this rate is not supported, resample the recording to 48000 Hz"
            )
        starts.append(a)
    return starts


def _pcm16_in_place(v: torch.Tensor) -> torch.Tensor:
    """The round trip of ``pcm16_round_trip``, in place on ``v`` (float32 or float64; see there)."""
    return v.mul_(2.0**31).round_().div_(65536.0).floor_().clamp_(-32768.0, 32767.0).div_(32768.0)


def pcm16_round_trip(x: torch.Tensor) -> torch.Tensor:
    """libsndfile's float -> PCM_16 write and k/32768 read, exactly (README §3 "The PCM_16 cache round trip").

    ``int16 = clip(floor(rint_half_even(x * 2^31) / 2^16))``: a truncation toward -inf at 16 bits, not a
    rounding, and not plain ``floor(x * 32768)`` (they differ within 2^-17 below a code). |x| >= 1 clips.
    Computed in float64, where ``x * 2^31`` is exact; returns float32 on ``x``'s device.

    float32 input is computed in float32, with the same bits: every step is exact there too (scaling by a
    power of two, rint and floor of a float32 are float32; ``x * 2^31`` can only overflow to +-inf beyond
    2^97, which the clamp maps to the same code as the finite float64 value), and it halves the memory traffic.
    """
    if x.dtype == torch.float32:
        return _pcm16_in_place(x.clone())  # never alias (and mutate) the input
    v = x.to(torch.float64, copy=True)  # never alias (and mutate) a float64 input
    return _pcm16_in_place(v).to(torch.float32)


def downmix(segments: torch.Tensor, cfg: WindowConfig = WindowConfig()) -> torch.Tensor:
    """[B, C, N] -> [B, N]: float32 channel mean, then the "dm" PCM_16 cache round trip (README §3 "Downmix").

    Mono goes through the round trip too (a no-op on PCM_16 sources, a truncation for PCM_24/FLOAT).
    The mean of one channel is computed as ``x + 0.0`` (torch's mean of one value is ``(0 + x) / 1``: the same
    bits, -0.0 -> +0.0 included), ~10x faster than the reduction over a size-1 axis.
    """
    if segments.dim() != 3:
        raise AudioError(f"downmix expects [B, C, N] segments, got shape {tuple(segments.shape)}; this is a bug")
    if cfg.downmix:
        if segments.shape[1] == 1:
            mono = torch.add(segments[:, 0].to(torch.float32), 0.0)  # a fresh tensor: the round trip may mutate it
        else:
            mono = torch.mean(segments.to(torch.float32), dim=1)
        fresh = True
    elif segments.shape[1] == 1:
        mono = segments[:, 0].to(torch.float32)
        fresh = False  # may be a view of the caller's tensor
    else:
        raise AudioError(
            f"{segments.shape[1]}-channel segments but WindowConfig.downmix is False; enable downmix (legacy default)"
        )
    if not cfg.cache_round_trips:
        return mono
    return _pcm16_in_place(mono) if fresh and mono.dtype == torch.float32 else pcm16_round_trip(mono)


def resample(x: torch.Tensor, sample_rate: int, cfg: WindowConfig = WindowConfig()) -> torch.Tensor:
    """[B, N] at ``sample_rate`` -> [B, ceil(N*up/down)] at ``cfg.sample_rate``, then the "rs" PCM_16 round trip.

    scipy's ``resample_poly(x, up, down, axis=-1)`` with ``g = gcd`` and its defaults (Kaiser beta 5,
    zero padding) on float32, as fastai_audio's ``tfm_resample`` did (README §3 "Resample"), computed by
    ``porting.dsp.resample`` (numpy only: ``import scipy.signal`` alone costs more than a minute of
    detection). One call for the whole batch: bitwise equal to scipy's per window (tests/test_frontend_a.py).
    Skipped at 20 kHz.
    """
    sample_rate = int(sample_rate)
    if sample_rate != cfg.sample_rate:
        g = math.gcd(sample_rate, cfg.sample_rate)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        y = torch.from_numpy(resample_poly(arr, cfg.sample_rate // g, sample_rate // g)).to(x.device)
        if cfg.cache_round_trips:
            return _pcm16_in_place(y)  # y is resample_poly's fresh float32 output
        return y
    y = x.to(torch.float32)
    return pcm16_round_trip(y) if cfg.cache_round_trips else y


def _windows_for(info: AudioInfo, cfg: WindowConfig) -> list[tuple[int, int]]:
    try:
        return plan_windows(info.duration_s, cfg)
    except AudioError as exc:
        raise AudioError(f"{info.path}: {exc}") from None


def _load(info: AudioInfo, plan: list[tuple[int, int]], indices: list[int], cfg: WindowConfig) -> torch.Tensor:
    n = cfg.window_s * info.sample_rate
    for i in indices:
        if not 0 <= i < len(plan):
            raise AudioError(f"{info.path}: window {i} does not exist (recording has {len(plan)} windows)")
    starts = _check_slicing(info, [plan[i] for i in indices], n)
    segments = read_segments(info, starts, n)
    return resample(downmix(segments, cfg), info.sample_rate, cfg)


def load_windows(info: AudioInfo, indices: list[int], cfg: WindowConfig = WindowConfig()) -> torch.Tensor:
    """[B, cfg.window_samples] float32 for the given window indices: the golden ``A.waveform`` rows."""
    return _load(info, _windows_for(info, cfg), [int(i) for i in indices], cfg)


def iter_windows(
    info: AudioInfo, batch_size: int, cfg: WindowConfig = WindowConfig()
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """All windows in order, ``batch_size`` at a time, reading only each batch's frames (bounded memory).

    Window plan and slicing are checked for the whole recording before the first batch is read.
    """
    if batch_size < 1:
        raise AudioError(f"{info.path}: batch_size must be >= 1, got {batch_size}")
    plan = _windows_for(info, cfg)
    _check_slicing(info, plan, cfg.window_s * info.sample_rate)
    for lo in range(0, len(plan), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(plan))))
        yield idx, _load(info, plan, idx, cfg)
