"""The Hugging Face audio-classifier family: the ``porting.family.Family`` the engine sees.

Sources are model folders (config.json + model.safetensors or pytorch_model.bin + preprocessor_config.json) read
as data; the stage graph is ``A.waveform`` -> feature extractor -> model -> activation, over windows of
``--window-s`` every ``--hop-s`` (golden/hf/README.md). Options: ``transformers_semantics`` (4 or 5), and for
``port detect`` ``window_s``, ``hop_s``, ``fbank_backend``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...family import FALLBACK, NO, SURE, Claim, Option, ReportTraits, refuse_others

NAME = "hf"  # config.json's "family" (porting.families.hf.model.FAMILY)
STAGES_DOC = ("Stages (Hugging Face family, golden computed by transformers): `A.waveform` the recording read and "
              "windowed, `F.*` the feature extractor, `M.*` inside the model (CNN features, hidden states, pooled "
              "vector), `Y.*` logits and probabilities of the stored windows, `all.*` every window, `all.label` the "
              "argmax label per window. `(golden input)` rows feed the part its golden input (features of the golden "
              "waveform; the model on the golden `F.input_values`).")


def _isolated_inputs(stage: str, run) -> tuple[str, ...]:
    """Features of the golden waveform; the model on the golden features."""
    from ...parity.contract import GOLDEN_INPUT

    if stage.startswith("F."):
        return ("A.waveform",)
    return tuple(s.stage for s in run.report.stages if s.stage.startswith("F.") and GOLDEN_INPUT not in s.stage)


OPTIONS = (
    Option("window_s", "--window-s", float, "window length in seconds (default: the model's clip length where it "
           "records one, else 5)"),
    Option("hop_s", "--hop-s", float, "hop between window starts in seconds (default: the window length)"),
    Option("fbank_backend", "--fbank-backend", str, "AST models: torchaudio-kaldi (transformers' default when "
           "torchaudio imports) or numpy (its fallback); default: what config.json records"),
    Option("transformers_semantics", "--transformers-semantics", int, "HF models: follow transformers 4.x or 5.x "
           "semantics (4|5; default: the transformers_version in the folder's config.json, 4 when absent)",
           ("convert", "inspect", "detect")),
)


class HuggingFace:
    name = NAME
    options = OPTIONS
    title = "Hugging Face audio classifiers (wav2vec2, HuBERT, WavLM, SEW-D, AST)"
    backends = ()
    drawn_stages = ()  # the report draws per-window probabilities (CaseRun.probs) instead
    report = ReportTraits(reference="transformers", stages_doc=STAGES_DOC, store_subdir="hf", flat_captures=True,
                          isolated_inputs=_isolated_inputs)

    def recognise(self, path: Path) -> Claim:
        from .folder import is_hf_folder

        if not path.is_dir():
            return Claim(NO)
        # any other folder: its reader names what is missing (config.json, the weights, the preprocessor)
        return Claim(SURE) if is_hf_folder(path) else Claim(FALLBACK)

    def owns_converted(self, family: str | None) -> bool:
        return family == NAME

    def inspect(self, path: Path, **options) -> dict:
        from .folder import inspect_folder

        refuse_others(path, self, options)
        return inspect_folder(path, options.get("transformers_semantics"))

    def format_inspect(self, report: dict) -> str:
        from .folder import format_inspect

        return format_inspect(report)

    def convert(self, model: Path, write, *, exports, golden, log, transformers_semantics=None, **others) -> dict:
        """An HF folder -> the rebuild's (weight-norm folded) safetensors, porting's config.json, the preprocessor,
        the verified artifacts and the model card."""
        from ...io.weights import write_model
        from .folder import PREPROCESSOR, read_hf_folder
        from .model import make_config, model_card, rebuild

        refuse_others(model, self, others)
        spec = read_hf_folder(model, transformers_semantics)
        net, state = rebuild(spec)
        config = make_config(spec, state)
        state = {k: t.detach().to("cpu").contiguous().clone() for k, t in state.items()}
        parity = None

        def fill(tmp: Path) -> None:
            nonlocal parity
            write_model(tmp, state, config, spec.sha256[spec.weights_file])
            (tmp / PREPROCESSOR).write_text(json.dumps(spec.preprocessor, indent=1) + "\n")
            os.chmod(tmp / PREPROCESSOR, 0o644)
            if exports is not None:
                from .export import export_hf

                parity = export_hf(net, config, tmp, exports, log=log, golden=golden)
            (tmp / "README.md").write_text(model_card(config, parity))
            os.chmod(tmp / "README.md", 0o644)

        write(fill)
        return {
            "source": spec.dir.name, "sha256": spec.sha256[spec.weights_file], "kind": "hf-folder",
            "container": spec.weights_file, "modules": sum(1 for _ in net.modules()), "tensors": len(state),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "bytes": int(sum(t.numel() * t.element_size() for t in state.values())), "classes": config["classes"],
            "positive_index": None, "normalize": None, "activation": config["activation"], "stubbed": 0,
            "architecture": spec.architecture, "exports": parity, "transformers_semantics": spec.semantics,
            "notes": [f"follows transformers {spec.semantics['major']}.x semantics ({spec.semantics['note']})"]
            if spec.semantics else [],
        }

    def load(self, path: Path, transformers_semantics=None, **others):
        from .folder import is_hf_folder
        from .model import check_converted_semantics, load_converted, load_hf

        refuse_others(path, self, others)
        if is_hf_folder(path):
            return load_hf(path, transformers_semantics)
        from ...io.weights import read_converted
        from .schema import check_converted

        config, state = read_converted(path, check_converted)
        model = load_converted(path, config, state)
        if transformers_semantics is not None:
            check_converted_semantics(config, path, transformers_semantics)
        return model, config

    def detector(self, path: Path, *, device: str, batch_size: int | None, backend: str, threshold: float,
                 window_s=None, hop_s=None, fbank_backend=None, transformers_semantics=None, **others):
        from .detect import HFDetector

        refuse_others(path, self, others)
        return HFDetector.load(path, device=device, backend=backend, window_s=window_s, hop_s=hop_s,
                               fbank_backend=fbank_backend, batch_size=batch_size or 16,
                               transformers_semantics=transformers_semantics)

    def captured_from(self, case, model_path: Path) -> bool:
        from .parity import captured_from

        return captured_from(case, model_path)

    def check_case(self, captures: list, model_path: Path | None, *, device: str, batch_size: int, backend: str,
                   cache: dict) -> list:
        from .parity import check_captures

        return check_captures(captures, model_path, device, backend)

    def parity_context(self, case):
        return None

    def tolerances(self, stage: str):
        from .contract import tolerances

        return tolerances(stage)


FAMILY = HuggingFace()
