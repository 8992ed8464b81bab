"""What `port detect` shows and writes: terminal lines, the JSON payload and the CSV tables (the CLI prints and
writes these; no logic lives in cli.py).

Terminal: one line per file as it finishes (``format_file``), then its events, at most ``MAX_EVENT_LINES``
(all of them are in the JSON and the CSV). A failed file's line carries its reason.

CSV (``--csv``), read as is by a spreadsheet or ``pandas.read_csv``: a header row, comma separated, UTF-8,
floats written so they read back exactly.

The detector's ``csv_layout`` (``porting.family.Detector``) picks the table:

* "events" (OrcaHello models): one row per event (``porting.events.EVENT_COLUMNS``: file, start_s, end_s,
  duration_s, peak_confidence, peak_s, mean_confidence, n_intervals); a file without events, or that failed, has no row.
* "windows" (HF models): one row per window: file, start_s, end_s, partial, label (the top label), then
  ``prob_<label>`` for each of the detector's ``labels`` (HF: ``config.id2label`` order).
"""

from __future__ import annotations

import csv
import io
import math

from .events import EVENT_COLUMNS, Event

MAX_EVENT_LINES = 20


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 window``, ``2 windows``, ``0 events``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _failed(result) -> bool:
    from .detect import FileError

    return isinstance(result, FileError)


def file_events(result, threshold: float, positive: str | None) -> list[Event] | None:
    """The events of one result (None: not defined, e.g. an HF result without ``positive``, or a failure)."""
    if _failed(result):
        return None
    return result.events_for(threshold, positive)


def _event_line(e: Event) -> str:
    return (f"  {e.start_s:g}-{e.end_s:g} s ({e.duration_s:g} s): peak {e.peak:.3f} at {e.peak_s:g} s, "
            f"mean {e.mean:.3f}")


def format_file(result, threshold: float = 0.5, positive: str | None = None) -> str:
    """The lines for one finished file: a summary, then its events (or the reason it failed)."""
    if _failed(result):
        return f"{result.path}: FAILED ({type(result.error).__name__}): {result.reason()}"
    events = file_events(result, threshold, positive)
    head, above = result.headline(threshold, positive)
    if events is None:
        return head
    lines = [f"{head}; {plural(len(events), 'event')} {above}" + (":" if events else "")]
    lines += [_event_line(e) for e in events[:MAX_EVENT_LINES]]
    if len(events) > MAX_EVENT_LINES:
        lines.append(f"  ... {plural(len(events) - MAX_EVENT_LINES, 'more event')} (all of them in the JSON/CSV)")
    return "\n".join(lines)


def format_detection(results, threshold: float = 0.5, positive: str | None = None) -> str:
    """``format_file`` for every result, in order."""
    return "\n".join(format_file(r, threshold, positive) for r in results)


def detection_payload(det, results, threshold: float, positive: str | None, warnings=None) -> dict:
    """The ``--json`` document: the model, the decision settings, one entry per file (its ``to_dict()``; a result
    whose ``to_dict()`` has no ``events`` gets them when ``positive`` names a label; ``warnings[i]``, when not empty,
    goes in as ``warnings``)."""
    files = []
    for i, r in enumerate(results):
        d = r.to_dict()
        if "events" not in d and not _failed(r) and positive is not None:
            d["events"] = [e.to_dict() for e in file_events(r, threshold, positive)]
        if warnings is not None and i < len(warnings) and warnings[i]:
            d["warnings"] = list(warnings[i])
        d, bad = strict_json(d)
        if bad:
            d.setdefault("warnings", []).append(
                f"{bad} non-finite value{'s' if bad != 1 else ''} (NaN/Inf) written as null: the model overflowed on "
                "this recording; its scores are not usable")
        files.append(d)
    return {"model": {**det.config.get("source", {}), "backend": det.backend}, "threshold": threshold,
            "positive": positive, "files": files}


def strict_json(value) -> tuple[object, int]:
    """``value`` with every non-finite float replaced by None, and how many were; strict JSON (RFC 8259) has no
    NaN/Infinity, and Python's json would write bare ``NaN`` tokens that other readers reject. Weights are checked
    finite at read (``porting.io.weights``), so this is only reached when a model overflows on some input."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            out[k], m = strict_json(v)
            n += m
        return out, n
    if isinstance(value, list | tuple):
        out, n = [], 0
        for v in value:
            x, m = strict_json(v)
            out.append(x)
            n += m
        return out, n
    return value, 0


def _num(x) -> str:
    return repr(float(x))


def events_csv(results, threshold: float = 0.5, positive: str | None = None) -> str:
    """OrcaHello (or HF with ``positive``): one row per event, ``EVENT_COLUMNS``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENT_COLUMNS)
    for r in results:
        for e in file_events(r, threshold, positive) or []:
            w.writerow([str(r.path), _num(e.start_s), _num(e.end_s), _num(e.duration_s), _num(e.peak),
                        _num(e.peak_s), _num(e.mean), e.n])
    return buf.getvalue()


def windows_csv(results, classes) -> str:
    """One row per window, ``file, start_s, end_s, partial, label, prob_<label>...``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "start_s", "end_s", "partial", "label", *[f"prob_{c}" for c in classes]])
    for r in results:
        if _failed(r):
            continue
        for row in r.to_dict()["windows"]:
            w.writerow([str(r.path), _num(row["start_s"]), _num(row["end_s"]), str(bool(row["partial"])).lower(),
                        row["label"], *[_num(p) for p in row["probs"]]])
    return buf.getvalue()


def detection_csv(det, results, threshold: float, positive: str | None) -> str:
    """The ``--csv`` table in the detector's ``csv_layout`` (see the module doc)."""
    if det.csv_layout == "windows":
        return windows_csv(results, det.labels)
    return events_csv(results, threshold, positive)
