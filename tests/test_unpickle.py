"""Restricted unpickling: containers, allowlist vs stubs, tensors, and that nothing is imported."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch
from torch import nn

from conftest import FIXTURES, GOLDEN
from fixtures import pickle_kit as pk
from porting.errors import MalformedModelError, UnsafePickleError
from porting.families.orcahello.learner import inspect_pickle, read_learner
from porting.io.unpickle import REBUILT, STUBBED, Call, Record, TensorRef, read_file, unpickle

FASTAI2 = FIXTURES / "fastai2"


def _small_module() -> nn.Module:
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
    m[1].num_batches_tracked.fill_(5)
    return m.eval()


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    m = _small_module()
    torch.save(m, d / "zip.pt")
    torch.save(m, d / "legacy.pt", _use_new_zipfile_serialization=False)
    return m, d


@pytest.mark.parametrize("fmt,container", [("zip", "torch-zip"), ("legacy", "torch-legacy")])
def test_both_torch_containers_give_torchs_own_state_dict(small_files, fmt, container):
    m, d = small_files
    spec = read_learner(d / f"{fmt}.pt")
    assert spec.source.container == container
    assert spec.source.kind == "torch-module"
    expected = m.state_dict()
    assert list(spec.state_dict) == list(expected)
    for k, v in expected.items():
        assert spec.state_dict[k].dtype == v.dtype
        assert torch.equal(spec.state_dict[k], v), k


def test_golden_exports_match_their_state_dict_listing():
    for name in ("rn18", "sq11-norm"):
        listing = json.loads((GOLDEN / "models" / f"{name}.inspect.json").read_text())
        spec = read_learner(GOLDEN / "models" / f"{name}.pkl")
        assert spec.source.container == listing["serialization"] == "torch-zip"
        got = {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in spec.state_dict.items()}
        assert list(got) == list(listing["state_dict"])
        assert got == listing["state_dict"]
        assert list(spec.classes) == listing["classes"]


def test_golden_globals_are_classified_and_none_executed():
    unp = unpickle(read_file(GOLDEN / "models" / "sq11-norm.pkl"))
    listing = json.loads((GOLDEN / "models" / "sq11-norm.inspect.json").read_text())
    status = {g["name"]: g["status"] for g in unp.globals}
    assert sorted(status) == sorted(listing["pickle_globals"])
    assert status["torch._utils._rebuild_tensor_v2"] == REBUILT
    assert status["torch.FloatStorage"] == REBUILT
    assert status["__builtin__.long"] == REBUILT  # py2 spelling reaches find_class raw (protocol 2)
    assert status["functools.partial"] == STUBBED
    assert status["torchvision.models.squeezenet.Fire"] == STUBBED
    assert status["fastai.basic_train.Learner"] == STUBBED
    assert unp.refused == []
    # functools.partial(Adam, betas=...) stays an inert record with its BUILD state
    opt = unp.root["opt_func"]
    assert isinstance(opt, Record) and type(opt).__global__.raw == "functools.partial"
    assert opt.state[2] == {"betas": (0.9, 0.99)}


def test_fastai2_code_globals_are_stubbed_and_listed():
    report = inspect_pickle(FASTAI2 / "vision_sq.pkl")
    by_name = {g["name"]: g for g in report["globals"]}
    for name in ("cloudpickle.cloudpickle._make_function", "cloudpickle.cloudpickle.subimport",
                 "cloudpickle.cloudpickle._builtin_type", "__builtin__.getattr"):
        assert by_name[name]["status"] == STUBBED and by_name[name]["code"] is True, name
    assert by_name["__builtin__.unicode"]["status"] == REBUILT
    assert report["refused"] == [] and report["problems"] == []
    ref = json.loads((FASTAI2 / "vision_sq.ref.json").read_text())
    assert len(report["globals"]) == 81  # fixture README §2: every global of vision_sq
    assert report["tensors"]["count"] == len(ref["state_dict"])


def test_reading_imports_nothing(small_files):
    _, d = small_files
    read_learner(d / "zip.pt")  # warm up our own lazy paths (torch ops used for the first time)
    read_learner(d / "legacy.pt")
    before = set(sys.modules)
    for path in (FASTAI2 / "vision_sq.pkl", FASTAI2 / "xresnet_norm.pkl", GOLDEN / "models" / "rn18.pkl",
                 GOLDEN / "models" / "sq11-norm.pkl"):
        read_learner(path)
    assert set(sys.modules) == before


def test_reading_in_a_fresh_process_loads_no_named_library():
    """In a clean interpreter (other tests may import e.g. cloudpickle via librosa/joblib), reading every
    real export leaves none of the libraries the pickles name in sys.modules."""
    import subprocess

    paths = [str(p) for p in (FASTAI2 / "vision_sq.pkl", FASTAI2 / "xresnet_norm.pkl",
                              GOLDEN / "models" / "rn18.pkl", GOLDEN / "models" / "sq11-norm.pkl")]
    code = (
        "import sys; from porting.families.orcahello.learner import read_learner\n"
        "for p in sys.argv[1:]: read_learner(p)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "torch" in loaded  # the probe really ran
    assert not loaded & {"fastai", "torchvision", "cloudpickle", "plum", "fasttransform", "audio", "fastcore"}


def test_hostile_payloads_are_recorded_not_run(tmp_path):
    before = set(sys.modules)
    for name, ops in pk.payloads(tmp_path / "canary").items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pk.pickle_of(ops))
        unp = unpickle(read_file(path))
        assert isinstance(unp.root, (Record, dict)), name
        assert not (tmp_path / "canary").exists(), name
    assert set(sys.modules) == before


def test_build_on_partial_stays_a_record(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pk.pickle_of(pk.payloads(tmp_path / "canary")["partial_build_as_model"]))
    unp = unpickle(read_file(path))
    model = unp.root["model"]
    assert isinstance(model, Call)
    assert type(model.func).__global__.raw == "functools.partial"
    func, args, kwds, _ = model.func.state  # the BUILD state was recorded, never applied
    assert type(func).__global__.raw == "builtins.getattr" and args == () and kwds == {}
    assert not (tmp_path / "canary").exists()


def test_refused_globals_are_named(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pk.pickle_of(pk.payloads(tmp_path / "canary")["import_getattr"]))
    unp = unpickle(read_file(path))
    assert unp.refused == ["builtins.__import__"]
    with pytest.raises(UnsafePickleError, match=r"builtins\.__import__"):
        read_learner(path)


def test_numpy_str_classes_decode(tmp_path):
    """fastai v1 classes are numpy str_ scalars: numpy.core.multiarray.scalar(dtype('U8'), utf-32 bytes)."""
    spec = read_learner(GOLDEN / "models" / "rn18.pkl")
    assert spec.classes == ("negative", "positive")
    assert spec.positive_index == 1


def test_tensor_view_beyond_storage_is_malformed(tmp_path):
    """A tensor that claims more elements than its storage holds is refused, not read out of bounds."""
    storage_pid = b"(" + pk.text("storage") + pk.glob("torch", "FloatStorage") + pk.text("0") + pk.text("cpu") + b"K\x04tQ"
    tensor = pk.call(pk.glob("torch._utils", "_rebuild_tensor_v2"), storage_pid, b"K\x00", b"K\x64\x85", b"K\x01\x85",
                     b"\x89", pk.call(pk.glob("collections", "OrderedDict")))
    path = tmp_path / "oob.pt"
    path.write_bytes(pk.torch_zip(pk.pickle_of(tensor), {"0": b"\x00" * 16}))
    with pytest.raises(MalformedModelError, match="exceeds its storage"):
        unpickle(read_file(path))
    path.write_bytes(pk.torch_zip(pk.pickle_of(tensor), {"0": b"\x00" * 8}))  # entry shorter than numel says
    with pytest.raises(MalformedModelError, match="expects 16"):
        unpickle(read_file(path))


def test_tensor_rebuild_is_a_view_of_the_file(tmp_path):
    storage_pid = b"(" + pk.text("storage") + pk.glob("torch", "FloatStorage") + pk.text("0") + pk.text("cpu") + b"K\x06tQ"
    tensor = pk.call(pk.glob("torch._utils", "_rebuild_tensor_v2"), storage_pid, b"K\x01", b"K\x02K\x02\x86",
                     b"K\x01K\x02\x86", b"\x89", pk.call(pk.glob("collections", "OrderedDict")))
    path = tmp_path / "t.pt"
    values = torch.arange(6, dtype=torch.float32)
    path.write_bytes(pk.torch_zip(pk.pickle_of(tensor), {"0": values.numpy().tobytes()}))
    unp = unpickle(read_file(path))
    assert isinstance(unp.root, TensorRef)
    assert torch.equal(unp.root.tensor, torch.tensor([[1.0, 3.0], [2.0, 4.0]]))


def test_bytes_of_huge_int_is_refused(tmp_path):
    """``bytes(10**12)`` would allocate a terabyte; the allowlisted bytes() only takes data."""
    path = tmp_path / "dos.pkl"
    path.write_bytes(pk.pickle_of(pk.call(pk.glob("__builtin__", "bytes"), b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00")))
    with pytest.raises(MalformedModelError, match="unexpected arguments"):
        unpickle(read_file(path))


def test_plain_pickle_protocols_read(tmp_path):
    """Protocols 0-5 of plain data round-trip through the restricted reader."""
    obj = {"a": [1, 2.5, "x", None, True], "b": (b"raw", {"n": -3}), "c": {1, 2}, "d": bytearray(b"ab")}
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{proto}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=proto))
        assert unpickle(read_file(path)).root == obj, proto


def test_shared_module_dag_cannot_explode(tmp_path):
    """30 levels of a module shared twice would be 2**30 nodes when walked; the walk is bounded."""
    m = nn.ReLU()
    for _ in range(30):
        m = nn.Sequential(m, m)
    torch.save(m, tmp_path / "dag.pt")
    with pytest.raises(MalformedModelError, match="too deep or too large"):
        read_learner(tmp_path / "dag.pt")


def test_compressed_zip_entries_are_refused(tmp_path):
    """torch.save writes STORED entries only; a deflated one (a possible zip bomb) is not inflated."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
    (tmp_path / "z.pt").write_bytes(buf.getvalue())
    with pytest.raises(MalformedModelError, match="compressed"):
        unpickle(read_file(tmp_path / "z.pt"))
