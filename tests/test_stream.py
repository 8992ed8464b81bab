"""Streamed decode for the HF family (porting/frontend/stream.py): bitwise ``librosa.load(path, sr=rate)``.

Oracles: librosa itself (skipped with a reason when absent), soundfile's whole-file read, and hand-built
WAV bytes (struct) for headers soundfile refuses to write. Window plans are checked by properties.
"""

from __future__ import annotations

import struct
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from porting.errors import AudioError
from porting.io.stream import (
    TruncatedAudioWarning,
    iter_resampled,
    iter_windows,
    n_windows,
    plan_windows,
    probe_audio,
    resampled_length,
)

BLOCKS = (1000, 4097, 1 << 16)


def _signal(n: int, sr: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] * np.linspace(0.5, 1.0, channels)[None]
    return np.clip(x + 0.1 * rng.standard_normal((n, channels)), -0.99, 0.99).astype(np.float32)


def _write(path, n, sr, channels, fmt="WAV", subtype="PCM_16", seed=0):
    sf.write(str(path), _signal(n, sr, channels, seed), sr, format=fmt, subtype=subtype)
    return path


def _streamed(path, rate, block):
    chunks = list(iter_resampled(path, rate, block_frames=block))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    return np.concatenate(chunks)


def _riff(rate: int, channels: int, data: bytes, data_size: int | None = None) -> bytes:
    """A PCM_16 WAV built by hand (soundfile will not write a 0-Hz or lying header)."""
    align = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, 16)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# ------------------------------------------------------------------------------- librosa equality

# (container, subtype, ext, file rate, channels, frames, target rate): every subtype, channel count and
# target rate of the measured grid at least once, short / odd / 1 s lengths, and the length quirks.
GRID = [
    ("WAV", "PCM_16", "wav", 48000, 2, 48000 // 3 + 1, 16000),
    ("WAV", "PCM_16", "wav", 44100, 1, 44100, 48000),  # ceil(44100 * (48000/44100)) = 48001: a padded 0.0
    ("WAV", "FLOAT", "wav", 22050, 3, 2205, 16000),  # 3 full-mantissa channels: the float32 sum order shows
    ("WAV", "PCM_24", "wav", 96000, 2, 96000 // 3 + 1, 8000),
    ("WAV", "PCM_16", "wav", 16000, 2, 16001, 16000),  # same rate: librosa does not resample
    ("WAV", "PCM_16", "wav", 48000, 1, 1, 16000),  # soxr returns nothing, librosa pads to one 0.0
    ("FLAC", "PCM_16", "flac", 8000, 2, 8000, 22050),
    ("FLAC", "PCM_24", "flac", 44100, 3, 44100 // 3 + 1, 96000),
    ("OGG", "VORBIS", "ogg", 44100, 2, 44100 // 3 + 1, 16000),
    ("OGG", "VORBIS", "ogg", 16000, 1, 16000, 44100),
]


@pytest.mark.parametrize("fmt,subtype,ext,sr,channels,frames,rate", GRID)
def test_stream_is_bitwise_librosa_load(tmp_path, fmt, subtype, ext, sr, channels, frames, rate):
    librosa = pytest.importorskip("librosa", reason="librosa is the oracle for iter_resampled (dev extra)")
    path = _write(tmp_path / f"x.{ext}", frames, sr, channels, fmt, subtype)
    ref, ref_sr = librosa.load(str(path), sr=rate)
    assert ref_sr == rate
    info = probe_audio(path)
    assert resampled_length(info.frames, info.sample_rate, rate) == ref.shape[0]
    for block in BLOCKS:
        y = _streamed(path, rate, block)
        assert y.dtype == ref.dtype and y.shape == ref.shape
        assert np.array_equal(y, ref), (block, float(np.abs(y - ref).max()))


def test_librosa_length_quirks_by_hand():
    """librosa's ``ceil(n * (float(target) / orig))`` in float64, not the exact integer ceiling."""
    assert resampled_length(44100, 44100, 48000) == 48001  # 44100 * 1.0884353741496597 = 48000.000000000004
    assert resampled_length(441, 22050, 96000) == 1921  # exact: 441 * 96000 / 22050 = 1920
    assert resampled_length(48000, 48000, 16000) == 16000
    assert resampled_length(1, 48000, 16000) == 1  # ceil(1/3)
    assert resampled_length(12345, 16000, 16000) == 12345


def test_block_size_does_not_change_the_stream(tmp_path):
    """Runs without librosa: any block size gives the same samples, and the length librosa's formula gives."""
    path = _write(tmp_path / "x.wav", 44100 + 7, 44100, 2)
    ys = [_streamed(path, 16000, b) for b in (7, 999, 1 << 20)]
    assert ys[0].shape == (resampled_length(44100 + 7, 44100, 16000),)
    assert all(np.array_equal(ys[0], y) for y in ys[1:])


def test_same_rate_is_the_soundfile_read_and_channel_mean(tmp_path):
    path = _write(tmp_path / "x.wav", 5000, 16000, 3, subtype="FLOAT")
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    expect = (data[:, 0] + data[:, 1] + data[:, 2]) / np.float32(3)  # librosa's float32 to_mono, 3 channels
    assert np.array_equal(_streamed(path, 16000, 333), expect)


# -------------------------------------------------------------------------------------- window plan


def _check_plan(n, w, h, plan):
    full = [x for x in plan if not x.partial]
    assert full and all(x.length == w and x.start + w <= n for x in full)
    assert all(x.start % h == 0 for x in plan)
    assert [x.start for x in plan] == [k * h for k in range(len(plan))]
    assert all(not x.partial for x in plan[:-1])  # partial only last
    assert full[-1].start + h + w > n  # no further full window fits
    end = max(x.start + x.length for x in plan)
    assert plan.unscored_tail == n - end
    # Coverage: windows overlap or touch (hop <= window), so [0, end) is all covered.
    covered = np.zeros(n, bool)
    for x in plan:
        covered[x.start : x.start + x.length] = True
    assert covered[:end].all() and not covered[end:].any()
    if plan[-1].partial:
        tail = plan[-1]
        assert tail.start + tail.length == n and w // 2 <= tail.length < w
        assert plan.unscored_tail == 0
    else:
        assert n - len(full) * h < w // 2 or end == n  # a rest too short to score (or none)
        assert plan.unscored_tail < w


@settings(max_examples=300, deadline=None)
@given(w=st.integers(1, 400), data=st.data())
def test_plan_properties(w, data):
    h = data.draw(st.integers(1, w))
    n = data.draw(st.integers(w, 5 * w + 50))
    _check_plan(n, w, h, plan_windows(n, w, h))


def test_plan_examples():
    plan = plan_windows(25, 10, 5)  # the last full window ends at n: no tail
    assert [tuple(x) for x in plan] == [(0, 10, False), (5, 10, False), (10, 10, False), (15, 10, False)]
    plan = plan_windows(27, 10, 5)  # 2 samples after the last full window: the tail window at 20 holds 7 >= 5
    assert plan[-1] == (20, 7, True) and len(plan) == 5 and plan.unscored_tail == 0
    plan = plan_windows(24, 10, 10)  # rest of 4 < 10 // 2: not scored
    assert [tuple(x) for x in plan] == [(0, 10, False), (10, 10, False)] and plan.unscored_tail == 4
    plan = plan_windows(25, 10, 10)  # rest of 5 = 10 // 2: scored
    assert plan[-1] == (20, 5, True) and plan.unscored_tail == 0
    assert [tuple(x) for x in plan_windows(10, 10, 3)] == [(0, 10, False)]


def test_plan_shorter_than_one_window():
    with pytest.raises(AudioError) as e:
        plan_windows(6720, 16000, 8000, sample_rate=16000, source="rec.wav")
    assert str(e.value).startswith("rec.wav: 0.42 s is shorter than one 1.00-s window;")
    with pytest.raises(AudioError, match=r"0\.9999 s is shorter than one 1\.0000-s window"):
        plan_windows(15999, 16000, 8000, sample_rate=16000)  # never "1.00 s is shorter than 1.00 s"
    with pytest.raises(ValueError):
        plan_windows(100, 10, 11)


# ----------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("frames,batch", [(48000 * 3 + 12345, 2), (48000 * 3 + 1000, 4), (48000, 3)])
def test_windows_are_slices_of_the_stream(tmp_path, frames, batch):
    path = _write(tmp_path / "x.wav", frames, 48000, 2)
    rate, w, h = 16000, 16000, 6000
    whole = _streamed(path, rate, 1 << 16)
    plan = plan_windows(whole.shape[0], w, h)
    batches = list(iter_windows(path, rate, w, h, batch, block_frames=4097))
    got = [(s, row) for b in batches for s, row in zip(b.starts, b.waveforms)]
    assert [s for s, _ in got] == [x.start for x in plan]
    for (s, row), x in zip(got, plan):
        assert row.dtype == np.float32 and np.array_equal(row, whole[s : s + x.length])
    assert all(b.waveforms.shape == (len(b.starts), w) and not b.partial for b in batches if not b.partial)
    assert all(len(b.starts) == batch for b in batches[:-2] if not b.partial)
    partial = [b for b in batches if b.partial]
    if plan[-1].partial:
        assert len(partial) == 1 and partial[0] is batches[-1] and partial[0].waveforms.shape == (1, plan[-1].length)
    else:
        assert not partial
    assert n_windows(path, rate, w, h) == len(plan)
    assert [b.first_index for b in batches] == list(np.cumsum([0] + [len(b.starts) for b in batches[:-1]]))


def test_long_recording_is_streamed_with_bounded_memory(tmp_path):
    """10 min of 48 kHz stereo (230 MB as float32 if decoded whole): peak numpy allocations stay small."""
    path = tmp_path / "long.wav"
    block = (np.random.default_rng(0).standard_normal((48000, 2)) * 3000).astype(np.int16)
    with sf.SoundFile(str(path), "w", 48000, 2, "PCM_16") as f:
        for _ in range(600):
            f.write(block)
    rate, w, h, batch = 16000, 16000, 8000, 8
    tracemalloc.start()
    try:
        probe = np.ones(1 << 18, np.float32)  # numpy reports its buffers to tracemalloc: 1 MiB must show
        assert tracemalloc.get_traced_memory()[1] >= probe.nbytes
        del probe
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        count = 0
        for b in iter_windows(path, rate, w, h, batch):
            count += len(b.starts)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count == n_windows(path, rate, w, h) == 1199
    whole = 600 * 48000 * 2 * 4
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB (whole file as float32: {whole / 2**20:.0f} MiB)"


# ------------------------------------------------------------------------------------------ errors


def _one_line_error(path, fn=probe_audio, *args) -> str:
    with pytest.raises(AudioError) as e:
        if fn in (iter_resampled,):
            list(fn(path, *args))
        else:
            fn(path, *args)
    msg = str(e.value)
    assert "\n" not in msg and msg.count(str(path)) == 1 and msg.startswith(f"{path}: "), msg
    return msg


def test_errors_are_one_line_with_the_path_once(tmp_path):
    assert "no such file" in _one_line_error(tmp_path / "missing.wav")
    (tmp_path / "dir.wav").mkdir()
    assert "directory" in _one_line_error(tmp_path / "dir.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    assert "empty (0 bytes)" in _one_line_error(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all " * 20)
    assert "not a readable audio file" in _one_line_error(tmp_path / "junk.wav")
    (tmp_path / "sr0.wav").write_bytes(_riff(0, 1, b"\x00\x00" * 100))
    assert "sample rate is 0 Hz" in _one_line_error(tmp_path / "sr0.wav")
    (tmp_path / "zero.wav").write_bytes(_riff(8000, 1, b""))
    assert "no audio frames" in _one_line_error(tmp_path / "zero.wav")
    _write(tmp_path / "x.aiff", 100, 8000, 1, fmt="AIFF")
    assert "AIFF container is not supported" in _one_line_error(tmp_path / "x.aiff")
    _write(tmp_path / "ok.wav", 100, 8000, 1)
    assert "target rate" in _one_line_error(tmp_path / "ok.wav", iter_resampled, 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = _signal(70000, 8000, 2)
    x[66000, 1] = bad  # past the first 64 Ki-frame block
    path = tmp_path / "f.wav"
    sf.write(str(path), x, 8000, subtype="FLOAT")
    assert "NaN/Inf sample at frame 66000 (8.250 s)" in _one_line_error(path)
    assert "frame 66000" in _one_line_error(path, iter_resampled, 16000)
    probe_audio(path, check_finite=False)  # the header alone is fine


# -------------------------------------------------------------------------------------- truncation


def test_truncated_wav_warns_and_reads_what_is_there(tmp_path):
    pcm = (_signal(16000, 8000, 1)[:, 0] * 32767).astype("<i2").tobytes()
    full = tmp_path / "full.wav"
    full.write_bytes(_riff(8000, 1, pcm))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(_riff(8000, 1, pcm[:12000], data_size=len(pcm)))  # header: 2 s, data: 0.75 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe_audio(full)  # an intact file must not warn
    with pytest.warns(TruncatedAudioWarning) as rec:
        info = probe_audio(cut)
    msg = str(rec[0].message)
    assert "\n" not in msg and msg.count(str(cut)) == 1 and "1.250 s missing" in msg, msg
    assert info.frames == 6000
    with pytest.warns(TruncatedAudioWarning):
        y = _streamed(cut, 8000, 1000)
    expect, _ = sf.read(str(full), dtype="float32", frames=6000)
    assert np.array_equal(y, expect)
