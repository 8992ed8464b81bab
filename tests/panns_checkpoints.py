"""PANNs-format checkpoints for tests, written as the PANNs training code writes them (``torch.save`` of
``{'iteration', 'model', 'sampler'}`` with numpy arrays in the sampler), with seeded weights.

The frontend tensors are computed here the way torchlibrosa 0.1 defines them (DFT rows times the periodic Hann window,
float64, rounded once to float32; the Slaney filterbank of a published preset), independently of the port's reader.
The bodies' keys and shapes come from the port's rebuild: these files test reading and checking, not the numbers
(the numbers are the goldens' job: golden/panns, captured by the upstream code).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch


def frontend_tensors(sr: int, n_fft: int, n_mels: int = 64, fmin: float = 50.0, fmax: float | None = None) -> dict:
    from porting.dsp.convstft import slaney_mel

    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    angle = -2 * np.pi * np.outer(k, n) / n_fft
    real = torch.tensor((np.cos(angle) * window).astype(np.float32))[:, None, :]
    imag = torch.tensor((np.sin(angle) * window).astype(np.float32))[:, None, :]
    mel = torch.tensor(slaney_mel(sr, n_fft, n_mels, fmin, fmax or sr / 2).T.copy())
    return {"spectrogram_extractor.stft.conv_real.weight": real, "spectrogram_extractor.stft.conv_imag.weight": imag,
            "logmel_extractor.melW": mel}


def panns_state(body: str = "Cnn6", sr: int = 32000, n_fft: int = 1024, hop: int = 320, classes: int = 527,
                seed: int = 0, fmax: float | None = 14000.0) -> OrderedDict:
    """A full state dict for ``body`` with seeded He-scaled weights and plausible BatchNorm statistics."""
    from porting.families.panns.model import PannsTagger

    net = PannsTagger(body, n_fft, 64, classes, {"hop_size": hop})
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    fe = frontend_tensors(sr, n_fft, 64, 50.0, fmax)
    for key, t in net.state_dict().items():
        if key in fe:
            state[key] = fe[key]
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(t.shape, generator=g)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() >= 2:
            state[key] = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
        else:
            state[key] = 0.1 * torch.randn(t.shape, generator=g) + (1.0 if key.endswith(".weight") else 0.0)
    if "bn0.running_mean" in state:  # log-mel in dB: centre and scale it as training statistics would
        state["bn0.running_mean"] = torch.full((64,), -40.0)
        state["bn0.running_var"] = torch.full((64,), 400.0)
    return state


def write_checkpoint(path: Path, state: dict, *, wrapped: bool = True, sampler=None, legacy: bool = False) -> Path:
    """``torch.save`` as PANNs training does (``wrapped``), or a bare state dict; ``legacy``: torch < 1.6's stream."""
    obj = ({"iteration": 600000, "model": state,
            "sampler": sampler if sampler is not None else {"indexes": np.arange(50, dtype=np.int64), "pointer": 3}}
           if wrapped else state)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path
