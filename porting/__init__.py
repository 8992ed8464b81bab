"""porting: verifiable porting of legacy audio classifiers.

Public API (kept small on purpose):

* ``load_model(path)``  -> ``(model, config)`` from a learner ``.pkl`` or a converted directory.
* ``convert(pkl, out)`` -> writes ``model.safetensors`` + ``config.json`` atomically.
* ``detect(paths, model)`` -> per-window confidences and the per-second table for each recording.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Imported eagerly: the functions share their names with their submodules, and binding them here
# (after the submodule import) keeps `porting.convert` / `porting.detect` the functions.
from .convert import convert, load_model  # noqa: E402
from .detect import detect  # noqa: E402

__all__ = ["__version__", "load_model", "convert", "detect"]
