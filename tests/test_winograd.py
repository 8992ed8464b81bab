"""porting.families.orcahello.winograd: the transforms are the exact linear map of a 3x3 convolution, the float32 results stay inside a
componentwise rounding bound derived for them, the compiled kernel and the torch-op fallback compute the same thing,
and the winograd backend is verified and chosen like any other (issue 14)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import GOLDEN, capture_names
import porting.families.orcahello.winograd as W
from porting.convert import load_model
from porting.golden import load_case
from porting.parity.compare import compare_rule
from porting.parity.contract import STRICT

U32 = 2.0**-24


@pytest.mark.parametrize("m", sorted(W.POINTS))
def test_matrices_compute_the_correlation_exactly(m):
    at, g, bt = W.matrices(m)
    rng = np.random.default_rng(m)
    for _ in range(20):
        d, w = rng.standard_normal(m + 2), rng.standard_normal(3)
        direct = np.array([d[i:i + 3] @ w for i in range(m)])
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), direct, rtol=0, atol=1e-13)
    assert np.all(bt == np.round(bt)), "B^T is scaled to integers (it meets the activations in float32)"


def _bound(x: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """Componentwise rounding bound of the float32 algorithm (Higham, products of matrices): every output is a sum
    of |A^T| (|U| . |B^T| |d| |B|) |A| terms over the input channels, each reached through at most
    2n (input transform) + C (GEMM) + 2n (output transform) + 2 roundings; U is rounded once from float64."""
    at, g, bt = (torch.from_numpy(np.abs(a)) for a in W.matrices(m))
    n = m + 2
    nb, c, h, wd = x.shape
    th, tw = -(-h // m), -(-wd // m)
    xp = F.pad(x.double().abs(), (1, tw * m + 1 - wd, 1, th * m + 1 - h))
    d = xp.unfold(2, n, m).unfold(3, n, m)  # [N, C, th, tw, n, n]
    v = bt @ d @ bt.T
    u = g @ w.double().abs() @ g.T  # [K, C, n, n]
    s = torch.einsum("nctxij,kcij->nktxij", v, u)
    y = (at @ s @ at.T).permute(0, 1, 2, 4, 3, 5).reshape(nb, -1, th * m, tw * m)[:, :, :h, :wd]
    k = 4 * n + c + 3
    return k * U32 / (1 - k * U32) * y


@pytest.mark.parametrize("m", sorted(W.POINTS))
@pytest.mark.parametrize("impl", ["c", "torch"])
def test_winograd_conv_is_inside_its_rounding_bound(m, impl):
    if impl == "c" and W.kernel() is None:
        pytest.skip("the compiled kernel was not built here (no C compiler at install)")
    g = torch.Generator().manual_seed(m)
    for shape in ((2, 32, 13, 11), (1, 64, 9, 17)):
        x = torch.randn(shape, generator=g)
        w = torch.randn(48, shape[1], 3, 3, generator=g) / 10
        exact = F.conv2d(x.double(), w.double(), padding=1)
        u = W.transform_weight(w, m)
        run = W.winograd_conv2d_c if impl == "c" else W.winograd_conv2d_torch
        extra = {"packed": W.pack_weight(u)} if impl == "c" else {}
        got = run(x, u, m, **extra).double()
        err = (got - exact).abs()
        assert err.max() > 0  # a float32 computation (not secretly float64)
        assert torch.all(err <= _bound(x, w, m)), (shape, float((err / _bound(x, w, m)).max()))


def test_compiled_kernel_and_torch_ops_agree():
    if W.kernel() is None:
        pytest.skip("the compiled kernel was not built here (no C compiler at install)")
    g = torch.Generator().manual_seed(0)
    x, res = torch.randn(2, 64, 10, 14, generator=g), torch.randn(2, 32, 10, 14, generator=g)
    w, b = torch.randn(32, 64, 3, 3, generator=g) / 10, torch.randn(32, generator=g)
    for m in W.POINTS:
        u = W.transform_weight(w, m)
        a = W.winograd_conv2d_torch(x, u, m, b, res, relu=True)
        c = W.winograd_conv2d_c(x, u, m, b, res, relu=True, packed=W.pack_weight(u))
        c_bmm = W.winograd_conv2d_c(x, u, m, b, res, relu=True)
        assert torch.all(a >= 0) and (a == 0).any()  # the fused ReLU ran
        scale = float(F.conv2d(x.abs(), w.abs(), padding=1).max())
        for other in (c, c_bmm):
            assert float((a - other).abs().max()) <= 64 * U32 * scale, m
    u2 = W.transform_weight(w, 2)
    assert torch.equal(W.winograd_conv2d_torch(x, u2, 2), W.winograd_conv2d_c(x, u2, 2))  # same order: same bits


def _variants():
    """Every compiled path this CPU can run (each ISA variant of the kernel; on AVX-512 the C GEMMs, else torch.bmm)
    and the torch-op fallback: forced one by one, whatever variant the machine would pick by itself."""
    out = [("torch", None)]
    for name in W.isas():
        out.append(("c", name))
    return out


def _fresh_scratch(monkeypatch):
    monkeypatch.setattr(W, "_SCRATCH", __import__("threading").local())


@pytest.mark.parametrize("first", ["inference_mode", "no_grad"])
def test_every_path_in_either_grad_mode_order(first, monkeypatch):
    """Issue 19: the AVX2 path's scratch buffer, first allocated under inference_mode, broke every later call
    outside it ("Inplace update to inference tensor outside InferenceMode"). Each path, forced, runs under
    inference_mode and no_grad in either order (and with grad enabled) from a fresh scratch, and every compiled
    variant gives the torch-op path's bits (F(2,3), no packed weights: the same operation order)."""
    if W.kernel() is None:
        pytest.skip("the compiled kernel was not built here (no C compiler at install); the torch path is tested "
                    "in test_rn18_without_the_compiled_kernel")
    g = torch.Generator().manual_seed(5)
    x, res = torch.randn(2, 64, 9, 13, generator=g), torch.randn(2, 32, 9, 13, generator=g)
    w, b = torch.randn(32, 64, 3, 3, generator=g) / 10, torch.randn(32, generator=g)
    u = W.transform_weight(w, 2)
    packed = W.pack_weight(u)
    modes = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": torch.enable_grad}
    order = [first, "no_grad" if first == "inference_mode" else "inference_mode", "grad", first]
    ref = W.winograd_conv2d_torch(x, u, 2, b, res, relu=True)
    assert "baseline" in W.isas()  # the baseline variant runs everywhere
    for impl, isa in _variants():
        _fresh_scratch(monkeypatch)
        for mode in order:
            with modes[mode]():
                if impl == "torch":
                    got = [W.winograd_conv2d_torch(x, u, 2, b, res, relu=True)]
                else:
                    with W.use_isa(isa):
                        assert W.isa() == isa and W.has_gemm() == (isa == "avx512f")
                        got = [W.winograd_conv2d_c(x, u, 2, b, res, relu=True),
                               W.winograd_conv2d_c(x, u, 2, b, res, relu=True, packed=packed)]
            assert torch.equal(got[0], ref), (impl, isa, mode)
            if len(got) > 1:  # the C GEMM (AVX-512) sums in its own order: within the rounding bound, not bitwise
                scale = float(F.conv2d(x.abs(), w.abs(), padding=1).max())
                assert float((got[1] - ref).abs().max()) <= 64 * U32 * scale, (isa, mode)


def test_use_isa_restores_and_refuses():
    if W.kernel() is None:
        pytest.skip("the compiled kernel was not built here (no C compiler at install)")
    before = W.isa()
    assert before == W.isas()[-1]  # by default the widest variant the CPU has
    with W.use_isa("baseline"):
        assert W.isa() == "baseline" and not W.has_gemm()
    assert W.isa() == before
    with pytest.raises(ValueError, match="cannot run"):
        with W.use_isa("sse9"):
            pass
    if "avx512f" not in W.isas():  # an AVX2-only CPU refuses the AVX-512 variant rather than crash on it
        with pytest.raises(ValueError, match="cannot run the 'avx512f' variant"):
            with W.use_isa("avx512f"):
                pass
        assert not W.has_gemm()


def test_scratch_is_per_thread_and_never_an_inference_tensor():
    import threading

    with torch.inference_mode():
        a = W._scratch("probe", (4, 4))
    assert not a.is_inference()
    other = {}
    t = threading.Thread(target=lambda: other.setdefault("buf", W._scratch("probe", (4, 4))))
    t.start()
    t.join()
    assert other["buf"].data_ptr() != a.data_ptr()


def test_fast_conv_folds_batch_norm():
    g = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(32).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / 10)
        bn.running_mean.copy_(torch.randn(32, generator=g))
        bn.running_var.copy_(torch.rand(32, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(32, generator=g))
        bn.bias.copy_(torch.randn(32, generator=g))
    x = torch.randn(2, 16, 12, 12, generator=g)
    with torch.no_grad():
        ref = torch.relu(bn.double()(conv.double()(x.double())))
        for m in (None, 2, 4):
            fast = W.FastConv2d(conv.float(), bn.float(), True, m, "torch")
            assert float((fast(x).double() - ref).abs().max()) < 1e-5 * float(ref.abs().max())


@pytest.fixture(scope="module")
def rn18():
    model, config = load_model(GOLDEN / "models" / "rn18.pkl")
    return model, config


def test_rn18_layers_and_logits_against_float64(rn18):
    model, _ = rn18
    fast = W.winograd_model(model)
    _, rows = W.describe(fast)
    assert len(rows) == 20  # every convolution of ResNet18 (stem, 16 in blocks, 3 downsample) is rewritten
    assert sum("winograd" in r for r in rows) == 6 and all("winograd" in r for r in rows if " 256->256 " in r)
    case = load_case(GOLDEN / "cases" / "rn18__orca60_pcm16_48k.json")
    x = case.tensors["X.model_input"]
    with torch.inference_mode():
        exact = model.double()(x.double()).float()
        model.float()
        for impl in ("c", "torch") if W.kernel() is not None else ("torch",):
            got = W.winograd_model(model, impl)(x)
            r = compare_rule("Y.logits", exact, got, STRICT)
            assert r.passed and r.max_abs > 0, (impl, r)


def test_rn18_without_the_compiled_kernel(rn18, monkeypatch):
    """No compiler at install: the same model in torch ops, inside the contract against the goldens."""
    monkeypatch.setattr(W, "_LIB", None)
    assert W.implementation() == "torch"
    model, config = rn18
    from porting.families.orcahello.padfold import fold_pad

    folded = fold_pad(W.winograd_model(model.float()), config)
    case = load_case(GOLDEN / "cases" / "rn18__pcm16_16k_short.json")
    with torch.inference_mode():
        logits = folded(case.tensors["X.model_input"])
    assert compare_rule("Y.logits", case.tensors["Y.logits"], logits, STRICT).passed
    assert "torch-op transforms" in W.describe(W.winograd_model(model))[0]


@pytest.mark.parametrize("first", ["inference_mode", "no_grad"])
def test_rn18_every_path_after_the_other_grad_mode(rn18, first, monkeypatch):
    """The user's sequence: ``port detect`` (inference_mode), then ``port convert``'s verification (no_grad) in one
    process, or the reverse, for every path forced: the same logits either way, inside the contract."""
    model, config = rn18
    case = load_case(GOLDEN / "cases" / "rn18__pcm16_16k_short.json")
    x = case.tensors["X.model_input"][:2]
    modes = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}
    second = "no_grad" if first == "inference_mode" else "inference_mode"
    for impl, isa in _variants():
        _fresh_scratch(monkeypatch)
        fast = W.winograd_model(model.float(), impl)
        outs = []
        for mode in (first, second):
            with modes[mode](), (W.use_isa(isa) if isa else torch.no_grad()):
                outs.append(fast(x))
        assert torch.equal(outs[0], outs[1]), (impl, isa)
        assert compare_rule("Y.logits", case.tensors["Y.logits"][:2], outs[1], STRICT).passed, (impl, isa)


def test_squeezenet_fire_expand_convs_are_rewritten():
    model, _ = load_model(GOLDEN / "models" / "sq11-norm.pkl")
    fast = W.winograd_model(model)
    _, rows = W.describe(fast)
    assert rows and all("direct" in r for r in rows)  # 16-64 channel expands: below MIN_CHANNELS
    case = load_case(GOLDEN / "cases" / "sq11-norm__pcm16_16k_short.json")
    with torch.inference_mode():
        assert compare_rule("Y.logits", case.tensors["Y.logits"], fast(case.tensors["X.model_input"]), STRICT).passed


# ----------------------------------------------------------------------------- the backend


@pytest.fixture(scope="module")
def rn18_dir(tmp_path_factory):
    from porting.convert import convert

    out = tmp_path_factory.mktemp("wino") / "rn18"
    convert(GOLDEN / "models" / "rn18.pkl", out, exports="none", golden=GOLDEN)
    return out


def test_convert_verifies_the_winograd_backend(rn18_dir):
    art = json.loads((rn18_dir / "parity.json").read_text())["artifacts"][W.NAME]
    assert art["passed"] and art["kind"] == "model" and len(art["layers"]) == 20
    assert {c["against"] for c in art["checks"]} == {"eager", "golden"}


def test_auto_picks_winograd_only_when_it_passed(rn18_dir, tmp_path):
    from porting.families.orcahello.detect import Detector
    from porting.errors import UnsupportedModelError

    det = Detector.load(rn18_dir, backend="auto")  # no ONNX in this DIR
    assert det.backend == W.NAME and det.folded
    failed = tmp_path / "failed"
    shutil.copytree(rn18_dir, failed)
    parity = json.loads((failed / "parity.json").read_text())
    parity["artifacts"][W.NAME]["passed"] = False
    (failed / "parity.json").write_text(json.dumps(parity))
    assert Detector.load(failed, backend="auto").backend == "torch"
    with pytest.raises(UnsupportedModelError, match="winograd backend failed"):
        Detector.load(failed, backend=W.NAME)


@pytest.mark.parity
def test_port_parity_winograd_backend_on_every_capture():
    from porting.parity.run import run_parity

    runs = run_parity(GOLDEN, backend=W.NAME)
    assert len(runs) == 8 * len(capture_names())  # every case (the crash case too) of every capture
    bad = [r.report.summary() for r in runs if not r.report.passed]
    assert not bad, bad
