"""Decode: read a recording's 2-s segments exactly as the legacy flow saw them (golden/README.md §2).

Legacy cut every window with pydub, exported it as WAV and read it back with soundfile. The values
soundfile got depend on the source sample format, so ``read_segments`` rebuilds them from the source
frames without pydub, ffmpeg or temp files:

* PCM_16, PCM_U8, PCM_32: pydub copies the bytes and exports the same sample width, so the segment
  is the source frames as soundfile reads them (README §2 "PCM_16 source"; pydub 0.24.1 only biases
  8-bit data to signed and back, and copies 32-bit data unchanged).
* PCM_24: pydub widens to 32 bit by writing the sign byte (0x00/0xFF) as the *low* byte, so the export
  is PCM_32 with ``code = v24*256 + (255 if v24 < 0 else 0)``, read back as ``float32(code) / 2^31``
  (README §2 "PCM_24 source").
* FLOAT: pydub's RIFF parser refuses format 3 and falls back to ffmpeg ``pcm_s32le``:
  ``code = clip(rint(x * 2^31), -2^31, 2^31 - 1)``, so samples beyond +-1.0 are hard-clipped, read back
  as ``float32(code) / 2^31`` (README §2 "FLOAT source").

Refused with ``AudioError`` (decided here, not covered by the goldens):

* DOUBLE: pydub's ffmpeg fallback asks for 64-bit integer samples and its ``wave`` export only accepts
  1-4 byte samples, so the legacy flow crashes; we refuse instead of guessing.
* WAVE_FORMAT_EXTENSIBLE (soundfile format ``WAVEX``) FLOAT: pydub's parser accepts tag 0xFFFE without
  looking at the sub-format and reads the float bits as 32-bit integers, i.e. legacy scored noise; we
  refuse rather than reproduce that. WAVEX with integer PCM sub-formats is handled like WAV.
* Every other subtype (u-law, A-law, ADPCM, ...) and every non-WAV container (FLAC, AIFF, OGG, RF64,
  W64, ...): legacy calls ``AudioSegment.from_wav``, which forces ``-f wav`` on its ffmpeg fallback, so
  non-WAV containers crash there, and compressed WAV subtypes go through conversions we cannot derive
  with confidence.
* NaN/Inf samples (FLOAT only): ffmpeg's conversion of them is platform-defined; we refuse.

A WAV whose header claims more data than the file holds is scored as far as it goes (libsndfile clamps the
frame count; legacy did the same, silently), with a ``TruncatedAudioWarning`` naming the file and how much is
missing (``porting.io.stream``'s RIFF check, shared with the HF reader).

Long recordings are never decoded whole: ``read_segments`` seeks and reads only the frames that the
requested windows cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..errors import AudioError
from .stream import _check_truncation, _reason, _riff_header, check_recording

CONTAINERS = ("WAV", "WAVEX")
SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT")
_FIX = "convert it to a plain PCM_16 WAV (e.g. `sox in out.wav` or `ffmpeg -i in -c:a pcm_s16le out.wav`)"
_INV_2_31 = np.float32(2.0**-31)


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def duration_s(self) -> float:
        """frames / sample_rate as a float, as librosa.get_duration gave legacy (README §1)."""
        return self.frames / self.sample_rate


def probe(path) -> AudioInfo:
    """Read a recording's header; refuse anything the legacy flow could not read faithfully."""
    path = check_recording(path, "WAV")
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({_reason(exc, path)}); pass a WAV recording") from exc
    fmt, subtype = info.format, info.subtype
    if fmt not in CONTAINERS:
        raise AudioError(f"{path}: {fmt} container is not supported (the legacy flow only read WAV); {_FIX}")
    if subtype not in SUBTYPES or (fmt == "WAVEX" and subtype == "FLOAT"):
        raise AudioError(
            f"{path}: {fmt} {subtype} samples are not supported (legacy could not decode them faithfully); {_FIX}"
        )
    if info.frames <= 0 or info.channels <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: no audio frames (empty data chunk); pass a non-empty WAV recording")
    out = AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        subtype=subtype,
        format=fmt,
    )
    _check_truncation(out, _riff_header(path))  # warns TruncatedAudioWarning; scoring goes on with what is there
    return out


def _legacy_values(raw: np.ndarray, subtype: str) -> np.ndarray:
    """Source frames (as read by ``_read_span``) -> float32 values soundfile read from pydub's export."""
    if subtype == "PCM_24":
        # soundfile's int32 read of PCM_24 is v24 << 8; pydub fills the low byte with the sign byte.
        code = raw + np.where(raw < 0, np.int32(255), np.int32(0))
        return code.astype(np.float32) * _INV_2_31
    if subtype == "FLOAT":
        # ffmpeg flt -> s32: clip(llrint(x * 2^31)); x * 2^31 is exact in float64, rint is half-even.
        code = np.clip(np.rint(raw.astype(np.float64) * 2.0**31), -(2.0**31), 2.0**31 - 1).astype(np.int32)
        return code.astype(np.float32) * _INV_2_31
    return raw  # PCM_U8 / PCM_16 / PCM_32: bytes unchanged, soundfile's float32 read is the value


def _read_span(f: sf.SoundFile, info: AudioInfo, start: int, n: int) -> np.ndarray:
    """Frames [start, start + n) as [n, C]: int32 for PCM_24, float32 otherwise."""
    dtype = "int32" if info.subtype == "PCM_24" else "float32"
    f.seek(start)
    data = f.read(n, dtype=dtype, always_2d=True)
    if data.shape[0] != n:
        raise AudioError(
            f"{info.path}: expected {n} frames at frame {start} but the file ended after {data.shape[0]}; "
            "the file is truncated or changed since probe, re-run on a complete file"
        )
    if info.subtype == "FLOAT" and not np.isfinite(data).all():
        bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0]) + start
        raise AudioError(f"{info.path}: NaN/Inf sample at frame {bad}; clean or re-export the recording")
    return data


def read_segments(info: AudioInfo, start_frames: list[int], n_frames: int) -> torch.Tensor:
    """[B, C, N] float32: the legacy ``A.segment`` of each window (what soundfile read from pydub's export).

    The result is a [B, C, N] view of frame-interleaved [B, N, C] memory, the layout the legacy patched
    ``torchaudio.load`` returned (``data.T``), so the channel mean reduces the same way (README §0, §3).
    Overlapping windows are served from one contiguous read; nothing outside them is read.
    """
    starts = [int(s) for s in start_frames]
    n = int(n_frames)
    if n <= 0:
        raise AudioError(f"{info.path}: window length must be positive, got {n} frames; this is a bug in the caller")
    for s in starts:
        if s < 0 or s + n > info.frames:
            raise AudioError(
                f"{info.path}: window frames [{s}, {s + n}) outside the recording's {info.frames} frames; "
                "plan windows with porting.families.orcahello.frontend.windows.plan_windows"
            )
    out = np.empty((len(starts), n, info.channels), dtype=np.float32)
    if not starts:
        return torch.from_numpy(out).transpose(1, 2)
    try:
        with sf.SoundFile(str(info.path)) as f:
            lo, hi = min(starts), max(starts) + n
            if hi - lo <= len(starts) * n:  # overlapping/adjacent windows: one read covers them all
                span = _legacy_values(_read_span(f, info, lo, hi - lo), info.subtype)
                for b, s in enumerate(starts):
                    out[b] = span[s - lo : s - lo + n]
            else:
                for b, s in enumerate(starts):
                    out[b] = _legacy_values(_read_span(f, info, s, n), info.subtype)
    except (RuntimeError, OSError) as exc:
        raise AudioError(
            f"{info.path}: read failed ({_reason(exc, info.path)}); check the file is readable and complete"
        ) from exc
    return torch.from_numpy(out).transpose(1, 2)
