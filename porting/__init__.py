"""porting: verifiable porting of legacy audio classifiers.

Public API (kept small on purpose):

* ``load_model(path)``  -> ``(model, config)`` from a learner ``.pkl`` or a converted directory.
* ``convert(pkl, out)`` -> writes ``model.safetensors`` + ``config.json`` atomically.
* ``detect(path, model_dir_or_pkl)`` -> per-window confidences and the per-second table.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "convert", "detect"]


def __getattr__(name):  # lazy: keep `import porting` cheap and free of torch until needed
    if name in ("load_model", "convert"):
        from . import convert as _convert

        return getattr(_convert, name)
    if name == "detect":
        from .detect import detect

        return detect
    raise AttributeError(name)
