"""Plain-text summaries for the terminal (the CLI prints these; no logic lives in cli.py)."""

from __future__ import annotations


def format_detection(results, threshold: float = 0.5) -> str:
    """One block per file: windows, seconds above threshold, the global call, per-second confidences."""
    from .detect import FileError

    lines = []
    for r in results:
        if isinstance(r, FileError):
            lines.append(f"{r.path}: FAILED ({type(r.error).__name__})")
            continue
        if not hasattr(r, "table"):  # the HF family: multi-class rows, no per-second table
            lines.append(r.summary_line())
            continue
        t = r.table
        lines.append(
            f"{r.path}: {len(r.confidence)} windows, {sum(t.local_predictions)}/{len(t.submission)} seconds "
            f"> {threshold}, global_prediction={t.global_prediction}, global_confidence={t.global_confidence:.6f}"
        )
        lines.append("  per-second confidence: " + " ".join(f"{row['confidence']:.3f}" for row in t.submission))
    return "\n".join(lines)
