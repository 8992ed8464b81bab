"""Issue 20: a checkpoint is ported with the semantics of the transformers major that saved it.

Expected values come only from the golden stores, captured by running transformers itself: golden/hf and
golden/hf-t4 with 4.57.1 on checkpoints saved by 4.57.1, golden/hf-t5 with 5.25.0 on checkpoints saved by 5.25.0.
The switch must matter where transformers differs (the wrong major is far off the golden) and nowhere else (both
majors give the same logits, bitwise, where transformers 4 and 5 agree)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import ROOT
from porting.cli import app
from porting.convert import convert, load_model
from porting.errors import MalformedModelError, UnsupportedModelError
from porting.families.hf.semantics import check_override, resolve
from porting.golden import load_case

T4, T4X, T5 = ROOT / "golden" / "hf", ROOT / "golden" / "hf-t4", ROOT / "golden" / "hf-t5"


def _case(store: Path, name: str):
    return load_case(store / "cases" / f"{name}.json")


def _logits(model, case) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(port logits, golden logits) over the case's stored windows, fed the golden feature-extractor output."""
    got, want, stages = [], [], {}
    for i in case.stored_windows:
        g = case.window(i)
        with torch.inference_mode():
            st = model.stages(g["F.input_values"], g.get("F.attention_mask"))
        got.append(st["Y.logits"][0])
        want.append(g["Y.logits"][0])
        stages[i] = (st, g)
    return torch.stack(got), torch.stack(want), stages


def _within_contract(got: torch.Tensor, want: torch.Tensor) -> bool:
    """The HF logits rule (porting.parity.contract): |d| <= 1e-5 + 1e-5 * max|row| per row."""
    tol = 1e-5 + 1e-5 * want.abs().amax(dim=-1, keepdim=True)
    return bool(((got - want).abs() <= tol).all())


# --------------------------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("version,major,source", [("5.24.0", 5, "config.json"), ("4.57.1", 4, "config.json"),
                                                  ("4.57.1.dev0", 4, "config.json"), ("3.5.1", 4, "config.json"),
                                                  ("6.0.0", 5, "config.json"), (None, 4, "assumed")])
def test_major_from_transformers_version(version, major, source):
    cfg = {} if version is None else {"transformers_version": version}
    sem = resolve(cfg)
    assert (sem["major"], sem["source"]) == (major, source)
    if version is None:
        assert "assumed" in sem["note"]
    if version == "6.0.0":
        assert "newer" in sem["note"]


def test_override_and_bad_values():
    sem = resolve({"transformers_version": "5.24.0"}, 4)
    assert sem["major"] == 4 and sem["source"] == "override" and "5.24.0" in sem["note"]
    assert resolve({"transformers_version": "5.24.0"}, "5")["source"] == "config.json"
    for bad in ("7", 3, "x"):
        with pytest.raises(UnsupportedModelError, match="--transformers-semantics"):
            check_override(bad)
    for bad in (5, "five", ""):
        with pytest.raises(MalformedModelError, match="transformers_version"):
            resolve({"transformers_version": bad})


# ------------------------------------------------------------------------------- the switch matters (issue)


@pytest.mark.parametrize("store,own,other", [(T5, 5, 4), (T4, 4, 5)])
def test_stable_layer_norm_weighted_sum_follows_the_saving_major(store, own, other):
    """The issue's model: Wav2Vec2ForSequenceClassification, feat_extract_norm layer, do_stable_layer_norm,
    use_weighted_layer_sum. Its own major matches transformers; the other is 0.39-class wrong (here > 1)."""
    case = _case(store, "w2v2-large__tones16k")
    model, config = load_model(case.model_path)
    assert config["transformers_semantics"]["major"] == own
    got, want, _ = _logits(model, case)
    assert _within_contract(got, want), float((got - want).abs().max())
    wrong, config = load_model(case.model_path, transformers_semantics=other)
    assert config["transformers_semantics"] == {**config["transformers_semantics"], "major": other,
                                                "source": "override"}
    bad, _, _ = _logits(wrong, case)
    assert float((bad - want).abs().max()) > 0.3
    assert float((bad.softmax(-1) - want.softmax(-1)).abs().max()) > 9e-3


@pytest.mark.parametrize("name,differs", [("hubert-large-wls", True), ("wavlm-large-wls", True), ("sewd-wls", True),
                                          ("w2v2-base-wls", False), ("hubert-wls", False), ("wavlm-wls", False),
                                          ("w2v2-base", False), ("custom-sum", False)])
@pytest.mark.parametrize("store,own", [(T5, 5), (T4X, 4)])
def test_switch_matters_exactly_where_transformers_differs(store, own, name, differs):
    path = store / "cases" / f"{name}__tones16k.json"
    if not path.is_file():
        pytest.skip(f"{store.name} has no {name} (golden/hf covers it for 4.57)")
    case = load_case(path)
    model, _ = load_model(case.model_path)
    other, _ = load_model(case.model_path, transformers_semantics=9 - own)
    got, want, _ = _logits(model, case)
    alt, _, _ = _logits(other, case)
    assert _within_contract(got, want)
    if differs:
        assert float((alt - want).abs().max()) > 0.3
    else:
        assert torch.equal(alt, got)


def test_ast_last_hidden_state_is_raw_in_5_and_normed_in_4():
    """AST's hidden_states[-1]: before ASTModel.layernorm in 5.x, after it in 4.57; logits the same in both."""
    for store, own in ((T5, 5), (T4, 4)):
        case = _case(store, "ast__tones16k")
        model, _ = load_model(case.model_path)
        other, _ = load_model(case.model_path, transformers_semantics=9 - own)
        got, want, st = _logits(model, case)
        alt, _, st_alt = _logits(other, case)
        assert torch.equal(alt, got) and _within_contract(got, want)
        for i, (s, g) in st.items():
            assert float((s["M.hidden_states.2"] - g["M.hidden_states.2"]).abs().max()) < 1e-4
            assert float((st_alt[i][0]["M.hidden_states.2"] - g["M.hidden_states.2"]).abs().max()) > 1.0


def test_sewd_string_pos_att_type(tmp_path):
    """4.x reads "p2c|c2p" as a list of characters (both relative terms off); 5.x's strict config refuses it."""
    src = T4 / "models" / "sewd"
    folder = tmp_path / "sewd"
    shutil.copytree(src, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pos_att_type"] = "p2c|c2p"
    (folder / "config.json").write_text(json.dumps(cfg))
    model, _ = load_model(folder)
    att = model.sew_d.encoder.encoder.layer[0].attention.self
    assert not att.c2p and not att.p2c
    with pytest.raises(UnsupportedModelError, match="transformers 5.x refuses"):
        load_model(folder, transformers_semantics=5)


# --------------------------------------------------------------------------- inspect / convert / detect


def _port(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_inspect_says_which_semantics():
    res = _port("inspect", T5 / "models" / "w2v2-large")
    assert res.exit_code == 0, res.output
    assert "semantics: transformers 5.x (saved by transformers 5.25.0" in res.output
    res = _port("inspect", T5 / "models" / "w2v2-large", "--transformers-semantics", "4", "--json")
    assert res.exit_code == 0, res.output
    sem = json.loads(res.output)["transformers_semantics"]
    assert sem["major"] == 4 and sem["source"] == "override" and sem["transformers_version"] == "5.25.0"
    res = _port("inspect", T5 / "models" / "w2v2-large", "--transformers-semantics", "6")
    assert res.exit_code != 0 and "use 4 or 5" in res.output


def test_convert_records_semantics_and_the_card_says_it(tmp_path):
    case = _case(T5, "w2v2-large__tones16k")
    out = tmp_path / "conv"
    res = _port("convert", case.model_path, "--out", out, "--export", "none")
    assert res.exit_code == 0, res.output
    assert "follows transformers 5.x semantics" in res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["transformers_semantics"]["major"] == 5 and cfg["transformers_semantics"]["transformers_version"] == "5.25.0"
    assert "transformers 5.x" in (out / "README.md").read_text()
    model, _ = load_model(out)
    got, want, _ = _logits(model, case)
    assert _within_contract(got, want)
    with pytest.raises(UnsupportedModelError, match="re-run `port convert --transformers-semantics 4`"):
        load_model(out, transformers_semantics=4)
    out4 = tmp_path / "conv4"
    convert(case.model_path, out4, exports=None, transformers_semantics=4)
    assert json.loads((out4 / "config.json").read_text())["transformers_semantics"]["source"] == "override"
    bad, _, _ = _logits(load_model(out4)[0], case)
    assert float((bad - want).abs().max()) > 0.3


def test_detect_on_an_hf_folder_follows_the_override():
    """`port detect --model HF_DIR` converts on the fly: the default matches transformers 5's every window, the
    override 4 does not."""
    from porting.families.hf.detect import HFDetector

    case = _case(T5, "w2v2-large__tones16k")
    w = case.meta["windows"]
    want = case.tensors["all.logits"]
    for sem, close in ((None, True), (4, False)):
        det = HFDetector.load(case.model_path, window_s=w["window_s"], hop_s=w["hop_s"], transformers_semantics=sem)
        got = det.run(case.audio_path).logits
        assert _within_contract(got, want) is close
    res = _port("detect", case.audio_path, "--model", case.model_path, "--transformers-semantics", "4",
                "--window-s", "1", "--no-progress")
    assert res.exit_code == 0, res.output


def test_tie_last_hidden_states_undoes_the_5x_difference(tmp_path):
    """transformers 5's config.tie_last_hidden_states puts last_hidden_state back into hidden_states[-1]
    (capture_outputs): hf-t5's w2v2-large with it set is no longer what golden/hf-t5 recorded, and takes the 4.x
    sum (checked against transformers 5.25.0 itself when written: bitwise). A non-boolean value is refused."""
    case = _case(T5, "w2v2-large__tones16k")
    folder = tmp_path / "tied"
    shutil.copytree(case.model_path, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "tie_last_hidden_states": True}))
    tied, config = load_model(folder)
    assert config["transformers_semantics"]["major"] == 5
    got, want, _ = _logits(tied, case)
    assert float((got - want).abs().max()) > 0.3
    as4, _, _ = _logits(load_model(case.model_path, transformers_semantics=4)[0], case)
    assert torch.equal(got, as4)
    (folder / "config.json").write_text(json.dumps({**cfg, "tie_last_hidden_states": "yes"}))
    with pytest.raises(MalformedModelError, match="tie_last_hidden_states"):
        load_model(folder)


@pytest.mark.parametrize("store,version", [(T4X, "4.57.1"), (T5, "5.25.0")])
def test_new_stores_verify_and_record_their_transformers(store, version):
    """Each store: its manifest holds, env.json names the transformers it was captured with, every model folder was
    saved by it, and every case says it ran it."""
    from porting.golden import verify_store

    res = verify_store(store)
    assert res.ok, res.problems()
    assert f"transformers=={version}" in json.loads((store / "env.json").read_text())["pip_freeze"]
    models = [d for d in (store / "models").iterdir() if d.is_dir()]
    assert models and all(json.loads((d / "config.json").read_text())["transformers_version"] == version for d in models)
    for p in (store / "cases").glob("*.json"):
        assert json.loads(p.read_text())["provenance"]["transformers"] == version, p.name
