"""Stage A — windows (golden/README.md §1-§3): golden parity, the PCM_16 cache round trip against
soundfile itself, window plans, batching invariance and streaming."""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from porting.errors import AudioError
from porting.families.orcahello.frontend.config import WindowConfig
from porting.dsp import resample as R
from porting.io.decode import probe, read_segments
from porting.families.orcahello.frontend.windows import (
    downmix,
    iter_windows,
    load_windows,
    pcm16_round_trip,
    plan_windows,
    pydub_frame,
    resample,
)
from porting.golden import load_case

from conftest import GOLDEN, golden_cases

TOL = 1e-5


@functools.lru_cache(maxsize=None)
def _case(name):
    return load_case(GOLDEN / "cases" / f"{name}.json")


# ---------------------------------------------------------------- golden parity


@pytest.mark.parity
@pytest.mark.parametrize("name", golden_cases())
def test_stage_a_matches_golden(name, device):
    case = _case(name)
    info = probe(case.audio_path)
    plan = plan_windows(info.duration_s)
    assert len(plan) == case.meta["n_windows"]
    assert [(w["start_s"], w["end_s"]) for w in case.meta["windows"]] == plan
    idx = case.stored_windows
    sr = info.sample_rate
    segment = read_segments(info, [plan[i][0] * sr for i in idx], 2 * sr)
    mono = downmix(segment.to(device))
    waveform = resample(mono, sr)
    assert waveform.device.type == device.type
    for key, got in (("A.segment", segment), ("A.downmix", mono), ("A.waveform", waveform)):
        want = case.tensors[key]
        assert tuple(got.shape) == tuple(want.shape), key
        diff = (got.cpu() - want).abs().max().item()
        assert diff <= TOL, f"{name} {key}: max |diff| {diff:.3g} > {TOL}"
        # README: a faithful reconstruction is bitwise; hold the port to that too.
        assert torch.equal(got.cpu(), want), f"{name} {key}: within 1e-5 but not bitwise (max {diff:.3g})"


@pytest.mark.parity
@pytest.mark.parametrize("name", golden_cases())
def test_load_windows_matches_golden(name):
    case = _case(name)
    got = load_windows(probe(case.audio_path), case.stored_windows)
    assert torch.equal(got, case.tensors["A.waveform"])


@pytest.mark.parity
@pytest.mark.parametrize("name", golden_cases())
def test_streamed_windows_match_golden(name):
    """The whole recording streamed in batches of 5: the stored rows come out bitwise."""
    case = _case(name)
    rows = {}
    for idx, batch in iter_windows(probe(case.audio_path), 5):
        rows.update(zip(idx, batch))
    assert sorted(rows) == list(range(case.meta["n_windows"]))
    assert torch.equal(torch.stack([rows[i] for i in case.stored_windows]), case.tensors["A.waveform"])


@pytest.mark.parity
@pytest.mark.parametrize("name", golden_cases(with_error=True))
def test_too_short_recording_raises_instead_of_keyerror(name):
    case = _case(name)
    assert case.error["type"] == "KeyError"  # what legacy did: README §1
    info = probe(case.audio_path)
    assert info.duration_s < 2
    for call in (lambda: plan_windows(info.duration_s), lambda: next(iter_windows(info, 4)),
                 lambda: load_windows(info, [0])):
        with pytest.raises(AudioError, match="shorter than 2 s"):
            call()
    with pytest.raises(AudioError, match=str(info.path)):
        next(iter_windows(info, 4))


# ---------------------------------------------------------------- window plan


@pytest.mark.parametrize("duration,count", [(2.5, 1), (3.0, 2), (60.0, 59), (2.0, 1), (5.3, 4), (8.5, 7)])
def test_plan_counts(duration, count):
    plan = plan_windows(duration)
    assert len(plan) == count
    assert plan == [(i, i + 2) for i in range(count)]


@pytest.mark.parametrize("duration", [1.5, 1.999999, 0.0, float("nan"), -3.0])
def test_plan_refuses_short_or_invalid(duration):
    with pytest.raises(AudioError):
        plan_windows(duration)


@given(st.floats(min_value=2.0, max_value=10000.0, allow_nan=False))
def test_plan_is_legacy_formula(duration):
    assert plan_windows(duration) == [(i, i + 2) for i in range(int(math.floor(duration) - 1))]


def test_pydub_frame_is_float_truncation():
    assert pydub_frame(3, 44100) == 132300
    assert pydub_frame(3, 37800) == 113399  # int(3000 * 37.8) with 37.8 inexact: one frame early


def test_rate_with_inexact_ms_slicing_is_refused(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(37800 * 5, np.int16), 37800, subtype="PCM_16")
    info = probe(path)
    with pytest.raises(AudioError, match="37800 Hz"):
        next(iter_windows(info, 8))
    with pytest.raises(AudioError, match="37800 Hz"):
        load_windows(info, [3])
    assert load_windows(info, [0]).shape == (1, 40000)  # window [0, 2] s slices exactly


# ---------------------------------------------------------------- PCM_16 cache round trip vs soundfile


def _soundfile_pcm16(x: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, x, 20000, format="WAV", subtype="PCM_16")
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def _near(k: int, ulps: int, half: bool) -> np.float32:
    """float32 ``ulps`` steps from k/32768 (or from the half-code (2k-1)/65536)."""
    x = np.float32((2 * k - 1) / 65536 if half else k / 32768)
    step = np.float32(np.inf) if ulps > 0 else np.float32(-np.inf)
    for _ in range(abs(ulps)):
        x = np.nextafter(x, step)
    return x


_boundary = st.builds(_near, st.integers(-32770, 32770), st.integers(-6, 6), st.booleans())
_small_boundary = st.builds(_near, st.integers(-80, 80), st.integers(-12, 12), st.booleans())
_float32 = st.floats(min_value=-3.0, max_value=3.0, width=32, allow_nan=False)
_big = st.floats(min_value=1.0, max_value=2.0**100, width=32).flatmap(lambda v: st.sampled_from([v, -v]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_boundary, _small_boundary, _float32, _big), min_size=1, max_size=64))
def test_pcm16_round_trip_equals_soundfile(values):
    x = np.array(values, dtype=np.float32)
    got = pcm16_round_trip(torch.from_numpy(x))
    assert got.dtype == torch.float32
    assert np.array_equal(got.numpy(), _soundfile_pcm16(x))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-2.0, max_value=2.0, allow_nan=False), min_size=1, max_size=64))
def test_pcm16_round_trip_equals_soundfile_float64(values):
    x = np.array(values, dtype=np.float64)
    t = torch.from_numpy(x.copy())
    assert np.array_equal(pcm16_round_trip(t).numpy(), _soundfile_pcm16(x))
    assert np.array_equal(t.numpy(), x)  # the input is not modified in place


def test_pcm16_round_trip_boundaries_exhaustive_small_codes():
    """Every float32 within 12 ulps of each small code and half-code; plain floor / rint would fail here."""
    x = np.array([_near(k, j, h) for k in range(-100, 101) for j in range(-12, 13) for h in (False, True)]
                 + [1.0, -1.0, 1.5, -1.5, 0.99999994, -0.99999994], dtype=np.float32)
    want = _soundfile_pcm16(x)
    assert np.array_equal(pcm16_round_trip(torch.from_numpy(x)).numpy(), want)
    floor = (np.clip(np.floor(x.astype(np.float64) * 32768), -32768, 32767) / 32768).astype(np.float32)
    assert not np.array_equal(floor, want)  # the set really probes the 2^-17-LSB boundary
    assert want[-6:].tolist() == [32767 / 32768, -1.0, 32767 / 32768, -1.0, 32767 / 32768, -1.0]


# ---------------------------------------------------------------- downmix and resample


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_legacy_mean_then_pcm16(tmp_path, channels):
    """Per window, legacy did torch.mean([C, N] view of soundfile's [N, C], 0) then a PCM_16 write/read."""
    rng = np.random.default_rng(channels)
    sr = 8000
    path = tmp_path / "m.wav"
    sf.write(str(path), rng.uniform(-1, 1, (sr * 6, channels)).astype(np.float32), sr, subtype="FLOAT")
    info = probe(path)
    starts = [0, sr, 3 * sr]
    got = downmix(read_segments(info, starts, 2 * sr))
    for b, s in enumerate(starts):
        frames, _ = sf.read(str(path), dtype="float32", start=s, frames=2 * sr, always_2d=True)
        frames = np.clip(np.rint(frames.astype(np.float64) * 2**31), -(2**31), 2**31 - 1)  # FLOAT -> s32
        frames = (frames.astype(np.int32).astype(np.float32) * np.float32(2**-31))
        legacy = torch.mean(torch.from_numpy(frames).T, 0, True)
        assert torch.equal(got[b], torch.from_numpy(_soundfile_pcm16(legacy[0].numpy())))


def test_downmix_off_needs_mono():
    with pytest.raises(AudioError, match="downmix"):
        downmix(torch.zeros(1, 2, 10), WindowConfig(downmix=False))
    x = torch.rand(2, 1, 10) - 0.5
    assert torch.equal(downmix(x, WindowConfig(downmix=False, cache_round_trips=False)), x[:, 0])


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000, 96000])
def test_batched_resample_equals_per_window_scipy(sr):
    rng = np.random.default_rng(sr)
    x = (rng.standard_normal((3, 2 * sr)) * 0.4).astype(np.float32)
    x = pcm16_round_trip(torch.from_numpy(x))
    got = resample(x, sr)
    assert got.shape == (3, 40000)
    g = math.gcd(sr, 20000)
    for b in range(3):
        one = resample_poly(x[b : b + 1].numpy(), 20000 // g, sr // g, axis=-1)  # legacy: [1, N] per window
        assert one.dtype == np.float32
        assert np.array_equal(got[b].numpy(), _soundfile_pcm16(one[0]))


def test_resample_skipped_at_20k():
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1.2, 1.2, (2, 40000)).astype(np.float32))
    assert torch.equal(resample(x, 20000), pcm16_round_trip(x))
    assert torch.equal(resample(x, 20000, WindowConfig(cache_round_trips=False)), x)


# ---------------------------------------------------------------- resample_poly without scipy.signal
# porting.dsp.resample recomputes scipy.signal.resample_poly (imported here as the oracle) in numpy;
# the goldens need its bits, so every comparison is bitwise.


def _rates(sr: int) -> tuple[int, int]:
    g = math.gcd(sr, 20000)
    return 20000 // g, sr // g


def test_i0_is_scipy_special_bitwise():
    from scipy.special import i0 as scipy_i0

    x = np.concatenate([np.linspace(0.0, 8.0, 20001), np.random.default_rng(3).uniform(0.0, 8.0, 20000),
                        [np.nextafter(8.0, 0.0), 5.0, 0.0]])
    assert np.array_equal(R.i0(x), scipy_i0(x))
    with pytest.raises(ValueError, match="0, 8"):
        R.i0(np.array([8.5]))


@pytest.mark.parametrize("max_rate", [2, 3, 4, 5, 8, 12, 24, 147, 441, 2469, 20000])
def test_lowpass_is_firwin_kaiser_bitwise(max_rate):
    from scipy.signal import firwin

    want = firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    assert np.array_equal(R.lowpass(max_rate), want)


def test_output_len_is_upfirdn():
    from scipy.signal import upfirdn

    for len_h, n_in, up, down in [(1, 1, 1, 1), (253, 96000, 5, 12), (8821, 88200, 200, 441), (7, 3, 4, 9), (10, 50, 3, 2)]:
        assert R.output_len(len_h, n_in, up, down) == upfirdn(np.ones(len_h), np.ones(n_in), up, down).shape[-1]


# every rate the goldens and README name, odd ones (large up: the gathered path), and small lengths
_RATE_CASES = [(sr, 2 * sr) for sr in (8000, 11025, 16000, 22050, 32000, 37800, 44100, 48000, 96000, 192000)] + [
    (7350, 999), (12345, 4000), (44101, 3000), (48000, 1), (48000, 11), (16000, 240), (8000, 7)]


@pytest.mark.parametrize("sr,n", _RATE_CASES)
def test_resample_poly_is_scipy_bitwise(sr, n):
    up, down = _rates(sr)
    rng = np.random.default_rng(sr + n)
    x = pcm16_round_trip(torch.from_numpy((rng.standard_normal((2, n)) * 0.3).astype(np.float32))).numpy()
    got = R.resample_poly(x, up, down)
    want = resample_poly(x, up, down, axis=-1)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)


@pytest.mark.parametrize("sr", [11025, 48000, 44101])
def test_resample_poly_both_loops_are_scipy_bitwise(sr, monkeypatch):
    """The per-class loop and the gathered loop (the one taken above _MAX_CLASSES classes) agree with scipy."""
    up, down = _rates(sr)
    x = np.random.default_rng(sr).uniform(-1, 1, (3, 5000)).astype(np.float32)
    want = resample_poly(x, up, down, axis=-1)
    for limit in (0, 10**9):
        monkeypatch.setattr(R, "_MAX_CLASSES", limit)
        assert np.array_equal(R.resample_poly(x, up, down), want), limit


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_resample_poly_any_ratio_is_scipy_bitwise(up, down, n, seed):
    x = np.random.default_rng(seed).standard_normal((2, n)).astype(np.float32)
    assert np.array_equal(R.resample_poly(x, up, down), resample_poly(x, up, down, axis=-1))


def test_resample_poly_shapes_and_non_finite_as_scipy():
    x = np.random.default_rng(5).standard_normal((2, 3, 900)).astype(np.float32)
    x[0, 1, 10], x[1, 2, 500], x[0, 0, 899] = np.nan, np.inf, -np.inf
    want = resample_poly(x, 5, 12, axis=-1)
    assert np.array_equal(R.resample_poly(x, 5, 12), want, equal_nan=True)
    one = x[1, 0]
    assert np.array_equal(R.resample_poly(one, 10, 24), resample_poly(one, 10, 24))  # 1-D; up/down not reduced
    assert np.array_equal(R.resample_poly(one, 3, 3), one)
    with pytest.raises(TypeError, match="float32"):
        R.resample_poly(one.astype(np.float64), 5, 12)


_RESAMPLED_GOLDEN_WAVS = [p.name for p in sorted((GOLDEN / "audio").glob("*.wav"))
                          if sf.info(str(p)).duration >= 2 and sf.info(str(p)).samplerate != 20000]


def test_golden_recordings_need_resampling():
    assert len(_RESAMPLED_GOLDEN_WAVS) >= 5  # every golden recording with a window (all but the too-short one)


@pytest.mark.parametrize("name", _RESAMPLED_GOLDEN_WAVS)
def test_resample_every_golden_window_is_scipy_bitwise(name):
    """Every window of every golden recording (not only the stored ones), per window as legacy called it."""
    info = probe(GOLDEN / "audio" / name)
    plan = plan_windows(info.duration_s)
    sr = info.sample_rate
    mono = downmix(read_segments(info, [s * sr for s, _ in plan], 2 * sr))
    got = resample(mono, sr, WindowConfig(cache_round_trips=False)).numpy()
    up, down = _rates(sr)
    for b in range(len(plan)):
        assert np.array_equal(got[b], resample_poly(mono[b : b + 1].numpy(), up, down, axis=-1)[0]), (name, b)


# ---------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def stereo24(tmp_path_factory):
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("a") / "stereo24.wav"
    sf.write(str(path), rng.uniform(-0.9, 0.9, (int(22050 * 7.4), 2)), 22050, subtype="PCM_24")
    return probe(path)


@pytest.mark.parametrize("batch_size", [1, 4, 6, 10])
def test_iter_windows_equals_load_windows(stereo24, batch_size):
    everything = load_windows(stereo24, list(range(6)))
    assert everything.shape == (6, 40000)
    seen = []
    for idx, batch in iter_windows(stereo24, batch_size):
        assert len(idx) <= batch_size and batch.shape == (len(idx), 40000)
        assert torch.equal(batch, everything[idx])
        seen += idx
    assert seen == list(range(6))


def test_iter_windows_golden_stream():
    case = _case("rn18__pcm16_16k_short")
    info = probe(case.audio_path)
    (idx, batch), = list(iter_windows(info, 8))
    assert idx == [0, 1] and torch.equal(batch, case.tensors["A.waveform"])


def test_iter_windows_reads_bounded_spans(tmp_path, monkeypatch):
    """A long recording is never read whole: each read covers at most one batch of windows."""
    sr, seconds, batch = 8000, 120, 4
    path = tmp_path / "long.wav"
    sf.write(str(path), np.random.default_rng(5).integers(-3000, 3000, sr * seconds).astype(np.int16), sr)
    info = probe(path)
    reads = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    n = sum(len(idx) for idx, _ in iter_windows(info, batch))
    assert n == seconds - 1
    assert reads and all(0 < r <= (batch + 1) * sr for r in reads), max(reads)
    assert sum(reads) <= (n / batch + 1) * (batch + 1) * sr
