"""How a parity report presents OrcaHello runs (``porting.family.ReportTraits``)."""

from __future__ import annotations

import numpy as np

from ...family import ReportTraits

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


def _isolated_inputs(stage: str, run) -> tuple[str, ...]:
    from .parity import ISOLATED

    inp = ISOLATED.get(stage)
    return (inp,) if inp else ()


def traits() -> ReportTraits:
    from .frontend.config import FrontendConfig

    return ReportTraits(reference="legacy", stages_doc=STAGES_DOC, isolated_inputs=_isolated_inputs,
                        frontend=FrontendConfig(), mel_centres=mel_centres_hz)
