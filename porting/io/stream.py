"""Stream long recordings, sample for sample as ``librosa.load(path, sr=rate)`` (any family whose original stack
read audio that way: the Hugging Face family, the test family).

The HF audio classifiers were evaluated on ``librosa.load(path, sr=rate)`` (librosa 0.11 defaults:
``mono=True``, ``res_type="soxr_hq"``, ``dtype=float32``). librosa decodes the whole file; we read it
in blocks and reproduce each of its steps so the result is bitwise the same (tests/test_stream.py):

1. Decode: ``soundfile.SoundFile.read(dtype="float32")`` (librosa ``core/audio.py: __soundfile_load``).
   libsndfile's float conversion is per sample, so block reads give the same values as one read.
2. Downmix: ``np.mean`` over axis 0 of the ``[C, n]`` transposed read (``core/audio.py: to_mono``).
   Every output sample only reduces its own C values, so doing it per block changes nothing; we use
   the same expression on the same memory layout (channels adjacent) to keep numpy's reduction order.
3. Resample (skipped when the rates are equal, as ``core/audio.py: resample`` returns ``y`` as is):
   librosa calls ``soxr.resample(y, orig, target, quality="soxr_hq")``; we feed the same samples to
   ``soxr.ResampleStream`` block by block and flush with an empty ``last=True`` chunk. libsoxr's
   output does not depend on how its input is split (python-soxr itself splits one-shot input into
   ``max(1000, 48000*in/out)``-frame pieces), so the stream is bitwise the one-shot result.
4. Length fix (``core/audio.py: resample``, ``fix=True`` -> ``util/utils.py: fix_length``): soxr
   returns ``round(n * target / orig)`` samples, librosa zero-pads (or trims) to
   ``int(np.ceil(n * (float(target) / orig)))``, computed in float64. Quirks reproduced here:
   * about half of all lengths end with one appended ``0.0`` (when ``frac(n * r) < 0.5``);
   * the float ratio makes e.g. a 1-s 44.1 kHz file give ``ceil(48000.000000000004) = 48001`` samples
     at 48 kHz (every n that is a multiple of 147 at 11025/22050/44100 -> 48000/96000), one extra 0.0;
   python-soxr's one-shot output buffer holds ``int(n * target / orig + 1)`` samples (``soxr_ext.cpp:
   csoxr_split_ch``); soxr's ``round(n * r)`` never exceeds it, so that cap never cuts anything.
   No scaling (``scale=False``) and the dtype stays float32.

Refused with ``AudioError`` (librosa would raise, or fall back to audioread, which we do not ship):
missing file, directory, empty file, unreadable container, sample rate 0, zero frames, NaN/Inf
samples, and containers we have not verified (anything but WAV/WAVEX/RF64, FLAC, OGG).
A WAV whose header claims more data than the file holds is read as far as it goes (libsndfile clamps
the frame count, librosa does the same), with a ``TruncatedAudioWarning``.
"""

from __future__ import annotations

import math
import numbers
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError

FORMATS = ("WAV", "WAVEX", "RF64", "FLAC", "OGG")
DEFAULT_BLOCK_FRAMES = 1 << 16  # 64 Ki frames: 512 KiB float32 at stereo
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only ones that can decode to NaN/Inf
_FIX = "convert it to WAV or FLAC (e.g. `ffmpeg -i in out.flac`)"
_QUALITY = "soxr_hq"  # librosa.load's default res_type; python-soxr maps it to libsoxr's SOXR_HQ


class TruncatedAudioWarning(UserWarning):
    """A WAV header claims more audio than the file holds; the frames present are used."""


@dataclass(frozen=True)
class StreamInfo:
    path: Path
    frames: int
    sample_rate: int
    channels: int
    subtype: str
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


class Window(NamedTuple):
    start: int  # first sample (at the resampled rate)
    length: int  # window_samples, or fewer for the partial tail
    partial: bool


class WindowPlan(list):
    """``list[Window]`` plus what the plan leaves out: ``unscored_tail`` samples at the end."""

    def __init__(self, windows, n_samples: int, unscored_tail: int):
        super().__init__(windows)
        self.n_samples = n_samples
        self.unscored_tail = unscored_tail


@dataclass(frozen=True)
class WindowBatch:
    """``waveforms`` [B, L] float32 (L = window_samples, or the tail's length when ``partial``)."""

    waveforms: np.ndarray
    starts: tuple[int, ...]  # start sample of each row
    first_index: int  # index of row 0 in the recording's window plan
    partial: bool

    @property
    def length(self) -> int:
        return int(self.waveforms.shape[1])


# --------------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class _RiffHeader:
    sample_rate: int
    channels: int
    block_align: int
    format_tag: int
    byte_rate: int
    data_size: int  # bytes the 'data' chunk claims
    data_available: int  # bytes actually in the file after the chunk header


def _riff_header(path: Path) -> _RiffHeader | None:
    """The 'fmt ' and 'data' chunks of a little-endian RIFF/WAVE file, or None (not RIFF, or malformed).

    Needed because libsndfile hides both things we report: it refuses a zero sample rate with a generic
    "SF_INFO struct incomplete", and it silently clamps the frame count of a truncated data chunk.
    """
    from .files import open_regular

    try:
        size = path.stat().st_size
        with open_regular(path, "the recording", AudioError) as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            fmt = None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, csize = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt " and csize >= 16:
                    fmt = struct.unpack("<HHIIH", f.read(14))
                elif cid == b"data":
                    if fmt is None:
                        return None
                    tag, channels, rate, byte_rate, align = fmt
                    return _RiffHeader(rate, channels, align, tag, byte_rate, csize, size - pos - 8)
                pos += 8 + csize + (csize & 1)
    except (OSError, struct.error):
        return None
    return None


def _hms(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _check_truncation(info: StreamInfo, header: _RiffHeader | None) -> None:
    if header is None or header.data_size in (0, 0xFFFFFFFF):  # 0 / ~0: "length unknown" (streamed writers)
        return
    missing_bytes = header.data_size - header.data_available
    if missing_bytes <= 0:
        return
    pcm_like = header.format_tag in (1, 3, 6, 7, 0xFFFE) and header.block_align > 0
    if pcm_like:
        missing_s = (header.data_size // header.block_align - info.frames) / info.sample_rate
    elif header.byte_rate > 0:
        missing_s = missing_bytes / header.byte_rate
    else:
        return
    if missing_s <= 0:
        return
    warnings.warn(
        f"{info.path}: truncated WAV: the header claims {_hms(info.duration_s + missing_s)} but the data holds "
        f"{_hms(info.duration_s)} ({_hms(missing_s)} missing); using the {_hms(info.duration_s)} present",
        TruncatedAudioWarning,
        stacklevel=3,
    )


def _reason(exc: BaseException, path: Path) -> str:
    """libsndfile's own message without soundfile's "Error opening '<path>': " prefix (path once only)."""
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split()).replace(repr(str(path)), "the file").replace(str(path), "the file")
    return text.removeprefix("Error : ").rstrip(".")


def check_recording(path, kinds: str = "WAV, FLAC or OGG") -> Path:
    """``path`` as a Path if it is a non-empty regular file (checked by ``stat``, so a FIFO is refused before
    libsndfile could block on it); else one ``AudioError`` line naming the ``kinds`` of recording accepted."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not a recording; pass the path of a {kinds} file")
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file; pass the path of a {kinds} file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes); pass a {kinds} recording")
    return path


def _open_info(path, warn: bool = True) -> StreamInfo:
    path = check_recording(path)
    header = _riff_header(path)
    try:
        raw = sf.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # LibsndfileError is a RuntimeError
        if header is not None and header.sample_rate == 0:
            raise AudioError(f"{path}: sample rate is 0 Hz in the WAV header; re-export the recording") from exc
        raise AudioError(
            f"{path}: not a readable audio file ({_reason(exc, path)}); pass a WAV, FLAC or OGG recording"
        ) from exc
    if raw.format not in FORMATS:
        raise AudioError(
            f"{path}: {raw.format} container is not supported (only WAV, FLAC and OGG are verified against "
            f"librosa.load); {_FIX}"
        )
    if raw.samplerate <= 0:
        raise AudioError(f"{path}: sample rate is {raw.samplerate} Hz in the header; re-export the recording")
    if raw.channels <= 0:
        raise AudioError(f"{path}: header declares {raw.channels} channels; re-export the recording")
    if raw.frames <= 0:
        raise AudioError(f"{path}: no audio frames (0 frames of audio data); pass a non-empty recording")
    info = StreamInfo(path, int(raw.frames), int(raw.samplerate), int(raw.channels), raw.subtype, raw.format)
    if warn:
        _check_truncation(info, header)
    return info


def _bad_frame(path: Path, data: np.ndarray, offset: int, sample_rate: int, what: str) -> AudioError:
    flat = data if data.ndim == 1 else data.reshape(data.shape[0], -1)
    bad = ~np.isfinite(flat) if flat.ndim == 1 else ~np.isfinite(flat).all(axis=1)
    frame = int(np.flatnonzero(bad)[0]) + offset
    return AudioError(
        f"{path}: {what} at frame {frame} ({frame / sample_rate:.3f} s); clean or re-export the recording"
    )


def probe_audio(path, *, check_finite: bool = True) -> StreamInfo:
    """Header facts of a WAV/FLAC/OGG recording; one-line ``AudioError`` if librosa could not use it.

    With ``check_finite`` (default), FLOAT/DOUBLE files are scanned block by block for NaN/Inf (what
    librosa's ``util.valid_audio`` refuses); integer and compressed subtypes cannot hold them, so they
    are not read. Warns ``TruncatedAudioWarning`` for a WAV whose data chunk is cut short.
    """
    info = _open_info(path)
    if check_finite and info.subtype in _FLOAT_SUBTYPES:
        for _ in _iter_mono_blocks(info, DEFAULT_BLOCK_FRAMES):
            pass
    return info


# ------------------------------------------------------------------------------------------ resample


def resampled_length(frames: int, sample_rate: int, rate) -> int:
    """Samples ``librosa.load(path, sr=rate)`` returns for ``frames`` source frames.

    ``int(np.ceil(n * (float(target) / orig)))`` in float64 (``core/audio.py: resample``); the rounding of
    the ratio makes it exceed the exact ceiling for some lengths (44100 -> 48000, n = 44100: 48001).
    """
    if sample_rate == rate:
        return int(frames)
    return int(math.ceil(int(frames) * (float(rate) / sample_rate)))


def _iter_mono_blocks(info: StreamInfo, block_frames: int) -> Iterator[np.ndarray]:
    """float32 mono blocks: soundfile's float32 read, then librosa's ``to_mono`` on the [C, n] transpose."""
    done = 0
    try:
        with sf.SoundFile(str(info.path)) as f:
            while True:
                data = f.read(block_frames, dtype="float32", always_2d=True)  # [n, C], channels adjacent
                if data.shape[0] == 0:
                    break
                if not np.isfinite(data).all():
                    raise _bad_frame(info.path, data, done, info.sample_rate, "NaN/Inf sample")
                if info.channels == 1:
                    mono = np.ascontiguousarray(data[:, 0])
                else:
                    # librosa: y = read(...).T  ([C, n]);  to_mono: np.mean(y, axis=0)
                    mono = np.mean(data.T, axis=0)
                    if not np.isfinite(mono).all():
                        raise _bad_frame(info.path, mono, done, info.sample_rate, "channel mean overflows float32")
                done += data.shape[0]
                yield mono
    except AudioError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        raise AudioError(
            f"{info.path}: decoding failed after frame {done} of {info.frames} ({_reason(exc, info.path)}); "
            "the file is truncated or corrupt, re-export it"
        ) from exc
    if done < info.frames:  # header promised more than the decoder delivers (e.g. a cut OGG/FLAC stream)
        warnings.warn(
            f"{info.path}: truncated stream: the header claims {_hms(info.duration_s)} but only "
            f"{_hms(done / info.sample_rate)} decode ({_hms((info.frames - done) / info.sample_rate)} missing); "
            "using what decodes",
            TruncatedAudioWarning,
            stacklevel=2,
        )


def _check_rate(info: StreamInfo, rate) -> None:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
        raise AudioError(f"{info.path}: target rate must be a positive number of Hz, got {rate!r}; this is a bug")


def _iter_stream(info: StreamInfo, rate, block_frames: int) -> Iterator[np.ndarray]:
    if isinstance(block_frames, bool) or not isinstance(block_frames, numbers.Integral) or block_frames < 1:
        raise AudioError(f"{info.path}: block_frames must be a positive int, got {block_frames!r}; this is a bug")
    _check_rate(info, rate)
    if info.sample_rate == rate:  # librosa.resample: `if orig_sr == target_sr: return y`
        yield from _iter_mono_blocks(info, block_frames)
        return
    stream = soxr.ResampleStream(info.sample_rate, rate, 1, dtype="float32", quality=_QUALITY)
    frames = 0
    emitted = 0
    limit = resampled_length(info.frames, info.sample_rate, rate)
    for mono in _iter_mono_blocks(info, block_frames):
        frames += mono.shape[0]
        out = stream.resample_chunk(mono)
        out = out[: max(0, limit - emitted)]
        if out.shape[0]:
            emitted += out.shape[0]
            yield out
    # Now the real input length is known (it is info.frames unless the stream was cut short).
    limit = resampled_length(frames, info.sample_rate, rate)
    if emitted > limit:  # soxr lags its input by the filter delay, so this cannot happen on a real file
        raise AudioError(f"{info.path}: resampler emitted {emitted} samples, more than {limit}; this is a bug")
    tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)[: limit - emitted]
    emitted += tail.shape[0]
    if emitted < limit:  # librosa's fix_length pads with zeros
        tail = np.concatenate([tail, np.zeros(limit - emitted, np.float32)])
    if tail.shape[0]:
        yield tail


def iter_resampled(path, rate, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """float32 mono chunks whose concatenation is bitwise ``librosa.load(path, sr=rate)[0]``.

    Reads ``block_frames`` source frames at a time (memory: one block and its resampled output).
    Chunk sizes vary (soxr delays its output and the last chunk carries the flush and the padding).
    """
    info = _open_info(path)
    yield from _iter_stream(info, rate, block_frames)


# ------------------------------------------------------------------------------------------- windows


def _seconds(n: int, rate: int) -> str:
    return f"{n / rate:.2f}"


def plan_windows(
    n_samples: int, window_samples: int, hop_samples: int, *, sample_rate: int | None = None, source=None
) -> WindowPlan:
    """Windows ``(start, length, partial)`` over ``n_samples``; pure, reads nothing.

    Full windows start at ``k * hop`` while ``k * hop + window <= n``. If samples remain after the last
    full window, one more window at the next ``k * hop`` takes the rest, marked partial, when it holds
    at least ``window // 2`` samples; otherwise those samples are not scored (``plan.unscored_tail``).
    ``hop <= window`` so no sample between windows is skipped. Shorter than one window: ``AudioError``
    (``sample_rate`` and ``source`` only make its message name the file and seconds).
    """
    n, w, h = int(n_samples), int(window_samples), int(hop_samples)
    if w < 1 or h < 1 or h > w:
        raise ValueError(f"need 1 <= hop_samples <= window_samples, got window {w}, hop {h}")
    if n < w:
        where = f"{source}: " if source is not None else ""
        if sample_rate:
            have, need = _seconds(n, sample_rate), _seconds(w, sample_rate)
            digits = 2
            while have == need and digits < 6:  # never print "1.00 s is shorter than one 1.00-s window"
                digits += 1
                have, need = f"{n / sample_rate:.{digits}f}", f"{w / sample_rate:.{digits}f}"
            raise AudioError(
                f"{where}{have} s is shorter than one {need}-s window; use a recording of at least {need} s"
            )
        raise AudioError(f"{where}{n} samples is shorter than one {w}-sample window; use a longer recording")
    n_full = (n - w) // h + 1
    windows = [Window(k * h, w, False) for k in range(n_full)]
    tail_start = n_full * h
    unscored = 0
    if (n_full - 1) * h + w < n:  # samples after the last full window's end
        rest = n - tail_start  # > 0 because tail_start <= last full end < n
        if rest >= w // 2:
            windows.append(Window(tail_start, rest, True))
        else:
            unscored = n - ((n_full - 1) * h + w)
    return WindowPlan(windows, n, unscored)


def plan_recording(path, rate, window_samples: int, hop_samples: int) -> WindowPlan:
    """The window plan of ``path`` at ``rate`` from its header alone (no decoding)."""
    info = _open_info(path, warn=False)
    _check_rate(info, rate)
    n = resampled_length(info.frames, info.sample_rate, rate)
    return plan_windows(n, window_samples, hop_samples, sample_rate=rate, source=info.path)


def n_windows(path, rate, window_samples: int, hop_samples: int) -> int:
    """How many windows ``iter_windows`` will yield (partial tail included), for a progress bar."""
    return len(plan_recording(path, rate, window_samples, hop_samples))


def iter_windows(
    path,
    rate,
    window_samples: int,
    hop_samples: int,
    batch_size: int,
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> Iterator[WindowBatch]:
    """Batches of full windows ``[B, window_samples]``, then the partial tail alone as ``[1, length]``.

    Windows are cut from the ``iter_resampled`` stream, so each row is bitwise the same slice of
    ``librosa.load(path, sr=rate)[0]``. Held in memory: one resampler block plus the samples of the
    current batch (``(B - 1) * hop + window``); after a batch only the overlap with the next window stays.
    Too short for one window: ``AudioError`` before anything is read.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise AudioError(f"{path}: batch_size must be a positive int, got {batch_size!r}; this is a bug")
    info = _open_info(path)
    _check_rate(info, rate)
    w, h = int(window_samples), int(hop_samples)
    plan = plan_windows(resampled_length(info.frames, info.sample_rate, rate), w, h, sample_rate=rate, source=info.path)

    buf = np.zeros(0, np.float32)
    buf_start = 0  # absolute sample index of buf[0]
    nxt = 0  # index in plan of the next window to yield

    def batches(plan: WindowPlan, available_end: int, final: bool) -> Iterator[WindowBatch]:
        nonlocal buf, buf_start, nxt
        full = [win for win in plan if not win.partial]
        while nxt < len(full):
            stop = min(nxt + batch_size, len(full))
            if stop - nxt < batch_size and not final:
                break  # wait for a whole batch unless the stream has ended
            if full[stop - 1].start + w > available_end:
                break
            lo = full[nxt].start - buf_start
            view = np.lib.stride_tricks.sliding_window_view(buf[lo:], w)[:: h][: stop - nxt]
            starts = tuple(win.start for win in full[nxt:stop])
            yield WindowBatch(np.array(view, dtype=np.float32), starts, nxt, False)
            nxt = stop
            keep_from = plan[nxt].start if nxt < len(plan) else available_end
            buf = buf[keep_from - buf_start :]
            buf_start = keep_from
        if final and nxt < len(plan) and plan[nxt].partial:
            win = plan[nxt]
            row = buf[win.start - buf_start : win.start - buf_start + win.length]
            yield WindowBatch(np.array(row[None, :], dtype=np.float32), (win.start,), nxt, True)
            nxt += 1

    received = 0
    for chunk in _iter_stream(info, rate, block_frames):
        buf = np.concatenate([buf, chunk]) if buf.shape[0] else chunk
        received += chunk.shape[0]
        yield from batches(plan, received, final=False)
    if received != plan.n_samples:  # the stream was cut short (warned): re-plan on what decoded
        plan = plan_windows(received, w, h, sample_rate=rate, source=info.path)
    yield from batches(plan, received, final=True)
