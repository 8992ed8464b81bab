"""The PANNs family (audioset_tagging_cnn / panns_inference checkpoints: CNN14, CNN14_16k, CNN10, CNN6, MobileNetV1,
MobileNetV2): the ``porting.family.Family`` the engine sees.

Sources are ``.pth`` checkpoints read by the restricted unpickler (``reader``); the stage graph is the recording read
at the model's rate and windowed -> torchlibrosa's conv-STFT log-mel from the stored kernels (``F.logmel``) ->
``bn0`` over mel bins -> the body -> the clip head -> sigmoid per class (reference/panns/README.md). Options:
``preset`` / ``sample_rate`` / ``hop_size`` where the stored filterbank matches no published configuration, and for
``port detect`` ``window_s`` / ``hop_s``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...family import NO, SURE, Claim, Option, ReportTraits, refuse_others

NAME = "panns"
STAGES_DOC = ("Stages (PANNs family, golden computed by audioset_tagging_cnn's models with torchlibrosa): "
              "`A.waveform` the recording read and windowed, `F.logmel` the conv-STFT log-mel, `M.bn0` after the "
              "mel-bin BatchNorm, `M.features` the body's last feature map, `M.pooled` the head's pooled vector, "
              "`M.embedding` ReLU(fc1), `Y.*` logits and sigmoid probabilities of the stored windows, `all.*` every "
              "window. `(golden input)` rows run the model from the golden `F.logmel`.")

_WHICH = ("convert", "inspect", "detect")
OPTIONS = (
    Option("preset", "--preset", str, "PANNs checkpoints: the published frontend (32k, 16k, 8k) when the stored "
           "filterbank identifies none", _WHICH),
    Option("sample_rate", "--sample-rate", int, "PANNs checkpoints: sample rate in Hz of a non-published frontend "
           "(with --hop-size)", _WHICH),
    Option("hop_size", "--hop-size", int, "PANNs checkpoints: STFT hop in samples (not stored in the file; default: "
           "the identified preset's)", _WHICH),
    Option("window_s", "--window-s", float, "window length in seconds (default: the model's clip length where it "
           "records one, else 5)"),
    Option("hop_s", "--hop-s", float, "hop between window starts in seconds (default: the window length)"),
)


def _isolated_inputs(stage: str, run) -> tuple[str, ...]:
    return ("F.logmel",)


class Panns:
    name = NAME
    title = "PANNs audio taggers (audioset_tagging_cnn / panns_inference .pth: CNN14, CNN10, CNN6, MobileNetV1/V2)"
    backends = ()
    options = OPTIONS
    drawn_stages = ()
    report = ReportTraits(reference="audioset_tagging_cnn", stages_doc=STAGES_DOC, store_subdir="panns",
                          flat_captures=True, isolated_inputs=_isolated_inputs)

    def recognise(self, path: Path) -> Claim:
        from .reader import looks_like_panns

        return Claim(SURE) if looks_like_panns(path) else Claim(NO)

    def owns_converted(self, family: str | None) -> bool:
        return family == NAME

    def inspect(self, path: Path, preset=None, sample_rate=None, hop_size=None, **others) -> dict:
        from .reader import read_panns

        refuse_others(path, self, others)
        spec = read_panns(path, preset, sample_rate, hop_size)
        return {"file": str(path), "sha256": spec.sha256, "container": spec.container, "family": NAME,
                "body": spec.body, "n_fft": spec.n_fft, "n_mels": spec.n_mels, "classes": spec.classes,
                "labels": "AudioSet (527)" if spec.classes == 527 else "class_<i>",
                "tensors": len(spec.state), "parameters": int(sum(t.numel() for t in spec.state.values())),
                "frontend": spec.frontend, "wrapper": spec.wrapper, "notes": spec.notes}

    def format_inspect(self, report: dict) -> str:
        fe = report["frontend"]
        lines = [f"{report['file']}: PANNs {report['body']} ({report['container']}, sha256 {report['sha256'][:12]})",
                 f"  {report['tensors']} tensors, {report['parameters']:,} parameters, {report['classes']} classes "
                 f"({report['labels']})",
                 f"  frontend: {fe['sample_rate']} Hz, n_fft {report['n_fft']}, hop {fe['hop_size']}, "
                 f"{report['n_mels']} mel bins; {fe['identified_by']}"]
        if report["wrapper"]:
            lines.append("  also in the file (not used): " + ", ".join(f"{k}: {v}" for k, v in report["wrapper"].items()))
        lines += [f"  note: {n}" for n in report["notes"]]
        return "\n".join(lines)

    def convert(self, model: Path, write, *, exports, golden, log, preset=None, sample_rate=None,
                hop_size=None, **others) -> dict:
        from ...io.weights import write_model
        from .detect import DEFAULT_WINDOW_S
        from .model import build
        from .reader import read_panns
        from .schema import make_config

        refuse_others(model, self, others)
        spec = read_panns(model, preset, sample_rate, hop_size)
        net = build(spec)
        state = {k: t.detach().to("cpu").contiguous().clone() for k, t in net.state_dict().items()}
        config = make_config(spec, state, net.min_samples, DEFAULT_WINDOW_S)
        parity = None

        def fill(tmp: Path) -> None:
            nonlocal parity
            write_model(tmp, state, config, spec.sha256)
            if exports is not None:
                from .export import export_panns

                parity = export_panns(net, config, tmp, exports, log=log, golden=golden)
            (tmp / "README.md").write_text(model_card(config, parity))
            os.chmod(tmp / "README.md", 0o644)

        write(fill)
        return {
            "source": spec.path.name, "sha256": spec.sha256, "kind": "panns-checkpoint", "container": spec.container,
            "modules": sum(1 for _ in net.modules()), "tensors": len(state),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "bytes": int(sum(t.numel() * t.element_size() for t in state.values())), "classes": config["classes"],
            "positive_index": None, "normalize": None, "activation": config["activation"], "stubbed": 0,
            "architecture": spec.body, "exports": parity,
            "notes": [f"frontend: {spec.frontend['sample_rate']} Hz, hop {spec.frontend['hop_size']} "
                      f"({spec.frontend['identified_by']})", *spec.notes],
        }

    def load(self, path: Path, preset=None, sample_rate=None, hop_size=None, **others):
        from .model import build, load_converted
        from .reader import read_panns

        refuse_others(path, self, others)
        if Path(path).is_dir():
            return load_converted(Path(path), preset, sample_rate, hop_size)
        spec = read_panns(path, preset, sample_rate, hop_size)
        net = build(spec)
        from .detect import DEFAULT_WINDOW_S
        from .schema import make_config

        return net, make_config(spec, net.state_dict(), net.min_samples, DEFAULT_WINDOW_S)

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
    fe = config["frontend"]
    lines = [f"# {config['source']['file']} (PANNs {config['body']}), converted by porting", "",
             f"- source sha256: {next(iter(config['source']['sha256'].values()))}",
             f"- frontend: {fe['sample_rate']} Hz, n_fft {config['n_fft']}, hop {fe['hop_size']}, {config['n_mels']} "
             f"mel bins ({fe['identified_by']})",
             f"- {len(config['classes'])} classes, sigmoid per class (multi-label); windows of "
             f"{config['windows']['window_s']:g} s", ""]
    if parity:
        lines += ["| artifact | passed |", "|---|---|"]
        lines += [f"| {name} | {'yes' if a.get('passed') else 'NO'} |" for name, a in parity.get("artifacts", {}).items()]
    return "\n".join(lines) + "\n"


FAMILY = Panns()
