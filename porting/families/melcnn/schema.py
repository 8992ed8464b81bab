"""The ``config.json`` ``port convert`` writes for a librosa-mel CNN run, and its schema (checked once, at read)."""

from __future__ import annotations

import json

from ...schema import COMMON_CONVERTED, MAX_RATE, MIN_RATE, Bool, Int, Num, Schema, Str, check_converted_header, validate
from .bodies import BODIES

FAMILY = "melcnn"

_FRONTEND = Schema(
    {"sample_rate": Int(MIN_RATE, MAX_RATE), "audio_clip_duration": Num(0.0, 600.0, lo_open=True),
     "clip_samples": Int(1, 1 << 28), "n_fft": Int(16, 1 << 16), "hop_length": Int(1, 1 << 16),
     "n_mels": Int(1, 1024), "fmin": Num(0.0), "fmax": Num(0.0, null=True), "top_db": Num(0.0, null=True),
     "window": Str(("hann",)), "center": Bool(), "pad_mode": Str(("constant",)), "power": Num(2.0, 2.0),
     "htk": Bool(), "norm": Str(("slaney",)), "amin": Num(0.0, lo_open=True), "ref": Str(),
     "minmax_eps": Num(0.0)},
    required=("sample_rate", "clip_samples", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "amin",
              "minmax_eps"))
_HEAD = Schema({"kind": Str(("linear", "cosine")), "s": Num(0.0, lo_open=True, null=True), "source": Str()},
               required=("kind", "s"))
_WINDOWS = Schema({"window_s": Num(0.0, 3600.0, lo_open=True), "hop_s": Num(0.0, 3600.0, lo_open=True)},
                  required=("window_s", "hop_s"))

SCHEMA = Schema(
    {**COMMON_CONVERTED, "family": Str((FAMILY,)), "body": Str(BODIES), "frontend": _FRONTEND, "head": _HEAD,
     "bn_eps": Num(0.0, 1.0, lo_open=True), "windows": _WINDOWS,
     "body_params": Schema({"width_mult": Num(0.0, 8.0, lo_open=True), "depth_mult": Num(0.0, 8.0, lo_open=True)})},
    required=("format", "family", "body", "frontend", "head", "bn_eps", "windows", "classes"))


def check_converted(config, path, elements: int | None = None) -> dict:
    return validate(check_converted_header(config, path), SCHEMA, path)


def make_config(spec, state: dict) -> dict:
    from ... import __version__
    from ...synth import digest

    window_s = spec.frontend["clip_samples"] / spec.frontend["sample_rate"]
    cfg = {
        "format": "porting.model/1",
        "family": FAMILY,
        "porting_version": __version__,
        "source": {"file": spec.checkpoint.name, "run": spec.path.name, "kind": "hydra-run",
                   "container": spec.container, "sha256": {spec.checkpoint.name: spec.sha256,
                                                           ".hydra/config.yaml": spec.config_sha256}},
        "body": spec.body,
        "classes": list(spec.labels),
        "positive_index": None,
        "activation": {"name": "softmax", "dim": -1},
        "frontend": spec.frontend,
        "head": spec.head,
        "bn_eps": spec.bn_eps,
        "body_params": spec.body_params,
        "windows": {"window_s": window_s, "hop_s": window_s},
        "state_digest": digest({k: t.detach().cpu().numpy() for k, t in state.items()}),
        "notes": list(spec.notes),
        "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for k, t in state.items()},
    }
    return json.loads(json.dumps(cfg))
