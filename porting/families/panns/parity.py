"""Parity of the PANNs family against golden/panns (captured by reference/panns_capture.py running
audioset_tagging_cnn's model classes with torchlibrosa).

Each case is one model x recording. Its checkpoint is not in the store (CNN14 alone is 320 MB): the store keeps
the frontend and every 1-D tensor, and ``materialise`` regenerates the conv / linear weights with the harness's
recipe (``synth``), checks the result against the case's ``state_sha256`` and writes a real PANNs-format checkpoint
into a private temp dir, which the port then reads like any user's file. Per stored window the port is compared
twice, with the family's table (``contract``):

* chained, as ``port detect`` runs it: the recording read and windowed by ``porting.io.stream``, the log-mel, bn0,
  body and head -> ``A.waveform``, ``F.logmel``, ``M.*``, ``Y.*``;
* isolated: the model fed the golden ``F.logmel`` -> the same ``M.*``/``Y.*`` names with `` (golden input)``.

``all.logits`` / ``all.probs`` hold every window, from the detector's batched run; ``all.decisions`` is
``prob > 0.5`` per window and class, exact (a golden probability within 1e-5 of 0.5 may flip, and is reported).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ...golden import Case, generated_state, scratch_dir
from ...parity.compare import ParityReport, StageResult, compare_exact, merge_windows
from ...parity.contract import STRICT, Tier
from ...parity.windowed import (check_each, chained_windows, compare_all, compare_plan, compare_window, differs,
                                first_order)

FAMILY = "panns"
THRESHOLD = 0.5


def state_of(case: Case) -> dict:
    """The case's full state dict (numpy), regenerated and checked against ``state_sha256``."""
    return generated_state(case)


def materialise(case: Case, cache: dict) -> Path:
    """A PANNs-format checkpoint of the case's model in a private temp dir (one per process, removed at exit)."""
    from collections import OrderedDict

    key = ("panns-ckpt", case.meta["model"]["state_sha256"])
    if key not in cache:
        path = scratch_dir("porting-panns-") / case.meta["model"]["file"]
        if not path.is_file():
            state = OrderedDict((k, torch.from_numpy(np.array(v, copy=True))) for k, v in state_of(case).items())
            torch.save({"iteration": 0, "model": state, "sampler": {"indexes": np.arange(4, dtype=np.int64)}}, path)
        cache[key] = path
    return cache[key]



class PannsContext:
    """What the portable tier's error model needs about one window: its golden waveform, the golden's hop and amin
    (the case's frontend record: a port with another hop is compared with the golden's frames), and the kernels,
    filterbank and bn0 of the checkpoint both ran."""

    def __init__(self, waveform, net, frontend: dict, input_delta: float = 0.0):
        self.waveform, self.net, self.input_delta = waveform, net, input_delta
        self.hop, self.amin = int(frontend["hop_size"]), float(frontend.get("amin", 1e-10))
        self._cache: dict = {}

    def bounds(self, stage: str, expected):
        from ...dsp.errormodel import _ulp32, convstft_db_bounds

        if "F.logmel" not in self._cache:
            st = self.net.spectrogram_extractor.stft
            self._cache["F.logmel"] = convstft_db_bounds(self.waveform, st.conv_real.weight, st.conv_imag.weight,
                                                         self.net.logmel_extractor.melW, self.hop, self.amin,
                                                         self.input_delta)[:, None]  # [1, 1, T, M]
        tol = self._cache["F.logmel"]
        if stage == "M.bn0":  # an affine per mel bin: F.logmel's bound times |gamma / sqrt(var + eps)|
            bn = self.net.bn0
            tol = tol * (bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)).abs().numpy()
        return tol + 2.0 * _ulp32(np.asarray(expected, dtype=np.float64))


def _propagated(net, gold: dict, actual: dict, cache: dict, key) -> dict:
    """Portable tier, chained ``M.*`` and logits around ``golden + J dF`` (``porting.parity.windowed``): on another
    CPU the conv-STFT sums in another order, so the chained ``F.logmel`` legitimately moves (within
    ``convstft_db_bounds``), and the original fed those values would move the same way, to first order."""
    if not differs(gold.get("F.logmel"), actual.get("F.logmel")):
        return {}
    key = ("panns-net64", key)  # one float64 copy per model: the cache lives for a whole `port parity` run
    if key not in cache:
        import copy

        cache[key] = copy.deepcopy(net).cpu().double().eval()
    names = [k for k in gold if k.startswith("M.") or k == "Y.logits"]
    return first_order(lambda f: cache[key].stages(logmel=f), gold["F.logmel"], actual["F.logmel"], gold, names)


def check_panns_case(case: Case, tier: Tier, model_path: Path | None, device: str = "cpu", batch_size: int = 8,
                     backend: str = "torch", cache: dict | None = None, capture: str = "golden/panns") -> ParityReport:
    """Every stage of every stored window of ``case`` plus ``all.*``, in ``tier``. ``backend="onnx"`` runs the
    logits from ``pipeline.onnx`` of a converted ``model_path`` (``M.*`` stages are then the rebuild's)."""
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
        delta = 0.0
        if got_wave is not None and got_wave.shape == gold["A.waveform"].shape:
            delta = float((got_wave.double() - gold["A.waveform"].double()).abs().max())
        with torch.inference_mode():
            if got_wave is not None:
                actual.update({k: v.float().cpu() for k, v in net.stages(got_wave.to(device)).items()})
            iso = {k: v.float().cpu() for k, v in net.stages(logmel=gold["F.logmel"].float().to(device)).items()}
            if backend != "torch":  # the shipped logits are the artifact's: compare those
                for out, wave in ((actual, got_wave), (iso, gold["A.waveform"])):
                    if wave is not None:
                        out["Y.logits"] = det.model(wave.float()).float()
                        out["Y.probs"] = torch.sigmoid(out["Y.logits"])
        ctx = PannsContext(gold["A.waveform"], net.cpu() if device != "cpu" else net, case.meta["frontend"], delta)
        shifted = _propagated(net, gold, actual, cache, str(path)) if tier.name != STRICT else {}
        if "Y.logits" in shifted:
            logit_shift[i] = shifted["Y.logits"].double() - gold["Y.logits"].double()
        results += compare_window(gold, actual, iso, shifted, tier.name, i, FAMILY, ctx)
    run = det.run(case.audio_path)
    results += compare_all(case.tensors, {"all.logits": run.logits, "all.probs": run.probs}, logit_shift, tier.name,
                           FAMILY)
    results += compare_plan(run, meta_w, tier.name, FAMILY)
    if "all.probs" in case.tensors and tuple(case.tensors["all.probs"].shape) == tuple(run.probs.shape):
        e = case.tensors["all.probs"].double().numpy()
        a = run.probs.double().numpy()
        near = (np.abs(e - THRESHOLD) <= 1e-5).ravel().tolist()
        r = compare_exact("all.decisions", (e > THRESHOLD).ravel().tolist(), (a > THRESHOLD).ravel().tolist(), near)
        results.append(dataclasses.replace(r, note=f"prob > {THRESHOLD} per window and class; {r.note}", rule="exact",
                                           tier=tier.name, family=FAMILY))
    return ParityReport(case.name, str(det.device), merge_windows(results), tier.line(), capture=capture)


def check_captures(captures: list, model_path: Path | None, device: str, backend: str, batch_size: int,
                   cache: dict) -> list:
    """``Family.check_case``: each capture of one case in its tier (``porting.parity.windowed.check_each``)."""
    return check_each(captures, model_path, backend, FAMILY, lambda case, tier, label: (
        check_panns_case(case, tier, model_path, device, batch_size, backend, cache, label), None))


def captured_from(case: Case, model_path: Path) -> bool:
    """The same weights: the digest of the tensors a checkpoint or converted folder holds equals the case's."""
    from ...errors import PortingError
    from ... import synth

    try:
        if Path(model_path).is_dir():
            from ...io.weights import WEIGHTS_NAME, read_safetensors

            state = read_safetensors(Path(model_path) / WEIGHTS_NAME, "re-run `port convert`")
        else:
            from .reader import read_state

            state = read_state(Path(model_path))[0]
    except PortingError:
        return True  # the loader reports what is wrong, in one line
    return synth.digest({k: v.numpy() for k, v in state.items()}) == case.meta["model"]["state_sha256"]
