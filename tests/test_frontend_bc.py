"""Stages B (mel dB), C (crop/pad) and normalization: golden parity, quirks, and independent oracles.

Spec: golden/README.md §3 (mel dB, crop/pad) and §4 (normalization).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from conftest import golden_cases
from porting.families.orcahello.frontend.config import MelConfig, PadConfig
from porting.dsp.mel import MelDB, _constants, mel_db, mel_filterbank
from porting.families.orcahello.frontend.normalize import normalize
from porting.families.orcahello.frontend.pad import crop_pad
from porting.golden import load_case

TOL = 1e-5  # the contract (absolute), never loosened
CASES = golden_cases()


@functools.lru_cache(maxsize=None)
def _load(golden_dir, name: str):
    return load_case(golden_dir / "cases" / f"{name}.json")


@pytest.fixture
def case(request, golden_dir):
    """The golden case named by the test's ``name`` parameter (loaded once per session)."""
    return _load(golden_dir, request.getfixturevalue("name"))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.detach().cpu().double() - b.double()).abs().max().item()


def _synthetic(n_windows: int = 2, n: int = 40000, seed: int = 0) -> torch.Tensor:
    """Tones + noise at 20 kHz, one window per row, each row at a different level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 20000.0
    rows = []
    for i in range(n_windows):
        x = 0.3 * np.sin(2 * np.pi * (440.0 + 700 * i) * t) + 0.05 * rng.standard_normal(n)
        rows.append(x * 10.0 ** (-2 * i))  # 40 dB quieter per row
    return torch.tensor(np.stack(rows), dtype=torch.float32)


# --------------------------------------------------------------------------- golden parity
# Every capture of every case (golden/cases and golden/captures/*), each by the contract's rule for its tier
# (strict where the capture's fingerprint is this machine's, portable otherwise): porting.parity.contract.


@pytest.mark.parity
def test_mel_db_matches_golden(parity_case, parity_check, device):
    out = mel_db(parity_case.tensors["A.waveform"].to(device))
    assert out.device.type == device.type
    parity_check(parity_case, {"B.mel_db": out.cpu()}, device, stages=["B.mel_db"])


@pytest.mark.parity
def test_crop_pad_matches_golden(parity_case, parity_check, device):
    out = crop_pad(parity_case.tensors["B.mel_db"].to(device))
    parity_check(parity_case, {"C.padded (golden input)": out.cpu()}, device, stages=["C.padded (golden input)"])


@pytest.mark.parity
def test_normalize_matches_golden(parity_case, device):
    stats = parity_case.meta["model"]["normalize"]
    mean, std = (stats["mean"], stats["std"]) if stats else (None, None)
    out = normalize(parity_case.tensors["C.padded"].to(device), mean, std)
    diff = _max_diff(out, parity_case.tensors["X.model_input"])
    assert diff <= TOL, f"{parity_case.name}: X.model_input max |diff| {diff:.3g} > {TOL}"  # IEEE elementwise: both tiers


@pytest.mark.parity
def test_normalized_case_really_differs_from_padded(golden_dir):
    """Guards the X gate above: for sq11-norm, X is not C, so identity would fail it."""
    case = _load(golden_dir, "sq11-norm__pcm16_16k_short")
    assert _max_diff(case.tensors["X.model_input"], case.tensors["C.padded"]) > 1.0


@pytest.mark.parity
def test_golden_chain_waveform_to_model_input(parity_case, parity_check):
    """A -> B -> C -> X in one go (the stage graph `port detect` runs), for every case and capture."""
    from porting.families.orcahello.graph import StageGraph

    graph = StageGraph(normalize=parity_case.meta["model"]["normalize"])
    parity_check(parity_case, graph.frontend_stages(parity_case.tensors["A.waveform"]),
                 stages=["B.mel_db", "C.padded", "X.model_input"])


@pytest.mark.parity
def test_meldb_module_matches_golden(parity_case, parity_check):
    w = parity_case.tensors["A.waveform"]
    module = MelDB()
    assert set(dict(module.named_buffers())) == {"window", "fb"}
    assert torch.equal(module(w), mel_db(w))
    # The batched-GEMM variant (for export) is allowed its ulp, still inside the contract.
    parity_check(parity_case, {"B.mel_db": MelDB(per_window=False)(w)}, stages=["B.mel_db"])


# --------------------------------------------------------------------------- B: the quirks


def test_filterbank_top_18_filters_are_zero():
    """sample_rate 16000 quirk: bins only reach 8000 Hz, mel points reach 10000 Hz (README §3)."""
    fb = mel_filterbank()
    assert fb.shape == (1281, 256) and fb.dtype == torch.float32
    peak = fb.max(dim=0).values
    assert torch.all(peak[238:] == 0)
    assert torch.all(peak[:238] > 0)
    assert fb.min() >= 0 and fb.max() <= 1


def test_filterbank_matches_librosa_htk_oracle():
    librosa = pytest.importorskip("librosa", reason="librosa (dev-only oracle) not installed")
    with pytest.warns(UserWarning):  # librosa warns about the 18 empty filters: that is the quirk
        ref = librosa.filters.mel(
            sr=16000, n_fft=2560, n_mels=256, fmin=0, fmax=10000, htk=True, norm=None, dtype=np.float64
        ).T
    fb = mel_filterbank(dtype=torch.float64).numpy()
    # float32 build (torchaudio's) vs librosa's float64: measured max 2.3e-5 on weights in [0, 1].
    assert np.abs(fb - ref).max() < 1e-4
    # Laid out for the true 20 kHz instead, the same call would be far off: the quirk matters.
    real = librosa.filters.mel(sr=20000, n_fft=2560, n_mels=256, fmin=0, fmax=10000, htk=True, norm=None).T
    assert np.abs(fb - real).max() > 0.1


def test_filterbank_is_cached_and_copied():
    cfg = MelConfig()
    mel_db(_synthetic(1))
    misses = _constants.cache_info().misses
    mel_db(_synthetic(3))
    assert _constants.cache_info().misses == misses  # same (config, device, dtype): not rebuilt
    a = mel_filterbank(cfg)
    a.zero_()
    assert mel_filterbank(cfg).max() > 0  # callers get a copy, the cache is untouched


def test_mel_db_shapes_and_layouts():
    w = _synthetic(3)
    out = mel_db(w)
    assert out.shape == (3, 1, 256, 157) and out.dtype == torch.float32
    assert torch.equal(mel_db(w.unsqueeze(1)), out)  # [B, N] and [B, 1, N] are the same input
    assert mel_db(w[:0]).shape == (0, 1, 256, 157)
    assert mel_db(w.double()).dtype == torch.float64


def test_mel_db_clamp_is_per_window():
    """Batching two windows equals one at a time; the quiet window keeps its own floor (README §3)."""
    w = _synthetic(2)  # row 1 is 40 dB quieter than row 0
    both = mel_db(w)
    one_by_one = torch.cat([mel_db(w[i : i + 1]) for i in range(2)])
    assert torch.equal(both, one_by_one)
    for i in range(2):
        floor = both[i].amax() - 100.0
        assert both[i].min() == floor  # the clamp binds (the zero filters sit exactly on it)
    assert both[1].min() < both[0].min() - 30.0  # a per-batch clamp would have raised row 1's floor


def test_zero_filters_sit_on_the_floor():
    """Top 18 mel rows: 10*log10(1e-10) = -100 dB, then clamped to max - 100 when max > 0 dB."""
    loud = mel_db(_synthetic(1))
    assert loud.amax() > 0
    assert torch.all(loud[0, 0, 238:] == loud.amax() - 100.0)
    quiet = mel_db(_synthetic(1) * 1e-4)
    assert quiet.amax() < 0
    assert torch.all(quiet[0, 0, 238:] == -100.0)


def test_mel_db_matches_numpy_float64_oracle():
    """Independent path: numpy float64 STFT (periodic Hann, centred, reflect) + librosa's filterbank."""
    librosa = pytest.importorskip("librosa", reason="librosa (dev-only oracle) not installed")
    import scipy.signal

    w = _synthetic(2)
    x = np.pad(w.double().numpy(), ((0, 0), (1280, 1280)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, 2560, axis=-1)[:, ::256]
    window = scipy.signal.get_window("hann", 2560, fftbins=True)  # periodic
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [B, 157, 1281]
    with pytest.warns(UserWarning):
        fb = librosa.filters.mel(sr=16000, n_fft=2560, n_mels=256, fmin=0, fmax=10000, htk=True, norm=None)
    db = 10 * np.log10(np.maximum(power @ fb.T.astype(np.float64), 1e-10))  # [B, 157, 256]
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 100)
    ours = mel_db(w)[:, 0].double().numpy().transpose(0, 2, 1)
    assert ours.shape == db.shape == (2, 157, 256)
    assert np.abs(ours - db).max() < 2e-3  # float32 FFT + float32 filterbank vs float64: dB-level agreement


def test_mel_db_rejects_bad_input():
    with pytest.raises(TypeError):
        mel_db(torch.zeros(1, 40000, dtype=torch.int16))
    with pytest.raises(ValueError):
        mel_db(torch.zeros(1, 1, 1, 40000))


# --------------------------------------------------------------------------- C: crop/pad


def test_crop_pad_appends_zero_db_after():
    spec = torch.full((2, 1, 256, 157), -42.5)
    out = crop_pad(spec)
    assert PadConfig().frames == 312 and out.shape == (2, 1, 256, 312)
    assert torch.equal(out[..., :157], spec)
    assert torch.all(out[..., 157:] == 0.0)  # 0.0 dB, above the spectrogram: the legacy quirk


def test_crop_pad_value_and_exact_width():
    spec = torch.randn(1, 1, 4, 312)
    assert torch.equal(crop_pad(spec), spec)
    out = crop_pad(torch.zeros(1, 1, 4, 10), PadConfig(pad_value=-7.0))
    assert torch.all(out[..., 10:] == -7.0)


def test_crop_pad_longer_keeps_first_frames():
    """Legacy cropped at random (never reached for 2-s windows); the port keeps frames 0..311."""
    spec = torch.arange(400.0).expand(1, 1, 3, 400)
    out = crop_pad(spec)
    assert out.shape == (1, 1, 3, 312)
    assert torch.equal(out[0, 0, 0], torch.arange(312.0))


def test_crop_pad_rejects_non_4d():
    with pytest.raises(ValueError):
        crop_pad(torch.zeros(256, 157))


# --------------------------------------------------------------------------- normalization


def test_normalize_identity_without_stats():
    x = torch.randn(2, 1, 4, 5)
    assert normalize(x, None, None) is x


def test_normalize_per_channel_including_padding():
    x = crop_pad(torch.full((1, 2, 3, 157), 10.0))
    out = normalize(x, [2.0, -4.0], [4.0, 0.5])
    assert torch.all(out[0, 0, :, :157] == 2.0) and torch.all(out[0, 1, :, :157] == 28.0)
    assert torch.all(out[0, 0, :, 157:] == -0.5) and torch.all(out[0, 1, :, 157:] == 8.0)  # -mean/std


def test_normalize_rejects_inconsistent_stats():
    x = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError):
        normalize(x, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        normalize(x, [0.0], None)
