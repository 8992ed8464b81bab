"""A librosa-mel CNN classifier rebuilt in plain torch: the librosa frontend (``porting.dsp.librosamel``), a body
(``bodies``) and the head the run trained.

Heads (``head`` in the converted config):

* ``linear``: ``head.weight`` + ``head.bias``; the scores are the logits.
* ``cosine``: ``head.weight`` only (Project-Echo's ``CosineLinear``, or ``ArcMarginProduct``'s weight): the model's
  eval output is ``cos θ = normalize(embedding) · normalize(W)ᵀ`` (``Y.output``); the class scores are
  ``s · cos θ`` **without** the margin (ArcFace's margin applies to the true class in training only), ``s`` from the
  run's loss config (``training.arcface.s``, or ``training.circle.s`` for the circle loss): what Project-Echo's
  evaluation ranks by. Probabilities are ``softmax(s · cos θ)``. (Its ``deploy_model.py`` applies softmax to the raw
  ``cos θ``, which flattens every distribution towards uniform: the port does not reproduce that.)

The state dict keeps the framework's keys, so the checkpoint loads with ``strict=True``: a missing or unexpected key
is a one-line error naming it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...dsp.convstft import slaney_mel
from ...dsp.librosamel import fit_clip, mel_power, minmax_clip, power_spectrogram, power_to_db_clip
from ...io.weights import check_keys
from .bodies import make_body

STAGES = ("F.mel", "F.db", "F.input", "M.features", "M.embedding", "Y.output", "Y.logits", "Y.probs")


class _Head(nn.Module):
    def __init__(self, width: int, classes: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(classes, width), requires_grad=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(classes), requires_grad=False)


class MelCnnClassifier(nn.Module):
    """waveform ``[B, N]`` at ``frontend["sample_rate"]`` -> logits ``[B, classes]`` (``forward``), or every stage
    (``stages``). Every window is fitted to the clip length first (``fit_clip``: Project-Echo's eval rule)."""

    def __init__(self, body: str, classes: int, frontend: dict, head: dict, bn_eps: float = 1e-5,
                 body_params: dict | None = None):
        super().__init__()
        self.body_name, self.frontend, self.head_kind = body, dict(frontend), head["kind"]
        self.scale = float(head["s"]) if head["kind"] == "cosine" else 1.0
        fe = self.frontend
        self.sample_rate, self.n_fft, self.hop = int(fe["sample_rate"]), int(fe["n_fft"]), int(fe["hop_length"])
        self.clip = int(fe["clip_samples"])
        self.amin, self.top_db, self.minmax_eps = float(fe["amin"]), fe["top_db"], float(fe["minmax_eps"])
        self.register_buffer("mel_basis", torch.from_numpy(slaney_mel(self.sample_rate, self.n_fft, int(fe["n_mels"]),
                                                                      float(fe["fmin"]), fe["fmax"])), persistent=False)
        trunk = make_body(body, bn_eps, body_params)
        self._trunk = [name for name, _ in trunk.named_children()]
        for name, mod in trunk.named_children():
            self.add_module(name, mod)
        self._forward_body = type(trunk).forward
        self.width = trunk.width
        self.head = _Head(trunk.width, classes, head["kind"] == "linear")

    # -- frontend -----------------------------------------------------------------------------------------------
    def frontend_stages(self, waveform: torch.Tensor) -> dict:
        x = fit_clip(waveform.float(), self.clip)
        mel = mel_power(power_spectrogram(x, self.n_fft, self.hop), self.mel_basis)
        db = power_to_db_clip(mel, self.amin, self.top_db)
        return {"F.mel": mel, "F.db": db, "F.input": minmax_clip(db, self.minmax_eps)[:, None]}

    def model_input(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> the model input ``[B, 1, n_mels, T]`` in [0, 1)."""
        return self.frontend_stages(waveform)["F.input"]

    # -- model --------------------------------------------------------------------------------------------------
    def body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward_body(self, x)

    def scores(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's eval output, the class scores)."""
        if self.head_kind == "linear":
            out = F.linear(embedding, self.head.weight, self.head.bias)
            return out, out
        cos = F.linear(F.normalize(embedding), F.normalize(self.head.weight))
        return cos, cos * self.scale

    def from_input(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, n_mels, T]`` -> logits: what the ``model.*`` artifacts export."""
        return self.scores(self.body(x)[1])[1]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_input(self.model_input(waveform))

    def stages(self, waveform: torch.Tensor | None = None, x: torch.Tensor | None = None) -> dict:
        """Every stage of ``STAGES`` from a waveform, or from the model input ``x`` (the golden-input run)."""
        out = self.frontend_stages(waveform) if x is None else {}
        feats, emb = self.body(out["F.input"] if x is None else x)
        out["M.features"], out["M.embedding"] = feats, emb
        out["Y.output"], out["Y.logits"] = self.scores(emb)
        out["Y.probs"] = torch.softmax(out["Y.logits"], dim=1)
        return out


def rebuild(body: str, classes: int, frontend: dict, head: dict, bn_eps: float, state: dict, path,
            body_params: dict | None = None) -> MelCnnClassifier:
    net = MelCnnClassifier(body, classes, frontend, head, bn_eps, body_params)
    want = net.state_dict()
    check_keys(path, state, want, "pass the checkpoint the run saved")
    net.load_state_dict({k: state[k].to(t.dtype) for k, t in want.items()}, strict=True)
    return net.eval()


def load_converted(path) -> tuple[MelCnnClassifier, dict]:
    """``(model, config)`` from a folder ``port convert`` wrote."""
    from ...io.weights import WEIGHTS_NAME, read_converted
    from .schema import check_converted

    config, state = read_converted(path, check_converted)
    net = rebuild(config["body"], len(config["classes"]), config["frontend"], config["head"], config["bn_eps"], state,
                  path / WEIGHTS_NAME, config.get("body_params"))
    return net, config
