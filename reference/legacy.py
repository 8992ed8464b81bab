"""Wrappers and hooks that record every stage of the production flow (legacy venv only; capture.py uses them).

Each wrapper calls the original function unchanged and keeps a copy of what it returned, keyed by the
file path the flow passes along: segment file -> "dm" cache file -> "rs" cache file -> spectrogram ->
``Learner.predict`` item. Nothing here changes a value the production flow sees.
"""
import importlib.metadata
import importlib.util
import os
import site
import sys
from pathlib import Path

import caseio

SHIM = "audio.data.AudioDataBunch.normalize = fastai.vision.data.ImageDataBunch.normalize"
FASTAI_AUDIO = "0.1 (3730194a0ed14e142416f60e71effa6e28058b60) + py311 sg_cfg default_factory patch"


def _key(p):
    return os.path.normpath(os.path.abspath(str(p)))


def _same(a, b):
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class Recorder:
    """Wraps the library functions the production flow calls; keys every record by file path."""

    def __init__(self):
        self.loads = {}  # path -> (signal [C, N] as torchaudio.load returned it, sr)
        self.dm_src, self.rs_src = {}, {}  # dm cache file -> segment file; rs cache file -> dm file
        self.spectro = {}  # rs file -> (signal given to MelSpectrogram [1, N], sr, dB spectrogram [1, 256, 157])
        self.padded = {}  # rs file -> tfm_crop_time output [1, 256, 312]
        self.model_io = {}  # rs file -> (learn.model input [1, 1, 256, 312], logits [1, K])
        self.probs = {}  # rs file -> Learner.predict(...)[2]
        self.order, self.crop_args, self.unstable = [], [], []
        self.audio_config, self._current = None, None

    def keep(self, table, key, value):
        if key in table:
            if not _same(table[key], value):
                self.unstable.append(key)
        else:
            table[key] = value

    def install(self, learn):
        import audio.data as fad
        import fastai.basic_train as fbt
        import torchaudio

        rec = self
        load, dm_item, rs_item = torchaudio.load, fad.downmix_item, fad.resample_item
        create_spectro, add_spectro, crop = fad.AudioList.create_spectro, fad.AudioList.add_spectro, fad.tfm_crop_time
        init, predict = fad.AudioList.__init__, fbt.Learner.predict

        def w_load(path, *a, **k):
            sig, sr = load(path, *a, **k)
            rec.keep(rec.loads, _key(path), (sig.detach().clone().contiguous(), sr))
            return sig, sr

        def w_item(orig, table):
            def wrapped(item, config, path):
                out = orig(item, config, path)
                src = item[0] if os.path.exists(item[0]) else Path(path) / item[0]
                for f, _ in out:
                    table[_key(f)] = _key(src)
                return out

            return wrapped

        def w_init(self_, *a, **k):
            init(self_, *a, **k)
            if rec.audio_config is None:  # the first AudioList after install: production's test list
                c, g = self_.config, self_.config.sg_cfg
                rec.audio_config = {"standardize": c.standardize, "f_min": g.f_min, "f_max": g.f_max,
                                    "hop_length": g.hop_length, "n_fft": g.n_fft, "n_mels": g.n_mels, "pad": g.pad,
                                    "to_db_scale": g.to_db_scale, "top_db": g.top_db, "win_length": g.win_length,
                                    "n_mfcc": g.n_mfcc, "duration": c.duration, "resample_to": c.resample_to,
                                    "downmix": c.downmix, "pad_mode": c.pad_mode}

        def w_create_spectro(self_, item):
            mel = create_spectro(self_, item)
            rec.keep(rec.spectro, _key(item.path), (item.sig.detach().clone(), item.sr, mel.detach().clone()))
            return mel

        def w_crop(*a, **k):
            args = repr(tuple(a[1:])) + (repr(k) if k else "")
            if args not in rec.crop_args:
                rec.crop_args.append(args)
            return crop(*a, **k)

        def w_add_spectro(self_, fn, *a, **k):
            ai = add_spectro(self_, fn, *a, **k)
            if self_.config.duration and self_.config._processed:
                rec.keep(rec.padded, _key(fn), ai.spectro.detach().clone())
            return ai

        def w_predict(self_, item, *a, **k):
            key = _key(item.path)
            rec.order.append(key)
            rec._current = key
            try:
                out = predict(self_, item, *a, **k)
            finally:
                rec._current = None
            rec.keep(rec.probs, key, out[2].detach().cpu().clone())
            return out

        def hook(module, inputs, output):
            if rec._current is not None:
                rec.keep(rec.model_io, rec._current, (inputs[0].detach().cpu().clone(), output.detach().cpu().clone()))

        torchaudio.load = w_load
        fad.downmix_item, fad.resample_item = w_item(dm_item, self.dm_src), w_item(rs_item, self.rs_src)
        fad.tfm_crop_time = w_crop
        fad.AudioList.__init__, fad.AudioList.create_spectro = w_init, w_create_spectro
        fad.AudioList.add_spectro, fbt.Learner.predict = w_add_spectro, w_predict
        learn.model.register_forward_hook(hook)


def import_production(path):
    spec = importlib.util.spec_from_file_location("fastai_inference", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastai_inference"] = module
    spec.loader.exec_module(module)
    return module


def load_model(P, model):
    """FastAIModel as production builds it; a normalized fastai_audio export needs the shim (README §4)."""
    try:
        return P.FastAIModel(str(model.parent), model.name), None
    except TypeError as exc:
        if "'dict' object is not callable" not in str(exc):
            raise
        import audio.data
        import fastai.vision.data

        audio.data.AudioDataBunch.normalize = fastai.vision.data.ImageDataBunch.normalize
        shim = {"unpatched_error_type": type(exc).__name__, "unpatched_error": str(exc), "shim": SHIM}
        return P.FastAIModel(str(model.parent), model.name), shim


def sha256_file(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_meta(model, M, shim):
    """What the case records about the learner: classes, normalization stats (as Learner.predict applies
    them, README §4) and whether the normalize shim was needed."""
    data = M.model.data
    norm = getattr(data, "norm", None)
    stats = None
    if norm is not None and hasattr(norm, "keywords"):
        kw = norm.keywords
        stats = {"mean": kw["mean"].tolist(), "std": kw["std"].tolist(), "do_x": kw["do_x"], "do_y": kw["do_y"]}
    return {"file": Path(model).name, "sha256": sha256_file(model), "classes": list(data.classes),
            "positive_index": 1,  # production takes predict(item)[2][1] (P:197)
            "normalize": stats, "normalize_shim": shim}


def audio_meta(wav):
    import soundfile

    info = soundfile.info(str(wav))
    return {"file": Path(wav).name, "sha256": sha256_file(wav), "sample_rate": info.samplerate,
            "channels": info.channels, "subtype": info.subtype, "frames": info.frames,
            "duration_s": info.frames / info.samplerate}


def provenance(A, M, rec, production_sha, command, capture_date):
    import fastai
    import librosa
    import numpy
    import pandas
    import soundfile
    import torch
    import torchaudio

    return {"python": platform_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "fastai": fastai.__version__, "fastai_audio": A.fastai_audio,
            "pydub": importlib.metadata.version("pydub"), "librosa": librosa.__version__,
            "pandas": pandas.__version__, "numpy": numpy.__version__, "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__, "production_module": caseio.PRODUCTION_MODULE,
            "production_module_sha256": production_sha,
            "predict_args": {"threshold": M.threshold,
                             "min_num_positive_calls_threshold": M.min_num_positive_calls_threshold,
                             "batch_size": M.batch_size, "use_gpu": M.use_gpu},
            "audio_config": rec.audio_config, "capture_date": capture_date, "command": command}


def platform_version():
    import platform

    return platform.python_version()


def window_tensors(rec, n_windows):
    """Logical tensors of EVERY window (per-window stages stacked in window order, ``all.*``) and the
    capture's self-checks, from what the wrappers recorded."""
    import torch

    if rec.unstable:
        raise RuntimeError(f"a stage gave different values for the same file: {rec.unstable[:3]}")
    per = {}
    starts = []
    for rs in rec.order:
        dm = rec.rs_src[rs]
        seg = rec.dm_src[dm]
        w = caseio.segment_start(Path(seg).name)
        starts.append(w)
        sig, sr, mel = rec.spectro[rs]
        x, logits = rec.model_io[rs]
        per[w] = {"A.segment": rec.loads[seg][0], "A.downmix": rec.loads[dm][0][0], "A.waveform": sig[0],
                  "B.mel_db": mel, "C.padded": rec.padded[rs], "X.model_input": x[0], "Y.logits": logits[0],
                  "Y.probs": rec.probs[rs], "_keys": (seg, dm, rs)}
    if sorted(per) != list(range(n_windows)) or len(rec.order) != n_windows:
        raise RuntimeError(f"recorded windows {sorted(per)} (predict calls {len(rec.order)}), expected 0..{n_windows - 1}")
    logical = {}
    for name in caseio.PER_WINDOW:
        rows = [per[w][name] for w in range(n_windows)]
        bad = [r.dtype for r in rows if r.dtype != torch.float32]
        if bad:
            raise RuntimeError(f"{name} recorded as {bad[0]}, expected float32")
        logical[name] = torch.stack(rows)
    logical["all.logits"] = logical["Y.logits"].clone()
    logical["all.probs"] = logical["Y.probs"].clone()
    logical["all.confidence"] = logical["Y.probs"][:, 1].clone()  # production: predict(item)[2][1]
    keys = [per[w]["_keys"] for w in range(n_windows)]
    checks = {
        "waveform_equals_rs_cache_read": all(torch.equal(rec.spectro[rs][0], rec.loads[rs][0]) for _, _, rs in keys),
        "seg_sr": sorted({rec.loads[seg][1] for seg, _, _ in keys}),
        "dm_sr": sorted({rec.loads[dm][1] for _, dm, _ in keys}),
        "waveform_sr": sorted({rec.spectro[rs][1] for _, _, rs in keys}),
        "crop_args": rec.crop_args[0] if len(rec.crop_args) == 1 else rec.crop_args,
        "X_equals_C": bool(torch.equal(logical["X.model_input"], logical["C.padded"])),
    }
    return logical, checks, starts


def result_fields(res):
    """Production's result dict as JSON values (submission DataFrame -> records)."""
    sub = res["submission"]
    rows = [{c: row[c] for c in sub.columns} for _, row in sub.iterrows()]
    return caseio.to_jsonable({"submission": rows, "local_predictions": list(res["local_predictions"]),
                               "local_confidences": list(res["local_confidences"]),
                               "global_prediction": res["global_prediction"],
                               "global_confidence": res["global_confidence"]})


def traceback_replacements(capture_file, production_file):
    """Machine paths -> placeholders, so a crash traceback is the same on every machine."""
    reps = {}
    for d in list(site.getsitepackages()) + [site.getusersitepackages()]:
        for v in {d, os.path.realpath(d)}:
            reps[v.rstrip(os.sep) + os.sep] = "<site-packages>/"
    for v in {os.path.abspath(production_file), os.path.realpath(production_file)}:
        reps[os.path.dirname(v) + os.sep] = "<production>/"
    for v in {os.path.abspath(capture_file), os.path.realpath(capture_file)}:
        reps[v] = "capture.py"
    return reps
