"""Parity reports a person can read: a terminal table, and ``report.md`` with pictures.

Pictures (PNG, written by ``porting.png``): for the worst window of each per-window stage,
legacy | port | |diff| heatmaps (spectrogram stages, mel bin 0 at the bottom) or stacked line plots
(waveform stages); per case, the per-window confidence of legacy and port over time.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import png
from .compare import StageResult
from .run import CaseRun

LEGACY_RGB = (31, 119, 180)  # blue
PORT_RGB = (255, 127, 14)  # orange
DIFF_RGB = (214, 39, 40)  # red
THRESHOLD_RGB = (120, 120, 120)


def _g(x: float) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.3g}"


def format_table(runs: Sequence[CaseRun]) -> str:
    """Fixed-width table: one row per stage, grouped by case; failures show the location of the max."""
    head = ("case", "capture", "tier", "stage", "max|diff|", "max rel", "ulps", "rule", "tol@worst", "result", "worst at")
    rows = []
    for r in runs:
        tier = r.tier.name if r.tier else ""
        for s in r.report.stages:
            where = s.location() if s.max_abs > 0 else ""  # the max of an all-zero diff says nothing
            if s.note and (not s.passed or s.stage == "refusal"):
                where = (where + "; " if where else "") + s.note
            rows.append(
                (
                    r.report.case,
                    r.capture,
                    tier,
                    s.stage,
                    _g(s.max_abs),
                    _g(s.max_rel),
                    _g(s.max_ulps),
                    s.rule or "exact",
                    _g(s.tol) if s.tol else "0",
                    "ok" if s.passed else "FAIL",
                    where,
                )
            )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    widths[-1] = len(head[-1])  # the last column is free text: no padding
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    n_bad = sum(not r.report.passed for r in runs)
    lines.append("")
    lines += fingerprint_lines(runs)
    lines.append(f"{len(runs) - n_bad} of {len(runs)} case captures pass" + ("" if not n_bad else "; failing: " + ", ".join(f"{r.report.case} ({r.capture})" for r in runs if not r.report.passed)))
    return "\n".join(lines)


def fingerprint_lines(runs: Sequence[CaseRun]) -> list[str]:
    """This machine's fingerprint, each capture's, and the tier it got (and why)."""
    from .fingerprint import describe, machine_fingerprint

    lines = [f"this machine: {describe(machine_fingerprint())}"]
    seen = set()
    for r in runs:
        if r.capture in seen or r.tier is None:
            continue
        seen.add(r.capture)
        lines.append(f"capture {r.capture}: {describe(r.golden_fingerprint)} -> {r.tier.line()}")
    return lines


def _key(r: CaseRun) -> str:
    return f"{r.report.case} ({r.capture}, {r.report.device})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def stage_picture(stage: str, legacy: np.ndarray, port: np.ndarray) -> tuple[np.ndarray, str]:
    """The picture of one stage's worst window and its caption."""
    base = stage.split(" ", 1)[0]
    e = np.asarray(legacy, dtype=np.float64)
    a = np.asarray(port, dtype=np.float64)
    if base in ("B.mel_db", "C.padded", "X.model_input"):
        e2, a2 = e.reshape(-1, e.shape[-1]), a.reshape(-1, a.shape[-1])  # [1, mel, frames] -> [mel, frames]
        img, sc = png.heatmap_triptych(e2, a2)
        img = np.repeat(img, 2, axis=0)  # 256 rows -> 512 px tall, easier to read
        cap = (
            f"legacy | port | |diff| (mel bin 0 at the bottom, frames left to right); legacy and port colour range "
            f"[{sc['vmin']:.4g}, {sc['vmax']:.4g}], |diff| 0..{sc['diff_max']:.3g}"
        )
        return img, cap
    # 1-D signals ([N] or [C, N]): stacked line plots, one channel after the other
    e1, a1 = e.reshape(-1), a.reshape(-1)
    d1 = np.abs(a1 - e1)
    x = np.arange(e1.size)
    lim = (float(np.nanmin(np.concatenate([e1, a1]))), float(np.nanmax(np.concatenate([e1, a1]))))
    panels = [
        png.line_plot([(x, e1, LEGACY_RGB)], ylim=lim, height=160),
        png.line_plot([(x, a1, PORT_RGB)], ylim=lim, height=160),
        png.line_plot([(x, d1, DIFF_RGB)], ylim=(0.0, float(d1.max()) if d1.max() > 0 else 1.0), height=160),
    ]
    chans = f" ({e.shape[0]} channels one after the other)" if e.ndim == 2 and e.shape[0] > 1 else ""
    cap = f"top to bottom: legacy, port, |diff| over the window's samples{chans}; value range [{lim[0]:.4g}, {lim[1]:.4g}], |diff| 0..{float(d1.max()):.3g}"
    return png.vstack_panels(panels), cap


def confidence_picture(legacy: np.ndarray, port: np.ndarray) -> np.ndarray:
    """Per-window confidence against window start time (s): legacy blue (big dots), port orange (small dots
    on top, so agreement shows as orange inside blue), 0.5 threshold dotted."""
    t = np.arange(len(legacy), dtype=np.float64)
    return png.line_plot(
        [(t, np.asarray(legacy), LEGACY_RGB, 4), (t, np.asarray(port), PORT_RGB, 1)],  # big blue under small orange
        width=max(400, min(1600, 16 * len(legacy))),
        height=240,
        ylim=(0.0, 1.0),
        hlines=[(0.5, THRESHOLD_RGB)],
        markers=True,
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _stage_row(s: StageResult) -> list[str]:
    w = s.worst
    return [
        f"`{s.stage}`",
        "ok" if s.passed else "**FAIL**",
        _g(s.max_abs),
        _g(s.mean_abs),
        _g(s.p99_abs),
        _g(s.max_rel),
        _g(s.max_ulps),
        s.rule or "exact",
        _g(s.tol) if s.tol else "0",
        s.location() if w is not None and s.max_abs > 0 else "",
        f"{w.expected:.9g}" if w is not None and np.isfinite(w.expected) else "",
        f"{w.actual:.9g}" if w is not None and np.isfinite(w.actual) else "",
        s.note,
    ]


def render_markdown(runs: Sequence[CaseRun], pictures: dict[str, list[tuple[str, str, str]]], title: str = "Parity report") -> str:
    """report.md text. ``pictures[case]`` = [(stage or "confidence", relative png path, caption)]."""
    import torch

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    n_bad = sum(not r.report.passed for r in runs)
    lines = [
        f"# {title}",
        "",
        f"Generated {when} by porting (torch {torch.__version__}). Each case is compared with every capture of it: in "
        "the **strict** tier (capture fingerprint = this machine's) every stage within 1e-5; in the **portable** tier "
        "`A.*` bitwise, the FFT stages by the derived error model (porting/parity/errormodel.py); in both, "
        "probabilities within 1e-5 absolute, decisions exact, logits by the row rule (porting/parity/contract.py).",
        "",
        *[f"- {line}" for line in fingerprint_lines(runs)],
        "",
        f"**{len(runs) - n_bad} of {len(runs)} case captures pass.**",
        "",
        _md_row(["case", "capture", "tier", "device", "result", "failing stages"]),
        _md_row(["---"] * 6),
    ]
    for r in runs:
        bad = ", ".join(f"`{s.stage}`" for s in r.report.failures())
        lines.append(_md_row([r.report.case, r.capture, r.tier.name if r.tier else "", r.report.device,
                              "ok" if r.report.passed else "**FAIL**", bad or "–"]))
    lines.append("")
    lines.append(
        "Stages: `A.*` decoding/windows, `B.mel_db` mel dB, `C.padded` crop/pad, `X.model_input` after normalization, "
        "`Y.*` model on the stored windows, `all.*` every window, `agg.*` the per-second table and decisions. "
        "`(golden input)` rows feed the stage the golden output of the stage before it, so they isolate that stage."
    )
    for r in runs:
        lines += ["", f"## {r.report.case} vs {r.capture} ({r.report.device})", ""]
        if r.report.note:
            lines += [r.report.note, ""]
        for s in r.report.failures():
            lines.append(f"- {s.message()}")
        if r.report.failures():
            lines.append("")
        lines.append(_md_row(["stage", "result", "max abs", "mean abs", "p99 abs", "max rel", "ulps", "rule", "tol at worst",
                              "worst at", "legacy", "port", "note"]))
        lines.append(_md_row(["---"] * 13))
        lines += [_md_row(_stage_row(s)) for s in r.report.stages]
        for stage, rel, cap in pictures.get(_key(r), []):
            lines += ["", f"**{stage}** — {cap}", "", f"![{stage}]({rel})"]
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[CaseRun], out_dir: str | Path, title: str = "Parity report") -> Path:
    """Write ``out_dir/report.md`` and its PNGs (``<case>__<device>/<stage>.png``). Everything is built in a
    temp dir first and then moved in file by file (nothing else in ``out_dir`` is touched), so a failure
    leaves no half-written report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report.", dir=out_dir))
    try:
        pictures: dict[str, list[tuple[str, str, str]]] = {}
        for r in runs:
            key = _key(r)
            folder = _slug(f"{r.report.case}__{r.capture}__{r.report.device}")
            items = []
            for stage, (legacy, port, window) in r.worst.items():
                img, cap = stage_picture(stage, legacy, port)
                rel = f"{folder}/{_slug(stage)}.png"
                png.write_png(tmp / rel, img)
                items.append((stage, rel, f"worst window {window} ({window}-{window + 2} s): {cap}"))
            if r.confidence is not None and len(r.confidence[0]) and len(r.confidence[0]) == len(r.confidence[1]):
                rel = f"{folder}/confidence.png"
                png.write_png(tmp / rel, confidence_picture(*r.confidence))
                d = float(np.max(np.abs(r.confidence[0] - r.confidence[1])))
                items.append(("confidence", rel, f"per-window confidence vs window start (s): legacy blue (big dots), port orange (small dots), 0.5 threshold dotted; max |diff| {d:.3g}"))
            pictures.setdefault(key, []).extend(items)
        (tmp / "report.md").write_text(render_markdown(runs, pictures, title))
        for f in sorted(tmp.rglob("*.png")) + [tmp / "report.md"]:
            dest = out_dir / f.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "report.md"
