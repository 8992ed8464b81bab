"""porting.parity.report: provenance, rows shown once (with computed evidence), figures, no-matplotlib fallback.

Runs are built from golden tensors with known perturbations (no model is run), so which rows repeat which,
and every provenance value, is known independently of the code under test.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import torch

from conftest import COMMITTED, ROOT
from porting.golden import load_case
from porting.families.orcahello.report import HOP_S
from porting.parity.compare import ParityReport, compare, compare_rule
from porting.parity.contract import GOLDEN_INPUT, STRICT, Tier
from porting.parity.fingerprint import describe, load_fingerprint, machine_fingerprint
from porting.parity.report import confidence_figure, duplicates, locate_store, spectrogram_figure, write_report
from porting.families.orcahello.parity import ALL, CHAINED, ISOLATED, CaseRun, worst_arrays

HINT = "pip install 'porting[report]'"
SHORT = "rn18__pcm16_16k_short"  # 2 windows, mono
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def _run(name: str, capture: str = "golden", chained: dict | None = None, isolated: dict | None = None) -> CaseRun:
    """A CaseRun as `port parity` builds it, with the port's outputs = the golden's except where given."""
    cap_dir = COMMITTED if capture == "golden" else COMMITTED / "captures" / capture
    case = load_case(cap_dir / "cases" / f"{name}.json")
    g, stored = case.tensors, case.stored_windows
    actual = {k: v.clone() for k, v in g.items()}
    actual.update(chained or {})
    for stage in ISOLATED:
        actual[stage + GOLDEN_INPUT] = (isolated or {}).get(stage, g[stage].clone())
    stages = compare(g, actual, stored, STRICT, stages=CHAINED)
    stages += [compare_rule(s + GOLDEN_INPUT, g[s], actual[s + GOLDEN_INPUT], STRICT, None, stored) for s in ISOLATED]
    stages += compare(g, actual, tier=STRICT, stages=ALL)
    conf = (g["all.confidence"].double().numpy(), actual["all.confidence"].double().numpy())
    fp = load_fingerprint(cap_dir)
    return CaseRun(ParityReport(case.name, "cpu", stages, capture=capture), worst_arrays(stages, g, actual, stored),
                   conf, Tier(STRICT, "test"), capture, fp)


def _bumped(t: torch.Tensor, delta: float) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[min(7, out.numel() - 1)] += delta
    return out


def _table_stages(text: str, section: str) -> list[str]:
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", body, flags=re.M)


def test_provenance_lists_real_values(tmp_path):
    runs = [_run(SHORT), _run(SHORT, "amd-epyc-zen4")]
    text = write_report(runs, tmp_path / "rep").read_text()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if head.returncode == 0 and top.stdout.strip() and top.stdout.strip() == str(ROOT):
        assert f"git commit `{head.stdout.strip()}" in text
    else:
        assert "git commit `unknown`" in text
    assert hashlib.sha256((COMMITTED / "MANIFEST.json").read_bytes()).hexdigest() in text
    meta = json.loads((COMMITTED / "cases" / f"{SHORT}.json").read_text())
    assert meta["model"]["sha256"] in text and meta["audio"]["sha256"] in text
    for name in ("numpy", "scipy", "soundfile", "torch"):
        assert f"{name} {metadata.version(name)}" in text
    try:
        assert f"onnxruntime {metadata.version('onnxruntime')}" in text
    except metadata.PackageNotFoundError:
        assert "onnxruntime not installed" in text
    assert describe(machine_fingerprint()) in text
    for cap_dir in (COMMITTED, COMMITTED / "captures" / "amd-epyc-zen4"):
        assert describe(json.loads((cap_dir / "fingerprint.json").read_text())) in text
    assert re.search(r"\| generated \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \|", text)
    vendor = machine_fingerprint()["cpu"]["vendor"]
    assert re.search(rf"^\| `cpu.vendor` \| {vendor} \|", text, flags=re.M)


def test_a_store_whose_values_differ_is_not_taken_for_the_golden(tmp_path):
    store = tmp_path / "store"
    (store / "cases").mkdir(parents=True)
    for f in (f"{SHORT}.json", f"{SHORT}.safetensors"):
        shutil.copy(COMMITTED / "cases" / f, store / "cases" / f)
    shutil.copy(COMMITTED / "fingerprint.json", store / "fingerprint.json")
    (store / "MANIFEST.json").write_text('{"format": "x", "files": {}, "cases": {}}')
    run = _run(SHORT)
    assert locate_store(run, store) == store.resolve()
    text = write_report([run], tmp_path / "rep", golden=store).read_text()
    assert hashlib.sha256((store / "MANIFEST.json").read_bytes()).hexdigest() in text

    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(store / "cases" / f"{SHORT}.safetensors"))
    tensors["B.mel_db"] = tensors["B.mel_db"] + np.float32(1.0)
    save_file(tensors, str(store / "cases" / f"{SHORT}.safetensors"))
    assert locate_store(run, store) is None
    text = write_report([run], tmp_path / "rep2", golden=store).read_text()
    assert "not located for" in text and hashlib.sha256((store / "MANIFEST.json").read_bytes()).hexdigest() not in text


def test_rows_with_the_same_numbers_are_shown_once(tmp_path):
    run = _run(SHORT)  # the port = the golden: every (golden input) row repeats its chained row
    dups = duplicates(run)
    assert {k: v[0] for k, v in dups.items()} == {
        "A.downmix": "A.segment",  # one channel
        "X.model_input": "C.padded",  # rn18 has no normalization
        **{s + GOLDEN_INPUT: s for s in ISOLATED},
    }
    assert "both equal the golden exactly" in dups["B.mel_db" + GOLDEN_INPUT][1]
    assert "no normalization" in dups["X.model_input"][1] and "bitwise in the drawn window" in dups["X.model_input"][1]
    md = write_report([run], tmp_path / "rep")
    text = md.read_text()
    section = f"{SHORT} vs golden (cpu)"
    assert _table_stages(text, section) == [s.stage for s in run.report.stages if s.stage not in dups]
    for stage in dups:
        assert text.count(f"- `{stage}`: ok, identical to `{dups[stage][0]}`") == 1
    if _has_matplotlib():
        names = sorted(p.name for p in (md.parent / f"{SHORT}__golden__cpu").glob("*.png"))
        assert names == ["A.segment.png", "A.waveform.png", "B.mel_db.png", "C.padded.png", "confidence.png",
                         "margins.png"]

    # the isolated B differs by one element: its row (and picture) come back
    g = load_case(COMMITTED / "cases" / f"{SHORT}.json").tensors
    run = _run(SHORT, isolated={"B.mel_db": _bumped(g["B.mel_db"], 1e-6)})
    assert "B.mel_db" + GOLDEN_INPUT not in duplicates(run)


def test_same_statistics_are_not_enough_when_the_input_differs():
    g = load_case(COMMITTED / "cases" / f"{SHORT}.json").tensors
    logits = _bumped(g["Y.logits"], 3e-6)
    # chained and isolated logits identical; the chained input (X) exact: the same numbers, said so
    run = _run(SHORT, chained={"Y.logits": logits}, isolated={"Y.logits": logits.clone()})
    note = duplicates(run)["Y.logits" + GOLDEN_INPUT][1]
    assert "the chained input equals the golden input bitwise (`X.model_input` max |diff| 0)" in note
    # the same logits, but the chained X is not the golden X: nothing shows the two rows hold the same numbers
    x = _bumped(g["X.model_input"], 1e-3)
    run = _run(SHORT, chained={"Y.logits": logits, "X.model_input": x, "C.padded": x.clone()},
               isolated={"Y.logits": logits.clone()})
    assert "Y.logits" + GOLDEN_INPUT not in duplicates(run)


def test_normalization_and_stereo_keep_their_rows():
    norm = duplicates(_run("sq11-norm__pcm16_16k_short"))
    assert "X.model_input" not in norm  # (x - mean) / std changes every value
    assert norm["A.downmix"][0] == "A.segment"  # a mono recording
    assert norm["C.padded" + GOLDEN_INPUT][0] == "C.padded"
    assert "A.downmix" not in duplicates(_run("rn18__stereo_pcm24_44k1"))  # two channels: the mean is new


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_figures_open_with_pillow_and_have_their_size(tmp_path):
    pytest.importorskip("matplotlib", reason="the `report` extra is not installed")
    from PIL import Image

    g = load_case(COMMITTED / "cases" / f"{SHORT}.json").tensors
    run = _run(SHORT, chained={"B.mel_db": _bumped(g["B.mel_db"], 1e-3)})
    md = write_report([run], tmp_path / "rep")
    links = LINK.findall(md.read_text())
    sizes = {}
    for rel in links:
        with Image.open(md.parent / rel) as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB"
            sizes[rel.rsplit("/", 1)[1]] = im.size
    assert sizes["B.mel_db.png"] == sizes["C.padded.png"] == (1600, 560)
    assert sizes["A.segment.png"] == sizes["A.waveform.png"] == sizes["confidence.png"] == (1600, 600)
    shown = len(_table_stages(md.read_text(), f"{SHORT} vs golden (cpu)"))
    assert sizes["margins.png"][0] == 1000 and abs(sizes["margins.png"][1] - (140 + 30 * shown)) <= 1
    # a failing stage draws its own figure; the chained B now differs from its golden-input row
    assert "B.mel_db_golden_input.png" in sizes
    # a second report into the same folder replaces the case's figures: none of the first one's is left behind
    md = write_report([_run(SHORT)], tmp_path / "rep")
    links = LINK.findall(md.read_text())
    assert sorted(p.relative_to(md.parent).as_posix() for p in md.parent.rglob("*.png")) == sorted(links)
    assert not any(link.endswith("B.mel_db_golden_input.png") for link in links)


def test_diff_scale_is_absolute_and_axes_are_labelled():
    mpl = pytest.importorskip("matplotlib", reason="the `report` extra is not installed")
    from porting.parity.report import _matplotlib

    g = load_case(COMMITTED / "cases" / f"{SHORT}.json").tensors
    norms = []
    for delta in (1e-7, 1e-2):
        port = g["B.mel_db"].clone()
        port[1, 0, 40, 90] += delta
        (s,) = compare(g, {"B.mel_db": port}, [0, 1], STRICT, stages=["B.mel_db"])
        fig = spectrogram_figure(_matplotlib(), s, g["B.mel_db"][1].numpy(), port[1].numpy(), 1, "legacy")
        diff_ax = next(ax for ax in fig.axes if ax.get_title().startswith("|port - legacy|"))
        im = diff_ax.images[0]
        assert isinstance(im.norm, mpl.colors.LogNorm)
        norms.append((im.norm.vmin, im.norm.vmax))
        left, right, low, high = im.get_extent()
        assert left == pytest.approx(1 - HOP_S / 2) and right == pytest.approx(1 + 156.5 * HOP_S)  # seconds
        assert (low, high) == (-0.5, 255.5)
        assert diff_ax.get_xlabel() == "time in the recording (s)"
        assert any(ax.get_ylabel() == "mel bin" for ax in fig.axes)
        assert any(sec.get_ylabel() == "filter centre (Hz)" for ax in fig.axes for sec in ax.child_axes)
        bars = [ax for ax in fig.axes if "|diff| (log)" in ax.get_ylabel()]  # the diff's colour bar
        assert len(bars) == 1 and any(np.allclose(line.get_ydata(), 1e-5) for line in bars[0].lines)
        assert any(ax.get_ylabel() == "B.mel_db (dB)" for ax in fig.axes)
    assert norms[0] == norms[1] == (1e-8, 1.0)  # 1e-7 and 1e-2 on one scale, not each on its own maximum

    fig = confidence_figure(_matplotlib(), np.array([0.9]), np.array([0.9]), tol=1e-5)
    top = fig.axes[0]
    lo, hi = top.get_xlim()
    assert lo <= -0.5 and hi >= 1.5  # one window is a visible point, not a clipped square
    assert any(np.allclose(line.get_ydata(), 0.5) for line in top.lines)  # the threshold
    assert top.get_ylim()[0] < 0 < 1 < top.get_ylim()[1]


def test_without_matplotlib_the_markdown_says_what_to_install(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    md = write_report([_run(SHORT)], tmp_path / "rep")
    text = md.read_text()
    assert text.count(HINT) == 1 and not LINK.findall(text) and not list(md.parent.rglob("*.png"))
    line = next(ln for ln in text.splitlines() if HINT in ln)
    assert "matplotlib" in line and "\n" not in line
    assert f"{SHORT} vs golden (cpu)" in text and "MANIFEST.json sha256" in text  # the rest is all there
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and HINT in err[0]


def test_hf_runs_render(tmp_path):
    from porting.golden import load_case
    from porting.parity.compare import merge_windows

    case = load_case(COMMITTED / "hf" / "cases" / "sewd__stereo48k.json")
    results = []
    for i in case.stored_windows:
        gold = case.window(i)
        hidden = _bumped(gold["M.hidden_states.0"], 2e-6)
        for name, got in (("A.waveform", gold["A.waveform"]), ("F.input_values", gold["F.input_values"]),
                          ("F.input_values" + GOLDEN_INPUT, gold["F.input_values"]), ("M.hidden_states.0", hidden),
                          ("M.hidden_states.0" + GOLDEN_INPUT, hidden.clone()), ("Y.probs", gold["Y.probs"])):
            ref = gold[name.removesuffix(GOLDEN_INPUT)]
            results.append(compare_rule(name, ref, got, STRICT, None, [i], family="hf"))
    results.append(compare_rule("all.probs", case.tensors["all.probs"], case.tensors["all.probs"], STRICT,
                                family="hf"))
    report = ParityReport(case.name, "cpu", merge_windows(results), "strict tier (test)", capture="golden/hf")
    port_probs = case.tensors["all.probs"].numpy().copy()
    port_probs[1, 0] += 3e-7
    starts = np.asarray(case.meta["windows"]["starts"]) / 16000.0
    run = CaseRun(report, tier=Tier(STRICT, "test"), capture="golden/hf",
                  golden_fingerprint=load_fingerprint(COMMITTED / "hf"),
                  probs=(case.tensors["all.probs"].numpy(), port_probs, case.meta["labels"], starts))
    dups = duplicates(run)
    assert dups["F.input_values" + GOLDEN_INPUT][0] == "F.input_values"
    assert "`F.input_values` max |diff| 0" in dups["M.hidden_states.0" + GOLDEN_INPUT][1]
    md = write_report([run], tmp_path / "rep")
    text = md.read_text()
    section = "sewd__stereo48k vs golden/hf (cpu)"
    assert _table_stages(text, section) == ["A.waveform", "F.input_values", "M.hidden_states.0", "Y.probs", "all.probs"]
    assert "| transformers | port |" in text and "`M.*` inside the model" in text
    assert hashlib.sha256((COMMITTED / "hf" / "MANIFEST.json").read_bytes()).hexdigest() in text
    assert case.meta["model"]["weights_sha256"] in text
    if _has_matplotlib():
        assert sorted(p.name for p in md.parent.rglob("*.png")) == ["margins.png", "probs.png"]
        assert "every label's probability per window" in text and "probs.png)" in text
        from PIL import Image

        assert Image.open(next(md.parent.rglob("probs.png"))).size[0] >= 1000


def test_mel_axis_frequencies_are_the_filters_peaks():
    from porting.families.orcahello.frontend.config import MelConfig
    from porting.dsp.mel import mel_filterbank
    from porting.parity.report import mel_centres_hz

    centres, nonzero = mel_centres_hz(256)
    fb = mel_filterbank(MelConfig()).numpy()  # [1281 FFT bins of the 20-kHz STFT, 256 filters]
    assert nonzero == int((fb.sum(0) > 0).sum()) == 238
    peak_hz = fb.argmax(0) * 20000 / 2560  # each filter's peak, in real Hz of the 20-kHz audio
    below = centres[:nonzero] <= 10000  # the top filter's centre lies past Nyquist: only its lower slope is real
    assert np.abs(peak_hz[:nonzero][below] - centres[:nonzero][below]).max() <= 20000 / 2560 / 2
    assert mel_centres_hz(128) is None  # another filterbank: no Hz axis rather than a wrong one
