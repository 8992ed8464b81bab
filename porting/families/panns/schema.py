"""The ``config.json`` ``port convert`` writes for a PANNs tagger, and its schema (checked once, at read)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import MalformedModelError
from ...schema import (COMMON_CONVERTED, MAX_RATE, MIN_RATE, Int, Num, Schema, Str, check_converted_header, rule,
                       validate)
from .bodies import BODIES

FAMILY = "panns"

_FRONTEND = Schema(
    {"preset": Str(null=True), "sample_rate": Int(MIN_RATE, MAX_RATE), "window_size": Int(2, 1 << 16),
     "hop_size": Int(1, 1 << 16), "mel_bins": Int(1, 4096), "fmin": Num(0.0, null=True), "fmax": Num(0.0, null=True),
     "ref": Num(0.0, lo_open=True), "amin": Num(0.0, lo_open=True), "top_db": Num(0.0, null=True),
     "identified_by": Str()},
    required=("sample_rate", "window_size", "hop_size", "mel_bins"))
_WINDOWS = Schema({"window_s": Num(0.0, 3600.0, lo_open=True), "hop_s": Num(0.0, 3600.0, lo_open=True)},
                  required=("window_s", "hop_s"))


def _hop_within_fft(eff):
    fe = eff.get("frontend") or {}
    if fe.get("hop_size", 0) > fe.get("window_size", 0):
        return "frontend", "a hop_size of at most window_size"
    return None


SCHEMA = Schema(
    {**COMMON_CONVERTED, "family": Str((FAMILY,)), "body": Str(tuple(BODIES)), "frontend": _FRONTEND,
     "windows": _WINDOWS, "min_samples": Int(1, 1 << 24), "n_fft": Int(2, 1 << 16), "n_mels": Int(1, 4096)},
    required=("format", "family", "body", "frontend", "windows", "classes", "min_samples", "n_fft", "n_mels"),
    rules=(rule(_hop_within_fft),))


def check_converted(config, path: str | Path, elements: int | None = None) -> dict:
    out = validate(check_converted_header(config, path), SCHEMA, path)
    if out["frontend"]["window_size"] != out["n_fft"]:
        raise MalformedModelError(f"{path}: frontend.window_size {out['frontend']['window_size']} != n_fft "
                                  f"{out['n_fft']}; re-run `port convert`")
    return out


def make_config(spec, state: dict, min_samples: int, window_s: float) -> dict:
    from ... import __version__
    from ...synth import digest

    cfg = {
        "format": "porting.model/1",
        "family": FAMILY,
        "porting_version": __version__,
        "source": {"file": spec.path.name, "kind": "panns-checkpoint", "container": spec.container,
                   "sha256": {spec.path.name: spec.sha256}, "wrapper": spec.wrapper},
        "body": spec.body,
        "n_fft": spec.n_fft,
        "n_mels": spec.n_mels,
        "classes": list(spec.labels),
        "positive_index": None,
        "activation": {"name": "sigmoid"},
        "frontend": spec.frontend,
        "windows": {"window_s": window_s, "hop_s": window_s},
        "min_samples": min_samples,
        # the weights' digest (synth.digest: keys, dtypes, shapes, bytes): matches golden cases captured from them
        "state_digest": digest({k: t.detach().cpu().numpy() for k, t in state.items()}),
        "notes": list(spec.notes),
        "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in state.items()},
    }
    return json.loads(json.dumps(cfg))
