"""The one place porting opens a file a user named: regular files only, size-bounded, one-line errors.

Why one place: ``open()`` on a FIFO blocks until a writer appears (``port inspect f.pkl`` hung forever), a
character device such as ``/dev/zero`` streams without end, and a directory fails with a bare ``IsADirectoryError``.
Every path is opened with ``O_NONBLOCK`` (so a FIFO open returns at once), checked with ``fstat`` on the open
descriptor (no race with a rename between a check and the open), and refused unless it is a regular file. Each
reader takes the ``PortingError`` class of its caller (a model, a recording, a golden store) so the CLI prints one
``error: <file>: <what is wrong>; <what to do>`` line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import MalformedModelError, PortingError

MAX_JSON_BYTES = 64 << 20  # a config, manifest or parity.json; porting's largest (a converted config) is ~100 KB


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, what: str = "file", error: type[PortingError] = MalformedModelError,
                 max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading, refused in one line unless it is a regular file (at most
    ``max_bytes``). ``what`` names the file's role in the message (``the model config``)."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc}); check the path") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: is {_kind(st.st_mode)}, not a regular file; pass {what} as a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise error(f"{path}: {what} is {st.st_size:,} bytes, more than the {max_bytes:,} porting reads; "
                        "pass the right file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, what: str = "file", error: type[PortingError] = MalformedModelError,
               max_bytes: int | None = None) -> bytearray:
    """The whole regular file (a mutable buffer, so tensors can be views of it)."""
    path = Path(path)
    with open_regular(path, what, error, max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        data = bytearray(size)
        try:
            got = f.readinto(data)
            more = f.read(1)
        except OSError as exc:
            raise error(f"{path}: cannot read {what} ({exc.strerror or exc}); check the file") from exc
    if got != size or more:
        raise error(f"{path}: {what} changed while being read; try again")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(path: str | Path, what: str = "file", error: type[PortingError] = MalformedModelError,
              fix: str = "restore or regenerate it", max_bytes: int = MAX_JSON_BYTES):
    """Strict JSON (UTF-8, no NaN/Infinity) of a regular file; nesting too deep for json (100k levels) is an error
    like any other malformed JSON, never a RecursionError."""
    path = Path(path)
    data = read_bytes(path, what, error, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start}); {fix}") from exc
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError as exc:
        raise error(f"{path}: {what} nests deeper than Python's JSON reader allows; {fix}") from exc
    except ValueError as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc}); {fix}") from exc


def is_regular(path: str | Path) -> bool:
    """Whether ``path`` is a regular file (following symlinks), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def exists(path: str | Path) -> bool:
    """Whether anything is at ``path`` (a FIFO too: a probe must not take 'not a regular file' for 'absent')."""
    try:
        os.stat(path)
        return True
    except (OSError, ValueError):
        return False
