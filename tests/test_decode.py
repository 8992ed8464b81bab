"""Decode (golden/README.md §2): pydub's re-encoding per sample format, and refusing bad input.

Oracles are independent of porting: pydub's byte handling is re-done here with the stdlib ``wave``
module (slice the source's raw frames, sign-byte widening for 24 bit, ``wave`` export, soundfile read),
and the FLOAT rule uses hand-computed values plus soundfile's own PCM_32 read of the integer codes.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from porting.errors import AudioError
from porting.io.decode import AudioInfo, probe, read_segments

from conftest import GOLDEN


def _write(path: Path, data, sr: int, subtype: str, fmt: str = "WAV") -> Path:
    sf.write(str(path), data, sr, format=fmt, subtype=subtype)
    return path


def _pydub_like_export(src: Path, start: int, n: int) -> np.ndarray:
    """[C, n] float32: what soundfile reads from a pydub-style export of frames [start, start+n) of ``src``."""
    with wave.open(str(src), "rb") as w:
        width, channels, sr = w.getsampwidth(), w.getnchannels(), w.getframerate()
        w.setpos(start)
        raw = w.readframes(n)
    if width == 3:  # pydub: one sign byte (0x00 / 0xFF) in front of each little-endian 24-bit sample
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        pad = np.where(b[:, 2] > 0x7F, 0xFF, 0x00).astype(np.uint8)[:, None]
        raw, width = np.concatenate([pad, b], axis=1).tobytes(), 4
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(raw)
    buf.seek(0)
    data, _ = sf.read(buf, dtype="float32", always_2d=True)
    return data.T


_INT_RANGE = {"PCM_U8": (-128, 127, "int16", 8), "PCM_16": (-32768, 32767, "int16", 0),
              "PCM_24": (-(2**23), 2**23 - 1, "int32", 8), "PCM_32": (-(2**31), 2**31 - 1, "int32", 0)}


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32"])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_integer_pcm_segments_match_pydub_export(tmp_path, subtype, channels):
    lo, hi, dtype, shift = _INT_RANGE[subtype]
    rng = np.random.default_rng(7)
    sr, frames = 8000, 8000 * 5 + 123
    codes = rng.integers(lo, hi + 1, size=(frames, channels), dtype=np.int64)
    codes[:8, 0] = [lo, hi, -1, 0, 1, lo + 1, hi - 1, -2]  # extremes and sign-byte edge cases
    if dtype == "int16":
        data = (codes << shift).astype(np.int16)  # PCM_U8 from the top byte of int16
    else:
        data = (codes << shift).astype(np.int32)  # PCM_24 from the top 3 bytes of int32
    src = _write(tmp_path / "x.wav", data, sr, subtype)
    info = probe(src)
    assert (info.subtype, info.channels, info.frames, info.sample_rate) == (subtype, channels, frames, sr)
    starts = [0, sr, 2 * sr, 3 * sr]
    got = read_segments(info, starts, 2 * sr)
    assert got.dtype == torch.float32 and tuple(got.shape) == (4, channels, 2 * sr)
    for b, s in enumerate(starts):
        want = torch.from_numpy(_pydub_like_export(src, s, 2 * sr))
        assert torch.equal(got[b], want), f"{subtype} window at frame {s}"


def test_pcm24_sign_byte_rule_by_hand(tmp_path):
    """v24 -> code = v24*256 + (255 if v24 < 0) -> float32(code)/2^31 (README §2), hand-computed values."""
    v24 = np.array([-1, 1, -2, 0, -(2**23), 2**23 - 1, -(2**22)], dtype=np.int64)
    src = _write(tmp_path / "p24.wav", (np.tile(v24, 3000) << 8).astype(np.int32), 1000, "PCM_24")
    got = read_segments(probe(src), [0], 2000)[0, 0, : len(v24)].numpy()
    want = np.array([
        -1 / 2**31,  # -256 + 255
        256 / 2**31,
        -257 / 2**31,  # -512 + 255
        0.0,
        -(1 - 2**-23),  # -2^31 + 255 rounds to float32 -2147483392, not -1.0
        (2**31 - 256) / 2**31,
        (-(2**30) + 255) / 2**31,  # float32 of -1073741569 is -1073741568
    ], dtype=np.float64).astype(np.float32)
    assert np.array_equal(got, want), (got, want)
    assert got[4] != -1.0  # the plain v24/2^23 reading would give exactly -1.0


def test_float_clips_and_rounds_like_ffmpeg_s32(tmp_path):
    """FLOAT -> ffmpeg pcm_s32le: clip(rint_half_even(x * 2^31)), read back as float32(code)/2^31."""
    x = np.array([1.2, -1.5, 1.0, -1.0, 0.5, 2.0**-32, 3 * 2.0**-32, -(2.0**-32), -3 * 2.0**-32,
                  5 * 2.0**-32, 1 - 2.0**-24, 1e-3, -0.3333333], dtype=np.float32)
    want = np.array([1.0, -1.0, 1.0, -1.0, 0.5, 0.0, 2.0**-30, 0.0, -(2.0**-30),
                     2.0**-30, 1 - 2.0**-24], dtype=np.float32)
    src = _write(tmp_path / "f.wav", np.tile(x, 200)[:, None] * np.ones((1, 2), np.float32), 1000, "FLOAT")
    got = read_segments(probe(src), [0], 2000)
    assert torch.equal(got[:, 0], got[:, 1])
    got = got[0, 0, : len(x)].numpy()
    assert np.array_equal(got[: len(want)], want), (got, want)
    # general values: integer code by Python's half-even round, read back by soundfile from a real PCM_32 file
    codes = np.array([min(max(round(float(v) * 2**31), -(2**31)), 2**31 - 1) for v in x], dtype=np.int32)
    buf = io.BytesIO()
    sf.write(buf, codes, 1000, format="WAV", subtype="PCM_32")
    buf.seek(0)
    assert np.array_equal(got, sf.read(buf, dtype="float32")[0])


def test_overlapping_and_scattered_windows_agree(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    src = _write(tmp_path / "s.wav", rng.uniform(-1, 1, (8000 * 12, 2)), 8000, "PCM_24")
    info = probe(src)
    reads = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, n=-1, *a, **k: reads.append(n) or real_read(self, n, *a, **k))
    together = read_segments(info, [0, 8000, 16000], 16000)  # one span read
    assert reads == [32000]
    scattered = read_segments(info, [0, 80000, 16000], 16000)  # separate seeks, not the 96000-frame span
    assert reads[1:] == [16000, 16000, 16000]
    assert torch.equal(together[0], scattered[0]) and torch.equal(together[2], scattered[2])
    assert torch.equal(scattered[1], read_segments(info, [80000], 16000)[0])
    assert read_segments(info, [], 16000).shape == (0, 2, 16000)


def test_probe_golden_stereo():
    info = probe(GOLDEN / "audio" / "stereo_pcm24_44k1.wav")
    assert info == AudioInfo(GOLDEN / "audio" / "stereo_pcm24_44k1.wav", 44100, 2, 374850, "PCM_24", "WAV")
    assert info.duration_s == 8.5


def test_wavex_pcm_is_accepted(tmp_path):
    src = _write(tmp_path / "x.wav", np.zeros((3000, 2), np.int16), 1000, "PCM_16", fmt="WAVEX")
    assert probe(src).format == "WAVEX"


def _one_line_audio_error(fn, *needles):
    with pytest.raises(AudioError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_bad_files_raise_audio_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _one_line_audio_error(lambda: probe(empty), str(empty), "empty")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    _one_line_audio_error(lambda: probe(text), str(text), "not a readable audio file")
    good = _write(tmp_path / "good.wav", np.zeros(4000, np.int16), 1000, "PCM_16")
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(good.read_bytes()[:20])
    _one_line_audio_error(lambda: probe(trunc), str(trunc))
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(good.read_bytes()[:44])
    _one_line_audio_error(lambda: probe(header_only), str(header_only))
    _one_line_audio_error(lambda: probe(tmp_path / "missing.wav"), "no such file")


def test_each_refusal_names_the_path_once(tmp_path):
    """soundfile's own text repeats the path ("Error opening '<path>': ..."); the message keeps it once."""
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    missing = tmp_path / "missing.wav"
    for path in (text, missing):
        msg = _one_line_audio_error(lambda: probe(path), str(path))
        assert msg.count(path.name) == 1, msg


def test_a_directory_or_a_fifo_is_not_a_recording(tmp_path):
    d = tmp_path / "rec.wav"
    d.mkdir()
    msg = _one_line_audio_error(lambda: probe(d), str(d), "is a directory")
    assert "no such file" not in msg
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    _one_line_audio_error(lambda: probe(fifo), str(fifo), "not a regular file")


def test_truncated_wav_warns_and_scores_what_is_there(tmp_path):
    from porting.io.stream import TruncatedAudioWarning

    x = (np.arange(5000) % 200 - 100).astype(np.int16)
    src = _write(tmp_path / "cut.wav", x, 1000, "PCM_16")
    os.truncate(src, 44 + 3200 * 2)  # the header still claims 5000 frames (5 s)
    with pytest.warns(TruncatedAudioWarning) as rec:
        info = probe(src)
    (w,) = rec
    msg = str(w.message)
    assert msg.count(str(src)) == 1 and "5.000 s" in msg and "3.200 s" in msg and "1.800 s missing" in msg
    assert info.frames == 3200
    seg = read_segments(info, [1000], 2000)
    assert torch.equal(seg[0, 0], torch.from_numpy(x[1000:3000].astype(np.float32) / 32768))


@pytest.mark.parametrize(
    "fmt,subtype", [("FLAC", "PCM_16"), ("AIFF", "PCM_16"), ("WAV", "DOUBLE"), ("WAV", "ULAW"), ("WAVEX", "FLOAT")]
)
def test_unsupported_formats_are_refused(tmp_path, fmt, subtype):
    src = _write(tmp_path / "u.wav", np.zeros((3000, 1)), 1000, subtype, fmt=fmt)
    _one_line_audio_error(lambda: probe(src), str(src), fmt)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_raise(tmp_path, bad):
    x = np.zeros((5000, 2), np.float32)
    x[3210, 1] = bad
    info = probe(_write(tmp_path / "nan.wav", x, 1000, "FLOAT"))
    _one_line_audio_error(lambda: read_segments(info, [2000], 2000), "NaN/Inf", "3210")
    assert torch.equal(read_segments(info, [0], 2000), torch.zeros(1, 2, 2000))  # clean frames still read


def test_out_of_range_window_raises(tmp_path):
    info = probe(_write(tmp_path / "s.wav", np.zeros(3000, np.int16), 1000, "PCM_16"))
    _one_line_audio_error(lambda: read_segments(info, [1001], 2000), "outside")


def test_file_shrunk_after_probe_raises(tmp_path):
    src = _write(tmp_path / "s.wav", np.zeros(5000, np.int16), 1000, "PCM_16")
    info = probe(src)
    _write(src, np.zeros(2500, np.int16), 1000, "PCM_16")
    _one_line_audio_error(lambda: read_segments(info, [2000], 2000), "truncated")
