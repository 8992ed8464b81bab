"""Exportable graphs: the classifier alone, and the end-to-end detector pipeline (golden/README.md §3-§4).

* ``Classifier``: the model input ``[B, 1, 256, 312]`` (AFTER normalization, i.e. exactly what
  legacy ``learn.model`` received, golden ``X.model_input``) -> logits ``[B, K]``. Normalization is
  NOT inside this graph; its stats are in config.json / preprocessor_config.json.
* ``Pipeline``: a stage-A window ``[B, 40000]`` (20 kHz mono, golden ``A.waveform``) -> stage B (mel
  dB with the 16 kHz filterbank quirk and the per-window top_db clamp), stage C (0.0 dB padding after,
  to 312 frames), normalization (applied to the padding too), model, softmax -> ``confidence`` ``[B]``
  (probability of ``positive_index``), ``probs`` ``[B, K]``, ``logits`` ``[B, K]``.

The STFT comes in two forms (``dft``):

* ``"fft"``: ``porting.dsp.mel.MelDB`` (torch.stft, the CPU FFT legacy ran). Only runtimes that
  execute torch kernels can run it (TorchScript, torch.export); it stays within one float32 ulp of
  the goldens' dB values (batched mel GEMM, see ``MelDB``).
* ``"matmul"``: a DFT as one ``conv1d`` whose kernels are the windowed cos/sin rows (float64 angles
  reduced mod n_fft, rounded once to float32). Every runtime runs it (ONNX Runtime's own STFT op is
  ~2e-4 relative off at n_fft 2560), but it cannot be bitwise with the CPU FFT: the log amplifies the
  FFT's round-off in quiet bands (up to 0.016 dB on the goldens, like a float64 STFT). Whether the
  logits still land within 1e-5 is measured, per artifact, in parity.json. A float64 DFT does not help
  (measured: with a float64 STFT the rn18 logits of the 8 kHz golden window are still 6.7-8.6e-6 off; that
  distance is the goldens' own float32 FFT rounding), so the kernels stay float32 (ORT's Conv is float-only).

``export_ready`` swaps two pooling layers for identical, more portable forms (max is exact, so the
outputs do not change): ``AdaptiveMaxPool2d(1)`` -> ``amax`` over H, W (LiteRT has no lowering for
``adaptive_max_pool2d``) and ``MaxPool2d(ceil_mode=True)`` (squeezenet) -> explicit ``-inf`` padding +
floor-mode pooling (LiteRT lowers ceil mode to a wrong output shape).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frontend.config import MelConfig, PadConfig
from .graph import StageGraph, activate
from ...dsp.mel import MelDB, _build_window, mel_filterbank


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class GlobalMaxPool2d(nn.Module):
    """``AdaptiveMaxPool2d(1)`` as ``amax`` over (H, W), keepdim: the same values (max is exact)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(-2, -1), keepdim=True)


class CeilMaxPool2d(nn.Module):
    """``MaxPool2d(..., ceil_mode=True)`` as ``-inf`` padding + floor-mode pooling: the same values.

    The extra right/bottom padding is what ceil mode adds implicitly (a last, partial window is kept
    only when it starts inside the input or the left padding). H and W are static in these graphs, so
    the padding is a constant of the traced graph.
    """

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        if _pair(pool.dilation) != (1, 1):
            raise ValueError("CeilMaxPool2d: dilated pooling is not supported")
        self.kernel = _pair(pool.kernel_size)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = _pair(pool.padding)

    def _pads(self, size: int, k: int, s: int, p: int) -> tuple[int, int]:
        out = math.ceil((size + 2 * p - k) / s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return p, p + max((out - 1) * s + k - (size + 2 * p), 0)

    def forward(self, x: Tensor) -> Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        top, bottom = self._pads(h, self.kernel[0], self.stride[0], self.padding[0])
        left, right = self._pads(w, self.kernel[1], self.stride[1], self.padding[1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


def export_ready(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (eval mode) with the pooling swaps described in the module docstring."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveMaxPool2d) and _pair(child.output_size) == (1, 1):
                setattr(parent, name, GlobalMaxPool2d())
            elif isinstance(child, nn.MaxPool2d) and child.ceil_mode:
                setattr(parent, name, CeilMaxPool2d(child))
    return model


class Classifier(nn.Module):
    """Model input ``[B, 1, 256, 312]`` (normalized, = golden ``X.model_input``) -> logits ``[B, K]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = export_ready(model)

    def forward(self, spectrogram: Tensor) -> Tensor:
        return self.model(spectrogram).float()


def dft_kernels(cfg: MelConfig) -> Tensor:
    """``[2 * (n_fft//2+1), 1, n_fft]`` float32 conv1d weights: window * cos rows, then window * -sin rows.

    Angles are ``2 pi (k n mod N) / N`` in float64 (the reduction keeps them exact), multiplied by the
    legacy float32 periodic Hann window (zero-padded to n_fft and centred, as torch.stft does) in
    float64, rounded once to float32.
    """
    n = cfg.n_fft
    win = _build_window(cfg).to(torch.float64)
    left = (n - win.numel()) // 2
    win = F.pad(win, (left, n - win.numel() - left))
    k = torch.arange(n // 2 + 1, dtype=torch.int64)
    idx = torch.arange(n, dtype=torch.int64)
    angle = (torch.outer(k, idx) % n).to(torch.float64) * (2.0 * math.pi / n)
    kernels = torch.cat([torch.cos(angle) * win, -torch.sin(angle) * win])
    return kernels.to(torch.float32).unsqueeze(1)


class DFTMelDB(nn.Module):
    """Stage B with the STFT as a conv1d DFT (``dft_kernels``): ``[B, N]`` -> ``[B, 1, n_mels, frames]`` dB.

    Same steps as ``porting.dsp.mel`` (reflect padding, power, 16 kHz-quirk filterbank, dB, per-window
    top_db clamp, golden/README.md §3); only the transform differs (see the module docstring).
    """

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("kernels", dft_kernels(cfg))
        self.register_buffer("fb", mel_filterbank(cfg))

    def forward(self, waveform: Tensor) -> Tensor:
        cfg = self.cfg
        x = waveform.unsqueeze(1)  # [B, 1, N]
        if cfg.center:
            x = F.pad(x, (cfg.n_fft // 2, cfg.n_fft // 2), mode=cfg.pad_mode)
        spec = F.conv1d(x, self.kernels, stride=cfg.hop_length)  # [B, 2K, T]
        bins = self.kernels.shape[0] // 2
        re, im = spec[:, :bins], spec[:, bins:]
        power = re * re + im * im
        if cfg.power != 2.0:
            power = power.pow(cfg.power / 2.0)
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2).unsqueeze(1)  # [B, 1, M, T]
        db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
        if cfg.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2, 3), keepdim=True) - cfg.top_db)
        return db


def _crop_pad(spec: Tensor, cfg: PadConfig) -> Tensor:
    """Stage C as in ``porting.families.orcahello.frontend.pad.crop_pad`` (frames static in the graph): pad value after, or crop."""
    t = spec.shape[-1]
    if t > cfg.frames:
        return spec[..., : cfg.frames]
    return F.pad(spec, (0, cfg.frames - t), value=cfg.pad_value)


class Pipeline(nn.Module):
    """Window ``[B, N]`` -> (confidence ``[B]``, probs ``[B, K]``, logits ``[B, K]``); see the module docstring.

    ``config`` is the converted model's config.json dict (``frontend``, ``normalize``, ``positive_index``,
    ``activation``). The activation is the recorded one, softmax over the last axis for these learners
    (``Learner.predict``, README §4); ``probs`` is its output.
    """

    def __init__(self, model: nn.Module, config: dict, dft: str = "matmul"):
        super().__init__()
        graph = StageGraph.from_config(config)
        fe = graph.frontend
        if dft == "matmul":
            self.mel = DFTMelDB(fe.mel)
        elif dft == "fft":
            self.mel = MelDB(fe.mel, per_window=False)
        else:
            raise ValueError(f"Pipeline: dft must be 'matmul' or 'fft', got {dft!r}")
        self.dft = dft
        self.pad_cfg = fe.pad
        self.window_samples = fe.windows.window_samples
        self.positive_index = int(config["positive_index"])
        self.act = graph.activation
        norm = graph.normalize
        self.normalized = bool(norm)
        if norm:
            # float32 stats, as legacy's tensors were (golden/README.md §4); padding is normalized too.
            self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.model = export_ready(model)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = _crop_pad(self.mel(waveform), self.pad_cfg)
        if self.normalized:
            x = (x - self.mean) / self.std
        logits = self.model(x).float()
        probs = activate(logits, self.act)  # porting.families.orcahello.graph's, the one activation
        return probs[:, self.positive_index], probs, logits


