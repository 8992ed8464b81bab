"""golden/hf/: the Hugging Face golden store is complete, self-consistent and says what it holds.

No transformers here: the checks recompute what the case JSONs and the store's own files imply (window
plan from the resampled length, tensor shapes from config.json, sha256 of every referenced file) and a
few stage semantics that need only numpy/soundfile/torch (README "Hugging Face family" quirks).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from conftest import ROOT
from porting.golden import verify_store

HF = ROOT / "golden" / "hf"
CASES = sorted((HF / "cases").glob("*.json"))
STAGE_ORDER_HEAD = ["A.waveform", "F.input_values"]


def _meta(p: Path) -> dict:
    return json.loads(p.read_text())


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _ok_cases():
    return [p for p in CASES if not _meta(p).get("error")]


def _conv_len(n: int, kernels, strides) -> int:
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    return n


@pytest.fixture(scope="module")
def tensors():
    cache: dict[str, dict] = {}

    def get(p: Path) -> dict:
        if p.stem not in cache:
            cache[p.stem] = load_file(str(p.with_suffix(".safetensors")))
        return cache[p.stem]

    return get


def test_store_verifies_against_its_manifest():
    res = verify_store(HF)
    assert res.ok, res.problems()
    manifest = json.loads((HF / "MANIFEST.json").read_text())
    assert sorted(manifest["cases"]) == [p.stem for p in CASES]


def test_store_has_the_planned_cases():
    names = {p.stem for p in CASES}
    models = ["w2v2-base", "w2v2-large", "hubert", "wavlm", "sewd", "ast", "custom-mean", "custom-sum", "custom-max"]
    for m in models:
        for r in ("tones16k", "stereo44k1", "stereo48k"):
            assert f"{m}__{r}" in names
    for r in ("tones16k", "stereo44k1", "stereo48k"):
        assert f"ast__{r}__numpy-fbank" in names
    assert _meta(HF / "cases" / "w2v2-base__short16k.json")["error"]["type"] == "TooShort"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case_refers_to_files_with_the_recorded_sha256(path):
    m = _meta(path)
    assert m["case"] == path.stem and m["family"] == "hf"
    mdir = HF / "models" / m["model"]["dir"]
    assert _sha(mdir / m["model"]["weights_file"]) == m["model"]["weights_sha256"] == m["model"]["sha256"]
    assert _sha(mdir / "config.json") == m["model"]["config_sha256"]
    assert _sha(mdir / "preprocessor_config.json") == m["model"]["preprocessor_sha256"]
    assert json.loads((mdir / "preprocessor_config.json").read_text()) == m["frontend"]["preprocessor"]
    wav = HF / "audio" / m["audio"]["file"]
    assert _sha(wav) == m["audio"]["sha256"]
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        m["audio"]["sample_rate"], m["audio"]["channels"], m["audio"]["frames"], m["audio"]["subtype"])
    cfg = json.loads((mdir / "config.json").read_text())
    assert m["model"]["architecture"] == cfg["architectures"][0]
    assert m["labels"] == [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    if m.get("error"):
        assert not path.with_suffix(".safetensors").exists()


def test_recordings_are_what_the_brief_asks_for():
    expect = {"tones16k.wav": (16000, 1, "PCM_16", 3.3), "stereo44k1.flac": (44100, 2, "PCM_24", 2.7),
              "stereo48k.wav": (48000, 2, "FLOAT", 2.2), "short16k.wav": (16000, 1, "PCM_16", 0.6)}
    for name, (sr, ch, sub, dur) in expect.items():
        info = sf.info(str(HF / "audio" / name))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (sr, ch, sub, round(sr * dur)), name
    left, right = sf.read(str(HF / "audio" / "stereo44k1.flac"), dtype="float32")[0].T
    assert np.abs(left - right).max() > 0.1  # the channels differ, so the downmix matters


def _plan(n: int, W: int, H: int):
    starts = list(range(0, n - W + 1, H))
    lengths, partial, unscored = [W] * len(starts), [False] * len(starts), 0
    if starts and n > starts[-1] + W:
        ts = starts[-1] + H
        if n - ts >= W // 2:
            starts, lengths, partial = starts + [ts], lengths + [n - ts], partial + [True]
        else:
            unscored = n - (starts[-1] + W)
    return starts, lengths, partial, unscored


@pytest.mark.parametrize("path", _ok_cases(), ids=lambda p: p.stem)
def test_windows_follow_the_plan_and_tensors_have_the_implied_shapes(path, tensors):
    m = _meta(path)
    w = m["windows"]
    sr_in = m["audio"]["sample_rate"]
    assert w["resampled_samples"] == -(-m["audio"]["frames"] * 16000 // sr_in)  # librosa: ceil(frames * 16k / sr)
    assert w["window_samples"] == round(w["window_s"] * 16000) and w["hop_samples"] == round(w["hop_s"] * 16000)
    starts, lengths, partial, unscored = _plan(w["resampled_samples"], w["window_samples"], w["hop_samples"])
    assert (w["starts"], w["lengths"], w["partial"], w["unscored_tail_samples"]) == (starts, lengths, partial, unscored)
    assert m["n_windows"] == len(starts)
    full = [i for i, p in enumerate(partial) if not p]
    rule = sorted({0, full[-1], *[i for i, p in enumerate(partial) if p]})
    assert m["stored_windows"] == (rule if m["store_budget"]["max_bytes"] is None else [])

    cfg = json.loads((HF / "models" / m["model"]["dir"] / "config.json").read_text())
    pre = m["frontend"]["preprocessor"]
    K = len(m["labels"])
    L = cfg["num_hidden_layers"]
    ast = m["model"]["architecture"] == "ASTForAudioClassification"
    stages = m["stages"]
    assert stages[:2] == STAGE_ORDER_HEAD and stages[-2:] == ["Y.logits", "Y.probs"]
    assert [s for s in stages if s.startswith("M.hidden_states.")] == [f"M.hidden_states.{i}" for i in range(L + 1)]
    assert ("F.attention_mask" in stages) == bool(pre.get("return_attention_mask"))
    t = tensors(path)
    assert set(t) == {"all.logits", "all.probs"} | {f"w{i}/{s}" for i in m["stored_windows"] for s in stages}
    assert list(t["all.logits"].shape) == list(t["all.probs"].shape) == [len(starts), K]
    assert {k: list(v.shape) for k, v in t.items()} == m["tensor_shapes"]
    H = cfg["hidden_size"]
    for i in m["stored_windows"]:
        n = lengths[i]
        shape = lambda s: list(t[f"w{i}/{s}"].shape)  # noqa: E731
        assert shape("A.waveform") == [1, n]
        if ast:
            f_out = (cfg["num_mel_bins"] - cfg["patch_size"]) // cfg["frequency_stride"] + 1
            t_out = (cfg["max_length"] - cfg["patch_size"]) // cfg["time_stride"] + 1
            assert shape("F.input_values") == [1, pre["max_length"], pre["num_mel_bins"]]
            assert shape("M.features") == [1, 2 + f_out * t_out, H]
            hidden = [1, 2 + f_out * t_out, H]
            pooled = H
        else:
            assert shape("F.input_values") == [1, n]
            T = _conv_len(n, cfg["conv_kernel"], cfg["conv_stride"])
            assert shape("M.features") == [1, cfg["conv_dim"][-1], T]
            hidden = [1, T // cfg.get("squeeze_factor", 1), H]  # SEW-D's encoder runs on the squeezed sequence
            pooled = H if cfg["architectures"][0] == "Wav2Vec2ForSpeechClassification" else cfg["classifier_proj_size"]
        for j in range(L + 1):
            assert shape(f"M.hidden_states.{j}") == hidden
        assert shape("M.pooled") == [1, pooled]
        assert shape("Y.logits") == shape("Y.probs") == [1, K]
        assert torch.equal(t[f"w{i}/Y.logits"][0], t["all.logits"][i])
        assert torch.equal(t[f"w{i}/Y.probs"][0], t["all.probs"][i])
        for s in stages:
            want = torch.int32 if s == "F.attention_mask" else torch.float32
            assert t[f"w{i}/{s}"].dtype == want, s
        if "F.attention_mask" in stages:
            assert bool((t[f"w{i}/F.attention_mask"] == 1).all())  # one unpadded window: all ones
    for i, row in enumerate(m["scores"]):
        assert row["logits"] == t["all.logits"][i].tolist() and row["probs"] == t["all.probs"][i].tolist()


@pytest.mark.parametrize("path", _ok_cases(), ids=lambda p: p.stem)
def test_probs_are_the_activation_of_the_logits(path, tensors):
    m = _meta(path)
    t = tensors(path)
    assert m["activation"] == "softmax"
    p = t["all.probs"].double()
    assert (p.sum(-1) - 1).abs().max().item() <= 1e-6
    assert (p - torch.softmax(t["all.logits"].double(), -1)).abs().max().item() <= 1e-6
    assert t["all.logits"].abs().max().item() > 0.5  # the scaled heads give non-trivial logits


def _case(name):
    return HF / "cases" / f"{name}.json"


def test_pcm16_waveform_is_the_file_read_as_float32(tensors):
    """tones16k is 16 kHz already: librosa.load does not resample, A.waveform is soundfile's float32 read."""
    m = _meta(_case("w2v2-base__tones16k"))
    t = tensors(_case("w2v2-base__tones16k"))
    y, _ = sf.read(str(HF / "audio" / "tones16k.wav"), dtype="float32")
    for i in m["stored_windows"]:
        s, n = m["windows"]["starts"][i], m["windows"]["lengths"][i]
        assert np.array_equal(t[f"w{i}/A.waveform"][0].numpy(), y[s : s + n])


@pytest.mark.parametrize("rec", ["stereo44k1", "stereo48k"])
def test_stereo_waveform_is_channel_mean_then_soxr_hq(rec, tensors):
    """librosa.load(sr=16000): float32 channel mean (to_mono), then soxr 'HQ' (core/audio.py load/resample)."""
    soxr = pytest.importorskip("soxr", reason="soxr is needed to recompute the resampling")
    name = f"w2v2-base__{rec}"
    m, t = _meta(_case(name)), tensors(_case(name))
    d, sr = sf.read(str(HF / "audio" / m["audio"]["file"]), dtype="float32")
    y = soxr.resample(d.mean(axis=1), sr, 16000, quality="soxr_hq")
    assert y.shape[0] == m["windows"]["resampled_samples"]
    for i in m["stored_windows"]:
        s, n = m["windows"]["starts"][i], m["windows"]["lengths"][i]
        assert np.abs(t[f"w{i}/A.waveform"][0].numpy() - y[s : s + n]).max() <= 1e-6


def test_wav2vec2_fe_normalizes_each_window_with_eps_1e_7(tensors):
    """Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7), float32, per window."""
    name = "w2v2-large__tones16k"
    m, t = _meta(_case(name)), tensors(_case(name))
    worst_eps, worst_noeps = 0.0, 0.0
    for i in m["stored_windows"]:
        x = t[f"w{i}/A.waveform"][0].numpy()
        f = t[f"w{i}/F.input_values"][0].numpy()
        worst_eps = max(worst_eps, float(np.abs((x - x.mean()) / np.sqrt(x.var() + 1e-7) - f).max()))
        worst_noeps = max(worst_noeps, float(np.abs((x - x.mean()) / np.sqrt(x.var()) - f).max()))
    assert worst_eps <= 1e-6 < worst_noeps  # the epsilon is visible at this signal level


def test_ast_pads_fbank_frames_before_normalizing(tensors):
    """ASTFeatureExtractor: kaldi fbank of 1 + (n-400)//160 frames, zero rows up to max_length, THEN
    (x - mean) / (2 * std): the padded rows hold (0 - mean) / (2 * std), not 0."""
    for name in ("ast__tones16k", "ast__tones16k__numpy-fbank"):
        m, t = _meta(_case(name)), tensors(_case(name))
        pre = m["frontend"]["preprocessor"]
        pad = np.float32((0 - pre["mean"]) / (pre["std"] * 2))
        for i in m["stored_windows"]:
            frames = 1 + (m["windows"]["lengths"][i] - 400) // 160
            f = t[f"w{i}/F.input_values"][0].numpy()
            assert frames < pre["max_length"]
            assert np.all(f[frames:] == pad), (name, i)
            assert not np.any(np.all(f[:frames] == pad, axis=1))


def test_ast_numpy_fbank_is_close_to_but_not_kaldi(tensors):
    a, b = tensors(_case("ast__tones16k")), tensors(_case("ast__tones16k__numpy-fbank"))
    d = (a["w0/F.input_values"] - b["w0/F.input_values"]).abs().max().item()
    assert 0 < d < 1e-3
    assert _meta(_case("ast__tones16k"))["frontend"]["fbank_backend"] == "torchaudio-kaldi"
    assert _meta(_case("ast__tones16k__numpy-fbank"))["frontend"]["fbank_backend"] == "numpy"


@pytest.mark.parametrize("mode", ["mean", "sum", "max"])
def test_custom_head_pools_the_last_hidden_state(mode, tensors):
    name = f"custom-{mode}__tones16k"
    m, t = _meta(_case(name)), tensors(_case(name))
    L = len([s for s in m["stages"] if s.startswith("M.hidden_states.")]) - 1
    for i in m["stored_windows"]:
        h = t[f"w{i}/M.hidden_states.{L}"].double()
        ref = {"mean": h.mean(1), "sum": h.sum(1), "max": h.max(1)[0]}[mode]
        # relative: sum pooling over 49 frames gives |pooled| ~ 100, where one float32 ulp is 7.6e-6
        assert bool(((ref - t[f"w{i}/M.pooled"].double()).abs() <= 1e-6 * (1 + ref.abs())).all())
        if mode == "max":
            assert torch.equal(ref.float(), t[f"w{i}/M.pooled"])  # max is exact


def test_hop1_case_records_an_unscored_tail():
    w = _meta(_case("w2v2-base__tones16k__hop1"))["windows"]
    assert w["hop_samples"] == w["window_samples"] == 16000
    assert w["unscored_tail_samples"] == 52800 - 48000 and w["unscored_tail_start"] == 48000
    assert not any(w["partial"])


def test_weight_files_and_weight_norm_keys():
    for d in sorted(p for p in (HF / "models").iterdir() if p.is_dir()):
        names = {p.name for p in d.iterdir()}
        weights = "pytorch_model.bin" if d.name == "custom-max" else "model.safetensors"
        assert {"config.json", "preprocessor_config.json", weights} <= names, d.name
    for p in _ok_cases():
        m = _meta(p)
        if m["model"]["architecture"] != "ASTForAudioClassification":
            assert any(k.endswith("pos_conv_embed.conv.parametrizations.weight.original0") for k in m["model"]["weight_norm_keys"])


def test_fingerprint_and_env_describe_the_reference_venv():
    fp = json.loads((HF / "fingerprint.json").read_text())
    assert fp["format"] == "porting.fingerprint/1" and fp["torch"].startswith("2.9.1")
    env = json.loads((HF / "env.json").read_text())
    assert "transformers==4.57.1" in env["pip_freeze"]
    assert any(line.startswith("torchaudio==2.9.1") for line in env["pip_freeze"])
