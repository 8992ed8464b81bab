"""How a parity report presents OrcaHello runs (``porting.family.ReportTraits``)."""

from __future__ import annotations

import numpy as np

from ...family import ReportTraits

# Names of the axes after the window axis, per golden tensor (golden/README.md "Case format").
AXES: dict[str, tuple[str, ...]] = {
    "A.segment": ("channel", "sample"),
    "A.downmix": ("sample",),
    "A.waveform": ("sample",),
    "B.mel_db": ("channel", "mel bin", "frame"),
    "C.padded": ("channel", "mel bin", "frame"),
    "X.model_input": ("channel", "mel bin", "frame"),
    "Y.logits": ("class",),
    "Y.probs": ("class",),
    "all.logits": ("class",),
    "all.probs": ("class",),
    "all.confidence": (),
    "agg.confidence": (),
}
HOP_S = 256 / 20000  # one mel frame of the 20 kHz waveform (README §3), to print frames as seconds
SPECTRAL = ("B.mel_db", "C.padded", "X.model_input")
WAVEFORM = ("A.segment", "A.downmix", "A.waveform")

STAGES_DOC = ("Stages: `A.*` decoding/windows, `B.mel_db` mel dB, `C.padded` crop/pad, `X.model_input` after "
              "normalization, `Y.*` model on the stored windows, `all.*` every window, `agg.*` the per-second table "
              "and decisions. `(golden input)` rows feed the stage the golden output of the stage before it, so "
              "they isolate that stage.")


def mel_centres_hz(n_mels: int) -> tuple[np.ndarray, int] | None:
    """Real centre frequency (Hz) of each stage-B mel filter and how many filters are non-zero.

    The filterbank is laid out for 16 kHz on 20-kHz audio (golden/README.md): a filter placed at nominal
    ``f`` (HTK mel scale between f_min and f_max) reads the FFT bin that holds ``f * 20000 / 16000``."""
    from ...dsp.mel import mel_filterbank
    from .frontend.config import FrontendConfig

    fe = FrontendConfig()
    cfg = fe.mel
    if n_mels != cfg.n_mels:
        return None
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731 - torchaudio's HTK scale
    pts = np.linspace(to_mel(cfg.f_min), to_mel(cfg.f_max), cfg.n_mels + 2)
    nominal = 700.0 * (10.0 ** (pts / 2595.0) - 1.0)
    centres = nominal[1:-1] * fe.windows.sample_rate / cfg.mel_sample_rate
    nonzero = int((mel_filterbank(cfg).abs().sum(0) > 0).sum())
    return centres, nonzero


def describe_location(stage: str, window: int, where) -> str:
    """``window 35 (35-37 s), mel bin 12, frame 80 (1.024 s into the window)``: window ``i`` covers [i, i + 2] s
    (README §1); ``agg.*`` rows are seconds of the per-second table."""
    base = stage.split(" ", 1)[0]  # "B.mel_db (golden input)" -> "B.mel_db"
    parts = [f"window {window} ({window}-{window + 2} s)" if not base.startswith("agg.") else f"row {window}"]
    for axis, i in zip(AXES.get(base, tuple(f"dim{k + 1}" for k in range(len(where)))), where):
        if axis == "channel" and base != "A.segment":
            continue  # always 0 for the mono spectrogram
        text = f"{axis} {i}"
        if axis == "frame":
            text += f" ({i * HOP_S:.3f} s into the window)"
        parts.append(text)
    return ", ".join(parts)


def _isolated_inputs(stage: str, run) -> tuple[str, ...]:
    from .parity import ISOLATED

    inp = ISOLATED.get(stage)
    return (inp,) if inp else ()


def traits() -> ReportTraits:
    from .frontend.config import FrontendConfig

    return ReportTraits(reference="legacy", stages_doc=STAGES_DOC, isolated_inputs=_isolated_inputs,
                        frontend=FrontendConfig(), mel_centres=mel_centres_hz, locate=describe_location,
                        spectral=SPECTRAL, waveform=WAVEFORM, frame_s=HOP_S)
