"""A tiny PNG writer (zlib + struct) and the two pictures parity reports need: heatmaps and line plots.

No matplotlib or Pillow at runtime (runtime deps are torch, numpy, ...): 8-bit grayscale or RGB,
filter 0 on every row, one IDAT chunk. Pictures carry no text; report.md captions them.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A perceptually ordered dark-blue -> teal -> green -> yellow ramp (anchor colours, linearly interpolated).
_RAMP = np.array(
    [
        [48, 18, 59],
        [50, 90, 170],
        [33, 145, 140],
        [94, 201, 98],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
WHITE = (255, 255, 255)
GAP = 6  # pixels between panels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image: [H, W] grayscale or [H, W, 3] RGB."""
    img = np.ascontiguousarray(pixels)
    if img.dtype != np.uint8:
        raise ValueError(f"encode_png: pixels must be uint8, got {img.dtype}")
    if img.ndim == 2:
        color_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"encode_png: expected [H, W] or [H, W, 3], got shape {img.shape}")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("encode_png: empty image")
    rows = img.reshape(h, w * channels)
    raw = np.zeros((h, 1 + w * channels), dtype=np.uint8)  # leading 0 = filter type "None"
    raw[:, 1:] = rows
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b"")


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(pixels))
    return path


def colormap(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """[H, W] floats -> [H, W, 3] uint8 on the ramp; NaN/Inf drawn white."""
    v = np.asarray(values, dtype=np.float64)
    span = vmax - vmin if np.isfinite(vmax - vmin) and vmax > vmin else 1.0
    t = np.clip((v - vmin) / span, 0.0, 1.0)
    pos = np.nan_to_num(t) * (len(_RAMP) - 1)
    lo = np.minimum(pos.astype(int), len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    rgb[~np.isfinite(v)] = WHITE
    return np.round(rgb).astype(np.uint8)


def hstack_panels(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Side by side on white, top-aligned."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def vstack_panels(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    w = max(p.shape[1] for p in panels)
    h = sum(p.shape[0] for p in panels) + gap * (len(panels) - 1)
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    y = 0
    for p in panels:
        out[y : y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def heatmap_triptych(legacy: np.ndarray, port: np.ndarray) -> tuple[np.ndarray, dict]:
    """legacy | port | |diff| for a 2-D map (row 0 drawn at the bottom, like a spectrogram).

    legacy and port share one colour scale (the legacy range); |diff| is scaled 0..its max.
    Returns the picture and the scales, for the caption.
    """
    e = np.asarray(legacy, dtype=np.float64)
    a = np.asarray(port, dtype=np.float64)
    d = np.abs(a - e)
    finite = e[np.isfinite(e)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    dfin = d[np.isfinite(d)]
    dmax = float(dfin.max()) if dfin.size else 0.0
    panels = [colormap(e[::-1], vmin, vmax), colormap(a[::-1], vmin, vmax), colormap(d[::-1], 0.0, dmax if dmax > 0 else 1.0)]
    return hstack_panels(panels), {"vmin": vmin, "vmax": vmax, "diff_max": dmax}


def line_plot(
    series: list[tuple],  # (x, y, rgb) or (x, y, rgb, marker half-size)
    width: int = 800,
    height: int = 240,
    ylim: tuple[float, float] | None = None,
    hlines: list[tuple[float, tuple[int, int, int]]] = (),
    margin: int = 8,
    markers: bool = False,
) -> np.ndarray:
    """Rasterize (x, y, rgb) series on white; with many points per pixel column each column shows the
    min..max envelope (waveforms); ``markers`` draws a square dot per point. Light frame, optional horizontal reference lines (thresholds)."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    xs_all = np.concatenate([np.asarray(s[0], dtype=np.float64) for s in series]) if series else np.zeros(1)
    ys_all = np.concatenate([np.asarray(s[1], dtype=np.float64) for s in series]) if series else np.zeros(1)
    ys_fin = ys_all[np.isfinite(ys_all)]
    x0, x1 = float(xs_all.min()), float(xs_all.max())
    if ylim is None:
        ylim = (float(ys_fin.min()), float(ys_fin.max())) if ys_fin.size else (0.0, 1.0)
    y0, y1 = ylim
    if not y1 > y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if not x1 > x0:
        x1 = x0 + 1.0
    pw, ph = width - 2 * margin, height - 2 * margin

    def px(x):
        return np.clip(np.round(margin + (np.asarray(x, dtype=np.float64) - x0) / (x1 - x0) * (pw - 1)), margin, margin + pw - 1).astype(int)

    def py(y):
        yy = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=y0, posinf=y1, neginf=y0)
        return np.clip(np.round(margin + (y1 - yy) / (y1 - y0) * (ph - 1)), margin, margin + ph - 1).astype(int)

    frame = (200, 200, 200)
    img[margin, margin : margin + pw] = frame
    img[margin + ph - 1, margin : margin + pw] = frame
    img[margin : margin + ph, margin] = frame
    img[margin : margin + ph, margin + pw - 1] = frame
    for yv, rgb in hlines:
        if y0 <= yv <= y1:
            img[py(yv), margin : margin + pw : 3] = rgb  # dotted
    for item in series:
        x, y, rgb = item[:3]
        radius = item[3] if len(item) > 3 else 2  # marker half-size, when markers are on
        cx, cy = px(x), py(y)
        if cx.size == 0:
            continue
        # vertical span per column (envelope), then connect consecutive columns
        order = np.argsort(cx, kind="stable")
        cx, cy = cx[order], cy[order]
        cols, first = np.unique(cx, return_index=True)
        lows = np.minimum.reduceat(cy, first)
        highs = np.maximum.reduceat(cy, first)
        prev = None
        for c, lo, hi in zip(cols, lows, highs):
            mid = (lo + hi) / 2
            if prev is not None:  # straight segment from the previous column's centre to this one's
                pc, pm = prev
                for xx in range(pc + 1, c + 1):
                    ya = pm + (mid - pm) * (xx - 1 - pc) / (c - pc)
                    yb = pm + (mid - pm) * (xx - pc) / (c - pc)
                    a, b = sorted((int(round(ya)), int(round(yb))))
                    img[a : b + 1, xx] = rgb
            img[lo : hi + 1, c] = rgb
            if markers:
                img[max(lo - radius, 0) : hi + radius + 1, max(c - radius, 0) : c + radius + 1] = rgb
            prev = (c, mid)
    return img


def decode_png_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, channels) from the IHDR, after checking the signature (for tests and checks)."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    return w, h, {0: 1, 2: 3, 6: 4}[color]
