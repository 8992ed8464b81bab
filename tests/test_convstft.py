"""porting.dsp.convstft against its oracles: torchlibrosa 0.1 (the PANNs frontend: conv STFT, log-mel, power_to_db
with its batch-wide top_db) and librosa's Slaney mel filterbank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from porting.dsp.convstft import log_mel, power_spectrogram, power_to_db, slaney_mel

stft = pytest.importorskip("torchlibrosa.stft", reason="torchlibrosa (the dev extra's oracle) is not installed")
librosa = pytest.importorskip("librosa", reason="librosa (the dev extra's oracle) is not installed")

# published PANNs configurations: (sample rate, n_fft, hop, mel bins, fmin, fmax)
CNN14 = (32000, 1024, 320, 64, 50, 14000)
CNN14_16K = (16000, 512, 160, 64, 50, 8000)


def _oracle(cfg, top_db=None):
    sr, n_fft, hop, n_mels, fmin, fmax = cfg
    spec = stft.Spectrogram(n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann", center=True,
                            pad_mode="reflect", freeze_parameters=True)
    mel = stft.LogmelFilterBank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, ref=1.0, amin=1e-10,
                                top_db=top_db, freeze_parameters=True)
    return spec, mel


def _audio(sr: int, seconds: float, batch: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    n = int(sr * seconds) + 123  # not a multiple of the hop
    t = np.arange(n) / sr
    rows = [0.3 * np.sin(2 * np.pi * (300 + 500 * b) * t) + 0.02 * rng.standard_normal(n) for b in range(batch)]
    rows[-1] *= 1e-4  # one very quiet clip
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@pytest.mark.parametrize("cfg", [CNN14, CNN14_16K], ids=["cnn14", "cnn14_16k"])
def test_log_mel_is_torchlibrosa_bit_for_bit(cfg):
    spec, mel = _oracle(cfg)
    x = _audio(cfg[0], 2.0, 3)
    with torch.inference_mode():
        want_power = spec(x)[:, 0]  # [B, T, F]
        want = mel(spec(x))[:, 0]
        got_power = power_spectrogram(x, spec.stft.conv_real.weight, spec.stft.conv_imag.weight, cfg[2])
        got = log_mel(x, spec.stft.conv_real.weight, spec.stft.conv_imag.weight, mel.melW, cfg[2])
    assert got.shape == (3, 1 + x.shape[1] // cfg[2], cfg[3])
    assert torch.equal(got_power, want_power) and torch.equal(got, want)


def test_top_db_floors_at_the_batch_maximum_as_torchlibrosa_does():
    spec, mel80 = _oracle(CNN14, top_db=80.0)
    x = _audio(32000, 1.0, 2)  # a loud clip and one 80 dB quieter
    k = (spec.stft.conv_real.weight, spec.stft.conv_imag.weight, mel80.melW, 320)
    with torch.inference_mode():
        batch = mel80(spec(x))[:, 0]
        alone = mel80(spec(x[1:]))[:, 0]
        ours_batch = log_mel(x, *k, top_db=80.0)
        ours_clip = log_mel(x, *k, top_db=80.0, top_db_scope="clip")
    assert torch.equal(ours_batch, batch)
    assert torch.equal(ours_clip[1], alone[0])
    assert not torch.equal(batch[1], alone[0])  # the original's quiet clip depends on its batch mate


def test_power_to_db_refuses_what_it_cannot_mean():
    x = torch.rand(2, 5, 4)
    with pytest.raises(ValueError, match="non-negative"):
        power_to_db(x, top_db=-1.0)
    with pytest.raises(ValueError, match="'batch' or 'clip'"):
        power_to_db(x, top_db=80.0, top_db_scope="window")
    with pytest.raises(ValueError, match="reflect padding"):
        power_spectrogram(torch.zeros(1, 512), torch.zeros(513, 1, 1024), torch.zeros(513, 1, 1024), 320)


@pytest.mark.parametrize("cfg", [CNN14, CNN14_16K], ids=["cnn14", "cnn14_16k"])
def test_slaney_mel_is_librosas_and_tells_configurations_apart(cfg):
    sr, n_fft, _, n_mels, fmin, fmax = cfg
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = slaney_mel(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= 1e-7
    _, mel = _oracle(cfg)
    assert np.abs(got.T - mel.melW.detach().numpy()).max() <= 1e-7  # what a PANNs checkpoint stores
    other = slaney_mel(sr, n_fft, n_mels, fmin, fmax / 2)  # another fmax: far off, so a stored melW names its config
    assert np.abs(other.astype(np.float64) - want).max() > 1e-3
