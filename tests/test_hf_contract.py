"""The parity contract on the HF family: the portable tier accepts what another machine legitimately computes and
rejects real bugs (porting.families.hf.contract HF_TABLE, porting.dsp.errormodel.fbank_bounds).

golden/hf was captured on one machine only, so "another machine" is simulated two ways: a foreign fingerprint
(the whole check in the portable tier), and a second float32 FFT implementation (scipy's pocketfft in place of
torch's) inside the kaldi fbank -- the cross-CPU difference the error model is derived for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from porting.families.hf.features import ASTFEConfig, ast_features
from porting.dsp.kaldi import kaldi_fbank
from porting.parity.compare import compare_rule
from porting.parity.contract import PORTABLE, STRICT, rule_for
from porting.dsp.errormodel import fbank_bounds
from porting.families.hf.parity import fbank_backend
from porting.golden import case_paths, load_case
from porting.parity.run import run_parity

HF = ROOT / "golden" / "hf"
AST_CASES = [p for p in case_paths(HF) if p.stem.startswith("ast__") and load_case(p).stored_windows]
FOREIGN = {"cpu": {"vendor": "SimulatedVendor", "family": 0, "model": 0, "dispatch_flags": []}, "isa": "NONE",
           "fft": {"backend": "simulated", "version": "0"}, "blas": {"backend": "simulated", "version": "0"}}


def _windows():
    for p in AST_CASES:
        case = load_case(p)
        cfg = ASTFEConfig.from_dict(case.meta["frontend"]["preprocessor"])
        for i in case.stored_windows:
            w = case.window(i)
            yield case, cfg, w["A.waveform"], w["F.input_values"][0].double().numpy()


def _margin(actual: np.ndarray, golden: np.ndarray, tol: np.ndarray) -> float:
    d = np.abs(actual.astype(np.float64) - golden)
    return float(np.max(np.where(d == 0, 0.0, d / np.maximum(tol, 1e-300))))


def _scipy_rfft(x, n=None, dim=-1, norm=None):
    import scipy.fft

    y = scipy.fft.rfft(x.detach().cpu().numpy().astype(np.float32), n=n, axis=dim)
    assert y.dtype == np.complex64  # a float32 transform, like torch's
    return torch.from_numpy(y)


def test_there_are_ast_windows_with_stage_tensors():
    assert sum(1 for _ in _windows()) >= 6


def test_fbank_model_accepts_a_second_float32_fft(monkeypatch):
    monkeypatch.setattr(torch.fft, "rfft", _scipy_rfft)
    margins = []
    for case, cfg, wave, gold in _windows():
        if fbank_backend(case) != "torchaudio-kaldi":
            continue
        other = ast_features(wave, cfg)[0].numpy()
        assert np.abs(other - gold).max() > 0, "the second FFT must actually differ"
        margins.append(_margin(other, gold, fbank_bounds(wave, cfg)))
    assert margins and max(margins) < 1.0, margins


def _normalized(fb: torch.Tensor, cfg: ASTFEConfig) -> np.ndarray:
    out = torch.zeros(cfg.max_length, cfg.num_mel_bins)
    n = min(fb.shape[1], cfg.max_length)
    out[:n] = fb[0, :n]
    return ((out - cfg.mean) / (2 * cfg.std)).numpy()


BUGS = {
    "povey window": lambda w, cfg: _normalized(kaldi_fbank(w, window_type="povey", num_mel_bins=cfg.num_mel_bins), cfg),
    "no preemphasis": lambda w, cfg: _normalized(kaldi_fbank(w, preemphasis_coefficient=0.0,
                                                             num_mel_bins=cfg.num_mel_bins), cfg),
    "one sample late": lambda w, cfg: ast_features(torch.roll(w, 1, -1), cfg)[0].numpy(),
    "1e-3 bias on one mel bin": lambda w, cfg: ast_features(w, cfg)[0].numpy() + np.eye(cfg.num_mel_bins)[64] * 1e-3,
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_fbank_model_rejects_real_bugs(bug):
    for case, cfg, wave, gold in _windows():
        assert _margin(BUGS[bug](wave, cfg), gold, fbank_bounds(wave, cfg)) > 1.0, (case.name, bug)


def test_input_delta_widens_the_bound_only_as_derived():
    case, cfg, wave, gold = next(_windows())
    base = fbank_bounds(wave, cfg)
    wider = fbank_bounds(wave, cfg, input_delta=1e-6)
    assert np.all(wider >= base) and wider.max() > base.max()
    noise = 3e-5 * torch.randn(wave.shape, generator=torch.Generator().manual_seed(0))  # 30x past the allowance
    bumped = ast_features(wave + noise, cfg)[0].numpy()
    assert _margin(bumped, gold, wider) > 1.0


def test_hf_table_rules():
    assert rule_for("A.waveform", PORTABLE, "hf").name == "abs 1e-05"  # not the OrcaHello EXACT rule
    assert rule_for("A.waveform", PORTABLE).name.startswith("exact")
    assert rule_for("M.hidden_states.7", STRICT, "hf") is rule_for("Y.logits", STRICT, "hf")
    assert rule_for("F.attention_mask (golden input)", PORTABLE, "hf").name.startswith("exact")


def test_row_rule_rejects_a_perturbed_hidden_state():
    case = load_case(HF / "cases" / "wavlm__tones16k.json")
    h = case.window(0)["M.hidden_states.1"]
    scale = float(h[0, 5].abs().max())
    bad = h.clone()
    bad[0, 5, 3] += 3e-5 * scale + 1e-5  # one element of one frame vector, just past the row rule
    assert not compare_rule("M.hidden_states.1", h, bad, STRICT, family="hf").passed
    ok = h.clone()
    ok[0, 5, 3] += 0.5e-5 * scale  # inside it
    assert compare_rule("M.hidden_states.1", h, ok, PORTABLE, family="hf").passed


@pytest.mark.parity
@pytest.mark.parametrize("name", ["ast__stereo44k1", "ast__tones16k__numpy-fbank", "sewd__stereo48k",
                                  "w2v2-large__tones16k"])
def test_portable_tier_passes_on_a_foreign_machine(name):
    (run,) = run_parity(Path(HF / "cases" / f"{name}.json"), None, "cpu", running=FOREIGN)
    assert run.tier.name == PORTABLE
    assert run.report.passed, run.report.summary()
    assert any(s.rule.startswith("FFT error model") for s in run.report.stages if s.stage.startswith("F."))


def _ast_window():
    from porting.families.hf.detect import HFDetector

    case = load_case(HF / "cases" / "ast__stereo44k1.json")
    det = HFDetector.load(case.model_path, fbank_backend=fbank_backend(case))
    return det.model, case.window(case.stored_windows[1])


def test_portable_tier_propagates_a_foreign_F_difference_to_first_order():
    """Chained M stages on another CPU: an F difference of the cross-machine size (measured AMD vs the Intel capture:
    mean 1.4e-6, p99 2e-5, max 2.9e-4; here 2e-5 sd on every element) moves the hidden states past the row rule;
    around golden + J dF (porting.families.hf.parity._propagated) they are back inside it."""
    from porting.families.hf.parity import _propagated

    model, gold = _ast_window()
    f = gold["F.input_values"] + 2e-5 * torch.randn(gold["F.input_values"].shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        port = model.stages(f)
    shifted = _propagated(model, gold, {"F.input_values": f}, {})
    stages = [k for k in gold if k.startswith("M.hidden_states.")]
    assert stages and set(stages) <= set(shifted)
    assert not all(compare_rule(k, gold[k], port[k], PORTABLE, family="hf").passed for k in stages)
    for k in stages:
        assert compare_rule(k, shifted[k], port[k], PORTABLE, family="hf").passed, k


def test_propagation_does_not_explain_a_model_bug():
    """A 1e-3 relative error in one attention projection is not an F difference: still a failure."""
    from porting.families.hf.parity import _propagated

    model, gold = _ast_window()
    f = gold["F.input_values"] + 2e-5 * torch.randn(gold["F.input_values"].shape, generator=torch.Generator().manual_seed(1))
    shifted = _propagated(model, gold, {"F.input_values": f}, {})
    weight = next(p for n, p in model.named_parameters() if n.endswith("attention.query.weight"))
    with torch.no_grad():
        weight.mul_(1.001)
    with torch.inference_mode():
        port = model.stages(f)
    last = max(k for k in gold if k.startswith("M.hidden_states."))
    assert not compare_rule(last, shifted[last], port[last], PORTABLE, family="hf").passed


def _exact_log_fbank(wave: torch.Tensor) -> np.ndarray:
    """The kaldi fbank in float64 throughout (the value both float32 results are bounded around)."""
    from porting.dsp.kaldi import kaldi_mel_banks

    x = wave.double().reshape(-1).numpy()
    n = 1 + (x.size - 400) // 160
    fr = x[np.arange(400)[None, :] + 160 * np.arange(n)[:, None]]
    fr = fr - fr.mean(axis=1, keepdims=True)
    fr = np.concatenate([fr[:, :1] * (1 - 0.97), fr[:, 1:] - 0.97 * fr[:, :-1]], axis=1) * np.hanning(400)
    power = np.abs(np.fft.rfft(fr, n=512, axis=-1)) ** 2
    fb = kaldi_mel_banks(128, 512, 16000.0).numpy().astype(np.float64)
    return np.log(np.maximum(power @ fb.T, 1.1920928955078125e-07))


def test_every_float32_fbank_lies_within_half_the_bound_of_the_exact_one(monkeypatch):
    """The gate is the interval width (both results inside it); so each result -- the Intel capture's, this machine's,
    pocketfft's -- must lie within half of it around the float64 fbank."""
    checked = 0
    for case, cfg, wave, gold in _windows():
        if fbank_backend(case) != "torchaudio-kaldi":
            continue
        exact = (_exact_log_fbank(wave) - cfg.mean) / (2 * cfg.std)
        n = exact.shape[0]
        half = fbank_bounds(wave, cfg)[:n] / 2 + 1e-12
        ours = ast_features(wave, cfg)[0].numpy()[:n]
        with monkeypatch.context() as m:
            m.setattr(torch.fft, "rfft", _scipy_rfft)
            pocket = ast_features(wave, cfg)[0].numpy()[:n]
        for name, got in (("golden", gold[:n]), ("this machine", ours), ("pocketfft", pocket)):
            assert _margin(got, exact, half) < 1.0, (case.name, name)
        checked += 1
    assert checked >= 6
