"""The OrcaHello stage graph, declared once: stage-A window -> B mel dB -> C crop/pad -> X normalize
-> model -> activation (golden/README.md §3-§4).

``port detect`` (``Detector``), ``port parity`` / the pytest plugin, export verification and the
pipeline graphs all run the chain through ``StageGraph``; none writes it again. Its typed fields come
from a converted model's config.json (``StageGraph.from_config``), the one place that dict is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ...errors import UnsupportedModelError
from ...stages import ACTIVATIONS, activate  # noqa: F401 (activate: re-exported for the pipeline)
from .frontend.config import FrontendConfig
from ...dsp.mel import mel_db
from .frontend.normalize import normalize
from .frontend.pad import crop_pad

STAGES = ("B.mel_db", "C.padded", "X.model_input")  # what ``frontend`` returns, by golden name


@dataclass(frozen=True)
class StageGraph:
    """The chain's parameters: frontend configs, the learner's normalization and output activation."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    normalize: dict | None = None  # {"mean": [...], "std": [...]} per channel, or None
    activation: dict = field(default_factory=lambda: {"name": "softmax", "dim": -1})
    positive_index: int | None = None
    source: str = "model"

    @classmethod
    def from_config(cls, config: dict) -> "StageGraph":
        act = dict(config.get("activation") or {"name": "softmax", "dim": -1})
        if act.get("name") not in ACTIVATIONS:
            raise UnsupportedModelError(f"output activation {act.get('name')!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        pos = config.get("positive_index")
        return cls(FrontendConfig.from_dict(config.get("frontend", {})), config.get("normalize") or None, act,
                   None if pos is None else int(pos), (config.get("source") or {}).get("file") or "model")

    def frontend_stages(self, waveform: Tensor) -> dict[str, Tensor]:
        """Stage-A windows ``[B, N]`` -> ``{"B.mel_db", "C.padded", "X.model_input"}``."""
        fe = self.frontend
        spec = mel_db(waveform, fe.mel)
        padded = crop_pad(spec, fe.pad)
        return {"B.mel_db": spec, "C.padded": padded, "X.model_input": self.normalized(padded)}

    def normalized(self, padded: Tensor) -> Tensor:
        norm = self.normalize
        return normalize(padded, norm["mean"], norm["std"]) if norm else padded

    def model_input(self, waveform: Tensor) -> Tensor:
        return self.frontend_stages(waveform)["X.model_input"]

    def activate(self, logits: Tensor) -> Tensor:
        return activate(logits, self.activation)

    def confidence(self, probs: Tensor) -> Tensor:
        return probs[:, self.require_positive()]

    def require_positive(self) -> int:
        if self.positive_index is None:
            raise UnsupportedModelError(f"{self.source}: no positive class; the detector needs a class named 'positive' "
                                        "or two classes")
        return self.positive_index
