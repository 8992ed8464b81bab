"""Parity reports a person can read: a terminal table, and ``report.md`` with figures.

``report.md`` opens with the provenance of the numbers (the port's git commit, this machine's and each
capture's numerics fingerprint, the golden store's MANIFEST.json hash, each case's model and recording
sha256, the versions of the numeric stack), then one section per case and capture: the stage table, where
every row that repeats another row's numbers is listed once with the evidence (computed from the run,
never assumed), and the figures.

Figures are drawn with matplotlib (the optional ``report`` extra: ``pip install 'porting[report]'``),
imported only here and only when a report is written, on the Agg canvas (no display, no pyplot state).
Without matplotlib the markdown is still written, with one line saying what to install.

* spectrogram stages (the family's ``ReportTraits.spectral``, e.g. OrcaHello's ``B.mel_db``; the worst window): legacy | port on
  one colour scale with a colour bar, and |port - legacy| on a fixed logarithmic scale (1e-8 .. 1, wider
  only if needed) so that 1e-7 and 0.017 look different, the tolerance marked on its colour bar; time in
  the recording (s), mel bin and its centre frequency (Hz);
* waveform stages (``ReportTraits.waveform``, e.g. ``A.*``): legacy and port over time (s), and |diff| on a log axis with the tolerance;
* per-window confidence (OrcaHello): legacy and port against the window start (s) with the 0.5 threshold,
  and their |diff| on a log axis with the 1e-5 tolerance;
* every case: each stage's worst |diff| / tolerance (log), with the tolerance at 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .compare import StageResult
from .contract import GOLDEN_INPUT
from .. import family as registry
from .run import CaseRun

INSTALL_HINT = "pip install 'porting[report]'"
NO_FIGURES = f"Figures not drawn: matplotlib is not installed; `{INSTALL_HINT}` to get them."
DPI = 100
LEGACY_COLOR = "#1f77b4"  # blue
PORT_COLOR = "#ff7f0e"  # orange
TOL_COLOR = "#d62728"  # red
DIFF_FLOOR = 1e-8  # the |diff| heatmaps' fixed lower end (below: clipped; exactly 0: white)
CONSTANT_RULES = ("abs", "exact")  # rules whose tolerance is one number for every element
VERSIONS = ("porting", "torch", "numpy", "scipy", "soundfile", "onnxruntime", "matplotlib")
IDENTITY_REASON = {  # why one drawn stage can equal another bitwise
    ("A.downmix", "A.segment"): "one channel, so the channel mean is that channel",
    ("X.model_input", "C.padded"): "so no normalization is applied",
}


def _g(x: float) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.3g}"


# ----------------------------------------------------------------------------------------- terminal table


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


# ------------------------------------------------------------------------------------------- provenance


def _traits(r: CaseRun | None = None):
    """How ``r``'s family is reported (``porting.family.ReportTraits``); None: the family whose records name none."""
    name = None if r is None else (r.family or next((s.family for s in r.report.stages if s.family), None))
    return registry.named(name).report


def reference_name(r: CaseRun) -> str:
    """Who computed the golden (the family's original stack: legacy fastai, transformers, ...)."""
    return _traits(r).reference


def port_commit() -> str:
    """``git rev-parse HEAD`` of the checkout the ``porting`` package was imported from, or "unknown" (an
    installed copy, no git, no repository). A checkout with changes to tracked files says so."""
    import porting

    root = Path(porting.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:  # e.g. site-packages inside some other repository
        return "unknown"
    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (+ uncommitted changes to tracked files)" if dirty else "")


def versions(names: Sequence[str] = VERSIONS) -> dict[str, str]:
    """Installed versions of the numeric stack ("not installed" for an optional one that is absent)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(path: Path) -> str:
    from ..golden import file_digest

    return file_digest(path)["sha256"]


def _checkout_golden() -> Path:
    import porting

    return Path(porting.__file__).resolve().parent.parent / "golden"


def _capture_dir(store: Path, r: CaseRun) -> Path:
    if _traits(r).flat_captures or r.capture == "golden":
        return store
    return store / "captures" / r.capture


def _store_root(path: Path) -> Path:
    """The store holding ``path`` (a store, its cases/ folder, or a case JSON of any capture)."""
    p = Path(path)
    if p.suffix == ".json":
        p = p.parent
    if p.name == "cases":
        p = p.parent
    if p.parent.name == "captures":
        p = p.parent.parent
    return p


def _golden_values_match(store: Path, r: CaseRun, limit: int = 4) -> bool:
    """Do the golden values this run quotes (each stage's worst element) equal the store's tensors?"""
    from .fingerprint import load_fingerprint

    cap = _capture_dir(store, r)
    if load_fingerprint(cap) != r.golden_fingerprint:
        return False
    quoted = [s for s in r.report.stages if s.worst is not None and s.worst.where is not None
              and np.isfinite(s.worst.expected) and not s.stage.startswith("agg.")]
    if not quoted:
        return True  # nothing quoted (a refusal): the case JSON and the fingerprint are all there is
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(cap / "cases" / f"{r.report.case}.safetensors"))
        meta = json.loads((cap / "cases" / f"{r.report.case}.json").read_text())
    except (OSError, ValueError):
        return False
    storage = meta.get("tensor_storage", {})
    stored = [int(w) for w in meta.get("stored_windows", [])]
    checked = 0
    for s in quoted:
        base = s.stage.removesuffix(GOLDEN_INPUT)
        name = (storage.get(base) or {}).get("alias_of", base)
        scale = {"int16": 32768.0, "int32": 2.0**31}.get((storage.get(name) or {}).get("stored_as"), 1.0)
        w = s.worst.window
        if f"w{w}/{base}" in tensors:  # HF: one tensor per stored window, leading dim 1
            t, row = tensors[f"w{w}/{base}"], 0
        elif name in tensors:
            t = tensors[name]
            row = w if base.startswith("all.") else (stored.index(w) if w in stored else None)
        else:
            continue
        if row is None:
            continue
        try:
            value = t[row][s.worst.where] if s.worst.where else t[row]
        except IndexError:
            return False
        value = float(np.float32(np.float64(value) / scale)) if scale != 1.0 else float(value)
        if value != s.worst.expected:
            return False
        checked += 1
        if checked >= limit:
            break
    return True


def locate_store(r: CaseRun, golden: str | Path | None = None) -> Path | None:
    """The golden store ``r`` was compared with: ``golden`` when given, else the first of $PORTING_GOLDEN_DIR,
    ./golden and the checkout's golden/ (their family's sub-store, e.g. hf/) that holds the case, for this capture,
    with the run's capture fingerprint and the golden values the run quotes. None when none does."""
    sub = _traits(r).store_subdir
    if golden is not None:
        root = _store_root(Path(golden))
        bases = [root] + ([root / sub] if sub and root.name != sub else [])
    else:
        bases = [Path(p) for p in (os.environ.get("PORTING_GOLDEN_DIR"), "golden") if p] + [_checkout_golden()]
        if sub:
            bases = [b / sub for b in bases if b.name != sub] + [b for b in bases if b.name == sub]
    for store in bases:
        if (_capture_dir(store, r) / "cases" / f"{r.report.case}.json").is_file() and _golden_values_match(store, r):
            return store.resolve()
    return None


@dataclass
class Provenance:
    generated: str
    commit: str
    versions: dict[str, str]
    python: str
    machine: dict
    stores: dict[str, Path | None]  # run key -> store
    manifests: dict[Path, str]  # store -> sha256 of its MANIFEST.json ("missing" when none)
    entries: dict[str, dict]  # run key -> the case's MANIFEST entry (model, audio, provenance)


def provenance(runs: Sequence[CaseRun], golden: str | Path | None = None) -> Provenance:
    import platform

    from .fingerprint import machine_fingerprint

    stores, manifests, entries = {}, {}, {}
    manifest_json: dict[Path, dict] = {}
    for r in runs:
        store = locate_store(r, golden)
        stores[_key(r)] = store
        if store is None:
            continue
        if store not in manifests:
            mf = store / "MANIFEST.json"
            manifests[store] = _sha256(mf) if mf.is_file() else "missing"
            try:
                manifest_json[store] = json.loads(mf.read_text()) if mf.is_file() else {}
            except ValueError:
                manifest_json[store] = {}
        cases = manifest_json[store].get("cases", {})
        key = r.report.case if (r.capture == "golden" or _traits(r).flat_captures) else f"{r.capture}/{r.report.case}"
        entry = cases.get(key)
        if entry is None:  # not in the manifest: the case JSON itself says which model and recording
            try:
                meta = json.loads((_capture_dir(store, r) / "cases" / f"{r.report.case}.json").read_text())
                entry = {k: meta.get(k) for k in ("model", "audio", "provenance")}
            except (OSError, ValueError):
                entry = {}
        entries[_key(r)] = entry
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Provenance(when, port_commit(), versions(), platform.python_version(), machine_fingerprint(), stores,
                      manifests, entries)


def _fingerprint_table(runs: Sequence[CaseRun], machine: dict) -> list[str]:
    """The fields that decide the tier, this machine beside each capture."""
    from .fingerprint import KEY, _get

    caps: dict[str, dict | None] = {}
    for r in runs:
        caps.setdefault(r.capture, r.golden_fingerprint)
    fields = list(KEY) + ["cpu.name", "fft_version", "torch", "threads"]
    lines = [_md_row(["fingerprint field", "this machine"] + [f"capture {c}" for c in caps]),
             _md_row(["---"] * (2 + len(caps)))]
    for f in fields:
        def cell(fp):
            if not fp:
                return "not recorded"
            v = _get(fp, f)
            return "not recorded" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v))

        lines.append(_md_row([f"`{f}`" + ("" if f in KEY else " (recorded, not compared)"), cell(machine)]
                             + [cell(fp) for fp in caps.values()]))
    return lines


def _provenance_lines(runs: Sequence[CaseRun], prov: Provenance) -> list[str]:
    from .fingerprint import describe

    v = prov.versions
    stack = ", ".join(f"{k} {v[k]}" for k in VERSIONS if k != "porting")
    lines = [
        "## Provenance",
        "",
        _md_row(["", ""]),
        _md_row(["---", "---"]),
        _md_row(["generated", prov.generated]),
        _md_row(["port", f"porting {v.get('porting')}, git commit `{prov.commit.split(' ', 1)[0]}`"
                         + (f" {prov.commit.split(' ', 1)[1]}" if " " in prov.commit else "")]),
        _md_row(["numeric stack", f"python {prov.python}, {stack}"]),
        _md_row(["this machine's numerics fingerprint", describe(prov.machine)]),
    ]
    seen = set()
    for r in runs:
        if r.capture in seen:
            continue
        seen.add(r.capture)
        tier = f" -> {r.tier.line()}" if r.tier else ""
        lines.append(_md_row([f"capture `{r.capture}` fingerprint", describe(r.golden_fingerprint) + tier]))
    for store, sha in prov.manifests.items():
        lines.append(_md_row(["golden store", f"`{store}`: " + (
            f"MANIFEST.json sha256 `{sha}` (`port golden verify` checks the store against it)" if sha != "missing"
            else "no MANIFEST.json (the store is not tamper-evident; `tools/regenerate_golden` writes one)")]))
    if any(s is None for s in prov.stores.values()):
        missing = ", ".join(k for k, s in prov.stores.items() if s is None)
        lines.append(_md_row(["golden store", f"not located for {missing} (MANIFEST hash unknown): no store at "
                                               "$PORTING_GOLDEN_DIR, ./golden or the checkout's golden/ holds these "
                                               "cases with the values compared"]))
    models: dict[str, str] = {}
    for key, e in prov.entries.items():
        m = (e or {}).get("model") or {}
        if m.get("sha256"):
            models.setdefault(str(m.get("file")), m["sha256"])
    for f, sha in models.items():
        lines.append(_md_row([f"model `{f}`", f"sha256 `{sha}`"]))
    stacks: dict[str, str] = {}
    dates: dict[str, list[str]] = {}
    for r in runs:
        p = (prov.entries.get(_key(r)) or {}).get("provenance") or {}
        if p and r.capture not in stacks:
            keep = ("fastai", "fastai_audio", "transformers", "torch", "numpy", "python")
            stacks[r.capture] = ", ".join(f"{k} {p[k]}" for k in keep if k in p)
        if p.get("capture_date"):
            dates.setdefault(r.capture, []).append(str(p["capture_date"])[:10])
    for cap, stack in stacks.items():
        d = sorted(dates.get(cap, []))
        when = (f"captured {d[0]}" + (f" to {d[-1]}" if d[-1] != d[0] else "")) if d else "capture date not recorded"
        lines.append(_md_row([f"capture `{cap}` made with", f"{stack}; {when}"]))
    lines += ["", "Fields that decide the tier (`porting/parity/fingerprint.py`); the others are recorded only:", ""]
    lines += _fingerprint_table(runs, prov.machine)
    return lines


# ----------------------------------------------------------------------------------------------- dedupe


def _stat_key(s: StageResult, with_where: bool = True) -> tuple:
    """The numbers of a row (not its rule: two rows can hold the same numbers to different rules)."""
    ws = tuple((w.window, w.max_abs, w.mean_abs, w.p99_abs, w.max_rel, w.where if with_where else None, w.expected,
                w.actual) for w in s.windows)
    return (s.max_abs, s.mean_abs, s.p99_abs, s.max_rel, s.max_ulps, ws)


def _own_rule(s: StageResult, same_as: StageResult) -> str:
    """What the duplicate's own verdict rests on, when its rule differs from the row it repeats."""
    if (s.rule, s.tol, s.passed) == (same_as.rule, same_as.tol, same_as.passed):
        return ""
    return f"; held to its own rule, {s.rule or 'exact'} (tolerance at the worst element {_g(s.tol)})"


def _inputs(stage: str, r: CaseRun) -> tuple[str, ...]:
    """The chained stages whose output the isolated ``stage (golden input)`` replaces with the golden's."""
    return tuple(_traits(r).isolated_inputs(stage, r))


def _same_arrays(x: tuple, y: tuple) -> bool:
    (e1, a1, w1), (e2, a2, w2) = x, y
    return (w1 == w2 and np.size(e1) == np.size(e2) and np.size(a1) == np.size(a2)
            and np.array_equal(np.ravel(e1), np.ravel(e2)) and np.array_equal(np.ravel(a1), np.ravel(a2)))


def duplicates(r: CaseRun) -> dict[str, tuple[str, str]]:
    """Rows that repeat an earlier row's numbers: stage -> (the earlier stage, why, as computed).

    * ``S (golden input)`` vs ``S`` (both held to the golden ``S``): when both are exactly the golden
      (max |diff| 0), they are equal. Otherwise when the chained input of ``S`` equals the golden input
      bitwise (its stage's max |diff| is 0), every window's statistics agree and, where both are drawn, the
      drawn window is bitwise equal.
    * two drawn stages (``X.model_input`` vs ``C.padded`` without normalization, ``A.downmix`` vs
      ``A.segment`` for one channel): legacy's and the port's drawn windows bitwise equal and every window's
      statistics agree (positions aside: the shapes differ).
    Only stages named once in the run are considered (a pytest session may compare one stage twice)."""
    counts: dict[str, int] = {}
    for s in r.report.stages:
        counts[s.stage] = counts.get(s.stage, 0) + 1
    by = {s.stage: s for s in r.report.stages if counts[s.stage] == 1}
    out: dict[str, tuple[str, str]] = {}
    for name, s in by.items():
        if not name.endswith(GOLDEN_INPUT):
            continue
        base = name.removesuffix(GOLDEN_INPUT)
        b = by.get(base)
        if b is None or _stat_key(b) != _stat_key(s):
            continue
        if name in r.worst and base in r.worst and not _same_arrays(r.worst[name], r.worst[base]):
            continue
        if b.max_abs == 0 and s.max_abs == 0 and b.worst is not None:
            out[name] = (base, f"identical to `{base}`: both equal the golden exactly (max |diff| 0 in every window)"
                               + _own_rule(s, b))
            continue
        ins = _inputs(base, r)
        exact = [i for i in ins if i in by and by[i].max_abs == 0 and by[i].passed]
        if ins and len(exact) == len(ins):
            drawn = ", bitwise in the drawn window" if name in r.worst and base in r.worst else ""
            which = ", ".join(f"`{i}`" for i in ins)
            out[name] = (base, f"identical to `{base}`: the chained input equals the golden input bitwise ({which} "
                               f"max |diff| 0), and every window's statistics agree{drawn}" + _own_rule(s, b))
    drawn = [k for k in r.worst if k in by and k not in out]
    for i, later in enumerate(drawn):
        for earlier in drawn[:i]:
            if earlier in out or not _same_arrays(r.worst[earlier], r.worst[later]):
                continue
            if _stat_key(by[earlier], with_where=False) != _stat_key(by[later], with_where=False):
                continue
            w = r.worst[later][2]
            why = IDENTITY_REASON.get((later.removesuffix(GOLDEN_INPUT), earlier.removesuffix(GOLDEN_INPUT)))
            out[later] = (earlier, f"identical to `{earlier}`: {reference_name(r)}'s and the port's `{later}` equal "
                                   f"their `{earlier}` bitwise in the drawn window {w}, and every window's statistics "
                                   f"agree" + (f" ({why})" if why else "") + _own_rule(by[later], by[earlier]))
            break
    return out


# ---------------------------------------------------------------------------------------------- figures


def _matplotlib():
    """(Figure, FigureCanvasAgg, LogNorm) or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg, LogNorm


def _save(mpl, fig, path: Path) -> Path:
    """Render on the Agg canvas and write an RGB PNG (Pillow ships with matplotlib)."""
    from PIL import Image

    canvas = mpl[1](fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(path, format="PNG")
    return path


def _window_span() -> float:
    """Seconds one drawn window covers (stage A)."""
    return float(_traits().frontend.windows.window_s)


def mel_centres_hz(n_mels: int, traits=None) -> tuple[np.ndarray, int] | None:
    """Real centre frequency (Hz) of each mel filter of the drawn frontend and how many filters are non-zero (the
    family's ``ReportTraits.mel_centres``; None when it has none or ``n_mels`` is not its)."""
    centres = (traits or _traits()).mel_centres
    return None if centres is None else centres(n_mels)


def _hz_label(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def _outside_legend(fig, axes) -> None:
    """One legend for the figure, above the panels (never over the data)."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncols=len(handles), fontsize=10,
                   frameon=False)


def _tol_mark(cbar, s: StageResult) -> None:
    if s.tol and s.tol > 0:
        lo, hi = cbar.mappable.norm.vmin, cbar.mappable.norm.vmax
        if lo <= s.tol <= hi:
            cbar.ax.axhline(s.tol, color=TOL_COLOR, linewidth=2.5)
        const = s.rule.split(" ", 1)[0] in CONSTANT_RULES
        cbar.set_label(f"|diff| (log); red: tolerance {s.tol:.3g}" if const else
                       f"|diff| (log); red: tolerance at the element nearest it")
    else:
        cbar.set_label("|diff| (log); exact stage: any nonzero fails")


def spectrogram_figure(mpl, s: StageResult, legacy: np.ndarray, port: np.ndarray, window: int, ref: str):
    """legacy | port | |diff| of one window of a [mel, frames] stage."""
    import matplotlib

    traits = registry.named(s.family or None).report  # the drawn stage's family: its hop, frontend, mel scale
    HOP_S = traits.frame_s

    Figure, _, LogNorm = mpl
    e = np.asarray(legacy, dtype=np.float64).reshape(-1, np.shape(legacy)[-1])
    a = np.asarray(port, dtype=np.float64).reshape(-1, np.shape(port)[-1])
    n_mel, n_frames = e.shape
    base = s.stage.split(" ", 1)[0]
    t0 = float(window)
    extent = (t0 - HOP_S / 2, t0 + (n_frames - 0.5) * HOP_S, -0.5, n_mel - 0.5)
    fig = Figure(figsize=(16, 5.6), dpi=DPI)
    bottom, height = 0.1, 0.78
    ax0 = fig.add_axes((0.105, bottom, 0.235, height))
    axes = [ax0, fig.add_axes((0.365, bottom, 0.24, height), sharey=ax0),
            fig.add_axes((0.675, bottom, 0.24, height), sharey=ax0)]
    cax1 = fig.add_axes((0.612, bottom, 0.008, height))
    cax2 = fig.add_axes((0.922, bottom, 0.008, height))
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    both = np.concatenate([e[np.isfinite(e)], a[np.isfinite(a)]])
    vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    unit = "dB" if base != "X.model_input" else "(x - mean) / std"
    for ax, data, title in ((axes[0], e, ref), (axes[1], a, "port")):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(title)
    fig.colorbar(im, cax=cax1, label=f"{base} ({unit})")
    d = np.abs(a - e)
    dmax = float(np.nanmax(d)) if d.size else 0.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    norm = LogNorm(vmin=DIFF_FLOOR, vmax=max(1.0, dmax if np.isfinite(dmax) else 1.0))
    im = axes[2].imshow(np.where(d > 0, d, np.nan), origin="lower", aspect="auto", extent=extent, cmap=cmap,
                        norm=norm, interpolation="nearest")
    cbar = fig.colorbar(im, cax=cax2, extend="min")
    cbar.minorticks_off()
    _tol_mark(cbar, s)
    if dmax > 0:
        axes[2].set_title(f"|port - {ref}|: max {dmax:.3g}, white = exactly 0")
    else:
        axes[2].set_title(f"|port - {ref}|: exactly 0 everywhere (white)")
    frame_t = lambda f: t0 + np.asarray(f) * HOP_S  # noqa: E731
    if s.rule.split(" ", 1)[0] in CONSTANT_RULES and dmax > (s.tol or 0):
        bad = np.argwhere(d > (s.tol or 0))[:2000]
        axes[2].scatter(frame_t(bad[:, 1]), bad[:, 0], s=90, facecolors="none", edgecolors=TOL_COLOR, linewidths=1.5,
                        label="above tolerance", clip_on=False, zorder=5)
        axes[2].legend(loc="upper right", fontsize=8)
    elif s.worst is not None and s.worst.window == window and dmax > 0 and len(s.worst.where) >= 2:
        mel_i, fr = s.worst.where[-2], s.worst.where[-1]
        axes[2].scatter([frame_t(fr)], [mel_i], s=160, facecolors="none", edgecolors=TOL_COLOR, linewidths=2,
                        label="element nearest its tolerance", clip_on=False, zorder=5)
        axes[2].legend(loc="upper right", fontsize=8)
    fe = traits.frontend
    data_frames = fe.mel.n_frames(fe.windows.window_samples)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("time in the recording (s)")
        ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        if n_frames > data_frames:
            ax.axvline(t0 + (data_frames - 0.5) * HOP_S, color="white" if ax is not axes[2] else "black",
                       linestyle="--", linewidth=1)
    if n_frames > data_frames:
        pad = "padding (0 dB)" if base != "X.model_input" else "padding (0 dB, normalized)"
        axes[0].text(t0 + (data_frames + 2) * HOP_S, n_mel * 0.5, pad, color="white", fontsize=9)
    axes[0].set_ylabel("mel bin")
    hz = mel_centres_hz(n_mel, traits)
    if hz is not None:
        centres, nonzero = hz
        below = int(np.searchsorted(centres, fe.windows.sample_rate / 2, side="right"))
        ticks = [b for b in (0, 40, 80, 120, 160, 200) if b < min(nonzero, below) - 10] + [min(nonzero, below) - 1]
        sec = axes[0].secondary_yaxis(-0.2)
        sec.set_yticks(ticks, [_hz_label(round(float(centres[b]), -1 if centres[b] < 1000 else -2)) for b in ticks])
        sec.set_ylabel("filter centre (Hz)")
        if nonzero < n_mel:
            axes[0].axhline(nonzero - 0.5, color="cyan", linestyle=":", linewidth=1)
            axes[0].text(extent[0] + 0.02, nonzero + 2, f"bins {nonzero}-{n_mel - 1}: all-zero filters", color="cyan",
                         fontsize=8)
    verdict = "ok" if s.passed else "FAIL"
    fig.suptitle(y=0.975, t=f"{s.stage}, window {window} ({window}-{window + _window_span():g} s): {verdict} "
                 f"[{s.rule or 'exact'}{', ' + s.tier + ' tier' if s.tier else ''}], max |diff| {s.max_abs:.3g}",
                 fontsize=12)
    return fig


def waveform_figure(mpl, s: StageResult, legacy: np.ndarray, port: np.ndarray, window: int, ref: str):
    """legacy and port over the window's time, one panel per channel (up to 4), and |diff| on a log axis."""
    Figure = mpl[0]
    e = np.atleast_2d(np.asarray(legacy, dtype=np.float64))
    a = np.atleast_2d(np.asarray(port, dtype=np.float64))
    n_ch, n = e.shape[0], e.shape[-1]
    shown = min(n_ch, 4)
    span = _window_span()
    t = window + np.arange(n) * (span / n)
    fig = Figure(figsize=(16, 6), dpi=DPI)
    axes = fig.subplots(shown + 1, 1, sharex=True, gridspec_kw={"height_ratios": [2] * shown + [2]})
    fig.subplots_adjust(left=0.06, right=0.985, top=0.88, bottom=0.09, hspace=0.12)
    for c in range(shown):
        ax = axes[c]
        ax.plot(t, e[c], color=LEGACY_COLOR, linewidth=1.6, label=ref)
        ax.plot(t, a[c] if c < a.shape[0] else np.full(n, np.nan), color=PORT_COLOR, linewidth=0.7, linestyle="--",
                label="port")
        ax.set_ylabel("amplitude" + (f" (ch {c})" if n_ch > 1 else ""))
        ax.grid(alpha=0.3)
    if n_ch > shown:
        axes[0].set_title(f"channels 0-{shown - 1} of {n_ch} shown; |diff| below: max over all channels", fontsize=9)
    d = np.abs(a - e).max(axis=0) if a.shape == e.shape else np.full(n, np.inf)
    ax = axes[-1]
    dmax = float(np.max(d)) if d.size else 0.0
    ax.set_yscale("log")
    ax.set_ylim(1e-10, max(1.0, 10 * dmax if np.isfinite(dmax) else 1.0))
    nz = d > 0
    if nz.any():
        ax.plot(t[nz], d[nz], ".", color=TOL_COLOR if not s.passed else "black", markersize=2, label="|diff| > 0")
    else:
        ax.text(0.5, 0.5, f"port = {ref} bitwise: |diff| is 0 at every sample", transform=ax.transAxes, ha="center",
                va="center", fontsize=12)
    if s.tol and s.tol > 0:
        ax.axhline(s.tol, color=TOL_COLOR, linewidth=1.5, label=f"tolerance {s.tol:.3g}")
    _outside_legend(fig, axes)
    ax.set_ylabel("|port - " + ref + "|")
    ax.set_xlabel("time in the recording (s)")
    ax.grid(alpha=0.3, which="both")
    verdict = "ok" if s.passed else "FAIL"
    fig.suptitle(y=0.985, t=f"{s.stage}, window {window} ({window}-{window + span:g} s), {n} samples: {verdict} "
                 f"[{s.rule or 'exact'}], max |diff| {s.max_abs:.3g}", fontsize=12)
    return fig


def _per_window_axes(mpl):
    """(figure, top, bottom) of the per-window figures: the values above, their |diff| below, one time axis."""
    fig = mpl[0](figsize=(16, 6), dpi=DPI)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    fig.subplots_adjust(left=0.06, right=0.985, top=0.88, bottom=0.09, hspace=0.1)
    return fig, top, bottom


def _diff_panel(ax, t: np.ndarray, d: np.ndarray, tol: float, ref: str, label: str, xlabel: str) -> float:
    """Per-window |diff| ``d`` on a log axis against the tolerance (exact zeros drawn at the bottom); its max."""
    ax.set_yscale("log")
    nz = d > 0
    floor = min([1e-10] + ([float(d[nz].min()) / 3] if nz.any() else []))
    ax.plot(t[nz], d[nz], "o", color="black", markersize=4, label=label)
    if (~nz).any():
        ax.plot(t[~nz], np.full(int((~nz).sum()), floor * 2), "v", color="gray", markersize=5, fillstyle="none",
                label="exactly 0 (drawn at the bottom)")
    ax.axhline(tol, color=TOL_COLOR, linewidth=1.5, label=f"tolerance {tol:g}")
    dmax = float(d.max()) if d.size else 0.0
    ax.set_ylim(floor, max(1e-3, 10 * dmax if np.isfinite(dmax) else 1e-3))
    ax.set_ylabel(f"|port - {ref}|")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, which="both")
    return dmax


def confidence_figure(mpl, legacy: np.ndarray, port: np.ndarray, tol: float, threshold: float = 0.5,
                      ref: str = "legacy"):
    """Per-window confidence of legacy and port against the window start, with the threshold; |diff| below."""
    e, a = np.asarray(legacy, dtype=np.float64), np.asarray(port, dtype=np.float64)
    t = np.arange(len(e), dtype=np.float64)
    fig, top, bottom = _per_window_axes(mpl)
    top.plot(t, e, "-o", color=LEGACY_COLOR, linewidth=2.2, markersize=8, label=ref)
    top.plot(t, a, "--x", color=PORT_COLOR, linewidth=1, markersize=7, markeredgewidth=1.5, label="port")
    top.axhline(threshold, color="gray", linestyle=":", linewidth=1.5, label=f"threshold {threshold:g}")
    top.set_ylim(-0.03, 1.03)
    top.set_ylabel("confidence (positive class)")
    top.grid(alpha=0.3)
    dmax = _diff_panel(bottom, t, np.abs(a - e), tol, ref, "|diff|",
                       "window start in the recording (s); window i covers [i, i + 2] s")
    bottom.set_xlim(-0.5, max(len(t) - 0.5, 2.0))
    _outside_legend(fig, (top, bottom))
    fig.suptitle(f"per-window confidence, {len(e)} window{'s' if len(e) != 1 else ''}: max |diff| {dmax:.3g}",
                 fontsize=12, y=0.985)
    return fig


def probs_figure(mpl, golden: np.ndarray, port: np.ndarray, labels: Sequence[str], starts_s: np.ndarray, tol: float,
                 ref: str = "transformers"):
    """HF: every label's probability per window (reference solid, port dashed) against the window start; below,
    the largest |diff| over the labels of each window against the tolerance."""
    from matplotlib import colormaps  # mpl is not None: matplotlib is installed

    e, a = np.asarray(golden, dtype=np.float64), np.asarray(port, dtype=np.float64)
    t = np.asarray(starts_s, dtype=np.float64)
    fig, top, bottom = _per_window_axes(mpl)
    colors = colormaps["tab10"]
    for k in range(e.shape[1]):
        name = labels[k] if k < len(labels) else f"class {k}"
        top.plot(t, e[:, k], "-o", color=colors(k % 10), linewidth=2.2, markersize=7, label=f"{name} ({ref})")
        top.plot(t, a[:, k], "--x", color="black", linewidth=0.8, markersize=6, markeredgewidth=1.2,
                 label="port" if k == 0 else None)
    top.set_ylim(-0.03, 1.03)
    top.set_ylabel("probability")
    top.grid(alpha=0.3)
    dmax = _diff_panel(bottom, t, np.abs(a - e).max(axis=1), tol, ref, "max |diff| over labels",
                       "window start in the recording (s)")
    _outside_legend(fig, (top, bottom))
    fig.suptitle(f"per-window probabilities, {len(e)} window{'s' if len(e) != 1 else ''}: max |diff| {dmax:.3g}",
                 fontsize=12, y=0.985)
    return fig


def margin_figure(mpl, stages: Sequence[StageResult], title: str):
    """Each stage's worst |diff| / tolerance on a log axis; 1 is the tolerance (right of it fails)."""
    Figure = mpl[0]
    n = len(stages)
    h = 1.4 + 0.3 * n
    fig = Figure(figsize=(10, h), dpi=DPI)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.22, right=0.97, top=1 - 0.45 / h, bottom=0.65 / h)
    vals = []
    for s in stages:
        m = s.margin if np.isfinite(s.margin) else np.inf
        if not s.passed and m <= 1:  # exact comparisons (decisions) carry no ratio
            m = np.inf
        vals.append(m)
    finite = [v for v in vals if np.isfinite(v)]
    lo = min([1e-4] + [v / 3 for v in finite if v > 0])
    hi = max(10.0, 3 * max(finite)) if finite else 10.0
    y = np.arange(n)[::-1]
    for yi, s, m in zip(y, stages, vals):
        color = "#2ca02c" if s.passed else TOL_COLOR
        if m == 0:
            ax.text(lo * 1.2, yi, "0 (exact)", va="center", fontsize=8, color="dimgray")
            continue
        w = hi if not np.isfinite(m) else max(m, lo)
        ax.barh(yi, w - lo, left=lo, color=color, height=0.6)
        label = "FAIL" if not np.isfinite(m) else f"{m:.2g}"
        ax.text(min(w, hi) * 1.15 if np.isfinite(m) else hi / 1.5, yi, label, va="center", fontsize=8,
                ha="left" if np.isfinite(m) else "right", color="black" if np.isfinite(m) else "white")
    ax.axvline(1.0, color=TOL_COLOR, linewidth=1.5, label="tolerance (|diff| / tol = 1)")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi * 4)
    ax.set_yticks(y, [s.stage for s in stages], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("worst |diff| / tolerance over the stage (log; 0 = exactly equal)")
    ax.grid(alpha=0.3, axis="x", which="both")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------- markdown


def _key(r: CaseRun) -> str:
    return f"{r.report.case} ({r.capture}, {r.report.device})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


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


def render_markdown(runs: Sequence[CaseRun], pictures: dict[str, list[tuple[str, str, str]]],
                    title: str = "Parity report", prov: Provenance | None = None,
                    figures_note: str | None = None) -> str:
    """report.md text. ``pictures[case key]`` = [(stage or figure name, relative png path, caption)]."""
    prov = prov if prov is not None else provenance(runs)
    n_bad = sum(not r.report.passed for r in runs)
    lines = [
        f"# {title}",
        "",
        "Each case is compared with every capture of it: in the **strict** tier (capture fingerprint = this "
        "machine's) every stage within 1e-5; in the **portable** tier `A.*` bitwise, the FFT stages by the derived "
        "error model (porting/dsp/errormodel.py); in both, probabilities within 1e-5 absolute, decisions exact, "
        "logits by the row rule (porting/parity/contract.py).",
        "",
        f"**{len(runs) - n_bad} of {len(runs)} case captures pass.**",
        "",
    ]
    if figures_note:
        lines += [figures_note, ""]
    lines += _provenance_lines(runs, prov)
    lines += [
        "",
        "## Summary",
        "",
        _md_row(["case", "capture", "tier", "device", "result", "failing stages"]),
        _md_row(["---"] * 6),
    ]
    for r in runs:
        bad = ", ".join(f"`{s.stage}`" for s in r.report.failures())
        lines.append(_md_row([r.report.case, r.capture, r.tier.name if r.tier else "", r.report.device,
                              "ok" if r.report.passed else "**FAIL**", bad or "–"]))
    lines.append("")
    docs = []
    for r in runs:
        doc = _traits(r).stages_doc
        if doc not in docs:
            docs.append(doc)
    for doc in docs:
        lines += [doc, ""]
    for r in runs:
        ref = reference_name(r)
        lines += [f"## {r.report.case} vs {r.capture} ({r.report.device})", ""]
        if r.report.note:
            lines += [r.report.note, ""]
        entry = prov.entries.get(_key(r)) or {}
        m, au = entry.get("model") or {}, entry.get("audio") or {}
        if m or au:
            lines += ["; ".join(x for x in (
                f"model `{m.get('file')}` sha256 `{m.get('sha256')}`" if m else "",
                f"recording `{au.get('file')}` sha256 `{au.get('sha256')}`" if au else "") if x) + ".", ""]
        for s in r.report.failures():
            lines.append(f"- {s.message()}")
        if r.report.failures():
            lines.append("")
        dups = duplicates(r)
        lines.append(_md_row(["stage", "result", "max abs", "mean abs", "p99 abs", "max rel", "ulps", "rule",
                              "tol at worst", "worst at", ref, "port", "note"]))
        lines.append(_md_row(["---"] * 13))
        lines += [_md_row(_stage_row(s)) for s in r.report.stages if s.stage not in dups]
        if dups:
            lines += ["", "Rows with the same numbers as a row above, not repeated:", ""]
            for s in r.report.stages:
                if s.stage in dups:
                    lines.append(f"- `{s.stage}`: {'ok' if s.passed else '**FAIL**'}, {dups[s.stage][1]}.")
        for stage, rel, cap in pictures.get(_key(r), []):
            lines += ["", f"**{stage}**: {cap}", "", f"![{stage}]({rel})"]
    return "\n".join(lines) + "\n"


def _figures(mpl, r: CaseRun, folder: str, tmp: Path) -> list[tuple[str, str, str]]:
    """Draw one run's figures into ``tmp/folder``; (name, relative path, caption) for each."""
    ref = reference_name(r)
    dups = duplicates(r)
    by = {s.stage: s for s in r.report.stages}
    items = []
    shown = [s for s in r.report.stages if s.stage not in dups]
    if any(s.worst is not None or s.margin > 0 for s in shown):
        rel = f"{folder}/margins.png"
        fig = margin_figure(mpl, shown, f"{r.report.case} vs {r.capture}: worst |diff| / tolerance per stage")
        _save(mpl, fig, tmp / rel)
        items.append(("margins", rel, "each stage's worst |diff| / tolerance on a log axis (green: passes, red: "
                                      "fails; 1 is the tolerance; rows that repeat another row are left out)."))
    for stage, (legacy, port, window) in r.worst.items():
        if stage in dups or stage not in by:
            continue
        s = by[stage]
        base = stage.split(" ", 1)[0]
        traits = _traits(r)
        if base in traits.spectral:
            fig = spectrogram_figure(mpl, s, legacy, port, window, ref)
            cap = (f"worst window {window}: {ref} and port on one colour scale; |port - {ref}| on a fixed log scale "
                   f"({DIFF_FLOOR:g} and up; white = exactly 0), tolerance marked red on its colour bar"
                   + (" (the error model's tolerance is per element, far larger in quiet bins: the mark is its value "
                      "at the element nearest it, circled)." if s.rule.split(" ", 1)[0] not in CONSTANT_RULES else "."))
        elif base in traits.waveform or np.ndim(legacy) <= 2:
            fig = waveform_figure(mpl, s, legacy, port, window, ref)
            cap = f"worst window {window}: {ref} (blue) and port (orange, dashed), |diff| on a log axis."
        else:
            continue
        rel = f"{folder}/{_slug(stage)}.png"
        _save(mpl, fig, tmp / rel)
        items.append((stage, rel, cap))
    if r.confidence is not None and len(r.confidence[0]) and len(r.confidence[0]) == len(r.confidence[1]):
        rel = f"{folder}/confidence.png"
        conf = by.get("all.confidence")
        tol = conf.tol if conf is not None and conf.tol else 1e-5
        _save(mpl, confidence_figure(mpl, *r.confidence, tol=tol, ref=ref), tmp / rel)
        d = float(np.max(np.abs(np.asarray(r.confidence[0]) - np.asarray(r.confidence[1]))))
        items.append(("confidence", rel, f"per-window confidence of {ref} and port with the 0.5 threshold; below, "
                                         f"their |diff| (max {d:.3g}) against the tolerance."))
    if r.probs is not None and np.shape(r.probs[0]) == np.shape(r.probs[1]) and len(r.probs[0]):
        rel = f"{folder}/probs.png"
        st = by.get("all.probs")
        tol = st.tol if st is not None and st.tol else 1e-5
        _save(mpl, probs_figure(mpl, *r.probs, tol=tol, ref=ref), tmp / rel)
        d = float(np.max(np.abs(np.asarray(r.probs[0]) - np.asarray(r.probs[1]))))
        items.append(("probabilities", rel, f"every label's probability per window, {ref} and port; below, the "
                                            f"largest |diff| of each window (max {d:.3g}) against the tolerance."))
    return items


def write_report(runs: Sequence[CaseRun], out_dir: str | Path, title: str = "Parity report",
                 golden: str | Path | None = None) -> Path:
    """Write ``out_dir/report.md`` and its figures (``<case>__<capture>__<device>/<figure>.png``). ``golden``:
    the store compared with, when the caller knows it (else located: ``locate_store``).

    Everything is built in a temp dir first and then moved in (each case's figure folder replaced whole,
    nothing else in ``out_dir`` touched), so a failure leaves no half-written report. Without matplotlib the
    markdown is written with a line saying what to install (also said on stderr)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mpl = _matplotlib()
    prov = provenance(runs, golden)
    tmp = Path(tempfile.mkdtemp(prefix=".report.", dir=out_dir))
    try:
        pictures: dict[str, list[tuple[str, str, str]]] = {}
        folders = []
        if mpl is not None:
            for r in runs:
                folder = _slug(f"{r.report.case}__{r.capture}__{r.report.device}")
                items = _figures(mpl, r, folder, tmp)
                if items:
                    folders.append(folder)
                pictures.setdefault(_key(r), []).extend(items)
        note = None if mpl is not None else NO_FIGURES
        (tmp / "report.md").write_text(render_markdown(runs, pictures, title, prov, note))
        for folder in dict.fromkeys(folders):
            dest = out_dir / folder
            if dest.exists():  # a previous report's figures: replaced, not mixed with these
                os.replace(dest, tmp / f".old.{folder}")
            os.replace(tmp / folder, dest)
        os.replace(tmp / "report.md", out_dir / "report.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if mpl is None:
        print(f"note: {out_dir / 'report.md'}: {NO_FIGURES}", file=sys.stderr)
    return out_dir / "report.md"
