"""The librosa-mel CNN family (Project-Echo's PyTorch + Hydra training runs: EfficientNetV2-S/M/L and PANNs CNN14
bodies on librosa mel spectrograms, Linear or cosine/ArcFace heads): the ``porting.family.Family`` the engine sees.

Sources are run directories (``.hydra/config.yaml`` + ``best_<model.name>.pth`` [+ ``class_names.txt``]) read as
data (``reader``); the stage graph is the recording read at the run's rate and windowed -> librosa's mel power
(``F.mel``) -> dB against the clip's maximum (``F.db``) -> per-clip min-max (``F.input``) -> the body
(``M.features``, ``M.embedding``) -> the head (``Y.output``: what the model returns in eval; ``Y.logits``: the
class scores; ``Y.probs``: softmax). reference/melcnn/README.md documents each quirk with its evidence.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...family import NO, SURE, Claim, Option, ReportTraits, refuse_others

NAME = "melcnn"
STAGES_DOC = ("Stages (librosa-mel CNN family, golden computed by Project-Echo's model classes with torchvision and "
              "librosa): `A.waveform` the recording read and windowed, `F.mel` librosa's mel power, `F.db` "
              "power_to_db against the clip's maximum (top_db floor), `F.input` the per-clip min-max (the model "
              "input), `M.features` the body's last feature map, `M.embedding` the vector the head takes, `Y.output` "
              "the model's eval output (logits, or cos θ for a cosine head), `Y.logits` the class scores (s·cos θ), "
              "`Y.probs` softmax, `all.*` every window. `(golden input)` rows run the model from the golden "
              "`F.input`.")

OPTIONS = (
    Option("window_s", "--window-s", float, "window length in seconds (default: the model's clip length where it "
           "records one, else 5)"),
    Option("hop_s", "--hop-s", float, "hop between window starts in seconds (default: the window length)"),
)


def _isolated_inputs(stage: str, run) -> tuple[str, ...]:
    return ("F.input",)


class MelCnn:
    name = NAME
    title = "librosa-mel CNN classifiers (Project-Echo Hydra run directories: EfficientNetV2, CNN14)"
    backends = ()
    options = OPTIONS
    drawn_stages = ()
    report = ReportTraits(reference="Project-Echo", stages_doc=STAGES_DOC, store_subdir="melcnn",
                          flat_captures=True, isolated_inputs=_isolated_inputs)

    def recognise(self, path: Path) -> Claim:
        from .reader import run_dir_of

        return Claim(SURE) if run_dir_of(Path(path)) is not None else Claim(NO)

    def owns_converted(self, family: str | None) -> bool:
        return family == NAME

    def inspect(self, path: Path, **others) -> dict:
        from .reader import read_run

        refuse_others(path, self, others)
        spec = read_run(path)
        return {"file": str(spec.path), "checkpoint": spec.checkpoint.name, "sha256": spec.sha256, "family": NAME,
                "body": spec.body, "model_name": spec.model_name, "head": spec.head, "classes": spec.labels,
                "tensors": len(spec.state), "parameters": int(sum(t.numel() for t in spec.state.values())),
                "frontend": spec.frontend, "notes": spec.notes}

    def format_inspect(self, report: dict) -> str:
        fe, head = report["frontend"], report["head"]
        scores = "logits (Linear)" if head["kind"] == "linear" else f"s·cos θ, s = {head['s']:g} ({head['source']})"
        lines = [f"{report['file']}: Project-Echo run, {report['body']} ({report['checkpoint']}, sha256 "
                 f"{report['sha256'][:12]})",
                 f"  {report['tensors']} tensors, {report['parameters']:,} parameters, {len(report['classes'])} classes: "
                 + ", ".join(report["classes"][:6]) + (" ..." if len(report["classes"]) > 6 else ""),
                 f"  head: {head['kind']}; class scores {scores}; softmax",
                 f"  frontend: librosa mel, {fe['sample_rate']} Hz, clips of {fe['audio_clip_duration']:g} s, n_fft "
                 f"{fe['n_fft']}, hop {fe['hop_length']}, {fe['n_mels']} mels {fe['fmin']:g}-"
                 f"{fe['fmax'] if fe['fmax'] is not None else fe['sample_rate'] / 2:g} Hz, top_db {fe['top_db']}, "
                 "per-clip min-max"]
        lines += [f"  note: {n}" for n in report["notes"]]
        return "\n".join(lines)

    def convert(self, model: Path, write, *, exports, golden, log, **others) -> dict:
        from ...io.weights import write_model
        from .model import rebuild
        from .reader import read_run
        from .schema import make_config

        refuse_others(model, self, others)
        spec = read_run(model)
        net = rebuild(spec.body, spec.classes, spec.frontend, spec.head, spec.bn_eps, spec.state, spec.checkpoint,
                      spec.body_params)
        state = {k: t.detach().to("cpu").contiguous().clone() for k, t in net.state_dict().items()}
        config = make_config(spec, state)
        parity = None

        def fill(tmp: Path) -> None:
            nonlocal parity
            write_model(tmp, state, config, spec.sha256)
            if exports is not None:
                from .export import export_melcnn

                parity = export_melcnn(net, config, tmp, exports, log=log, golden=golden)
            (tmp / "README.md").write_text(model_card(config, parity))
            os.chmod(tmp / "README.md", 0o644)

        write(fill)
        return {
            "source": spec.path.name, "sha256": spec.sha256, "kind": "hydra-run", "container": spec.container,
            "modules": sum(1 for _ in net.modules()), "tensors": len(state),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "bytes": int(sum(t.numel() * t.element_size() for t in state.values())), "classes": config["classes"],
            "positive_index": None, "normalize": None, "activation": config["activation"], "stubbed": 0,
            "architecture": f"{spec.body} + {spec.head['kind']} head", "exports": parity, "notes": spec.notes,
        }

    def load(self, path: Path, **others):
        from .model import load_converted, rebuild
        from .reader import read_run
        from .schema import make_config

        refuse_others(path, self, others)
        if Path(path).is_dir() and (Path(path) / "config.json").is_file():
            return load_converted(Path(path))
        spec = read_run(path)
        net = rebuild(spec.body, spec.classes, spec.frontend, spec.head, spec.bn_eps, spec.state, spec.checkpoint,
                      spec.body_params)
        return net, make_config(spec, net.state_dict())

    def detector(self, path: Path, *, device: str, batch_size: int | None, backend: str, threshold: float,
                 window_s=None, hop_s=None, **source_options):
        from .detect import load_detector

        return load_detector(path, device=device, backend=backend, batch_size=batch_size, window_s=window_s,
                             hop_s=hop_s, **source_options)

    def captured_from(self, case, model_path: Path) -> bool:
        from .parity import captured_from

        return captured_from(case, model_path)

    def check_case(self, captures: list, model_path: Path | None, *, device: str, batch_size: int, backend: str,
                   cache: dict) -> list:
        from .parity import check_captures

        return check_captures(captures, model_path, device, backend, batch_size, cache)

    def parity_context(self, case):
        return None

    def tolerances(self, stage: str):
        from .contract import tolerances

        return tolerances(stage)


def model_card(config: dict, parity: dict | None) -> str:
    fe, head = config["frontend"], config["head"]
    scores = "the Linear head's logits" if head["kind"] == "linear" else (
        f"s·cos θ (s = {head['s']:g}, from {head['source']}; no margin: ArcFace's margin is a training loss)")
    lines = [f"# {config['source']['run']} ({config['body']}), converted by porting", "",
             f"- source: {config['source']['file']} (sha256 {config['source']['sha256'][config['source']['file']]})",
             f"- frontend: librosa mel, {fe['sample_rate']} Hz, clips of {fe['audio_clip_duration']:g} s, n_fft "
             f"{fe['n_fft']}, hop {fe['hop_length']}, {fe['n_mels']} mels, power_to_db(ref=max, top_db="
             f"{fe['top_db']}), per-clip min-max",
             f"- {len(config['classes'])} classes; scores: {scores}; probabilities: softmax",
             f"- BatchNorm eps {config['bn_eps']:g} (the framework's; torchvision's builders use 1e-3)", ""]
    if parity:
        lines += ["| artifact | gives | passed |", "|---|---|---|"]
        lines += [f"| {name} | model input -> probs, logits (the scores above) | {'yes' if a.get('passed') else 'NO'} |"
                  for name, a in parity.get("artifacts", {}).items()]
    return "\n".join(lines) + "\n"


FAMILY = MelCnn()
