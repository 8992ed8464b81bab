"""Read a Project-Echo Hydra run directory as data: ``.hydra/config.yaml`` (the composed config Hydra wrote before
the run) and the checkpoint the trainer saved beside it (``best_<model.name>.pth``: ``torch.save(state_dict)``, or
a dict with ``model_state_dict``), plus ``class_names.txt`` when present.

Nothing is executed: the YAML is read by ``porting.io.yamlconf`` (plain data: no tags, no ``_target_`` is ever
instantiated), the checkpoint by porting's restricted unpickler. What the config does not say exactly is decided
here, once, and recorded in the converted config:

* ``data.num_classes`` is ``-1`` on disk (main.py sets it at run time from the class folders): the class count is
  the head weight's, the names ``class_names.txt``'s (one per line, the order of the sorted class folders) or
  ``class_<i>``.
* interpolations (``num_classes: ${data.num_classes}``) are followed as plain references; nothing else resolves.
* the body is ``model.params.model_name`` (what Project-Echo's ``Model`` dispatches on), else ``model.name``.
* the head: ``model.params.use_arcface`` true -> ``cosine`` (no bias), false -> ``linear``; the checkpoint must agree.
* GhostEfficientNetV2's ``width_mult`` / ``depth_mult``: ``model.params``, default 1 (the yaml's; the Python
  factory's defaults, 0.75 / 0.5, are not what a Hydra run passes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import MalformedModelError, UnsupportedModelError
from .bodies import BODIES, GHOST, min_frames

CONFIG = Path(".hydra") / "config.yaml"
CLASS_NAMES = "class_names.txt"
QAT_MARKERS = ("activation_post_process", "weight_fake_quant", "fake_quant_enabled", "_packed_params")
S_DEFAULT = {"arcface": 30.0, "circle": 80.0}


def run_dir_of(path: Path) -> Path | None:
    """The run directory ``path`` names: itself, or the folder of a checkpoint inside one."""
    path = Path(path)
    for d in (path, path.parent) if path.suffix else (path,):
        try:
            if (d / CONFIG).is_file():
                return d
        except OSError:
            return None
    return None


@dataclass
class RunSpec:
    path: Path  # the run directory
    checkpoint: Path
    sha256: str
    config_sha256: str
    container: str
    body: str
    model_name: str  # model.name (the checkpoint's name)
    head: dict  # {"kind": "linear"|"cosine", "s": float|None, "source": str}
    frontend: dict
    labels: list[str]
    state: dict
    bn_eps: float = 1e-5
    body_params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.labels)


def _need(cfg: dict, dotted: str, kinds, where: Path, optional: bool = False, default=None):
    from ...io.yamlconf import resolve

    try:
        value = resolve(cfg, dotted)
    except KeyError:
        if optional:
            return default
        raise MalformedModelError(f"{where}: no {dotted}; a Project-Echo run config has it (the run's "
                                  ".hydra/config.yaml as Hydra wrote it)") from None
    if value is None and optional:
        return default
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
    if not ok:
        raise MalformedModelError(f"{where}: {dotted} is {value!r}; expected a "
                                  f"{' or '.join(k.__name__ for k in kinds)}")
    return value


def frontend_of(cfg: dict, where: Path) -> dict:
    """The ``data`` section's mel parameters, checked, plus librosa's defaults that apply."""
    num = (int, float)
    sr = _need(cfg, "data.sample_rate", int, where)
    dur = _need(cfg, "data.audio_clip_duration", num, where)
    n_fft = _need(cfg, "data.n_fft", int, where)
    hop = _need(cfg, "data.hop_length", int, where)
    n_mels = _need(cfg, "data.n_mels", int, where)
    fmin = float(_need(cfg, "data.fmin", num, where, optional=True, default=0.0))
    fmax = _need(cfg, "data.fmax", num, where, optional=True)
    top_db = _need(cfg, "data.top_db", num, where, optional=True)
    checks = ((8000 <= sr <= 384000, "data.sample_rate", sr, "8000 to 384000 Hz"),
              (0 < dur <= 600, "data.audio_clip_duration", dur, "0 to 600 s"),
              (16 <= n_fft <= 1 << 16, "data.n_fft", n_fft, "16 to 65536"),
              (1 <= hop <= n_fft, "data.hop_length", hop, f"1 to n_fft ({n_fft})"),
              (1 <= n_mels <= 1024, "data.n_mels", n_mels, "1 to 1024"),
              (0 <= fmin < (fmax if fmax is not None else sr / 2) <= sr / 2 + 1e-9, "data.fmin/fmax", (fmin, fmax),
               f"0 <= fmin < fmax <= sample_rate / 2 ({sr / 2:g})"),
              (top_db is None or top_db >= 0, "data.top_db", top_db, ">= 0 or null"))
    for ok, key, value, want in checks:
        if not ok:
            raise MalformedModelError(f"{where}: {key} is {value!r}; expected {want}")
    clip = int(dur * sr)  # dataset.py: int(cfg.data.audio_clip_duration * cfg.data.sample_rate)
    if clip <= n_fft // 2:
        raise MalformedModelError(f"{where}: a clip of {clip} samples is shorter than half an FFT ({n_fft})")
    return {"sample_rate": sr, "audio_clip_duration": float(dur), "clip_samples": clip, "n_fft": n_fft,
            "hop_length": hop, "n_mels": n_mels, "fmin": fmin, "fmax": None if fmax is None else float(fmax),
            "top_db": None if top_db is None else float(top_db), "window": "hann", "center": True,
            "pad_mode": "constant", "power": 2.0, "htk": False, "norm": "slaney", "amin": 1e-10, "ref": "max (per clip)",
            "minmax_eps": 1e-6}


def head_of(cfg: dict, state: dict, where: Path, checkpoint: Path) -> dict:
    use = _need(cfg, "model.params.use_arcface", bool, where, optional=True, default=False)
    has_bias = "head.bias" in state
    if "head.weight" not in state:
        raise MalformedModelError(f"{checkpoint}: no head.weight; a Project-Echo classifier's head is `head` "
                                  "(Linear or CosineLinear)")
    if use and has_bias:
        raise MalformedModelError(f"{checkpoint}: has head.bias, but model.params.use_arcface is true (a cosine head "
                                  "has no bias); pass the checkpoint of this run")
    if not use and not has_bias:
        raise MalformedModelError(f"{checkpoint}: no head.bias, but model.params.use_arcface is false (a Linear head "
                                  "has one); pass the checkpoint of this run")
    if not use:
        return {"kind": "linear", "s": None, "source": "model.params.use_arcface: false"}
    loss = _need(cfg, "training.use_arcface", (str, bool), where, optional=True, default="arcface")
    loss = "arcface" if loss is True else loss
    if loss not in S_DEFAULT:
        raise UnsupportedModelError(f"{where}: training.use_arcface is {loss!r}; porting knows the scale s of "
                                    "'arcface' and 'circle' (training.arcface.s / training.circle.s)")
    s = _need(cfg, f"training.{loss}.s", (int, float), where, optional=True, default=S_DEFAULT[loss])
    return {"kind": "cosine", "s": float(s), "source": f"training.{loss}.s"}


def _checkpoint(run: Path, path: Path, name: str) -> Path:
    if path.is_file():
        return path
    want = run / f"best_{name}.pth"
    if want.is_file():
        return want
    found = sorted(p for p in run.glob("*.pth") if p.is_file())
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found) or "none"
    raise MalformedModelError(f"{run}: no best_{name}.pth (the trainer's checkpoint for model.name {name!r}); .pth "
                              f"files there: {listed}; pass the checkpoint's path")


def read_state(path: Path) -> tuple[dict, str, str, list[str]]:
    """``(state dict, sha256, container, notes)`` of the trainer's checkpoint, nothing executed; int8/QAT state is
    refused in one line."""
    from ...io.unpickle import describe, read_state_dict

    def no_int8(entries: dict) -> None:
        quant = [k for k, v in entries.items() if "_rebuild_qtensor" in describe(v) or
                 any(m in str(k) for m in QAT_MARKERS)]
        if quant:
            raise UnsupportedModelError(f"{path}: holds int8 / QAT state ({quant[0]}, ...: torch.ao fake-quant or "
                                        "quantized tensors); porting reads the float checkpoints of these runs, int8 "
                                        "ones are not read yet")

    f = read_state_dict(path, ("model_state_dict",), "a Project-Echo checkpoint", no_int8)
    notes = ["checkpoint dict: model_state_dict read (optimizer/scheduler state ignored)"] if f.wrapper else []
    return f.state, f.sha256, f.container, notes + f.notes


def read_run(path: str | Path) -> RunSpec:
    """Read and check a run directory (or a checkpoint inside one): one-line errors naming the field or key."""
    import hashlib

    from ...io.weights import check_weights
    from ...io.yamlconf import read_yaml

    path = Path(path)
    run = run_dir_of(path)
    if run is None:
        raise MalformedModelError(f"{path}: no {CONFIG} here; pass a Hydra run directory of a Project-Echo training "
                                  "run (or the checkpoint inside one)")
    cfg_path = run / CONFIG
    cfg = read_yaml(cfg_path)
    notes: list[str] = []
    name = _need(cfg, "model.name", str, cfg_path)
    body = _need(cfg, "model.params.model_name", str, cfg_path, optional=True, default=name)
    if body not in BODIES:
        raise UnsupportedModelError(f"{cfg_path}: model.params.model_name {body!r} is not a body porting rebuilds "
                                    f"({', '.join(BODIES)})")
    if _need(cfg, "model.params.use_qat", bool, cfg_path, optional=True, default=False):
        notes.append("model.params.use_qat is true: the checkpoint must be the float one (QAT state is refused)")
    norm = _need(cfg, "model.norm_choice", str, cfg_path, optional=True, default="keep_bn")
    if norm not in ("keep_bn", "freeze_bn"):
        raise UnsupportedModelError(f"{cfg_path}: model.norm_choice {norm!r} replaces the BatchNorms; porting "
                                    "rebuilds keep_bn / freeze_bn runs")
    frontend = frontend_of(cfg, cfg_path)
    need = min_frames(body)
    frames = 1 + frontend["clip_samples"] // frontend["hop_length"]
    if min(frontend["n_mels"], frames) < need:
        raise UnsupportedModelError(f"{cfg_path}: {body} pools its input five times by 2, so it needs at least {need} "
                                    f"mel bins and frames; data.n_mels is {frontend['n_mels']}, a clip has {frames} "
                                    "frames")
    body_params = {}
    if body == GHOST:
        for key in ("width_mult", "depth_mult"):
            v = float(_need(cfg, f"model.params.{key}", (int, float), cfg_path, optional=True, default=1.0))
            if not 0 < v <= 8:
                raise MalformedModelError(f"{cfg_path}: model.params.{key} is {v!r}; expected 0 < {key} <= 8")
            body_params[key] = v
    ckpt = _checkpoint(run, path, name)
    state, sha, container, more = read_state(ckpt)
    notes += more
    state = check_weights(state, ckpt)
    head = head_of(cfg, state, cfg_path, ckpt)
    classes = int(state["head.weight"].shape[0])
    labels = [f"class_{i}" for i in range(classes)]
    names = run / CLASS_NAMES
    if names.is_file():
        rows = [r.strip() for r in names.read_text(encoding="utf-8", errors="replace").splitlines() if r.strip()]
        if len(rows) != classes:
            raise MalformedModelError(f"{names}: {len(rows)} class names, but the head has {classes} classes; fix "
                                      "the file or remove it")
        labels = rows
    else:
        notes.append(f"no {CLASS_NAMES}: labels class_0..class_{classes - 1}")
    from ...io.weights import check_keys
    from .model import MelCnnClassifier

    want = MelCnnClassifier(body, classes, frontend, head, body_params=body_params).state_dict()
    check_keys(ckpt, state, want, "pass the checkpoint the run saved")
    notes.append("BatchNorm eps 1e-5 (nn.BatchNorm2d's default: Project-Echo builds its bodies without torchvision's "
                 "norm_layer; torchvision's efficientnet_v2 builders use 1e-3)")
    cfg_sha = hashlib.sha256(cfg_path.read_bytes()).hexdigest()
    if body == GHOST:
        for k in [k for k in state if k.startswith("stem.")]:
            twin = "backbone.0." + k[len("stem."):]
            if not torch.equal(state[k], state[twin]):
                raise MalformedModelError(f"{ckpt}: {k} and {twin} differ; GhostEfficientNetV2 registers its stem "
                                          "twice, so a checkpoint it saved holds the same tensor under both keys")
    return RunSpec(run, ckpt, sha, cfg_sha, container, body, name, head, frontend, labels, state, 1e-5, body_params,
                   notes)
