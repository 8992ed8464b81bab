"""A PANNs audio tagger rebuilt in plain torch: the checkpoint's frontend, ``bn0``, a body (``bodies``) and the head.

The state dict keeps the upstream keys (``spectrogram_extractor.stft.conv_real.weight``, ``logmel_extractor.melW``,
``bn0.*``, the body's, ``fc1.*``, ``fc_audioset.*``) so the checkpoint loads with ``strict=True``: a missing or
unexpected key is a one-line error naming it, never a silent default. What the file does not hold (sample rate,
hop) arrives as the ``frontend`` record chosen by ``presets``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...io.weights import check_keys

from ...dsp.convstft import power_spectrogram, power_to_db
from .bodies import BODIES, head_pool

STAGES = ("F.logmel", "M.bn0", "M.features", "M.pooled", "M.embedding", "Y.logits", "Y.probs")


class _Kernel(nn.Module):
    """Holds one stored tensor under ``.weight`` (torchlibrosa's frozen ``Conv1d``): the key layout, nothing else."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape), requires_grad=False)


class _STFT(nn.Module):
    def __init__(self, bins: int, n_fft: int):
        super().__init__()
        self.conv_real, self.conv_imag = _Kernel((bins, 1, n_fft)), _Kernel((bins, 1, n_fft))


class _Spectrogram(nn.Module):
    def __init__(self, bins: int, n_fft: int):
        super().__init__()
        self.stft = _STFT(bins, n_fft)


class _LogMel(nn.Module):
    def __init__(self, bins: int, n_mels: int):
        super().__init__()
        self.melW = nn.Parameter(torch.zeros(bins, n_mels), requires_grad=False)


class PannsTagger(nn.Module):
    """waveform ``[B, N]`` at ``frontend["sample_rate"]`` -> logits ``[B, classes]`` (``forward``) or every stage
    (``stages``). Reflect padding needs ``N > n_fft // 2``; the body needs at least 32 frames (``min_samples``)."""

    def __init__(self, body: str, n_fft: int, n_mels: int, classes: int, frontend: dict):
        super().__init__()
        make, width, self.poolings = BODIES[body]
        bins = n_fft // 2 + 1
        self.body_name, self.n_fft, self.hop = body, n_fft, int(frontend["hop_size"])
        self.amin, self.ref = float(frontend.get("amin", 1e-10)), float(frontend.get("ref", 1.0))
        self.spectrogram_extractor = _Spectrogram(bins, n_fft)
        self.logmel_extractor = _LogMel(bins, n_mels)
        self.bn0 = nn.BatchNorm2d(n_mels)
        trunk = make()
        self._trunk = [name for name, _ in trunk.named_children()]
        for name, mod in trunk.named_children():
            self.add_module(name, mod)
        self.fc1 = nn.Linear(trunk.out_channels, width)
        self.fc_audioset = nn.Linear(width, classes)

    @property
    def min_samples(self) -> int:
        """The shortest input the body takes: ``2**poolings`` frames (``T = 1 + N // hop``; CNN14 and the MobileNets
        pool five times by 2, CNN10/6 four) and more than ``n_fft // 2`` samples (reflect padding)."""
        return max((2**self.poolings - 1) * self.hop, self.n_fft // 2 + 1)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, 1, T, n_mels]`` dB (torchlibrosa's Spectrogram + LogmelFilterBank, top_db None)."""
        stft = self.spectrogram_extractor.stft
        power = power_spectrogram(waveform, stft.conv_real.weight, stft.conv_imag.weight, self.hop)
        return power_to_db(torch.matmul(power[:, None], self.logmel_extractor.melW), self.amin, self.ref)

    def normalise(self, logmel: torch.Tensor) -> torch.Tensor:
        """``bn0`` over the mel bins: upstream transposes mel to the channel axis and back."""
        return self.bn0(logmel.transpose(1, 3)).transpose(1, 3)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._trunk:
            x = getattr(self, name)(x)
        return x

    def embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = head_pool(features)
        return pooled, F.relu(self.fc1(pooled))

    def from_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T, n_mels]`` dB -> logits: what the ``model.*`` artifacts export."""
        return self.fc_audioset(self.embed(self.trunk(self.normalise(logmel)))[1])

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_logmel(self.logmel(waveform))

    def stages(self, waveform: torch.Tensor | None = None, logmel: torch.Tensor | None = None) -> dict:
        """Every stage of ``STAGES`` from a waveform, or from ``logmel`` (the golden-input run: no ``F.logmel``)."""
        out = {}
        if logmel is None:
            logmel = out["F.logmel"] = self.logmel(waveform)
        out["M.bn0"] = x = self.normalise(logmel)
        out["M.features"] = x = self.trunk(x)
        out["M.pooled"], out["M.embedding"] = self.embed(x)
        out["Y.logits"] = logits = self.fc_audioset(out["M.embedding"])
        out["Y.probs"] = torch.sigmoid(logits)
        return out


def build(spec) -> PannsTagger:
    """The rebuild of a checkpoint read by ``reader.read_panns`` (keys and shapes already checked), strict load."""
    net = PannsTagger(spec.body, spec.n_fft, spec.n_mels, spec.classes, spec.frontend)
    want = net.state_dict()
    net.load_state_dict({k: spec.state[k].to(t.dtype) for k, t in want.items()}, strict=True)
    return net.eval()


def load_converted(path, preset=None, sample_rate=None, hop_size=None) -> tuple[PannsTagger, dict]:
    """``(model, config)`` from a folder ``port convert`` wrote; a frontend option that disagrees with what it was
    converted with is refused (re-convert instead)."""
    from ...errors import UnsupportedModelError
    from ...io.weights import WEIGHTS_NAME, read_converted
    from .schema import check_converted

    config, state = read_converted(path, check_converted)
    fe = config["frontend"]
    for flag, given, have in (("--preset", preset, fe.get("preset")), ("--sample-rate", sample_rate, fe["sample_rate"]),
                              ("--hop-size", hop_size, fe["hop_size"])):
        if given is not None and given != have:
            raise UnsupportedModelError(f"{path}: converted with {flag[2:].replace('-', '_')} {have}, not {given}; "
                                        "re-run `port convert` with it")
    net = PannsTagger(config["body"], config["n_fft"], config["n_mels"], len(config["classes"]), fe)
    want = net.state_dict()
    check_keys(path / WEIGHTS_NAME, state, want, "pass the checkpoint as trained")
    net.load_state_dict({k: state[k].to(t.dtype) for k, t in want.items()}, strict=True)
    return net.eval(), config
