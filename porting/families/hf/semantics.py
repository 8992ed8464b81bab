"""Which transformers major's semantics a rebuilt HF model follows (issue 20).

transformers 4.x and 5.x compute different results from the same checkpoint in the places listed in
``DIFFERENCES`` (evidence: golden/hf-t5/README.md, captured with both majors). A checkpoint is ported with the
semantics of the transformers that saved it -- ``transformers_version`` in its config.json, which every
``save_pretrained`` writes -- because that is the library its author trained, evaluated and published with.
``--transformers-semantics 4|5`` overrides. A config.json without the key (hand-written, or older than any
transformers that writes it) is ported with 4.x semantics, and the record says it was assumed.

The rebuilt modules that differ read ``SEMANTICS_KEY`` from the config dict they are built from (``with_semantics``)
and keep it as a plain Python int attribute ``transformers_semantics``, so exports trace the branch taken.
"""

from __future__ import annotations

import re

from ...errors import MalformedModelError, UnsupportedModelError

MAJORS = (4, 5)
ASSUMED = 4  # config.json without transformers_version
NEWEST_CHECKED = "5.25.0"
SEMANTICS_KEY = "porting_transformers_semantics"  # private key of the config dict handed to the rebuild  # the newest 5.x the goldens were captured with (golden/hf-t5/env.json)

# Every place where 4.x and 5.x differ for the architectures porting rebuilds (golden/hf-t5/README.md §4 has the
# evidence: where in transformers, which version, how far the logits move).
DIFFERENCES = {
    "stable-layer-norm-last-hidden-state": (
        "wav2vec2/HuBERT/WavLM with do_stable_layer_norm: hidden_states[-1] is the final encoder.layer_norm output "
        "in 4.x, the last layer's output BEFORE that norm in 5.x (output capturing hooks on the layers); "
        "use_weighted_layer_sum sums a different last term"),
    "sewd-conv-hidden-state": (
        "SEW-D with conv_kernel_size > 0: hidden_states[1] is the layer-0 output AFTER the encoder conv module in "
        "4.x, before it in 5.x; use_weighted_layer_sum sums a different term"),
    "sewd-pos-att-type-string": (
        "SEW-D pos_att_type given as a string (\"p2c|c2p\"): 4.x's SEWDConfig makes it a list of characters "
        "(both relative terms off), 5.x's strict dataclass config refuses to load it"),
    "tie-last-hidden-states": (
        "5.x only: config.tie_last_hidden_states true makes hidden_states[-1] the model's last_hidden_state again "
        "(utils/output_capturing.py capture_outputs), undoing the two differences above for that checkpoint"),
    "ast-last-hidden-state": (
        "AST: hidden_states[-1] is last_hidden_state (after ASTModel.layernorm) in 4.57 (check_model_inputs), the "
        "last layer's raw output in 5.x (tie_last_hidden_states=False); logits unchanged"),
}

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


def parse_major(version, where: str = "config.json") -> int:
    """The major of a ``transformers_version`` string such as ``"5.24.0"`` or ``"4.57.1.dev0"``."""
    m = _VERSION.match(version) if isinstance(version, str) else None
    if m is None:
        raise MalformedModelError(f"{where}: transformers_version {version!r} is not a version string such as "
                                  "\"4.57.1\"; fix it, or pass --transformers-semantics 4|5")
    return int(m.group(1))


def check_override(value) -> int | None:
    """``--transformers-semantics``: None, 4 or 5 (ints or their strings)."""
    if value is None:
        return None
    try:
        major = int(value)
    except (TypeError, ValueError):
        major = None
    if major not in MAJORS:
        raise UnsupportedModelError(f"--transformers-semantics {value}: use 4 or 5")
    return major


def resolve(config: dict, override=None, where: str = "config.json") -> dict:
    """``{"major", "transformers_version", "source", "note"}``: what a port of ``config`` follows and why.

    The recorded version is validated here even under an override, so a broken config.json is reported once."""
    override = check_override(override)
    tie = config.get("tie_last_hidden_states")
    if tie is not None and not isinstance(tie, bool):
        raise MalformedModelError(f"{where}: tie_last_hidden_states {tie!r} is not true, false or null")
    version = config.get("transformers_version")
    recorded = None if version is None else parse_major(version, where)
    if recorded is None:
        follows, source = ASSUMED, "assumed"
        note = f"config.json records no transformers_version: {ASSUMED}.x semantics assumed"
    elif recorded < 4:
        follows, source = 4, "config.json"
        note = f"saved by transformers {version}: 4.x semantics (the 5.x changes came later)"
    elif recorded > 5:
        follows, source = 5, "config.json"
        note = (f"saved by transformers {version}, newer than any checked (newest {NEWEST_CHECKED}): following 5.x; "
                "check it with --golden on a capture of your own")
    else:
        follows, source = recorded, "config.json"
        note = f"saved by transformers {version}: {recorded}.x semantics"
    if override is not None and override != follows:
        note = f"--transformers-semantics {override} overrides: {note}"
        follows, source = override, "override"
    elif override is not None:
        source = "override" if source == "assumed" else source
    return {"major": follows, "transformers_version": version, "source": source, "note": note}


def describe(sem: dict) -> str:
    """One line for ``port inspect`` and the model card."""
    return f"transformers {sem['major']}.x ({sem['note']})"


def with_semantics(config: dict, major: int) -> dict:
    """A copy of the HF config dict carrying ``SEMANTICS_KEY``, which the rebuilt modules read at construction
    (some differences change which parameters exist, e.g. SEW-D's ``pos_att_type``)."""
    if major not in MAJORS:
        raise UnsupportedModelError(f"transformers semantics {major!r}: use 4 or 5")
    return {**config, SEMANTICS_KEY: major}


def of(cfg: dict) -> int:
    """The major a module built from ``cfg`` follows (4 when the key is absent, as before issue 20)."""
    return int(cfg.get(SEMANTICS_KEY, ASSUMED))
