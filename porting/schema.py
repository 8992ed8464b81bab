"""Declared schemas for every JSON document porting reads, checked once, when the file is read.

Each file (a golden ``MANIFEST.json``, ``parity.json``, and in the family packages an HF ``config.json`` per
architecture, ``preprocessor_config.json`` per feature extractor, the ``config.json`` that ``port convert`` writes
for each family: ``porting.families.<name>.schema``, built from this vocabulary) has one ``Schema``: the
fields the code reads, each with its type and the range that makes sense for the architecture, plus cross-field
rules (``num_attention_heads`` divides ``hidden_size``, the CNN lists have one length, ...). ``validate`` turns the
first violation into one ``PortingError`` line: ``<file>: <field> = <value>; must be <allowed values>``, so
everything after the read can index the document without re-checking it. Unknown fields are kept and ignored (HF
configs carry dozens the rebuild never reads).

Size limits: each dimension is bounded far above any published checkpoint, and a family's floor (the HF family's
``hf_parameter_floor``) gives a lower
bound of the parameter count a config implies, refused before anything is built when it exceeds
``MAX_PARAMETERS`` or the elements the weights file actually holds (a config claiming 100,000 layers over a
40,000-element checkpoint is refused at once instead of building for minutes and failing on the load).

Written as plain dataclasses (no schema library) so it costs nothing at import and messages read as the CLI wants.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import MalformedModelError, PortingError, UnsupportedModelError

# Limits (documented in README.md, "Safety"). The largest published audio checkpoints (wav2vec2 XLS-R 2B: hidden 1920,
# 48 layers, FFN 7680; AST: 12 layers, hidden 768) sit far inside every one of them.
MAX_HIDDEN = 16_384
MAX_INTERMEDIATE = 65_536
MAX_LAYERS = 256
MAX_LABELS = 100_000
MAX_CONV_LAYERS = 64
MAX_CONV_DIM = 65_536
MAX_KERNEL = 4_096
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32: the weights and the rebuild together must fit in memory
# A config implying more than twice the weights' elements (plus this much: a build that small takes well under a
# second, and the shape check then names the exact key) is refused before building.
SLACK_PARAMETERS = 16_000_000
MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz; the highest rate audio hardware records


class Invalid(Exception):
    """A rule broken; ``validate`` adds the file. ``field`` is the dotted path inside the document."""

    def __init__(self, field: str, value: Any, allowed: str, error: type[PortingError] = MalformedModelError):
        super().__init__(field)
        self.field, self.value, self.allowed, self.error = field, value, allowed, error


class _Bad(Exception):
    def __init__(self, allowed: str, error: type[PortingError] = MalformedModelError):
        super().__init__(allowed)
        self.allowed, self.error = allowed, error


def show(value: Any) -> str:
    """A value as JSON, cut to 60 characters (a message stays one short line)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"from {lo:,} to {hi:,}" if isinstance(lo, int) and isinstance(hi, int) else f"from {lo} to {hi}"
    if lo is not None:
        return f">= {lo:,}" if isinstance(lo, int) else f">= {lo}"
    if hi is not None:
        return f"<= {hi:,}" if isinstance(hi, int) else f"<= {hi}"
    return ""


def _or_null(text: str, null: bool) -> str:
    return f"{text} or null" if null else text


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None
    null: bool = False
    text: str | None = None  # the allowed values in words, where a cross-field rule also applies

    def allowed(self) -> str:
        if self.text:
            return _or_null(self.text, self.null)
        return _or_null(" ".join(filter(None, ("an integer", _range(self.lo, self.hi)))), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(self.allowed())
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise _Bad(self.allowed())
        return v


@dataclass(frozen=True)
class Num:
    """A finite real (JSON int or float, never a bool); ``lo_open`` excludes ``lo``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    null: bool = False

    def allowed(self) -> str:
        if self.lo_open and self.hi is None:
            rng = f"> {self.lo}"
        elif self.lo_open:
            rng = f"> {self.lo} and <= {self.hi}"
        else:
            rng = _range(self.lo, self.hi)
        return _or_null(" ".join(filter(None, ("a finite number", rng))), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad(self.allowed())
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            raise _Bad(self.allowed())
        if self.hi is not None and v > self.hi:
            raise _Bad(self.allowed())
        return v


@dataclass(frozen=True)
class Bool:
    null: bool = False
    only: bool | None = None  # the one value porting supports (the other is valid HF but not rebuilt)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, bool):
            raise _Bad(_or_null("true or false", self.null))
        if self.only is not None and v is not self.only:
            raise _Bad(f"{str(self.only).lower()} (porting does not rebuild the other setting)", UnsupportedModelError)
        return v


@dataclass(frozen=True)
class Str:
    choices: tuple | None = None
    null: bool = False
    unsupported: tuple = ()  # valid values porting does not rebuild (UnsupportedModelError)

    def allowed(self) -> str:
        if self.choices is None:
            return _or_null("a string", self.null)
        return _or_null("one of " + ", ".join(json.dumps(c) for c in self.choices), self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, str) or len(v) > 10_000:
            raise _Bad(self.allowed())
        if self.choices is not None and v not in self.choices:
            raise _Bad(self.allowed(), UnsupportedModelError if v in self.unsupported or self.unsupported == ("*",)
                       else MalformedModelError)
        return v


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 0
    max_len: int = 1_000_000
    null: bool = False

    def allowed(self) -> str:
        n = _range(self.min_len or None, self.max_len if self.max_len < 1_000_000 else None)
        return _or_null(f"a list of {n + ' ' if n else ''}items, each {self.item.allowed()}".replace("  ", " "),
                        self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, list) or not self.min_len <= len(v) <= self.max_len:
            raise _Bad(self.allowed())
        out = []
        for i, x in enumerate(v):
            try:
                out.append(self.item.check(x))
            except _Bad as bad:
                raise Invalid(f"[{i}]", x, bad.allowed, bad.error) from None
        return out


@dataclass(frozen=True)
class Any_:
    """Any JSON value (the field is read by code that checks it itself, or not at all)."""

    def check(self, v):
        return v


@dataclass(frozen=True)
class Schema:
    """A JSON object: declared ``fields`` (name -> spec), which are ``required``, cross-field ``rules`` run on the
    effective document (``defaults`` under the given values), and ``values`` for the entries of a map-like object
    whose keys are data (a manifest's file names)."""

    fields: dict = field(default_factory=dict)
    required: tuple = ()
    rules: tuple = ()
    defaults: dict = field(default_factory=dict)
    values: Any = None
    key: Callable[[str], bool] | None = None
    key_allowed: str = "a valid key"
    what: str = "a JSON object"
    null: bool = False

    def allowed(self) -> str:
        return _or_null(self.what, self.null)

    def check(self, v):
        if v is None and self.null:
            return None
        if not isinstance(v, dict):
            raise _Bad(self.allowed())
        out = dict(v)
        for name in self.required:
            if name not in v:
                raise Invalid(name, None, f"present ({self.fields[name].allowed() if name in self.fields else 'required'})")
        for name, spec in self.fields.items():
            if name in v:
                out[name] = _sub(name, v[name], spec)
        if self.values is not None:
            for k, x in v.items():
                if self.key is not None and not self.key(k):
                    raise Invalid(k, k, f"keyed by {self.key_allowed}")
                out[k] = _sub(k, x, self.values)
        eff = {**self.defaults, **out}
        for rule in self.rules:
            rule(eff)
        return out


def _sub(name: str, value, spec):
    """``spec.check(value)`` with a nested failure's field path prefixed by ``name``."""
    try:
        return spec.check(value)
    except _Bad as bad:
        raise Invalid(name, value, bad.allowed, bad.error) from None
    except Invalid as inner:
        sep = "" if inner.field.startswith("[") else "."
        raise Invalid(f"{name}{sep}{inner.field}", inner.value, inner.allowed, inner.error) from None


def validate(doc, schema: Schema, path: str | Path, error: type[PortingError] | None = None, prefix: str = ""):
    """``doc`` checked against ``schema``; the first violation is one ``PortingError`` line naming ``path`` and the
    field. ``error`` overrides the error class (a golden store raises ``GoldenError``)."""
    try:
        return schema.check(doc)
    except _Bad as bad:
        cls = error or bad.error
        raise cls(f"{path}: {prefix.rstrip('.') or 'the document'} is {show(doc)}; must be {bad.allowed}") from None
    except Invalid as bad:
        cls = error or bad.error
        raise cls(f"{path}: {prefix}{bad.field} = {show(bad.value)}; must be {bad.allowed}") from None


def rule(fn: Callable[[dict], tuple | None]) -> Callable[[dict], None]:
    """A cross-field rule: ``fn(eff)`` returns ``(field, allowed)`` when broken (or ``(field, allowed, error)``)."""

    def run(eff: dict) -> None:
        broken = fn(eff)
        if broken:
            name, allowed, *cls = broken
            raise Invalid(name, eff.get(name), allowed, *cls)

    return run


# ------------------------------------------------------------------------------------- porting's own config.json

_ACTIVATION = Schema({"name": Str(("softmax", "sigmoid", "exp", "identity")), "dim": Int(-8, 8)},
                     required=("name",))
_TENSOR_INFO = Schema({"shape": ListOf(Int(0, 1 << 40), 0, 8), "dtype": Str()}, required=("shape",))
COMMON_CONVERTED = {
    "format": Str(("porting.model/1",)),
    "family": Str(null=True),  # the family that wrote it (porting.family); none: the first, OrcaHello
    "classes": ListOf(Str(), 1, MAX_LABELS, null=True),
    "positive_index": Int(0, MAX_LABELS, null=True),
    "activation": _ACTIVATION,
    "state_dict": Schema(values=_TENSOR_INFO, what="an object tensor name -> {shape, dtype}"),
}


def positive_in_classes(eff):
    p, classes = eff.get("positive_index"), eff.get("classes")
    if p is not None and (classes is None or p >= len(classes)):
        return ("positive_index", f"null or an index into classes (0 to {len(classes or []) - 1})")
    return None

def check_converted_header(config, path: str | Path) -> dict:
    """A ``config.json`` written by ``port convert``, before its family checks the rest: a JSON object in porting's
    format. Each family validates its own layout (``COMMON_CONVERTED`` + its fields)."""
    if not isinstance(config, dict):
        raise MalformedModelError(f"{path}: holds {show(config)}, not a porting model config (a JSON object); "
                                  "re-run `port convert`")
    if config.get("format") != "porting.model/1":
        raise MalformedModelError(f"{path}: format = {show(config.get('format'))}, not \"porting.model/1\": not a "
                                  "porting model config; re-run `port convert`")
    return config


# ---------------------------------------------------------------------------------------------- MANIFEST.json

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Sha256(Str):
    def allowed(self) -> str:
        return "a sha256 (64 lowercase hex digits)"

    def check(self, v):
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise _Bad(self.allowed())
        return v


def _relative(k: str) -> bool:
    p = Path(k)
    return bool(k) and not p.is_absolute() and ".." not in p.parts and "\\" not in k


_FILE_REF = Schema({"file": Str(), "sha256": Sha256()}, required=("file", "sha256"), what="an object {file, sha256}")
MANIFEST = Schema(
    {"format": Str(), "algorithm": Str(("sha256",)),
     "files": Schema(values=Schema({"sha256": Sha256(), "bytes": Int(0)}, required=("sha256", "bytes"),
                                   what="an object {sha256, bytes}"),
                     key=_relative, key_allowed="a relative path inside the store", what="an object relative path -> {sha256, bytes}"),
     "cases": Schema(values=Schema({"model": _FILE_REF, "audio": _FILE_REF, "files": ListOf(Str()), "outcome": Str()},
                                   what="an object {model, audio, files, outcome}"),
                     what="an object case name -> {model, audio, files, outcome}")},
    required=("format", "files"))

# --------------------------------------------------------------------------------------------------- parity.json

PARITY = Schema({"passed": Bool(), "artifacts": Schema(values=Schema({"passed": Bool()}, required=("passed",),
                                                                     what="an object {passed, ...}"),
                                                       what="an object artifact name -> {passed, ...}")},
                required=("artifacts",))
