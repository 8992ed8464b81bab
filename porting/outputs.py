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


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


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
    path = Path(path)
    if str(path) in ("", "."):
        raise OutputError(f"{spell(option)}: empty path; pass a file name")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; {spell(option)} takes a file path (a file inside it, for example)")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: not a regular file (device, FIFO or socket); choose another {spell(option)}")
    _check_parent(path, option, "a file")
    return path


def check_output_files(**paths: str | Path | None) -> None:
    """``check_output_file`` for each ``option=path`` given (None: not asked for), and no file named twice."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        path = check_output_file(path, option)
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
    path = Path(path)
    if str(path) == "":
        raise OutputError(f"{spell(option)}: empty path; pass a directory name")
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
