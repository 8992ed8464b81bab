"""The librosa-mel CNN family without goldens: the YAML reader against PyYAML, the librosa frontend against librosa
itself, the error model both ways, the run-directory reader's one-line refusals, and the CLI on a run directory."""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from porting.errors import MalformedModelError, PortingError, UnsafePickleError, UnsupportedModelError
from porting.io.yamlconf import read_yaml, resolve

HYDRA = """\
system:
  audio_data_directory: ../../../Components/Store/d:\\data\\b3
  cache_directory: .cache
  use_disk_cache: true
data:
  audio_clip_duration: 2
  sample_rate: 32000
  n_fft: 1024
  hop_length: 320
  n_mels: 64
  fmin: 50
  fmax: 14000
  top_db: 80
  num_classes: -1
run:
  checkpoint_path: ./outputs/2025-08-23/18-50-17/best_efficientnet_v2_qat.pth
training:
  learning_rate: 0.001
  use_arcface: arcface
  arcface:
    s: 30
    m: 0.5
  optimizer:
    _target_: torch.optim.AdamW
    lr: ${training.learning_rate}
    weight_decay: 0.1
augmentations:
  audio:
    _target_: audiomentations.Compose
    transforms:
    - _target_: audiomentations.AddGaussianNoise
      min_amplitude: 0.001
      p: 0.2
    - _target_: audiomentations.Shift
      min_shift: -0.5
      nested:
      - - 1
        - 2.5
      - []
model:
  name: efficientnet_v2
  params:
    model_name: efficientnet_v2_s
    pretrained: true
    num_classes: ${data.num_classes}
    use_arcface: true
"""


# ------------------------------------------------------------------------------------------------ YAML


def test_yaml_reads_a_hydra_dump_as_pyyaml_does(tmp_path):
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) is the oracle")
    p = tmp_path / "config.yaml"
    p.write_text(HYDRA + "extra:\n  q: 'it''s'\n  d: \"tab\\there\"\n  e: {}\n  f: [a, 1, 2.5e+3, null]\n  h: 0x1f\n")
    assert read_yaml(p) == yaml.safe_load(p.read_text())
    assert resolve(read_yaml(p), "model.params.num_classes") == -1
    assert resolve(read_yaml(p), "training.optimizer.lr") == 0.001


def test_yaml_floats_follow_omegaconf_where_pyyaml_differs(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 1e-3\nx: .inf\ny: -2_000\n")
    assert read_yaml(p) == {"lr": 0.001, "x": float("inf"), "y": -2000}


@pytest.mark.parametrize("text,what", [
    ("a: !!python/object/apply:os.system ['echo hi']\n", "tags"),
    ("a: &x 1\nb: *x\n", "anchors"),
    ("a: |\n  two\n  lines\n", "block scalars"),
    ("a: 1\na: 2\n", "appears twice"),
    ("a:\n\tb: 1\n", "tab"),
    ("a: 1\n    b: 2\n", "deeper"),
    ("- 1\n- 2\n", "a YAML list at the top"),
    ("a: 'open\n", "single-quoted"),
])
def test_yaml_refuses_what_a_configuration_never_holds_in_one_line(tmp_path, text, what):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(MalformedModelError) as e:
        read_yaml(p)
    assert what in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ frontend

CONFIGS = [(48000, 2048, 923, 260, 20.0, 13000.0, 48000 * 5), (32000, 1024, 320, 64, 50.0, 14000.0, 32000 * 3)]


def _signal(n, sr, seed=0):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * (700 + 400 * t) * t) + 0.01 * rng.standard_normal(n)
    y[: n // 3] *= 1e-3  # a quiet third: bins near the top_db floor
    y[n // 2: n // 2 + 50] += 0.8  # a click
    return y.astype(np.float32)


def _librosa_stages(y, sr, n_fft, hop, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa", reason="librosa (dev extra) is the frontend's oracle")
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmin=fmin, fmax=fmax)
    db = librosa.power_to_db(mel, ref=np.max, top_db=80)
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) ** 2
    return power, mel, db, (db - db.min()) / (db.max() - db.min() + 1e-6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["echo-48k", "panns-32k"])
def test_frontend_matches_librosa(cfg):
    """The power spectrogram is bitwise librosa's (float64 FFT, numpy's complex64 magnitude); the mel GEMM differs
    in summation order only (1e-5 relative); dB within 1e-5 relative (an ulp of 64 dB is 7.6e-6), the model
    input within 1e-5."""
    from porting.dsp.convstft import slaney_mel
    from porting.dsp.librosamel import mel_power, minmax_clip, power_spectrogram, power_to_db_clip

    sr, n_fft, hop, n_mels, fmin, fmax, n = cfg
    y = _signal(n, sr)
    power, mel, db, inp = _librosa_stages(y, sr, n_fft, hop, n_mels, fmin, fmax)
    p = power_spectrogram(torch.from_numpy(y)[None], n_fft, hop)
    assert np.array_equal(p[0].T.numpy(), power)
    m = mel_power(p, torch.from_numpy(slaney_mel(sr, n_fft, n_mels, fmin, fmax)))
    assert np.all(np.abs(m[0].numpy() - mel) <= 1e-5 * mel + 1e-30)
    d = power_to_db_clip(m)
    x = minmax_clip(d)
    assert (np.abs(d[0].numpy() - db) <= 1e-5 + 1e-5 * np.abs(db)).all()  # 1-2 float32 ulps of ~60 dB
    assert np.abs(x[0].numpy() - inp).max() <= 1e-5


def test_every_window_is_normalised_alone():
    """ref=np.max, top_db and min-max are per clip: a window's input is the same alone and beside a loud one."""
    from porting.dsp.librosamel import minmax_clip, power_spectrogram, power_to_db_clip, mel_power
    from porting.dsp.convstft import slaney_mel

    y = torch.from_numpy(_signal(32000, 32000))[None]
    mb = torch.from_numpy(slaney_mel(32000, 1024, 64, 50.0, 14000.0))
    run = lambda w: minmax_clip(power_to_db_clip(mel_power(power_spectrogram(w, 1024, 320), mb)))  # noqa: E731
    alone = run(y)
    both = run(torch.cat([y, 30 * y.flip(1)]))
    assert torch.equal(alone[0], both[0])


def test_fit_clip_is_the_training_framework_eval_rule():
    from porting.dsp.librosamel import fit_clip

    x = torch.arange(10.0)[None]
    assert fit_clip(x, 4).tolist() == [[3.0, 4.0, 5.0, 6.0]]  # start (10 - 4) // 2
    assert fit_clip(x, 12).tolist() == [list(range(10)) + [0.0, 0.0]]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["echo-48k", "panns-32k"])
def test_error_model_holds_librosa_and_catches_wrong_frontends(cfg):
    """``librosa_mel_bounds`` accepts the port against librosa, and rejects reflect padding (torchlibrosa's), a hop
    one sample off and fmax moved by one mel band's width."""
    from porting.dsp.convstft import slaney_mel
    from porting.dsp.errormodel import librosa_mel_bounds
    from porting.dsp.librosamel import mel_power, minmax_clip, power_spectrogram, power_to_db_clip

    sr, n_fft, hop, n_mels, fmin, fmax, n = cfg
    y = _signal(n, sr, 1)
    _, mel, db, inp = _librosa_stages(y, sr, n_fft, hop, n_mels, fmin, fmax)
    mb = slaney_mel(sr, n_fft, n_mels, fmin, fmax)
    tol = librosa_mel_bounds(y, mb, n_fft, hop)

    def port(wave, hop_=hop, basis=mb, reflect=False):
        w = torch.from_numpy(wave)[None]
        if reflect:
            w = torch.nn.functional.pad(w[None], (n_fft // 2, n_fft // 2), mode="reflect")[0][:, n_fft // 2: -(n_fft // 2)]
        p = power_spectrogram(w, n_fft, hop_) if not reflect else _reflect_power(wave, n_fft, hop_)
        m = mel_power(p, torch.from_numpy(basis))
        d = power_to_db_clip(m)
        return m[0].numpy(), d[0].numpy(), minmax_clip(d)[0].numpy()

    m, d, x = port(y)
    assert (np.abs(m - mel) <= tol["F.mel"]).all()
    assert (np.abs(d - db) <= tol["F.db"]).all()
    assert (np.abs(x - inp) <= tol["F.input"]).all()
    tight = float(np.median(tol["F.input"]))
    assert tight < 1e-5, f"the model is no sharper than the strict tier ({tight:g})"
    _, _, x_reflect = port(y, reflect=True)
    assert (np.abs(x_reflect - inp) > tol["F.input"]).any()
    _, _, x_hop = port(y[: len(y) - len(y) % (hop + 1)], hop_=hop + 1)
    if x_hop.shape == inp.shape:
        assert (np.abs(x_hop - inp) > tol["F.input"]).any()
    wrong = slaney_mel(sr, n_fft, n_mels, fmin, fmax * 0.97)
    _, _, x_fb = port(y, basis=wrong)
    assert (np.abs(x_fb - inp) > tol["F.input"]).any()


def _reflect_power(wave, n_fft, hop):
    """torchlibrosa/torch.stft's reflect padding instead of librosa's zeros (a wrong port)."""
    from porting.dsp.librosamel import magnitude

    w = torch.from_numpy(wave).double()
    spec = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True).to(torch.complex64)
    return (magnitude(spec.real, spec.imag) ** 2).T[None]


# ------------------------------------------------------------------------------------------------ run directories


def _state(body: str, classes: int, cosine: bool, seed: int = 0) -> OrderedDict:
    from porting.families.melcnn.model import MelCnnClassifier

    fe = {"sample_rate": 32000, "clip_samples": 64000, "n_fft": 1024, "hop_length": 320, "n_mels": 64, "fmin": 50.0,
          "fmax": 14000.0, "top_db": 80.0, "amin": 1e-10, "minmax_eps": 1e-6}
    net = MelCnnClassifier(body, classes, fe, {"kind": "cosine" if cosine else "linear", "s": 30.0})
    from porting.synth import weight

    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, t in net.state_dict().items():  # He-scaled weights: activations keep their scale (no denormals)
        if t.dim() > 1:
            out[k] = torch.from_numpy(weight(k, t.shape, seed))
        elif k.endswith("running_var") or k.endswith(".weight"):
            out[k] = torch.rand(t.shape, generator=g) * 0.5 + 0.75
        elif t.dtype.is_floating_point:
            out[k] = torch.randn(t.shape, generator=g) * 0.1
        else:
            out[k] = t.clone()
    # calibrate every BatchNorm on real inputs (cumulative statistics), as training would: the body stays
    # well-conditioned, so float32 reorderings (ONNX, another ISA) stay within the contract
    net.load_state_dict(out)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        waves = torch.stack([torch.from_numpy(_signal(64000, 32000, s)) * (0.2 + s) for s in range(4)])
        net.body(net.model_input(waves))
    net.eval()
    from porting.families.melcnn.bodies import MBlock

    for m in net.modules():  # residual branches scaled down, as trained ones are (else 40 random blocks are chaotic)
        if isinstance(m, MBlock) and m.residual:
            m.block[-1][1].weight.data.mul_(0.2)
            m.block[-1][1].bias.data.mul_(0.2)
    return OrderedDict((k, t.detach().clone()) for k, t in net.state_dict().items())


@pytest.fixture(scope="module")
def effnet_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "2025-08-23" / "18-50-17"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(HYDRA)
    (d / "class_names.txt").write_text("Acanthiza pusilla\nCorvus coronoides\nDacelo novaeguineae\n")
    torch.save(_state("efficientnet_v2_s", 3, True), d / "best_efficientnet_v2.pth")
    return d


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    shutil.copy(run / ".hydra" / "config.yaml", out / ".hydra" / "config.yaml")
    shutil.copy(run / "class_names.txt", out / "class_names.txt")
    os.symlink(run / "best_efficientnet_v2.pth", out / "best_efficientnet_v2.pth")
    return out


def test_reads_a_run_directory(effnet_run):
    from porting.families.melcnn.reader import read_run

    spec = read_run(effnet_run)
    assert spec.body == "efficientnet_v2_s" and spec.head == {"kind": "cosine", "s": 30.0, "source": "training.arcface.s"}
    assert spec.labels[0] == "Acanthiza pusilla" and spec.frontend["clip_samples"] == 64000
    assert read_run(effnet_run / "best_efficientnet_v2.pth").sha256 == spec.sha256


def _edit_config(run: Path, old: str, new: str):
    p = run / ".hydra" / "config.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))


@pytest.mark.parametrize("old,new,err,words", [
    ("model_name: efficientnet_v2_s", "model_name: resnet50", UnsupportedModelError, "model.params.model_name"),
    ("  n_mels: 64\n", "", MalformedModelError, "no data.n_mels"),
    ("hop_length: 320", "hop_length: 4096", MalformedModelError, "data.hop_length"),
    ("    use_arcface: true", "    use_arcface: false", MalformedModelError, "no head.bias"),
    ("  use_arcface: arcface", "  use_arcface: triplet", UnsupportedModelError, "training.use_arcface"),
    ("  name: efficientnet_v2\n", "  name: efficientnet_v2\n  norm_choice: swap_rms_norm\n", UnsupportedModelError,
     "norm_choice"),
])
def test_bad_run_configs_fail_in_one_line_naming_the_field(effnet_run, tmp_path, old, new, err, words):
    from porting.families.melcnn.reader import read_run

    run = _copy(effnet_run, tmp_path)
    _edit_config(run, old, new)
    with pytest.raises(err) as e:
        read_run(run)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_cnn14_run_with_fewer_than_32_mel_bins_fails_in_one_line(effnet_run, tmp_path):
    """CNN14 pools five times by 2: 16 mel bins would reach a 0-size map deep in the body; refused at read."""
    from porting.families.melcnn.reader import read_run

    run = _copy(effnet_run, tmp_path)
    _edit_config(run, "model_name: efficientnet_v2_s", "model_name: panns_cnn14")
    _edit_config(run, "n_mels: 64", "n_mels: 16")
    with pytest.raises(UnsupportedModelError) as e:
        read_run(run)
    assert "at least 32 mel bins" in str(e.value) and "\n" not in str(e.value)


def _save(run: Path, state):
    p = run / "best_efficientnet_v2.pth"
    p.unlink()
    torch.save(state, p)


@pytest.mark.parametrize("edit,words", [
    (lambda s: s.pop("features.3.1.block.0.1.running_var"), "missing features.3.1.block.0.1.running_var"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected extra.weight"),
    (lambda s: s.__setitem__("features.0.0.weight", torch.zeros(24, 3, 3, 3)), "features.0.0.weight has shape"),
    (lambda s: s.__setitem__("features.0.0.activation_post_process.scale", torch.ones(1)), "int8 / QAT"),
])
def test_checkpoints_that_do_not_match_fail_naming_the_key(effnet_run, tmp_path, edit, words):
    from porting.families.melcnn.reader import read_run

    run = _copy(effnet_run, tmp_path)
    state = _state("efficientnet_v2_s", 3, True)
    edit(state)
    _save(run, state)
    with pytest.raises(PortingError) as e:
        read_run(run)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_class_names_must_match_the_head(effnet_run, tmp_path):
    from porting.families.melcnn.reader import read_run

    run = _copy(effnet_run, tmp_path)
    (run / "class_names.txt").write_text("one\ntwo\n")
    with pytest.raises(MalformedModelError, match="2 class names, but the head has 3"):
        read_run(run)


def test_a_payload_in_the_checkpoint_runs_nothing(effnet_run, tmp_path):
    import pickle

    from porting.families.melcnn.reader import read_run

    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    run = _copy(effnet_run, tmp_path)
    (run / "best_efficientnet_v2.pth").unlink()
    with open(run / "best_efficientnet_v2.pth", "wb") as f:
        pickle.dump({"model_state_dict": {"head.weight": Payload()}}, f)
    with pytest.raises(UnsafePickleError, match="nothing was executed"):
        read_run(run)
    assert not canary.exists()


def test_cli_inspect_convert_detect_on_a_run_directory(effnet_run, tmp_path):
    """``port convert`` of a run, then ``port detect`` of the converted folder and of the run give the same
    probabilities; the tail window is zero-padded to the clip (partial)."""
    import soundfile as sf
    from typer.testing import CliRunner

    from porting.cli import app

    wav = tmp_path / "rec.wav"
    sf.write(wav, _signal(int(5.2 * 44100), 44100, 3), 44100)
    r = CliRunner().invoke(app, ["inspect", str(effnet_run)])
    assert r.exit_code == 0 and "efficientnet_v2_s" in r.output and "s·cos θ, s = 30" in r.output
    out = tmp_path / "conv"
    r = CliRunner().invoke(app, ["convert", str(effnet_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["family"] == "melcnn" and cfg["bn_eps"] == 1e-5 and cfg["head"]["kind"] == "cosine"
    got = []
    for model in (out, effnet_run):
        js = tmp_path / f"{model.name}.json"
        r = CliRunner().invoke(app, ["detect", str(wav), "--model", str(model), "--json", str(js), "--backend", "torch"])
        assert r.exit_code == 0, r.output
        got.append(json.loads(js.read_text())["files"][0])
    assert got[0]["n_windows"] == 3 and [w["partial"] for w in got[0]["windows"]] == [False, False, True]
    assert [w["probs"] for w in got[0]["windows"]] == [w["probs"] for w in got[1]["windows"]]
