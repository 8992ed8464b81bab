"""Frozen configs for stages A-C. Defaults are the legacy values (golden/README.md §1-§3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
class MelConfig:
    """Stage B: torchaudio-style MelSpectrogram + AmplitudeToDB as fastai_audio called them (README §3).

    ``mel_sample_rate`` is the quirk: fastai_audio never passed ``sample_rate``, so the filterbank was
    laid out for torchaudio's default 16000 although the audio is at 20 kHz (top 18 filters all-zero).
    """

    n_fft: int = 2560
    hop_length: int = 256
    win_length: int | None = None  # None -> n_fft
    n_mels: int = 256
    f_min: float = 0.0
    f_max: float = 10000.0
    mel_sample_rate: int = 16000
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"
    top_db: float | None = 100.0
    amin: float = 1e-10

    def n_frames(self, n_samples: int) -> int:
        """STFT frames of ``n_samples`` samples (157 for a 2-s window at 20 kHz, centred, hop 256)."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + (n_samples - self.n_fft) // self.hop_length


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
