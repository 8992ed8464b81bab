"""Parity of the librosa-mel CNN family against golden/melcnn (captured by reference/melcnn_capture.py running
Project-Echo's model classes and dataset code with torchvision and librosa).

Each case is one run x recording. The run's checkpoint is not in the store (EfficientNetV2-S is 21 M parameters):
the store keeps the run's ``.hydra/config.yaml``, ``class_names.txt`` and every 0-D / 1-D tensor; ``materialise``
regenerates the conv / linear weights with the harness's recipe (``porting.synth``), checks them against the case's
``state_sha256`` and writes a real run directory into a private temp dir, which the port reads like a user's. Per
stored window the port is compared chained (the recording read and windowed as ``port detect`` does, frontend, body,
head) and isolated (the model fed the golden ``F.input``: `` (golden input)`` rows), with the family's table
(``contract``); ``all.*`` hold every window from the detector's batched run, ``all.decisions`` the top class per
window, exact.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from ...golden import Case, generated_state, scratch_dir, store_file
from ...parity.compare import ParityReport, StageResult, compare_exact, merge_windows
from ...parity.contract import STRICT, Tier
from ...parity.windowed import (check_each, chained_windows, compare_all, compare_plan, compare_window, differs,
                                first_order)

FAMILY = "melcnn"


def state_of(case: Case) -> dict:
    """The case's full state dict (numpy), regenerated and checked against ``state_sha256``."""
    return generated_state(case)


def materialise(case: Case, cache: dict) -> Path:
    """The case's run directory (config, class names, checkpoint) in a private temp dir (removed at exit)."""
    from collections import OrderedDict

    meta = case.meta["model"]
    key = ("melcnn-run", meta["state_sha256"], meta["config"])
    if key not in cache:
        run = scratch_dir("porting-melcnn-") / meta["name"]
        if not (run / meta["checkpoint"]).is_file():
            (run / ".hydra").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store_file(case, meta["config"]), run / ".hydra" / "config.yaml")
            shutil.copyfile(store_file(case, meta["class_names"]), run / "class_names.txt")
            state = OrderedDict((k, torch.from_numpy(np.array(v, copy=True))) for k, v in state_of(case).items())
            torch.save(state, run / meta["checkpoint"])
        cache[key] = run
    return cache[key]


class MelCnnContext:
    """What the portable tier's error model needs about one window: its golden waveform fitted to the clip and the
    run's frontend parameters."""

    def __init__(self, waveform, net):
        from ...dsp.librosamel import fit_clip

        self.wave = fit_clip(waveform.double().reshape(1, -1), net.clip)[0].numpy()
        self.net = net
        self._bounds: dict | None = None

    def bounds(self, stage: str, expected):
        from ...dsp.errormodel import librosa_mel_bounds

        if self._bounds is None:
            n = self.net
            self._bounds = librosa_mel_bounds(self.wave, n.mel_basis.cpu().numpy(), n.n_fft, n.hop, n.amin, n.top_db,
                                              n.minmax_eps)
        tol = self._bounds[stage]
        return tol.reshape(np.shape(expected)) if tol.size == np.size(expected) else tol


def _propagated(net, gold: dict, actual: dict, cache: dict, key) -> dict:
    """Portable tier: the chained ``M.*`` / ``Y.*`` around ``golden + J dF`` with ``F`` the model input
    (``porting.parity.windowed.first_order``)."""
    if not differs(gold.get("F.input"), actual.get("F.input")):
        return {}
    key = ("melcnn-net64", key)
    if key not in cache:
        import copy

        cache[key] = copy.deepcopy(net).cpu().double().eval()
    names = [k for k in gold if k.startswith("M.") or k in ("Y.output", "Y.logits")]
    return first_order(lambda f: cache[key].stages(x=f), gold["F.input"], actual["F.input"], gold, names)


def check_melcnn_case(case: Case, tier: Tier, model_path: Path | None, device: str = "cpu", batch_size: int = 8,
                      backend: str = "torch", cache: dict | None = None, capture: str = "golden/melcnn") -> ParityReport:
    from ...convert import load_model
    from .detect import load_detector

    cache = {} if cache is None else cache
    path = model_path or materialise(case, cache)
    meta_w = case.meta["windows"]
    det = load_detector(path, device=device, backend=backend, batch_size=batch_size, window_s=meta_w["window_s"],
                        hop_s=meta_w["hop_s"])
    net = det.model if backend == "torch" else load_model(path)[0]
    net = net.to(device).eval()
    chained = chained_windows(case, det.sample_rate, det.window_samples, det.hop_samples, batch_size)
    results: list[StageResult] = []
    logit_shift: dict = {}
    for i in case.stored_windows:
        gold = case.window(i)
        got_wave = chained.get(i)
        actual: dict = {"A.waveform": got_wave}
        with torch.inference_mode():
            if got_wave is not None:
                actual.update({k: v.float().cpu() for k, v in net.stages(got_wave.to(device)).items()})
            iso = {k: v.float().cpu() for k, v in net.stages(x=gold["F.input"].float().to(device)).items()}
            if backend != "torch":
                for out, x in ((actual, actual.get("F.input")), (iso, gold["F.input"])):
                    if x is not None:
                        out["Y.logits"] = torch.from_numpy(det.model.runner(x.float().numpy())["logits"])
                        out["Y.probs"] = torch.softmax(out["Y.logits"], dim=1)
        ctx = MelCnnContext(gold["A.waveform"], net.cpu() if device != "cpu" else net)
        shifted = _propagated(net, gold, actual, cache, str(path)) if tier.name != STRICT else {}
        if "Y.logits" in shifted:
            logit_shift[i] = shifted["Y.logits"].double() - gold["Y.logits"].double()
        results += compare_window(gold, actual, iso, shifted, tier.name, i, FAMILY, ctx)
    run = det.run(case.audio_path)
    results += compare_all(case.tensors, {"all.logits": run.logits, "all.probs": run.probs}, logit_shift, tier.name,
                           FAMILY)
    results += compare_plan(run, meta_w, tier.name, FAMILY)
    if "all.probs" in case.tensors and tuple(case.tensors["all.probs"].shape) == tuple(run.probs.shape):
        e = case.tensors["all.probs"].double()
        a = run.probs.double()
        top2 = e.topk(min(2, e.shape[1]), dim=1).values
        near = ((top2[:, 0] - top2[:, -1]) <= 1e-5).tolist()
        r = compare_exact("all.decisions", e.argmax(1).tolist(), a.argmax(1).tolist(), near)
        results.append(dataclasses.replace(r, note=f"top class per window; {r.note}", rule="exact", tier=tier.name,
                                           family=FAMILY))
    return ParityReport(case.name, str(det.device), merge_windows(results), tier.line(), capture=capture)


def check_captures(captures: list, model_path: Path | None, device: str, backend: str, batch_size: int,
                   cache: dict) -> list:
    return check_each(captures, model_path, backend, FAMILY, lambda case, tier, label: (
        check_melcnn_case(case, tier, model_path, device, batch_size, backend, cache, label), None))


def captured_from(case: Case, model_path: Path) -> bool:
    """The same weights: the digest of the tensors a run's checkpoint or a converted folder holds equals the case's."""
    from ... import synth
    from ...errors import PortingError

    try:
        if Path(model_path).is_dir() and (Path(model_path) / "config.json").is_file():
            from ...io.weights import WEIGHTS_NAME, read_safetensors

            state = read_safetensors(Path(model_path) / WEIGHTS_NAME, "re-run `port convert`")
        else:
            from .reader import read_run

            state = read_run(Path(model_path)).state
    except PortingError:
        return True
    return synth.digest({k: v.numpy() for k, v in state.items()}) == case.meta["model"]["state_sha256"]
