"""Checks every state dict gets at read: floating dtypes where the layers hold floats, finite values.

Why at read: an int8 tensor reached weight norm and died in a ``NotImplementedError``; NaN or Inf weights
converted with exit 0 and produced ``NaN`` logits (and bare ``NaN`` tokens in JSON) for every recording.
"""

from __future__ import annotations

from pathlib import Path

from . import files
from ..errors import MalformedModelError

CONFIG_FORMAT = "porting.model/1"  # config.json of a folder `port convert` wrote
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

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


def check_keys(path, state: dict, want: dict, fix: str) -> None:
    """Every key of the rebuild's ``want`` state present in ``state`` with its shape, none extra: one line naming the
    first problem (what ``load_state_dict(strict=False)`` would fill or drop silently), ending with ``fix``."""
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    if missing or unexpected:
        more = lambda xs: f" and {len(xs) - 1} more" if len(xs) > 1 else ""  # noqa: E731
        what = f"missing {missing[0]}{more(missing)}" if missing else f"unexpected {unexpected[0]}{more(unexpected)}"
        raise MalformedModelError(f"{path}: keys do not match the rebuilt body ({what}); porting loads strictly, never "
                                  f"filling a missing weight; {fix}")
    for k, t in want.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise MalformedModelError(f"{path}: tensor {k} has shape {list(state[k].shape)}, the body needs "
                                      f"{list(t.shape)}")


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


def write_model(tmp: Path, state: dict, config: dict, sha256: str) -> None:
    """``model.safetensors`` (the source's sha256 in its metadata) + ``config.json`` into ``tmp``, world-readable."""
    import json
    import os

    from safetensors.torch import save_file

    save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "source_sha256": sha256})
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
    for f in (WEIGHTS_NAME, CONFIG_NAME):
        os.chmod(tmp / f, 0o644)


def read_converted(path: Path, check_converted) -> tuple[dict, dict]:
    """``(config, state)`` of a folder ``port convert`` wrote: config.json checked by the family's
    ``check_converted`` (layout first, so a non-porting folder is named before its weights; then against the
    elements the weights hold) and the weights by ``check_weights``, all before anything is built."""
    if not files.exists(path / CONFIG_NAME):
        raise MalformedModelError(f"{path}: no {CONFIG_NAME}; pass a folder written by `port convert`, a learner .pkl, "
                                  "or an HF model folder (config.json + model.safetensors)")
    raw = files.read_json(path / CONFIG_NAME, "the converted model config", fix="re-run `port convert`")
    check_converted(raw, path / CONFIG_NAME)
    state = check_weights(read_safetensors(path / WEIGHTS_NAME, "re-run `port convert`"), path / WEIGHTS_NAME)
    return check_converted(raw, path / CONFIG_NAME, elements=sum(t.numel() for t in state.values())), state
