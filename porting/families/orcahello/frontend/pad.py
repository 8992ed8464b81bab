"""Stage C: crop or pad the dB spectrogram to a fixed number of frames (golden/README.md §3, "Crop/pad").

Legacy: fastai_audio 0.1 ``tfm_crop_time(spectro, sr=20000, 4000 ms, hop=256, "zeros-after")``.

* Shorter than (or equal to) ``cfg.frames`` (= 312; every 2-s window has 157): append
  ``cfg.pad_value`` frames at the end. The value is 0.0 **in dB** -- usually *above* the spectrogram's
  own values -- because legacy concatenated ``torch.zeros`` after the dB conversion. With 312 frames
  nothing is appended.
* Longer: legacy took a **random** crop (``random.randint(0, T - frames)``), so there is no legacy value
  to reproduce; this port keeps the first ``cfg.frames`` frames (start 0, deterministic, the same
  alignment as "zeros-after"). The legacy flow never reaches this branch (a 2-s window has 157 frames).

Legacy compared durations (``4.0 >= hop * T / sr``) rather than frame counts; for integer T that is the
same as ``T <= int(sr * 4.0 / hop)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import PadConfig


def crop_pad(spec: Tensor, cfg: PadConfig = PadConfig()) -> Tensor:
    """``[B, C, F, T]`` -> ``[B, C, F, cfg.frames]``: pad value appended after, or the first frames kept."""
    if not torch.is_tensor(spec) or spec.dim() != 4:
        shape = tuple(spec.shape) if torch.is_tensor(spec) else type(spec).__name__
        raise ValueError(f"crop_pad: spec must be a [B, C, F, T] tensor, got {shape}")
    frames = cfg.frames
    t = spec.shape[-1]
    if t > frames:
        return spec[..., :frames].clone()
    pad = spec.new_full((*spec.shape[:-1], frames - t), cfg.pad_value)
    return torch.cat((spec, pad), dim=-1)
