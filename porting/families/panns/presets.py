"""The published PANNs frontend configurations, and which one a checkpoint's stored filterbank was made by.

A PANNs checkpoint stores its STFT kernels and mel filterbank (so ``n_fft`` and ``n_mels`` are read off their
shapes) but not the sample rate nor the hop, and the hop is the one setting that changes every output. The
configurations below are the ones the PANNs authors published (audioset_tagging_cnn d2f4b8c: README and the
asserts of ``Cnn14_16k``/``Cnn14_8k``; panns_inference 0.1.1 ``inference.py`` defaults; reference/panns/README.md
section 3). ``identify`` recomputes each candidate's Slaney filterbank (``porting.dsp.convstft.slaney_mel``, bitwise
librosa 0.11) and picks the one the stored ``melW`` equals to ``MATCH`` (1e-7: librosa >= 0.7 builds it in
float32, 0.6.3 in float64, and the two round differently by ~1e-9 here); the sample rate enters through the FFT
bin frequencies, so a filterbank identifies its rate. The hop cannot be checked: it is the published one, said so
in ``port inspect``/``convert``, and ``--hop-size`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH = 1e-7


@dataclass(frozen=True)
class Preset:
    name: str
    sample_rate: int
    window_size: int  # n_fft = win_length
    hop_size: int
    mel_bins: int
    fmin: float
    fmax: float
    models: str  # the published checkpoints made with it

    def record(self, how: str) -> dict:
        return {"preset": self.name, "sample_rate": self.sample_rate, "window_size": self.window_size,
                "hop_size": self.hop_size, "mel_bins": self.mel_bins, "fmin": self.fmin, "fmax": self.fmax,
                "ref": 1.0, "amin": 1e-10, "top_db": None, "identified_by": how}


PRESETS = (
    Preset("32k", 32000, 1024, 320, 64, 50.0, 14000.0,
           "Cnn14_mAP=0.431, Cnn10, Cnn6, MobileNetV1, MobileNetV2, Cnn14_DecisionLevelMax"),
    Preset("16k", 16000, 512, 160, 64, 50.0, 8000.0, "Cnn14_16k_mAP=0.438"),
    Preset("8k", 8000, 256, 80, 64, 50.0, 4000.0, "Cnn14_8k_mAP=0.416"),
)
BY_NAME = {p.name: p for p in PRESETS}


def filterbank(p: Preset) -> np.ndarray:
    """``[n_fft // 2 + 1, mel_bins]``, the layout of ``logmel_extractor.melW``."""
    from ...dsp.convstft import slaney_mel

    return slaney_mel(p.sample_rate, p.window_size, p.mel_bins, p.fmin, p.fmax).T


def identify(mel_w: np.ndarray) -> tuple[Preset | None, float]:
    """The preset whose filterbank ``mel_w`` equals to ``MATCH``, and the max |difference| from the closest one
    of the same shape (inf when no preset has that shape)."""
    mel_w = np.asarray(mel_w, dtype=np.float64)
    best, gap = None, float("inf")
    for p in PRESETS:
        if (p.window_size // 2 + 1, p.mel_bins) != mel_w.shape:
            continue
        d = float(np.abs(filterbank(p).astype(np.float64) - mel_w).max())
        if d < gap:
            best, gap = p, d
    return (best if gap <= MATCH else None), gap
