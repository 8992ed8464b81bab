"""Checks every state dict gets at read: floating dtypes where the layers hold floats, finite values.

Why at read: an int8 tensor reached weight norm and died in a ``NotImplementedError``; NaN or Inf weights
converted with exit 0 and produced ``NaN`` logits (and bare ``NaN`` tokens in JSON) for every recording.
"""

from __future__ import annotations

from pathlib import Path

from . import files
from ..errors import MalformedModelError

# Buffers torch keeps as integers (BatchNorm's step counter); every other tensor a rebuild loads is a float.
INTEGER_SUFFIXES = ("num_batches_tracked",)


def check_weights(state: dict, path: str | Path) -> dict:
    """``state`` unchanged, or one line naming ``path``, the tensor and what to do."""
    import torch

    for key, t in state.items():
        if key.endswith(INTEGER_SUFFIXES):
            continue
        if not t.is_floating_point():
            raise MalformedModelError(
                f"{path}: tensor {key} is {str(t.dtype).replace('torch.', '')}, but the layer holds floats "
                "(quantized or integer checkpoints are not supported); export the float32 weights")
        if t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise MalformedModelError(
                f"{path}: tensor {key} holds {bad:,} NaN/Inf value{'s' if bad != 1 else ''}; the weights are "
                "corrupt or diverged: use a checkpoint from before training diverged")
    return state


def read_safetensors(path: str | Path, fix: str) -> dict:
    """``{name: tensor}`` of a .safetensors file read through ``porting.io.files`` (a FIFO or device is refused,
    never opened by safetensors itself)."""
    from safetensors.torch import load

    data = files.read_bytes(path, "the weights")
    try:
        return load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MalformedModelError(f"{path}: not a readable safetensors file ({why}); {fix}") from exc
