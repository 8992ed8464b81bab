"""The engine's artifact path (porting.export.declared) on its own, with a tiny module: what every family's exports
rely on -- a format round trip, a batch baked in by a trace caught, derived stages, a backend with no file, golden
windows held to their own tier, a wrong artifact failed by the contract."""

from __future__ import annotations

import hashlib

import pytest
import torch

from porting.export import missing
from porting.export.declared import Artifact, check_golden, export_artifact, parity_document, verify_artifact
from porting.parity.contract import PORTABLE, STRICT, Tier


class Head(torch.nn.Module):
    """[B, 8] -> (probs [B, 3], logits [B, 3])."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.lin = torch.nn.Linear(8, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 8, generator=g))
            self.lin.bias.copy_(torch.randn(3, generator=g))

    def forward(self, x):
        logits = self.lin(x)
        return torch.softmax(logits, -1), logits


class BakedBatch(Head):
    """A trace turns ``int(x.shape[0])`` into a constant: the artifact only takes the traced batch."""

    def forward(self, x):
        probs, logits = super().forward(x)
        return probs, logits + torch.zeros(int(x.shape[0]), 3)


def _probes(*batches):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 8, generator=g) for b in batches]


def _art(fmt: str, module=None, **kw) -> Artifact:
    ext = {"onnx": "onnx", "torchscript": "torchscript.pt", "pt2": "pt2", "tflite": "tflite"}[fmt]
    base = dict(name=f"head.{ext}", fmt=fmt, kind="pipeline", module=module or Head(), input="x",
                outputs=("probs", "logits"), stages=("Y.probs", "Y.logits"), axes={0: "B"}, shape=["B", 8],
                probes=_probes(2, 3), golden_input="X.model_input")
    base.update(kw)
    return Artifact(**base)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx", "tflite"])
def test_each_format_round_trips_and_is_checked_at_every_probe(fmt, tmp_path):
    if missing(fmt):
        pytest.skip(f"{fmt}: {missing(fmt)}")
    entry = export_artifact(_art(fmt), tmp_path, None)
    assert entry["passed"], entry
    path = tmp_path / _art(fmt).name
    assert entry["bytes"] == path.stat().st_size and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = entry["checks"]
    assert {r["against"] for r in rows} == {"eager"} and {r["input_shape"][0] for r in rows} == {2, 3}
    assert {(r["stage"], r["output"]) for r in rows} == {("Y.probs", "probs"), ("Y.logits", "logits")}
    assert all(r["tier"] == STRICT and r["gating"] and r["margin"] <= 1 for r in rows)


def test_a_batch_baked_in_by_the_trace_fails_at_the_other_probe(tmp_path):
    entry = export_artifact(_art("torchscript", BakedBatch()), tmp_path, None)  # traced at batch 2, probed at 2 and 3
    assert not entry["passed"] and entry["error"].startswith("verification failed: ")
    same = export_artifact(_art("torchscript", BakedBatch(), probes=_probes(2, 2)), tmp_path, None)
    assert same["passed"], same  # the check bites only because the probes' batches differ


def test_derived_stages_are_checked_and_say_so(tmp_path):
    def confidence(out: dict) -> dict:
        return {"Y.confidence": torch.softmax(torch.as_tensor(out["Y.logits"]), -1)[:, 1]}

    art = _art("pt2", outputs=("logits",), stages=("Y.logits",), module=Logits(), derive=confidence,
               derive_note="softmax of the artifact's logits, outside it")
    entry = export_artifact(art, tmp_path, None)
    assert entry["passed"], entry
    derived = [r for r in entry["checks"] if r["stage"] == "Y.confidence"]
    assert len(derived) == 2 and all(r["output"] == "confidence" and "outside it" in r["note"] for r in derived)


class Logits(Head):
    def forward(self, x):
        return super().forward(x)[1]


class _Runner:
    def __init__(self, module, shift: float = 0.0):
        self.module, self.shift, self.runtime = module, shift, "a test backend"
        self.entry = {"layers": ["lin"]}

    def __call__(self, x):
        with torch.inference_mode():
            probs, logits = self.module(torch.from_numpy(x))
        return {"probs": probs.numpy(), "logits": (logits + self.shift).numpy()}


def test_a_backend_without_a_file_is_verified_like_an_artifact():
    head = Head()
    art = Artifact("backend", "backend", "pipeline", None, "x", ("probs", "logits"), ("Y.probs", "Y.logits"), {0: "B"},
                   ["B", 8], _probes(2, 3), head, runner=lambda: _Runner(head))
    entry = verify_artifact(art, None, None)
    assert entry["passed"] and entry["runtime"] == "a test backend" and entry["layers"] == ["lin"]
    assert "bytes" not in entry

    def broken():
        raise RuntimeError("no kernel for this CPU\nsecond line")

    art.runner = broken
    entry = verify_artifact(art, None, None)
    assert not entry["passed"] and entry["error"] == "verification failed: RuntimeError: no kernel for this CPU"


def test_a_wrong_artifact_fails_the_contract_and_the_document_says_so():
    head = Head()
    art = Artifact("backend", "backend", "pipeline", None, "x", ("probs", "logits"), ("Y.probs", "Y.logits"), {0: "B"},
                   ["B", 8], _probes(2), head, runner=lambda: _Runner(head, shift=1e-4))
    entry = verify_artifact(art, None, None)
    logits = next(r for r in entry["checks"] if r["stage"] == "Y.logits")
    assert not entry["passed"] and not logits["passed"] and logits["margin"] > 1
    assert logits["rule"].startswith("logits") and 9e-5 < logits["max_abs_diff"] < 2e-4
    doc = parity_document("toy", {"backend": entry}, "test rules", model={"file": "x"})
    assert doc["passed"] is False and doc["family"] == "toy" and doc["format"] == "porting.parity/2"
    assert doc["model"] == {"file": "x"} and doc["versions"]["torch"] == torch.__version__


def test_golden_windows_are_held_to_their_own_tier():
    head = Head()
    x = _probes(4)[0]
    with torch.inference_mode():
        probs, logits = head(x)
    art = _art("pt2")
    windows = [("here", {"X.model_input": x, "Y.probs": probs, "Y.logits": logits}),
               ("other machine", {"X.model_input": x, "Y.probs": probs, "Y.logits": logits},
                Tier(PORTABLE, "captured on another CPU"))]
    rows = check_golden(art, _Runner(head), windows, STRICT, None)
    tiers = {(r["data"], r["tier"], r["tier_reason"]) for r in rows}
    assert ("other machine", PORTABLE, "captured on another CPU") in tiers
    assert any(d == "here" and t == STRICT for d, t, _ in tiers)
    assert all(r["against"] == "golden" and r["input_shape"] == [4, 8] and r["passed"] for r in rows)
