"""Read a YAML configuration as data: the block-style subset that configuration dumps use, nothing more.

Why not a YAML library: the runtime stays lean, and a configuration is data: a full YAML loader also knows tags
(``!!python/object``), anchors and aliases (billion-laughs), multi-document streams and a dozen scalar styles that no
configuration written by Hydra/OmegaConf (``OmegaConf.to_yaml``, PyYAML's block style) contains. This reads exactly
block mappings, block sequences (``- item``, at the key's indent or deeper), flow ``[]`` / ``{}`` and flow lists of
scalars, plain / single- / double-quoted scalars and ``#`` comments; anything else (a tag, an anchor or alias, a
block scalar ``|`` / ``>``, a duplicate key, bad indentation) is a one-line error naming the file and line.

Scalars resolve as OmegaConf's loader resolves them (PyYAML's SafeLoader with OmegaConf's float rule, which also
takes ``1e-3`` without a dot): ``null``/``~``/empty -> None, YAML 1.1 booleans (``true``/``false``/``yes``/``no``/
``on``/``off`` in three casings), decimal and ``0x``/``0o`` integers (``_`` separators), floats incl. ``.inf`` and
``.nan``; everything else is a string, kept verbatim (``${data.num_classes}`` interpolations are not resolved here).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import MalformedModelError

_BOOL = {v: b for b, vs in ((True, ("true", "yes", "on")), (False, ("false", "no", "off")))
         for w in vs for v in (w, w.capitalize(), w.upper())}
_NULL = ("", "~", "null", "Null", "NULL")
_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)$")
_HEX, _OCT = re.compile(r"[-+]?0x[0-9a-fA-F_]+$"), re.compile(r"[-+]?0o[0-7_]+$")
# OmegaConf's float resolver: PyYAML's, plus exponents without a dot (1e-3) and an optional exponent sign
_FLOAT = re.compile(r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"
                    r"|\.[0-9_]+(?:[eE][-+][0-9]+)?$|[-+]?\.(?:inf|Inf|INF)$|\.(?:nan|NaN|NAN)$")
_KEY = re.compile(r"""((?:'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^'"#:\s][^#:]*?|))\s*:(?:\s+|$)(.*)$""")


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no: int, indent: int, text: str):
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(text: str) -> str:
    """``text`` without a trailing `` # comment`` (outside quotes)."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " :[,{-"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


class _Reader:
    def __init__(self, text: str, path: Path):
        self.path = path
        self.lines: list[_Line] = []
        for no, raw in enumerate(text.splitlines(), 1):
            if "\t" in raw[: len(raw) - len(raw.lstrip(" \t"))]:
                self.fail(no, "a tab in the indentation (YAML indents with spaces)")
            body = _strip_comment(raw.lstrip(" "))
            if not body or body in ("---",) and no == 1:
                continue
            if body in ("---", "...") or body.startswith("%"):
                self.fail(no, f"{body!r}: one document of plain keys and values is read")
            self.lines.append(_Line(no, len(raw) - len(raw.lstrip(" ")), body))
        self.i = 0

    def fail(self, no: int, what: str):
        raise MalformedModelError(f"{self.path}:{no}: {what}; porting reads configurations as plain YAML data "
                                  "(mappings, lists, scalars)")

    # -- scalars ------------------------------------------------------------------------------------------------
    def scalar(self, text: str, no: int):
        text = text.strip()
        if not text:
            return None
        c = text[0]
        if c in "&*!":
            self.fail(no, f"{text.split()[0]!r}: anchors, aliases and tags are not read")
        if c in "|>":
            self.fail(no, f"{text!r}: block scalars are not read; write the value on one line")
        if c == "'":
            if len(text) < 2 or not text.endswith("'") or re.search(r"(?<!')'(?!')", text[1:-1].replace("''", "")):
                self.fail(no, f"{text}: unterminated or malformed single-quoted string")
            return text[1:-1].replace("''", "'")
        if c == '"':
            if len(text) < 2 or not text.endswith('"') or text.endswith('\\"') and not text.endswith('\\\\"'):
                self.fail(no, f"{text}: unterminated double-quoted string")
            import json

            try:
                return json.loads(text.replace("\\/", "/"))
            except ValueError:
                self.fail(no, f"{text}: an escape other than JSON's in a double-quoted string")
        if c == "[":
            if not text.endswith("]"):
                self.fail(no, f"{text}: a flow list must close on its line")
            inner = text[1:-1].strip()
            if any(ch in inner for ch in "[]{}'\""):
                self.fail(no, f"{text}: only flat flow lists of plain scalars are read")
            return [] if not inner else [self.scalar(v, no) for v in inner.split(",")]
        if c == "{":
            if text.replace(" ", "") != "{}":
                self.fail(no, f"{text}: flow mappings are not read; write the keys one per line")
            return {}
        if text in _NULL:
            return None
        if text in _BOOL:
            return _BOOL[text]
        plain = text.replace("_", "")
        if _INT.match(text):
            return int(plain)
        if _HEX.match(text) or _OCT.match(text):
            sign = -1 if plain.startswith("-") else 1
            return sign * int(plain.lstrip("+-"), 0)
        if _FLOAT.match(text):
            low = plain.lower()
            return float(low.replace(".inf", "inf").replace(".nan", "nan"))
        return text

    def key(self, text: str, no: int) -> tuple[str, str]:
        m = _KEY.match(text)
        if not m:
            self.fail(no, f"{text!r}: expected `key: value`")
        k = m.group(1)
        if not k:
            self.fail(no, "an empty key")
        if k[0] in "?&*!":
            self.fail(no, f"{k!r}: complex keys, anchors, aliases and tags are not read")
        return str(self.scalar(k, no)) if k[0] in "'\"" else k, m.group(2)

    # -- blocks -------------------------------------------------------------------------------------------------
    def node(self, indent: int):
        """The block starting at the current line, whose lines are indented exactly ``indent``."""
        line = self.lines[self.i]
        if line.text.startswith("- ") or line.text == "-":
            return self.sequence(indent)
        return self.mapping(indent)

    def mapping(self, indent: int) -> dict:
        out: dict = {}
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent:
                break
            if line.indent > indent:
                self.fail(line.no, "indented deeper than its mapping's keys")
            if line.text.startswith("- "):
                break
            k, rest = self.key(line.text, line.no)
            if k in out:
                self.fail(line.no, f"key {k!r} appears twice")
            self.i += 1
            out[k] = self.value(rest, indent, line.no)
        return out

    def sequence(self, indent: int) -> list:
        out: list = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent or not (line.text.startswith("- ") or line.text == "-"):
                if line.indent > indent:
                    self.fail(line.no, "indented deeper than its list's items")
                break
            if line.indent > indent:
                self.fail(line.no, "indented deeper than its list's items")
            rest = line.text[1:].lstrip(" ")
            col = line.indent + (len(line.text) - len(rest))
            if rest.startswith("- ") or rest == "-":  # "- - x": a list inside a list, its items at that column
                self.lines[self.i] = _Line(line.no, col, rest)
                out.append(self.sequence(col))
            elif rest and _KEY.match(rest) and rest[0] not in "'\"[{":
                # "- key: value" opens a mapping whose keys sit at the column after "- "
                self.lines[self.i] = _Line(line.no, col, rest)
                out.append(self.mapping(col))
            else:
                self.i += 1
                out.append(self.value(rest, indent, line.no, in_list=True))
        return out

    def value(self, rest: str, indent: int, no: int, in_list: bool = False):
        if rest:
            return self.scalar(rest, no)
        if self.i < len(self.lines):
            nxt = self.lines[self.i]
            if nxt.indent > indent or (not in_list and nxt.indent == indent and nxt.text.startswith("- ")):
                return self.node(nxt.indent)
        return None


def read_yaml(path: str | Path, text: str | None = None) -> dict:
    """The mapping at the top of the YAML file ``path`` (or of ``text``), as plain dicts, lists and scalars."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MalformedModelError(f"{path}: not UTF-8 text; expected a YAML configuration") from None
    r = _Reader(text, path)
    if not r.lines:
        raise MalformedModelError(f"{path}: empty; expected a YAML mapping (key: value lines)")
    if r.lines[0].indent != 0:
        r.fail(r.lines[0].no, "the first key is indented")
    doc = r.node(0)
    if r.i < len(r.lines):
        r.fail(r.lines[r.i].no, "unexpected indentation")
    if not isinstance(doc, dict):
        raise MalformedModelError(f"{path}: a YAML list at the top; expected a mapping (key: value lines)")
    return doc


def lookup(doc: dict, dotted: str):
    """``doc["a"]["b"]`` for ``"a.b"``; KeyError if absent."""
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}$")


def resolve(doc: dict, dotted: str, depth: int = 0):
    """The value at ``dotted`` with a whole-value ``${a.b}`` interpolation followed (OmegaConf's plain node
    reference; resolvers such as ``${now:...}`` are not evaluated: the string is returned)."""
    value = lookup(doc, dotted)
    m = _REF.match(value) if isinstance(value, str) else None
    if m and depth < 8:
        try:
            return resolve(doc, m.group(1), depth + 1)
        except KeyError:
            return value
    return value
