"""Frozen configs for stages A-C. Defaults are the legacy values (golden/README.md §1-§3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ....dsp.mel import MelConfig  # stage B's config: the mel primitive's (porting.dsp.mel)


@dataclass(frozen=True)
class WindowConfig:
    """Stage A: 2-s windows with a 1-s hop, resampled to 20 kHz mono (README §1-§3)."""

    window_s: int = 2
    hop_s: int = 1
    sample_rate: int = 20000  # fastai_audio `resample_to`
    downmix: bool = True
    cache_round_trips: bool = True  # the PCM_16 cache write/read after downmix and after resample

    @property
    def window_samples(self) -> int:
        return self.window_s * self.sample_rate


@dataclass(frozen=True)
class PadConfig:
    """Stage C: crop or pad to ``int(sample_rate * duration_ms / 1000 / hop_length)`` frames (README §3).

    The pad value is 0.0 *dB*, appended after the spectrogram ("zeros-after"), as legacy did.
    """

    duration_ms: int = 4000
    sample_rate: int = 20000
    hop_length: int = 256
    pad_value: float = 0.0

    @property
    def frames(self) -> int:
        return int(self.sample_rate * self.duration_ms / 1000 / self.hop_length)


@dataclass(frozen=True)
class FrontendConfig:
    windows: WindowConfig = field(default_factory=WindowConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    pad: PadConfig = field(default_factory=PadConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendConfig":
        return cls(
            windows=WindowConfig(**d.get("windows", {})),
            mel=MelConfig(**d.get("mel", {})),
            pad=PadConfig(**d.get("pad", {})),
        )
