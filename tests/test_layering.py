"""The import contract of porting/ (issue 22), read from the source with ast (function-local imports count):

* the engine (every module outside ``porting.families``) never imports a family module;
* a family never imports another family;
* no import cycle anywhere in porting/;
* no engine module names a family: the registry's ``BUILTIN`` entry points (porting/family.py) are the one place.

``check`` is run on the package and, to show it bites, on a copy with one engine->family import added.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "porting"
FAMILIES = "porting.families"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of porting/ that ``name`` imports (``from x import y`` counts y when y is a module)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = set()  # `if TYPE_CHECKING:` bodies never run
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = base[: len(base) - node.level + 1]
                mod = ".".join(head + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            # `from pkg import sub` imports pkg too, but pkg is an ancestor already being imported: count the subs
            targets = subs if len(subs) == len(node.names) else [mod] + subs
        else:
            continue
        for t in targets:
            while t and t not in known:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _family(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith(FAMILIES + ".") and len(parts) > 2 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _family_names(mods: dict[str, Path]) -> set[str]:
    return {m.split(".")[2] for m in mods if _family(m)}


def _names_a_family(path: Path, names: set[str]) -> list[str]:
    """String constants in ``path`` equal to a family name or naming a family module (outside the BUILTIN list)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "BUILTIN" for t in node.targets):
            skip |= {id(c) for c in ast.walk(node.value)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            v = node.value
            if v in names or any(f"families.{n}" in v and "\n" not in v and " " not in v for n in names):
                bad.append(f"{path.name}:{node.lineno}: {v!r}")
    return bad


def check(root: Path = PACKAGE) -> list[str]:
    """Every broken rule of the contract, one line each (empty: the contract holds)."""
    mods = _modules(root)
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    problems = []
    for m, deps in sorted(graph.items()):
        fam = _family(m)
        for d in sorted(deps):
            dfam = _family(d)
            if dfam is None:
                continue
            if fam is None:
                problems.append(f"engine module {m} imports family module {d}")
            elif dfam != fam:
                problems.append(f"family module {m} imports another family's module {d}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    names = _family_names(mods)
    for m, p in sorted(mods.items()):
        if _family(m) is None and m != FAMILIES:
            problems += [f"engine module {m} names a family: {b}" for b in _names_a_family(p, names)]
    return problems


def test_import_contract_holds():
    assert check() == []


def test_contract_catches_an_engine_to_family_import(tmp_path):
    copy = tmp_path / "porting"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    detect = copy / "detect.py"
    detect.write_text(detect.read_text() + "\n\ndef _sneaky():\n    from .families.orcahello import layers\n")
    assert check(copy) == ["engine module porting.detect imports family module porting.families.orcahello.layers"]


def test_contract_catches_a_family_to_family_import_and_a_cycle(tmp_path):
    copy = tmp_path / "porting"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (copy / "families" / "hf" / "detect.py").write_text(
        (copy / "families" / "hf" / "detect.py").read_text() + "\nfrom ..orcahello import aggregate  # noqa\n")
    (copy / "errors.py").write_text((copy / "errors.py").read_text() + "\nfrom . import outputs  # noqa\n")
    problems = check(copy)
    assert "family module porting.families.hf.detect imports another family's module " \
           "porting.families.orcahello.aggregate" in problems
    assert any(p.startswith("import cycle:") and "porting.errors" in p for p in problems)


def test_contract_catches_an_engine_branch_on_a_family_name(tmp_path):
    copy = tmp_path / "porting"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (copy / "summary.py").write_text((copy / "summary.py").read_text() + "\n\ndef _is_hf(r):\n    return r == 'hf'\n")
    assert any("engine module porting.summary names a family" in p for p in check(copy))
