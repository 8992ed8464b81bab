"""Per-channel normalization of the padded spectrogram, when the learner carries stats (golden/README.md §4).

Legacy (fastai 1.0.61 ``vision.data.normalize`` via the ``ImageDataBunch.normalize`` shim that a
normalized fastai_audio export needs): ``(x - mean[..., None, None]) / std[..., None, None]`` with float32
stat tensors, applied to the whole ``[B, C, F, T]`` batch **including the 0.0 dB padding**, which
therefore becomes ``-mean / std``. Learners exported without ``data.normalize()`` carry no stats: identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _stat(values: Sequence[float], name: str, x: Tensor) -> Tensor:
    # float32 first: legacy stats were float32 tensors (the JSON/config floats are their exact values).
    t = torch.as_tensor(list(values), dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    if t.dim() != 1 or t.numel() not in (1, x.shape[1]):
        raise ValueError(
            f"normalize: {name} has {t.numel()} values for {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''}; give one per channel"
        )
    return t.view(1, -1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """``(x - mean) / std`` per channel of ``[B, C, F, T]``; ``x`` unchanged when both stats are None."""
    if mean is None and std is None:
        return x
    if mean is None or std is None:
        raise ValueError("normalize: give both mean and std, or neither")
    if x.dim() != 4:
        raise ValueError(f"normalize: x must be [B, C, F, T], got shape {tuple(x.shape)}")
    return (x - _stat(mean, "mean", x)) / _stat(std, "std", x)
