"""The schema of the config.json ``port convert`` writes for an OrcaHello learner (checked at load, before any
tensor is used)."""

from __future__ import annotations

from pathlib import Path

from ...schema import (COMMON_CONVERTED, MAX_RATE, MIN_RATE, Bool, Int, ListOf, Num, Schema, Str, check_converted_header,
                       positive_in_classes, rule, validate)


_NORMALIZE = Schema({"mean": ListOf(Num(), 1, 4096), "std": ListOf(Num(0.0, lo_open=True), 1, 4096)},
                    required=("mean", "std"), null=True)
_FRONTEND_LEGACY = Schema({
    "windows": Schema({"window_s": Int(1, 3600), "hop_s": Int(1, 3600), "sample_rate": Int(MIN_RATE, MAX_RATE),
                       "downmix": Bool(), "cache_round_trips": Bool()}),
    "mel": Schema({"n_fft": Int(2, 1 << 16), "hop_length": Int(1, 1 << 16), "win_length": Int(1, 1 << 16, null=True),
                   "n_mels": Int(1, 4096), "f_min": Num(0.0), "f_max": Num(0.0), "mel_sample_rate": Int(MIN_RATE, MAX_RATE),
                   "power": Num(0.0, lo_open=True), "center": Bool(), "pad_mode": Str(("reflect", "constant")),
                   "top_db": Num(0.0, null=True), "amin": Num(0.0, lo_open=True)}),
    "pad": Schema({"duration_ms": Int(1, 3_600_000), "sample_rate": Int(MIN_RATE, MAX_RATE),
                   "hop_length": Int(1, 1 << 16), "pad_value": Num()}),
})
LEGACY_CONVERTED = Schema(
    {**COMMON_CONVERTED, "normalize": _NORMALIZE, "frontend": _FRONTEND_LEGACY,
     "architecture": Schema({"class": Str()}, required=("class",))},
    required=("format", "architecture", "frontend", "state_dict"), rules=(rule(positive_in_classes),))


def check_converted(config, path: str | Path, elements: int | None = None) -> dict:
    """An OrcaHello ``config.json`` written by ``port convert``."""
    return validate(check_converted_header(config, path), LEGACY_CONVERTED, path)
