"""porting: verifiable porting of legacy audio classifiers.

Public API (kept small on purpose):

* ``load_model(path)``  -> ``(model, config)`` from a source model (learner ``.pkl``, HF folder, any registered
  family's) or a converted directory.
* ``convert(source, out)`` -> writes ``model.safetensors`` + ``config.json`` (+ verified exports) atomically.
* ``detect(paths, model)`` -> each recording's results (OrcaHello: per-window confidences and the per-second table).

Families (``porting.family``) are found through the entry-point group ``porting.families``.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The three functions are resolved on first use, so that `import porting` (and with it `port --help`,
# `port golden verify`) does not import torch: the submodules that define them do.
_FUNCTIONS = {"convert": ".convert", "load_model": ".convert", "detect": ".detect"}

__all__ = ["__version__", "load_model", "convert", "detect"]

if TYPE_CHECKING:  # pragma: no cover
    from .convert import convert, load_model
    from .detect import detect


def __getattr__(name: str):
    if name in _FUNCTIONS:
        value = getattr(import_module(_FUNCTIONS[name], __name__), name)
        globals()[name] = value  # cached; later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FUNCTIONS))


class _Package(types.ModuleType):
    """Keeps ``porting.convert`` and ``porting.detect`` the functions, whichever code imports them first.

    The functions share their names with the submodules that define them, and the import system binds a
    submodule as an attribute of its package the first time it is imported (``import porting.convert``,
    ``from porting.detect import ...``). That binding is dropped here: the function takes the name, and the
    submodule stays what ``sys.modules["porting.convert"]``, ``importlib.import_module("porting.convert")`` and
    ``from porting.convert import ...`` give.
    """

    def __setattr__(self, name: str, value) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
