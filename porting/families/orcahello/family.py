"""The OrcaHello family (fastai 1.0.61 + fastai_audio 0.1 learners): the ``porting.family.Family`` the engine sees.

Sources are learner pickles (v1 export, v2 Learner, ``torch.save``d module) read by the restricted unpickler; the
stage graph is legacy windows -> mel dB (16 kHz quirk) -> crop/pad -> normalize -> model -> softmax -> per-second
aggregation (golden/README.md). Everything heavy is imported when a method runs, so the registry stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import MalformedModelError, UnsupportedModelError
from ...family import FALLBACK, NO, Claim
from ...outputs import spell

NAME = "orcahello"


def make_config(spec) -> dict:
    """The config.json dict for a ``LearnerSpec`` (plain JSON types only, so a round trip gives the same dict)."""
    from ... import __version__
    from ...io.weights import CONFIG_FORMAT
    from .frontend.config import FrontendConfig

    cfg = {
        "format": CONFIG_FORMAT,
        "porting_version": __version__,
        "source": {
            "file": spec.source.file,
            "sha256": spec.source.sha256,
            "size_bytes": spec.source.size_bytes,
            "container": spec.source.container,
            "kind": spec.source.kind,
        },
        "classes": list(spec.classes) if spec.classes is not None else None,
        "positive_index": spec.positive_index,
        "positive_rule": spec.positive_rule,
        "normalize": spec.normalize,
        "normalize_rule": "x = (x - mean[c]) / std[c] per channel c, before the model (golden/README.md §4)",
        "activation": spec.activation,
        "frontend": FrontendConfig().to_dict(),
        "architecture": spec.tree.to_dict(),
        "state_dict": {k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                       for k, t in spec.state_dict.items()},
    }
    return json.loads(json.dumps(cfg))


def load_converted(path: Path):
    """``(model, config)`` from a folder ``port convert`` wrote for a learner."""
    from ...io.weights import CONFIG_NAME, WEIGHTS_NAME, read_converted
    from .layers import build_module
    from .learner.spec import ModuleNode
    from .schema import check_converted

    config, state = read_converted(path, check_converted)
    order = list(config["state_dict"]) or sorted(state)
    if set(order) != set(state):
        extra = sorted(set(state) - set(order))[:1] or sorted(set(order) - set(state))[:1]
        raise MalformedModelError(f"{path / WEIGHTS_NAME}: tensors do not match config.json (first difference: "
                                  f"{extra[0]}); re-run `port convert`")
    ordered = {k: state[k] for k in order}
    where = str(path / CONFIG_NAME)
    tree = ModuleNode.from_dict(config["architecture"], where)
    return build_module(tree, ordered, where), config  # check_input ran when `port convert` wrote it


def _no_options(path, options: dict) -> None:
    """OrcaHello takes no option of its own: one given (another family's, ``porting.family.Option``) is refused."""
    from ...family import refuse_others

    refuse_others(path, FAMILY, options)


class OrcaHello:
    name = NAME
    title = "OrcaHello learners (fastai 1.0.61 + fastai_audio 0.1 pickles)"
    backends = ("winograd",)
    options = ()

    @property
    def report(self):
        """How a parity report presents this family's runs (``porting.family.ReportTraits``)."""
        from .report import traits

        return traits()

    @property
    def drawn_stages(self) -> tuple[str, ...]:
        """Stages whose worst window a parity report draws."""
        from .parity import DRAWN

        return DRAWN  # port detect --backend: besides torch/onnx (porting.families.orcahello.winograd)

    def recognise(self, path: Path) -> Claim:
        # any file is tried as a learner pickle: its reader names what is wrong, in one line
        return Claim(FALLBACK) if not path.is_dir() else Claim(NO)

    def owns_converted(self, family: str | None) -> bool:
        return family is None  # the first family: its config.json names none

    def inspect(self, path: Path, **options) -> dict:
        from .learner import inspect_pickle

        _no_options(path, options)
        return inspect_pickle(path)

    def format_inspect(self, report: dict) -> str:
        from .learner import format_report

        return format_report(report)

    def convert(self, model: Path, write, *, exports, golden, log, **options) -> dict:
        from ...io.weights import write_model
        from .layers import build_model
        from .learner import read_learner

        _no_options(model, options)
        spec = read_learner(model)
        net = build_model(spec, check=True)  # proves the tree is rebuildable and takes the detector's input, first
        config = make_config(spec)
        state = {k: t.detach().to("cpu").contiguous().clone() for k, t in spec.state_dict.items()}
        parity = None

        def fill(tmp: Path) -> None:
            nonlocal parity
            write_model(tmp, state, config, spec.source.sha256)
            if exports is not None:  # verified exports + parity.json + HF-style files, inside the temp dir
                from .export import export_all

                parity = export_all(net, config, tmp, exports, golden_dir=golden, log=log)

        write(fill)
        return {
            "source": spec.source.file,
            "sha256": spec.source.sha256,
            "kind": spec.source.kind,
            "container": spec.source.container,
            "modules": sum(1 for _ in spec.tree.walk()),
            "tensors": len(state),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "bytes": int(sum(t.numel() * t.element_size() for t in state.values())),
            "classes": config["classes"],
            "positive_index": config["positive_index"],
            "normalize": config["normalize"],
            "activation": config["activation"],
            "stubbed": sum(1 for g in spec.globals if g["status"] == "stubbed"),
            "exports": parity,
        }

    def load(self, path: Path, **options):
        if path.is_dir():
            model, config = load_converted(path)
            _no_options(path, options)
            return model, config
        from .layers import build_model
        from .learner import read_learner

        _no_options(path, options)
        spec = read_learner(path)
        return build_model(spec), make_config(spec)

    def detector(self, path: Path, *, device: str, batch_size: int | None, backend: str, threshold: float, **options):
        from .aggregate import AggregateConfig
        from .detect import Detector

        given = [spell(n) for n in options]
        if given:
            raise UnsupportedModelError(f"{'/'.join(given)}: the OrcaHello detector's frontend is fixed (2-s windows, "
                                        "hop 1 s, golden/README.md §1-§3); drop the option" + ("s" if len(given) > 1 else ""))
        return Detector.load(path, device=device, batch_size=batch_size or 32, backend=backend,
                             aggregate_cfg=AggregateConfig(threshold=threshold))

    def captured_from(self, case, model_path: Path) -> bool:
        from .parity import captured_from

        return captured_from(case, model_path)

    def check_case(self, captures: list, model_path: Path | None, *, device: str, batch_size: int, backend: str,
                   cache: dict) -> list:
        from .parity import check_captures

        return check_captures(captures, model_path, device, batch_size, backend, cache)

    def parity_context(self, case):
        """The comparison context of a golden case (``porting.parity.contract.Context``): the error model needs the
        frontend's mel config and the learner's normalization."""
        from .contract import Context
        from .frontend.config import FrontendConfig

        return Context(case.tensors.get("A.waveform"), FrontendConfig(), case.meta["model"].get("normalize"))

    def tolerances(self, stage: str):
        """This family's rows of the contract (``.contract.TABLE``): stage names of golden/."""
        from .contract import TABLE

        return TABLE.get(stage)


FAMILY = OrcaHello()
