"""Read torch-saved pickles without trusting them.

Legacy loading (``torch.load(weights_only=False)``, golden/README.md §0) imports and calls
whatever the pickle names. Here nothing the pickle names is imported or called:

* ``find_class`` never imports. It returns either one of a few *allowlisted* stand-ins that we
  wrote ourselves (tensor/storage rebuilding, plain containers, latin-1 bytes) or an inert stub
  class that only records what is done to it (``Record``: args, BUILD state, appended items).
* known-dangerous globals (os/posix/subprocess/exec/eval/__import__/pickle.loads/...) are stubbed
  too, but marked *refused*; ``refused`` lists them so callers can fail naming them.
* tensors are wrapped in ``TensorRef`` so a BUILD aimed at one never reaches ``Tensor.__setstate__``.

Why not ``torch.load(weights_only=True)`` + ``safe_globals``: it raises on the first global that is
not allowlisted, and real fastai exports name dozens (fastai/fastai_audio classes,
``functools.partial``, cloudpickle code in fastai 2.8; tests/fixtures/fastai2/README.md §2, §4).
Allowlisting those would mean *executing* them. A ``pickle.Unpickler`` whose ``find_class``
returns inert records keeps them readable and harmless.

Containers: torch zip (``<root>/data.pkl`` + ``<root>/data/<key>``, STORED entries read with
``torch.frombuffer``) and the legacy non-zip stream (magic, protocol, sys_info pickles, the main
pickle, the storage key list, then ``int64 numel`` + raw bytes per storage). Anything else is
read as a bare pickle (which can hold no torch storages).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import MalformedModelError, PortingError, UnsafePickleError, UnsupportedModelError

REBUILT = "rebuilt"
STUBBED = "stubbed"
REFUSED = "refused"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Known-dangerous globals: whole modules, or single names in a module. Matching is on the
# normalized module path (py2 ``__builtin__`` -> ``builtins``) and its parents.
_DANGEROUS_MODULES = frozenset(
    {
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "importlib", "imp",
        "pickle", "_pickle", "cPickle", "marshal", "shutil", "socket", "ctypes", "runpy",
        "code", "codeop", "pty", "commands", "webbrowser", "multiprocessing", "signal",
        "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "dill", "joblib",
        "torch.hub", "torch.jit", "torch.package", "torch.serialization", "torch._C",
        "numpy.testing", "numpy.lib.npyio", "pip", "setuptools", "distutils", "asyncio",
    }
)
_DANGEROUS_NAMES = frozenset(
    {
        "builtins.eval", "builtins.exec", "builtins.execfile", "builtins.compile",
        "builtins.__import__", "builtins.open", "builtins.input", "builtins.breakpoint",
        "builtins.globals", "builtins.locals", "builtins.vars", "builtins.setattr",
        "builtins.delattr", "builtins.exit", "builtins.quit", "builtins.help",
        "io.open", "io.open_code", "torch.load", "torch.storage._load_from_bytes",
        "numpy.load", "cloudpickle.loads", "cloudpickle.load", "cloudpickle.cloudpickle.loads",
        "cloudpickle.cloudpickle.load", "operator.methodcaller", "operator.attrgetter",
    }
)
# Stubbed globals that *would* run or build code if they were rebuilt. Real fastai exports use
# them (functools.partial in v1, cloudpickle + getattr in 2.8), so they are not refused; the
# inspect report flags them and the model walker refuses a module that depends on one.
_CODE_GLOBALS = frozenset(
    {
        "builtins.getattr", "functools.partial", "types.FunctionType", "types.CodeType",
        "types.MethodType", "copyreg._reconstructor", "operator.getitem", "functools.reduce",
    }
)
_CODE_MODULES = frozenset({"cloudpickle", "types"})

_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg", "exceptions": "builtins"}
_PY2_NAMES = {"unicode": "str", "long": "int", "xrange": "range", "basestring": "str"}

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

_PLAIN_TYPES = (str, bytes, bytearray, int, float, bool, complex, type(None), list, tuple, dict, set, frozenset)


# --------------------------------------------------------------------------- inert records


@dataclass(frozen=True)
class GlobalName:
    """A global as the pickle spells it (``module``, ``name``) and its normalized dotted form."""

    module: str
    name: str

    @property
    def raw(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def normalized(self) -> str:
        module = _PY2_MODULES.get(self.module, self.module)
        name = _PY2_NAMES.get(self.name, self.name) if module == "builtins" else self.name
        return f"{module}.{name}"


class Record:
    """Inert stand-in for an object the pickle builds from a stubbed global.

    It records constructor args (REDUCE/NEWOBJ), the BUILD state, APPEND(S) items and
    SETITEM(S) entries, and calling it gives a ``Call`` record. It has no other behaviour.
    """

    __global__: GlobalName | None = None
    __status__: str = STUBBED

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items = []
        self.entries = []
        return self

    def __init__(self, *args, **kwargs):  # REDUCE calls cls(*args); NEWOBJ only cls.__new__
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(list(items))

    def __setitem__(self, key, value):
        self.entries.append((key, value))

    def __call__(self, *args, **kwargs):
        return Call(self, args, kwargs)

    @property
    def attrs(self) -> dict:
        """The BUILD state as one dict (``__dict__`` state, or ``(dict, slotstate)`` merged)."""
        state = self.state
        if isinstance(state, dict):
            return state
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            return merged
        return {}

    def __repr__(self) -> str:
        return f"<record {describe(self)}>"


class Call(Record):
    """The result of calling a record (e.g. ``_builtin_type('CodeType')(...)``): never evaluated."""

    def __new__(cls, func, args, kwargs):
        self = Record.__new__(cls, *args, **kwargs)
        self.func = func
        return self

    def __init__(self, *args, **kwargs):
        pass


class TensorRef:
    """A rebuilt tensor, kept behind a wrapper so pickle BUILD cannot call ``Tensor.__setstate__``."""

    __slots__ = ("tensor", "is_parameter")

    def __init__(self, tensor: torch.Tensor, is_parameter: bool = False):
        self.tensor = tensor
        self.is_parameter = is_parameter

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a tensor is not allowed")

    def __repr__(self) -> str:
        return f"<tensor {tuple(self.tensor.shape)} {self.tensor.dtype}>"


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype):
        self.name = name
        self.dtype = dtype

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on torch.{self.name} is not allowed")

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"calling torch.{self.name} is not allowed")


class _Allowed:
    """An allowlisted global: our own function, with BUILD refused (no ``__dict__`` to update)."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable):
        self.name = name
        self.fn = fn

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise pickle.UnpicklingError(f"{self.name}: keyword arguments are not allowed")
        return self.fn(*args)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on {self.name} is not allowed")

    def __repr__(self) -> str:
        return f"<allowed {self.name}>"


def class_path(obj: Any) -> str | None:
    """Dotted global of a record (``torch.nn.modules.conv.Conv2d``), None for anything else."""
    g = getattr(type(obj), "__global__", None) if isinstance(obj, Record) else None
    return g.normalized if g is not None else None


def describe(obj: Any) -> str:
    """Short human description of a value found in the pickle (for one-line errors)."""
    if isinstance(obj, Call):
        return f"the result of calling {describe(obj.func)}"
    if isinstance(obj, Record):
        return f"a {class_path(obj)} record"
    if isinstance(obj, type) and issubclass(obj, Record) and obj.__global__ is not None:
        return f"the global {obj.__global__.normalized}"
    if isinstance(obj, TensorRef):
        return repr(obj)
    if isinstance(obj, _Allowed):
        return obj.name
    return type(obj).__name__


def global_of(obj: Any) -> GlobalName | None:
    """The global behind a record, a call of a record, or a stub class."""
    while isinstance(obj, Call):
        obj = obj.func
    if isinstance(obj, Record):
        return type(obj).__global__
    if isinstance(obj, type) and issubclass(obj, Record):
        return obj.__global__
    return None


def is_code_global(name: str) -> bool:
    return name in _CODE_GLOBALS or name.split(".")[0] in _CODE_MODULES


# --------------------------------------------------------------------------- numpy values


def _np_dtype_info(dtype_rec: Any) -> tuple[str, str] | None:
    """(kind+size descr, byteorder) of a ``numpy.dtype`` record, e.g. ('U8', '<')."""
    if class_path(dtype_rec) not in ("numpy.dtype",) or not dtype_rec.args:
        return None
    descr = dtype_rec.args[0]
    if not isinstance(descr, str):
        return None
    order = "<"
    if isinstance(dtype_rec.state, tuple) and len(dtype_rec.state) > 1 and dtype_rec.state[1] in ("<", ">", "|", "="):
        order = dtype_rec.state[1]
    return descr, order


_NUM_FORMATS = {"i1": "b", "i2": "h", "i4": "i", "i8": "q", "u1": "B", "u2": "H", "u4": "I", "u8": "Q",
                "f2": "e", "f4": "f", "f8": "d", "b1": "?"}


def _decode_np_bytes(descr: str, order: str, raw: bytes) -> list:
    """Decode raw numpy bytes of a simple dtype (unicode, bytes, ints, floats, bool) to Python values."""
    kind, size = descr[:1], descr[1:]
    end = ">" if order == ">" else "<"
    if kind == "U" and size.isdigit():
        width = 4 * max(int(size), 1)
        codec = "utf-32-be" if end == ">" else "utf-32-le"
        return [raw[i:i + width].decode(codec).rstrip("\x00") for i in range(0, len(raw), width)]
    if kind == "S" and size.isdigit():
        width = max(int(size), 1)
        return [raw[i:i + width].rstrip(b"\x00").decode("utf-8", "replace") for i in range(0, len(raw), width)]
    fmt = _NUM_FORMATS.get(descr.lstrip("<>|="))
    if fmt is None:
        raise ValueError(f"numpy dtype {descr!r}")
    step = struct.calcsize(fmt)
    return [struct.unpack(end + fmt, raw[i:i + step])[0] for i in range(0, len(raw), step)]


def plain_value(obj: Any) -> Any:
    """Python value of a plain scalar, a numpy scalar record or a 1-D numpy array record.

    fastai v1 stores ``CategoryProcessor.classes`` as numpy ``str_`` scalars
    (``numpy.core.multiarray.scalar(dtype('U8'), bytes)``; golden/models/*.inspect.json).
    Returns None when the value is not plain data.
    """
    if isinstance(obj, (str, int, float, bool)):
        return obj
    path = class_path(obj)
    if path in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar") and len(obj.args) == 2:
        info = _np_dtype_info(obj.args[0])
        if info and isinstance(obj.args[1], (bytes, bytearray)):
            try:
                values = _decode_np_bytes(info[0], info[1], bytes(obj.args[1]))
            except (ValueError, UnicodeDecodeError, struct.error):
                return None
            return values[0] if len(values) == 1 else None
    if path in ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], (bytes, bytearray)):
            info = _np_dtype_info(state[2])
            if info:
                try:
                    return _decode_np_bytes(info[0], info[1], bytes(state[4]))
                except (ValueError, UnicodeDecodeError, struct.error):
                    return None
        if isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], list):
            values = [plain_value(v) for v in state[4]]
            return None if any(v is None for v in values) else values
    return None


# --------------------------------------------------------------------------- allowlist


def _check_plain_args(name: str, args: tuple) -> None:
    for a in args:
        if not isinstance(a, _PLAIN_TYPES):
            raise pickle.UnpicklingError(f"{name}: argument {describe(a)} is not plain data")


def _container(name: str, factory: Callable) -> _Allowed:
    def build(*args):
        _check_plain_args(name, args)
        if factory in (bytes, bytearray):  # protocol 2: bytearray(latin-1 str, 'latin-1'); never bytes(n)
            if args and not isinstance(args[0], (str, bytes, bytearray, list)):
                raise pickle.UnpicklingError(f"{name}: unexpected arguments")
            if len(args) == 2 and (not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1")):
                raise pickle.UnpicklingError(f"{name}: only latin-1 text is allowed")
            if len(args) > 2 or (len(args) == 1 and isinstance(args[0], str)):
                raise pickle.UnpicklingError(f"{name}: unexpected arguments")
        elif len(args) > 1:
            raise pickle.UnpicklingError(f"{name}: unexpected arguments")
        return factory(*args)

    return _Allowed(name, build)


def _scalar(name: str, factory: Callable) -> _Allowed:
    def build(*args):
        _check_plain_args(name, args)
        if any(isinstance(a, (list, tuple, dict, set, frozenset)) for a in args) or len(args) > 2:
            raise pickle.UnpicklingError(f"{name}: unexpected arguments")
        return factory(*args)

    return _Allowed(name, build)


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles spell bytes as ``_codecs.encode(latin-1 str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode: only latin-1 text is allowed")
    return text.encode("latin1")


def _ordered_dict(*args):
    _check_plain_args("collections.OrderedDict", args)
    if len(args) > 1:
        raise pickle.UnpicklingError("collections.OrderedDict: unexpected arguments")
    return OrderedDict(*args)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` as protocol 0/1 use it for plain objects: only for stub classes."""
    if isinstance(cls, type) and issubclass(cls, Record) and state is None:
        return cls.__new__(cls)
    raise pickle.UnpicklingError("copyreg._reconstructor: only stubbed classes can be reconstructed")


def _int_tuple(value, what: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of ints")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor(_v2)``: a bounds-checked strided view of a loaded storage."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor storage is {describe(storage)}, not a torch storage")
    (offset,) = _int_tuple(storage_offset, "offset")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("tensor size/stride/offset are inconsistent")
    numel = 1
    for s in size:
        numel *= s
    if numel:
        last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
        if last >= storage.numel or numel > storage.numel:
            raise pickle.UnpicklingError(f"tensor view {size} at offset {offset} exceeds its storage of {storage.numel}")
        tensor = storage.data.as_strided(size, stride, offset)
    else:
        tensor = storage.data.new_empty(size)
    return TensorRef(tensor)


def _rebuild_parameter(data, *rest):
    if not isinstance(data, TensorRef):
        raise pickle.UnpicklingError(f"parameter data is {describe(data)}, not a tensor")
    return TensorRef(data.tensor, is_parameter=True)


def _rebuild_from_type(func, new_type, args, state):
    """Tensor subclasses (fastai ``TensorBase``): rebuild the plain tensor, drop the stubbed subclass."""
    if isinstance(func, _Allowed) and isinstance(args, tuple):
        return func(*args)
    raise pickle.UnpicklingError(f"tensor subclass rebuilt by {describe(func)}")


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": _Allowed("collections.OrderedDict", _ordered_dict),
    "_codecs.encode": _Allowed("_codecs.encode", _codecs_encode),
    "copyreg._reconstructor": _Allowed("copyreg._reconstructor", _reconstructor),
    "torch._utils._rebuild_tensor": _Allowed("torch._utils._rebuild_tensor", _rebuild_tensor),
    "torch._utils._rebuild_tensor_v2": _Allowed("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    "torch._utils._rebuild_parameter": _Allowed("torch._utils._rebuild_parameter", _rebuild_parameter),
    "torch._utils._rebuild_parameter_with_state": _Allowed(
        "torch._utils._rebuild_parameter_with_state", _rebuild_parameter
    ),
    "torch._tensor._rebuild_from_type_v2": _Allowed("torch._tensor._rebuild_from_type_v2", _rebuild_from_type),
    "torch._tensor._rebuild_from_type": _Allowed("torch._tensor._rebuild_from_type", _rebuild_from_type),
}
for _name, _factory in (("set", set), ("frozenset", frozenset), ("list", list), ("tuple", tuple),
                        ("dict", dict), ("bytes", bytes), ("bytearray", bytearray)):
    _ALLOWED[f"builtins.{_name}"] = _container(f"builtins.{_name}", _factory)
for _name, _factory in (("str", str), ("int", int), ("float", float), ("bool", bool), ("complex", complex)):
    _ALLOWED[f"builtins.{_name}"] = _scalar(f"builtins.{_name}", _factory)
for _name, _dtype in _STORAGE_DTYPES.items():
    _ALLOWED[f"torch.{_name}"] = _StorageType(_name, _dtype)
    _ALLOWED[f"torch.storage.{_name}"] = _StorageType(_name, _dtype)


def classify(name: str) -> str:
    """``rebuilt`` (allowlisted), ``refused`` (known-dangerous) or ``stubbed`` for a normalized global."""
    if name in _DANGEROUS_NAMES:
        return REFUSED
    parts = name.split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[:i]) in _DANGEROUS_MODULES:
            return REFUSED
    if name in _ALLOWED:
        return REBUILT
    return STUBBED


# --------------------------------------------------------------------------- the unpickler


class _Storage:
    """A storage loaded from the container: a flat tensor of ``numel`` elements."""

    __slots__ = ("key", "data", "numel")

    def __init__(self, key: str, data: torch.Tensor):
        self.key = key
        self.data = data
        self.numel = data.numel()

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a storage is not allowed")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, session: "_Session"):
        super().__init__(file, encoding="utf-8")
        self._session = session

    def find_class(self, module, name):  # noqa: D401 - pickle API
        return self._session.resolve(module, name)

    def persistent_load(self, pid):
        return self._session.persistent_load(pid)


class _Session:
    """State of one read: the globals seen, the stubs made, and the storages loaded."""

    def __init__(self, load_storage: Callable[[tuple], "_Storage"] | None):
        self.globals: dict[str, dict] = {}
        self._stubs: dict[GlobalName, type] = {}
        self._load_storage = load_storage
        self.storages: dict[str, _Storage] = {}

    def resolve(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError("global names must be strings")
        g = GlobalName(module, name)
        status = classify(g.normalized)
        entry = self.globals.setdefault(g.raw, {"name": g.raw, "status": status, "uses": 0})
        entry["uses"] += 1
        if status == REBUILT:
            return _ALLOWED[g.normalized]
        stub = self._stubs.get(g)
        if stub is None:
            stub = type("Stub", (Record,), {"__global__": g, "__status__": status, "__slots__": ()})
            self._stubs[g] = stub
        return stub

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("persistent id is not a tuple")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) >= 2:  # legacy stream: module classes with their source
            return pid[1]
        if kind != "storage" or self._load_storage is None:
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return self._load_storage(pid)


def _storage_fields(pid: tuple) -> tuple[_StorageType, str, int, Any]:
    if len(pid) not in (5, 6):
        raise pickle.UnpicklingError("storage persistent id has the wrong length")
    stype, key, numel = pid[1], pid[2], pid[4]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(stype, _StorageType):
        raise pickle.UnpicklingError(f"storage type is {describe(stype)}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError("storage key/numel are malformed")
    return stype, key, numel, view


@dataclass(frozen=True)
class Unpickled:
    """What a restricted read gives: the root object graph and what the pickle asked for."""

    root: Any
    container: str
    globals: tuple[dict, ...]
    storage_count: int
    storage_bytes: int

    @property
    def refused(self) -> list[str]:
        return [g["name"] for g in self.globals if g["status"] == REFUSED]


def _load_one(buf: io.BytesIO, session: _Session) -> Any:
    return _RestrictedUnpickler(buf, session).load()


def _read_zip(data: bytearray, session: _Session, fname: str) -> Any:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in zf.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise MalformedModelError(f"{fname}: broken torch zip container ({exc}); re-export the model") from exc
    if not infos:
        raise MalformedModelError(f"{fname}: empty zip container; re-export the model")
    root = next(iter(infos)).split("/")[0]
    pkl = infos.get(f"{root}/data.pkl")
    if pkl is None:
        raise MalformedModelError(f"{fname}: zip has no {root}/data.pkl; not a torch.save file")
    def entry_bytes(info: zipfile.ZipInfo, nbytes: int) -> torch.Tensor:
        if info.file_size != nbytes:
            raise pickle.UnpicklingError(f"{info.filename} has {info.file_size} bytes, the pickle expects {nbytes}")
        if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses; refuse zip bombs outright
            raise pickle.UnpicklingError(f"{info.filename} is compressed; torch.save writes stored entries only")
        hdr = info.header_offset
        if data[hdr:hdr + 4] != b"PK\x03\x04":
            raise pickle.UnpicklingError(f"{info.filename}: bad local header")
        n, m = struct.unpack("<HH", bytes(data[hdr + 26:hdr + 30]))
        start = hdr + 30 + n + m
        if start + nbytes > len(data):
            raise pickle.UnpicklingError(f"{info.filename}: truncated")
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=start)

    def load_storage(pid: tuple) -> _Storage:
        stype, key, numel, view = _storage_fields(pid)
        if view is not None:
            raise pickle.UnpicklingError("storage views are not used by zip files")
        if key not in session.storages:
            info = infos.get(f"{root}/data/{key}")
            if info is None:
                raise pickle.UnpicklingError(f"storage {key!r} is missing from the zip")
            itemsize = torch.empty(0, dtype=stype.dtype).element_size()
            raw = entry_bytes(info, numel * itemsize)
            session.storages[key] = _Storage(key, raw.view(stype.dtype) if numel else torch.empty(0, dtype=stype.dtype))
        storage = session.storages[key]
        if storage.data.dtype != stype.dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is used with two dtypes")
        return storage

    order = infos.get(f"{root}/byteorder")
    if order is not None and (order.file_size > 16 or bytes(entry_bytes(order, order.file_size).numpy()).strip() != b"little"):
        raise UnsupportedModelError(f"{fname}: not a little-endian torch file; re-save it on a little-endian machine")
    session._load_storage = load_storage
    raw_pkl = entry_bytes(pkl, pkl.file_size).numpy().tobytes()
    return _load_one(io.BytesIO(raw_pkl), session)


def _read_stream(data: bytearray, session: _Session, fname: str) -> tuple[Any, str]:
    """Legacy torch stream, or a bare pickle when the first object is not torch's magic number."""
    buf = io.BytesIO(bytes(data))
    first = _load_one(buf, session)
    if not (isinstance(first, int) and first == _LEGACY_MAGIC):
        return first, "pickle"
    if _load_one(buf, session) != _LEGACY_PROTOCOL:
        raise MalformedModelError(f"{fname}: unknown legacy torch protocol version; re-save with torch.save")
    sys_info = _load_one(buf, session)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise UnsupportedModelError(f"{fname}: big-endian torch file; re-save it on a little-endian machine")
    pending: dict[str, _Storage] = {}
    budget = [len(data)]

    def load_storage(pid: tuple) -> _Storage:
        stype, key, numel, view = _storage_fields(pid)
        if key not in pending:
            nbytes = numel * torch.empty(0, dtype=stype.dtype).element_size()
            budget[0] -= nbytes
            if budget[0] < 0:
                raise pickle.UnpicklingError("storages declare more bytes than the file holds")
            pending[key] = _Storage(key, torch.empty(numel, dtype=stype.dtype))
        root = pending[key]
        if root.data.dtype != stype.dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is used with two dtypes")
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError("malformed storage view")
        view_key, offset, size = view
        if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 and size >= 0 and offset + size <= root.numel):
            raise pickle.UnpicklingError("storage view out of bounds")
        return _Storage(str(view_key), root.data[offset:offset + size])

    session._load_storage = load_storage
    root_obj = _load_one(buf, session)
    session._load_storage = None
    keys = _load_one(buf, session)
    if not isinstance(keys, list) or any(k not in pending for k in keys):
        raise MalformedModelError(f"{fname}: legacy storage key list does not match the pickle; re-export the model")
    pos = buf.tell()
    for key in keys:
        storage = pending[key]
        itemsize = storage.data.element_size()
        if pos + 8 > len(data):
            raise MalformedModelError(f"{fname}: truncated storage data; re-export the model")
        (count,) = struct.unpack("<q", bytes(data[pos:pos + 8]))
        nbytes = count * itemsize
        if count != storage.numel or pos + 8 + nbytes > len(data):
            raise MalformedModelError(f"{fname}: storage {key!r} data is truncated or mis-sized; re-export the model")
        if nbytes:
            src = torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=pos + 8)
            storage.data.view(torch.uint8).copy_(src)
        pos += 8 + nbytes
    session.storages.update(pending)
    return root_obj, "torch-legacy"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    data: bytearray
    sha256: str


def read_file(path: str | Path) -> SourceFile:
    """The whole file (mutable, so tensors can be ``frombuffer`` views of it) and its sha256; through
    ``porting.io.files``, so a FIFO or device is refused instead of read forever."""
    from .files import read_bytes

    path = Path(path)
    data = read_bytes(path, "the model file")
    if len(data) == 0:
        raise MalformedModelError(f"{path}: empty file; expected a learner .pkl")
    return SourceFile(path, data, hashlib.sha256(data).hexdigest())


def unpickle(source: SourceFile) -> Unpickled:
    """Restricted read of a torch zip, legacy torch stream or bare pickle. Imports and calls nothing
    the pickle names; raises ``MalformedModelError`` for anything unreadable."""
    data, fname = source.data, source.path.name
    session = _Session(None)
    if len(data) > 262 and data[257:262] == b"ustar":
        raise UnsupportedModelError(f"{fname}: tar-format torch file (torch < 0.4) is not supported; re-save it with torch.save")
    try:
        if data[:4] == b"PK\x03\x04":
            root, container = _read_zip(data, session, fname), "torch-zip"
        else:
            root, container = _read_stream(data, session, fname)
    except PortingError:
        raise
    except Exception as exc:  # any decoding failure of untrusted bytes
        refused = sorted({g["name"] for g in session.globals.values() if g["status"] == REFUSED})
        if refused:  # say what was refused even when the rest of the file does not parse
            raise UnsafePickleError(
                f"{fname}: refused dangerous globals {', '.join(refused)} (nothing was executed); do not load this file"
            ) from exc
        if isinstance(exc, RecursionError):
            raise MalformedModelError(f"{fname}: pickle nests too deeply; not a learner export") from exc
        if isinstance(exc, MemoryError):
            raise MalformedModelError(f"{fname}: pickle asks for more memory than available; not a learner export") from exc
        what = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MalformedModelError(
            f"{fname}: not a readable torch/pickle file ({type(exc).__name__}: {what}); expected a learner .pkl"
        ) from exc
    storage_bytes = sum(s.data.numel() * s.data.element_size() for s in session.storages.values())
    return Unpickled(
        root=root,
        container=container,
        globals=tuple(sorted(session.globals.values(), key=lambda g: g["name"])),
        storage_count=len(session.storages),
        storage_bytes=storage_bytes,
    )


@dataclass
class StateFile:
    """A checkpoint holding a state dict, read without executing anything (``read_state_dict``)."""

    state: dict  # key -> torch tensor
    sha256: str
    container: str
    wrapper: dict  # the other top-level entries, described (never used)
    notes: list


def read_state_dict(path, wrappers: tuple[str, ...], what: str, check=None) -> StateFile:
    """The state dict a ``torch.save`` file holds: the root itself, or the dict under the first of ``wrappers``
    (``'model'`` for PANNs training checkpoints, ``'model_state_dict'`` for a trainer's), ``module.`` prefixes
    (``nn.DataParallel``) removed. ``check(entries)`` sees the raw entries first (to name what a family refuses);
    a dangerous global anywhere refuses the file; anything but tensors is a one-line error naming ``what``."""
    from ..errors import MalformedModelError, UnsafePickleError

    source = read_file(path)
    unp = unpickle(source)
    if unp.refused:
        raise UnsafePickleError(f"{path}: refused dangerous globals {', '.join(unp.refused)} (nothing was executed); "
                                "do not load this file")
    root, notes, wrapper = unp.root, [], {}
    for key in wrappers:
        if isinstance(root, dict) and key in root and isinstance(root[key], dict):
            wrapper = {str(k): describe(v) for k, v in root.items() if k != key}
            root = root[key]
            break
    if check is not None and isinstance(root, dict):
        check(root)
    if not (isinstance(root, dict) and root and all(isinstance(v, TensorRef) for v in root.values())):
        inside = " or ".join(f"'{k}'" for k in wrappers)
        raise MalformedModelError(f"{path}: holds {describe(unp.root)}, not {what} (a state dict of tensors, or a dict "
                                  f"whose {inside} is one)")
    state = {str(k): v.tensor for k, v in root.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("keys saved under 'module.' (nn.DataParallel): prefix removed")
    return StateFile(state, source.sha256, unp.container, wrapper, notes)
