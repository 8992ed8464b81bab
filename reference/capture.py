"""Capture one golden case: production OrcaHello ``FastAIModel(...).predict(wav)``, run UNCHANGED.

Runs only in the legacy venv (reference/README.md "Legacy venv"), normally driven by
tools/regenerate_golden. Importing the production module applies its own monkeypatches
(torchaudio.load/save -> soundfile, torch.load weights_only=False); legacy.py records every stage by
wrapping the library functions production calls and hooking ``learn.model``; caseio.py names,
selects, encodes and writes. Nothing of the legacy flow is re-implemented here.

The predict call must stay on line 117 at module level: a crash case stores the traceback, and the
existing goldens say ``File "capture.py", line 117, in <module>`` (tests/test_reference_harness.py).
"""
import argparse
import shutil
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

import caseio  # this script's folder is on sys.path
import legacy


def parse_args():
    p = argparse.ArgumentParser(description="capture one golden case in the legacy venv (reference/README.md)")
    p.add_argument("--model", required=True, type=Path, help="legacy learner export (.pkl)")
    p.add_argument("--wav", required=True, help="recording")
    p.add_argument("--case", required=True, help="case name, e.g. rn18__orca60_pcm16_48k")
    p.add_argument("--out", required=True, type=Path, help="cases folder to write into")
    p.add_argument("--max-bytes", type=int, default=caseio.DEFAULT_MAX_BYTES, help="tensor payload budget")
    p.add_argument("--production", required=True, type=Path, help="path of production fastai_inference.py")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (the goldens: 2)")
    p.add_argument("--capture-date", default=None, help="ISO date to record instead of now")
    p.add_argument("--fastai-audio", default=legacy.FASTAI_AUDIO, help="fastai_audio install, for provenance")
    return p.parse_args()


def finish(res):
    """Record a successful capture: select the stored windows within the budget, check, write."""
    import torch

    n = len(caseio.window_plan(base["audio"]["duration_s"]))
    logical, checks, starts = legacy.window_tensors(rec, n)
    sizes, fixed = caseio.budget_sizes(logical)
    keep = caseio.select_windows(logical["all.confidence"].tolist(), sizes, fixed, A.max_bytes)
    if not keep:
        sys.exit(f"error: --max-bytes {A.max_bytes} cannot hold one window ({fixed + sizes[0]} bytes); raise it")
    idx = torch.tensor(keep, dtype=torch.int64)
    chosen = {k: logical[k][idx] for k in caseio.PER_WINDOW}
    chosen.update({k: logical[k] for k in caseio.ALL_WINDOWS}, stored_windows=idx)
    fields = legacy.result_fields(res)
    rolled = caseio.rolling_confidences(logical["all.confidence"].tolist())
    checks["production_confidences_equal_rolling_of_captured_window_conf"] = rolled == fields["local_confidences"]
    checks["predict_item_order_is_start_order"] = starts == sorted(starts)
    checks["predict_item_order_starts"] = starts
    meta, stored = caseio.build_case({**base, **fields, "checks": checks}, chosen)
    return caseio.write_case(A.out, meta, stored), keep


def fail(exc):
    """Record a crash of the production flow (e.g. < 2 s of audio -> KeyError: 0, README §1)."""
    reps = legacy.traceback_replacements(__file__, A.production)
    error = {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
             "traceback": caseio.sanitize_traceback(traceback.format_exc(), reps)}
    return caseio.write_case(A.out, caseio.error_meta(base, error), None)


# ------------------------------------------------------------------------------------------- main
# Order matters: the production module is imported (applying its patches) before anything records,
# and the recorder is installed after the model is loaded, so it sees only the predict call.
#
# What each golden tensor is, and where legacy.Recorder takes it from (golden/README.md §2-§4):
#   A.segment      torchaudio.load (production's soundfile patch) of the pydub-exported segment file,
#                  called by fastai_audio downmix_item: [C, N] at the source rate
#   A.downmix      torchaudio.load of the "dm" cache file in resample_item (after the PCM_16 write)
#   A.waveform     AudioItem.sig handed to AudioList.create_spectro (read of the "rs" cache file)
#   B.mel_db       create_spectro's return value (MelSpectrogram + AmplitudeToDB, per window)
#   C.padded       AudioList.add_spectro's item.spectro after tfm_crop_time (pad to 312 frames)
#   X.model_input  learn.model forward hook, input (after Learner.predict's normalization, if any)
#   Y.logits       learn.model forward hook, output
#   Y.probs        Learner.predict(item)[2] (softmax; production keeps [1] as the confidence)
# Files are followed by path: segment -> downmix_item's dm file -> resample_item's rs file -> the
# AudioItem path given to create_spectro, add_spectro and Learner.predict; the window index is parsed
# from the segment name as production parses it (<name>_<begin>_<end>.wav).
# A crash inside predict is recorded (type, module, message, path-sanitized traceback) instead,
# and no .safetensors is written for that case. Machine paths in that traceback become placeholders
# (<site-packages>/, <production>/, capture.py) so the case is the same on every machine.

if __name__ == "__main__":
    A = parse_args()
    if A.threads:
        import torch

        torch.set_num_threads(A.threads)
    P = legacy.import_production(A.production)
    M, shim = legacy.load_model(P, A.model)
    import audio.data

    cache = Path(tempfile.mkdtemp(prefix="fastai_audio_cache_"))  # fresh, as for the goldens (README §3)
    audio.data.AudioConfig.cache_dir = cache
    rec = legacy.Recorder()
    rec.install(M.model)
    base = {
        "case": A.case,
        "model": legacy.model_meta(A.model, M, shim),
        "audio": legacy.audio_meta(A.wav),
        "provenance": None,  # filled after predict: audio_config is recorded during the call
    }
    command = caseio.capture_command(A.model, A.wav, A.case, A.out, A.max_bytes)
    date = A.capture_date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sha = legacy.sha256_file(A.production)
    print(f"capturing {A.case}: {A.model} x {A.wav}", file=sys.stderr)
    # -------------------------------------------------------------------------------------------
    # The production call (keep it on line 117, see the module docstring).
    # -------------------------------------------------------------------------------------------
    try:
        res = M.predict(A.wav)
    except Exception as exc:  # a crash of the legacy flow is a result too
        base["provenance"] = legacy.provenance(A, M, rec, sha, command, date)
        written = fail(exc)
        print(f"captured crash {type(exc).__name__}: {exc} -> {', '.join(map(str, written))}", file=sys.stderr)
    else:
        base["provenance"] = legacy.provenance(A, M, rec, sha, command, date)
        written, keep = finish(res)
        print(f"captured {len(keep)} stored windows {keep} -> {', '.join(map(str, written))}", file=sys.stderr)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
