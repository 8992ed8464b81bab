"""Where results go: output paths checked before any work starts, files written atomically, and how an error
names an option (the Python parameter, or the CLI flag when the CLI is the caller).

* ``check_output_file(path, option)``: a file to be written (``--json``, ``--csv``): not a directory or a
  special file, and its directory exists or can be created, and accepts new files (probed by creating and
  removing a temp file there, the only test that also catches /proc, /sys, read-only mounts and missing
  permissions as root).
* ``check_output_dir(path, option, exists_ok)``: a directory to be created or written into (``--out``,
  ``--report``).
* ``write_text_atomic(path, text)``: a temp file in the same directory, flushed, then ``os.replace``d onto
  ``path``: a reader sees the old file or the new one, never half of one, and a failure leaves nothing.
* ``check_not_inputs(out, option, inputs)``: an output that is, or contains, one of the command's inputs is refused
  before any work (``--json rec.wav`` would replace the recording; ``--out`` the folder holding the model).
* ``check_name(path, option)``: a path the OS cannot name (a component over NAME_MAX bytes, a NUL) is refused in
  one line instead of an ``OSError`` from the first ``stat``.

``spell(param, value)`` is how a library error names an option: ``overwrite=True`` / ``device='tpu'`` for a
Python caller, ``--force`` / ``--device tpu`` while the CLI runs (``cli_spelling(FLAGS)`` maps parameters to
flags for the duration of a command), so one check serves both and each caller reads its own names.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import PortingError


class OutputError(PortingError):
    """An output path cannot be written (a directory, a special file, no writable parent, ...)."""


_MISSING = object()
_FLAGS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("porting_cli_flags", default=None)


@contextlib.contextmanager
def cli_spelling(flags: Mapping[str, str]) -> Iterator[None]:
    """While active, ``spell`` names parameters by their CLI flags (``{"overwrite": "--force", ...}``)."""
    token = _FLAGS.set(flags)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def spell(param: str, value=_MISSING) -> str:
    """``param=value`` (Python caller) or ``--flag value`` (CLI caller; ``--flag`` alone for True)."""
    flag = (_FLAGS.get() or {}).get(param)
    if flag is None:
        return param if value is _MISSING else f"{param}={value!r}"
    if value is _MISSING or value is True:
        return flag
    return f"{flag} {value}"


NAME_MAX = 255  # bytes per path component on Linux file systems (os.pathconf refines it where the path exists)
PATH_MAX = 4096


def name_problem(path: str | Path) -> str | None:
    """Why the OS cannot even look ``path`` up (component or path too long, NUL byte), or None."""
    raw = os.fsencode(os.fspath(path))
    if b"\0" in raw:
        return "contains a NUL byte"
    if len(raw) >= PATH_MAX:
        return f"path longer than {PATH_MAX - 1} bytes"
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > NAME_MAX:
        return f"a name in it is {longest} bytes, longer than the {NAME_MAX} a file name may have"
    return None


def check_name(path: str | Path, option: str, error: type[PortingError] = OutputError) -> Path:
    """``path`` if the OS can look it up; else ``error`` naming the option."""
    problem = name_problem(path)
    if problem:
        raise error(f"{_short(path)}: {problem}; choose another {spell(option)}")
    return Path(path)


def _short(path: str | Path) -> str:
    """A path for a one-line message: one over 120 characters shortened in the middle."""
    text = os.fspath(path)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _under(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links and symlinks alike
    except OSError:
        return False


def check_not_inputs(out: str | Path, option: str, inputs: "list[tuple[str | Path, str]]") -> None:
    """Refuse an output path that is one of ``inputs`` (``(path, what)``: the same file, through any link) or a
    directory that contains one (``--out`` replaces the whole directory). Nothing is created."""
    out = Path(out)
    real_out = out.resolve()
    for inp, what in inputs:
        if inp is None or name_problem(inp):
            continue
        inp = Path(inp)
        real_in = inp.resolve()
        if real_out == real_in or _same_file(out, inp):
            raise OutputError(f"{out}: is the {what} this command reads ({inp}); choose another {spell(option)}")
        if _under(real_in, real_out):
            raise OutputError(f"{out}: contains the {what} this command reads ({inp}), and would be replaced; "
                              f"choose another {spell(option)}")
        if real_in.is_dir() and _under(real_out, real_in):
            raise OutputError(f"{out}: is inside the {what} folder this command reads ({inp}); choose another "
                              f"{spell(option)} outside it")


def _check_parent(path: Path, option: str, what: str) -> None:
    """The directory that will hold ``path`` exists or can be created, and accepts new files."""
    parent = path.parent
    base = _first_existing(parent)
    if not base.is_dir():
        raise OutputError(f"{path}: cannot write here, {base} is a file, not a directory; choose another "
                          f"{spell(option)}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".porting-probe.", dir=base)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{path}: cannot create {what} in {base} ({reason}); choose another {spell(option)}") from exc
    os.close(fd)
    os.unlink(probe)
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in path.parts[len(base.parts):]:
        if len(os.fsencode(part)) > name_max:
            raise OutputError(f"{path}: name longer than {name_max} bytes; choose another {spell(option)}")


def check_output_file(path: str | Path, option: str = "path") -> Path:
    """``path`` can receive a file written by ``write_text_atomic``; ``OutputError`` (one line) if not.

    An existing regular file is fine (it is replaced at the end); a directory or a special file (device, FIFO,
    socket) is refused, so ``os.replace`` never lands on one. Nothing is created.
    """
    text = os.fspath(path)
    if text == "":
        raise OutputError(f"{spell(option)}: empty path; pass a file name")
    if text.endswith("/") or Path(text).name in ("", ".", ".."):  # `--json newdir/` is a directory, not a file name
        raise OutputError(f"{text}: names a directory; {spell(option)} takes a file path (e.g. "
                          f"{text.rstrip('/') or '.'}/results.{'csv' if 'csv' in option else 'json'})")
    check_name(path, option)
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; {spell(option)} takes a file path (a file inside it, for example)")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: not a regular file (device, FIFO or socket); choose another {spell(option)}")
    _check_parent(path, option, "a file")
    return path


def check_output_files(inputs: "list[tuple[str | Path, str]]" = (), **paths: str | Path | None) -> None:
    """``check_output_file`` for each ``option=path`` given (None: not asked for), none of them one of ``inputs``
    (``check_not_inputs``), and no file named twice."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        path = check_output_file(path, option)
        check_not_inputs(path, option, list(inputs))
        key = path.resolve()
        if key in seen:
            raise OutputError(f"{path}: given to both {spell(seen[key])} and {spell(option)}; use two files")
        seen[key] = option


def check_output_dir(path: str | Path, option: str = "out", exists_ok: bool = True, replace: bool = False,
                     overwrite: str = "overwrite") -> Path:
    """``path`` can be created as a directory, or (``exists_ok``) is one already that can be written into, or
    (``exists_ok`` and ``replace``) replaced by a sibling renamed onto it, so its parent must accept new entries.

    ``exists_ok=False``: an existing ``path`` is refused, naming ``overwrite`` (spelled for the caller:
    ``overwrite=True`` or ``--force``). Nothing is created.
    """
    if str(path) == "":
        raise OutputError(f"{spell(option)}: empty path; pass a directory name")
    check_name(path, option)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; choose another {spell(option)}")
    if path.is_dir():
        if not exists_ok:
            raise OutputError(f"{path}: already exists; choose another {spell(option)} or pass "
                              f"{spell(overwrite, True)} to replace it")
        if not replace:
            _check_parent(path / ".probe", option, "files")  # written into: it must accept new files itself
            return path
    _check_parent(path, option, "a directory")
    return path


def _new_file_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)  # replacing a file keeps its permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomic(path: str | Path, text: str, option: str = "path") -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temp file in the same directory and ``os.replace``.

    Missing parent directories are created (``mkdir -p``). A failure raises ``OutputError`` and leaves
    ``path`` as it was (absent, or the old file) with no temp file behind.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{path}: cannot write ({reason}); choose another {spell(option)}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path
