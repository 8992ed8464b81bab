"""Typed errors with one-line messages: what, where, and what to do.

The CLI prints ``error: <message>`` and exits non-zero for any ``PortingError``;
it never shows a traceback for them.
"""

from __future__ import annotations


class PortingError(Exception):
    """Base class. ``str(err)`` is a single line meant for a person."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnsafePickleError(PortingError):
    """The pickle reaches for something we refuse to even record (os.system, eval, ...)."""


class MalformedModelError(PortingError):
    """The file is not a readable learner/module pickle (empty, truncated, not a pickle, ...)."""


class UnsupportedModelError(PortingError):
    """The pickle is readable but holds no model we know how to extract."""


class UnsupportedLayerError(PortingError):
    """A module class in the recorded tree has no plain-torch rebuild."""


class AudioError(PortingError):
    """A recording cannot be decoded or used (unreadable, empty, NaN/Inf, too short, ...)."""


class GoldenError(PortingError):
    """A golden store or case is missing, tampered with or malformed."""


class ParityError(PortingError):
    """A port output is outside tolerance against its golden."""


class ExportError(PortingError):
    """An exported artifact could not be produced or failed verification."""
