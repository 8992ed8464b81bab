"""Time production ``FastAIModel.predict`` in the legacy venv (used by ``tools/bench --legacy-python``).

Runs the production module UNCHANGED (golden/README.md §7 "Cost facts"): model loaded once, then
``predict`` on the recording ``--repeat`` times. fastai_audio's cache dir is fixed at import from
``Path.home()`` (README §3), so HOME points at a throw-away dir for this process; the cache never hits
and grows on every call. Prints one JSON line: seconds per call, peak RSS, cache bytes per call.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import legacy  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--wav", required=True)
    p.add_argument("--production", required=True, type=Path)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    home = tempfile.mkdtemp(prefix="legacy-bench-home-")
    os.environ["HOME"] = home  # before fastai_audio is imported: its cache dir is Path.home()/.fastai/cache
    import torch

    torch.set_num_threads(a.threads)
    P = legacy.import_production(a.production)
    model, _ = legacy.load_model(P, a.model.resolve())

    def used():
        return sum(f.stat().st_size for f in Path(home).rglob("*") if f.is_file())

    times, cache_bytes = [], []
    try:
        for _ in range(a.repeat):
            before = used()
            t0 = time.perf_counter()
            res = model.predict(a.wav)
            times.append(time.perf_counter() - t0)
            cache_bytes.append(used() - before)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("\n" + json.dumps({"seconds": times, "peak_rss": peak, "cache_bytes": cache_bytes,
                      "global_confidence": float(res["global_confidence"])}))


if __name__ == "__main__":
    main()
