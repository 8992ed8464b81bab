"""What every family's stage graph shares: the output activations a config.json may name, applied once here."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import UnsupportedModelError

ACTIVATIONS = ("softmax", "sigmoid", "exp", "identity")


def activate(logits: Tensor, act: dict) -> Tensor:
    """The activation fastai's ``predict`` applied, as recorded from the loss (README §4: softmax)."""
    name = act.get("name")
    if name == "softmax":
        return torch.softmax(logits, dim=int(act.get("dim", -1)))
    if name == "sigmoid":
        return torch.sigmoid(logits)
    if name == "exp":
        return torch.exp(logits)
    if name == "identity":
        return logits
    raise UnsupportedModelError(f"output activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
