"""The ``Family`` protocol, and the registry that finds families (entry-point group ``porting.families``).

A family is one kind of source model (OrcaHello learner pickles, Hugging Face audio folders, ...): it reads its
originals as data, rebuilds them in plain torch, runs its stage graph over windows of a recording and knows its
golden store. The engine (convert, detect, parity, export, golden, the CLI) knows families only through this
protocol and the registry below; it never imports a family module, and no name of a family appears in it.

A third party ships a family as its own package and registers it::

    [project.entry-points."porting.families"]
    mine = "my_package.family:FAMILY"     # an object satisfying ``Family``

The built-in families register the same way (pyproject.toml); ``BUILTIN`` lists the same entry points so a
source checkout without installed metadata still finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, runtime_checkable

from .errors import MalformedModelError, PortingError, UnsupportedModelError

if TYPE_CHECKING:  # torch is imported by the families that run models; the registry needs none of it
    import torch

GROUP = "porting.families"

#: The built-in families, as entry points (``name = module:attribute``): the one place their names appear.
BUILTIN = (
    "hf = porting.families.hf.family:FAMILY",
    "orcahello = porting.families.orcahello.family:FAMILY",
    "panns = porting.families.panns.family:FAMILY",
    "melcnn = porting.families.melcnn.family:FAMILY",
)

# Claim strengths: how sure a family is that a path is its own. The strongest claim wins; on a tie, the first family
# in registry order. A family that reads "anything else" (e.g. any file as a pickle) claims FALLBACK, so its one-line
# errors name what is wrong with an input nobody recognised.
NO, FALLBACK, SURE = 0, 1, 2


@dataclass(frozen=True)
class Claim:
    """A family's answer to "is this path mine?": ``strength`` (``NO``, ``FALLBACK``, ``SURE``) and, when it almost
    is (e.g. an HF folder without its preprocessor), a one-line ``reason`` for the user."""

    strength: int = NO
    reason: str = ""


@dataclass(frozen=True)
class ReportTraits:
    """How a parity report (``porting.parity.report``) presents a family's runs."""

    reference: str  # who computed the goldens ("legacy", "transformers")
    stages_doc: str  # one markdown paragraph naming the family's stages
    store_subdir: str = ""  # the family's store inside golden/ ("hf"); "": golden/ itself
    flat_captures: bool = False  # every capture in the store itself (no captures/<machine>/cases)
    isolated_inputs: Callable[[str, Any], tuple] = lambda stage, run: ()  # golden inputs of "<stage> (golden input)"
    frontend: Any = None  # drawn spectrograms/waveforms: ``.windows`` (window_s, window_samples, sample_rate), ``.mel``
    mel_centres: Callable[[int], Any] | None = None  # n_mels -> (centre Hz per mel bin, non-zero filters) | None
    #: (stage, window, index inside it) -> "window 3 (3-5 s), mel bin 12, ..." for failure messages; None: by position
    locate: Callable[[str, int, tuple], str] | None = None
    spectral: tuple[str, ...] = ()  # stages drawn as [mel, frames] spectrograms
    waveform: tuple[str, ...] = ()  # stages drawn as waveforms (also any stage of <= 2 dims)
    frame_s: float = 0.0  # seconds per spectrogram frame (the spectral stages' hop)


@dataclass(frozen=True)
class Option:
    """A family's own option: ``port <command> FLAG VALUE`` (and the keyword ``name`` of ``porting.convert``,
    ``load_model``, ``detect``) reaches the family's ``convert``/``inspect``/``load``/``detector`` as ``name=value``.
    The CLI adds every registered family's options to its commands; a family refuses the ones it does not take."""

    name: str  # the keyword ("window_s")
    flag: str  # the command-line flag ("--window-s")
    type: type  # float, int or str
    help: str  # one line for ``--help``; say which models it applies to
    commands: tuple[str, ...] = ("detect",)  # of "convert", "inspect", "detect"


@runtime_checkable
class Detector(Protocol):
    """What ``port detect`` runs: a loaded model plus its family's windows, stages and results."""

    config: dict  # the converted config.json (or what a source model would have written)
    backend: str  # what runs the model stage ("torch", "onnx", ...)
    device: Any
    batch_size: int
    #: ``--csv`` layout: "events" (one row per event) or "windows" (one row per window, ``labels`` columns)
    csv_layout: str
    labels: list[str]

    def n_windows(self, path: Path) -> int:
        """Windows the recording at ``path`` gives (read from its header only: sizes the progress bar)."""

    def run(self, path: Path, on_batch: Callable[[int], None] | None = None) -> Result:
        """Windows -> batches -> stages -> one ``Result`` (streamed: memory bounded by the batch size)."""

    def check_positive(self, positive: str | None) -> str | None:
        """The label whose events to report (``--positive``), or a one-line ``PortingError``."""


@runtime_checkable
class Result(Protocol):
    """One recording's outcome: JSON (``to_dict``), the terminal line and the events of one label."""

    path: Path

    def to_dict(self) -> dict: ...

    def events_for(self, threshold: float, positive: str | None) -> list | None:
        """Events (``porting.events.Event``) above ``threshold``; None where the family defines none."""

    def headline(self, threshold: float, positive: str | None) -> tuple[str, str]:
        """(``port detect``'s line for this file, the rule its events follow, e.g. ``"> 0.5"``)."""


@runtime_checkable
class Family(Protocol):
    """Everything the engine needs from a family, and nothing more.

    *Recognise*: ``recognise`` (a source model), ``owns_converted`` (a converted folder); a golden case names its
    family in its JSON (``"family"``; none: the family whose records name none).
    *Read, rebuild, config*: ``convert`` reads the source as data, rebuilds it (an ``nn.Module`` whose state dict
    keeps the original keys), and writes into the engine's temp dir (the engine writes it atomically); ``load``
    gives ``(model, config)`` for a source or a converted folder (``porting.load_model``).
    *Stages, windows, results*: ``detector`` (``Detector``, whose ``run`` yields ``Result``s).
    *Artifacts*: ``convert`` exports and verifies them with ``porting.export`` (declarations, runners, parity.json).
    *Golden store*: the engine finds the cases and captures (``porting.golden``: one case format, JSON +
    safetensors), picks each capture's tier and runs the loop (``porting.parity.run``); per case the family's
    ``check_case`` runs its stage graph and compares each stage with ``porting.parity.compare`` (one comparison
    engine, the family's ``tolerances``); ``captured_from`` matches ``port parity --model`` with a case;
    ``parity_context`` gives the plugin's comparison context.
    Family-specific options (e.g. a transformers major) arrive as keyword ``options``; a family refuses the ones it
    does not take, in one line.
    """

    name: str  # config.json's "family" and the entry-point name
    title: str  # one line, for ``port inspect`` and errors
    backends: tuple[str, ...]  # ``port detect --backend`` values besides auto/torch/onnx
    drawn_stages: tuple[str, ...]  # stages whose worst window a parity report draws
    report: ReportTraits
    options: tuple[Option, ...]  # its own command-line options (may be empty; ``options_for`` reads them)

    def recognise(self, path: Path) -> Claim:
        """Is ``path`` a source model of this family (what ``port convert`` reads)?"""

    def owns_converted(self, family: str | None) -> bool:
        """Is a folder ``port convert`` wrote, whose config.json names ``family`` (None: none named), this one's?"""

    def inspect(self, path: Path, **options) -> dict:
        """``port inspect``: what the source holds, JSON-safe (nothing executed, nothing written)."""

    def format_inspect(self, report: dict) -> str: ...

    def convert(self, model: Path, write: Callable[[Callable[[Path], None]], None], *, exports: list[str] | None,
                golden: Path | None, log, **options) -> dict:
        """Read and rebuild ``model``, then ``write(fill)`` where ``fill(tmp)`` writes weights, config.json and the
        verified artifacts into ``tmp``; returns ``port convert``'s summary dict (``porting.convert.format_summary``)."""

    def load(self, path: Path, **options) -> tuple[torch.nn.Module, dict]: ...

    def detector(self, path: Path, *, device: str, batch_size: int | None, backend: str, threshold: float,
                 **options) -> Detector: ...

    def captured_from(self, case: Any, model_path: Path) -> bool:
        """Was the golden ``case`` (``porting.golden.Case``) captured from ``model_path`` (a source model or a
        converted folder)? True where that cannot be told (its loader then reports what is wrong)."""

    def check_case(self, captures: list, model_path: Path | None, *, device: str, batch_size: int, backend: str,
                   cache: dict) -> list:
        """One case, captured once per ``(capture, case, tier)`` in ``captures`` (``porting.golden.Capture``,
        ``Case``, ``porting.parity.contract.Tier``): the port run through the family's stages (with ``model_path``,
        else the case's own model) and compared with each capture in its tier -> one ``porting.parity.run.CaseRun``
        per capture (none for a case it does not check). ``cache`` lives for one ``port parity`` run: loaded models."""

    def parity_context(self, case) -> Any:
        """What the portable tier's error model needs about a golden case (e.g. its error model's inputs)."""

    def tolerances(self, stage: str) -> tuple | None:
        """(strict, portable) ``porting.parity.contract.Rule`` of one of the family's stages; None: ``ABS`` in both."""


_FAMILIES: dict[str, Family] | None = None


def _load(spec: str) -> tuple[str, Family]:
    name, _, target = (s.strip() for s in spec.partition("="))
    module, _, attr = target.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return name, obj


def _entry_points() -> list[str]:
    from importlib.metadata import entry_points

    return [f"{ep.name} = {ep.value}" for ep in entry_points(group=GROUP)]


def families() -> dict[str, Family]:
    """Every registered family by name: installed entry points, then ``BUILTIN`` ones the metadata lacks (a source
    checkout), then those added by ``register``; loaded once."""
    global _FAMILIES
    if _FAMILIES is None:
        found: dict[str, Family] = {}
        specs = _entry_points()
        names = {s.partition("=")[0].strip() for s in specs}
        for spec in specs + [b for b in BUILTIN if b.partition("=")[0].strip() not in names]:
            name, fam = _load(spec)
            found.setdefault(name, fam)
        _FAMILIES = found
    return _FAMILIES


def options_for(command: str) -> list[Option]:
    """The options every registered family declares for ``command``, one per keyword (the first family's
    declaration of a shared keyword wins), in registry order."""
    out: dict[str, Option] = {}
    for fam in families().values():
        for opt in getattr(fam, "options", ()):
            if command in opt.commands:
                out.setdefault(opt.name, opt)
    return list(out.values())


def given(options: dict) -> dict:
    """The family options a caller gave: None means not given (the CLI's default, the API's)."""
    return {k: v for k, v in options.items() if v is not None}


def refuse_others(path, family: Family, options: dict) -> None:
    """One line when ``options`` (keywords the caller gave) hold one ``family`` does not declare: another family's
    option (``port detect --preset`` on an HF folder) names what to drop instead of a TypeError."""
    own = {o.name for o in getattr(family, "options", ())}
    other = [n for n in options if n not in own]
    if other:
        flags = {o.name: o.flag for fam in families().values() for o in getattr(fam, "options", ())}
        names = ", ".join(flags.get(n, n) for n in other)
        raise UnsupportedModelError(f"{path}: {names}: not an option of {family.title.split(' (')[0]} (another "
                                    "family's); drop it")


def register(family: Family) -> Family:
    """Add ``family`` for this process (tests, notebooks); installed families use the entry-point group."""
    families()[family.name] = family
    return family


def unregister(name: str) -> None:
    families().pop(name, None)


def get(name: str) -> Family:
    try:
        return families()[name]
    except KeyError:
        raise MalformedModelError(f"family {name!r}: no such porting family is installed (known: "
                                  f"{', '.join(families())}); install the package that provides it") from None


def _best(claims: Iterable[tuple[Family, Claim]], what: str) -> Family:
    best, near = None, []
    for fam, claim in claims:
        if claim.strength > (best[1].strength if best else NO):
            best = (fam, claim)
        elif claim.strength == NO and claim.reason:
            near.append(claim.reason)
    if best is None:
        raise MalformedModelError(near[0] if near else f"{what}: no porting family recognises it")
    return best[0]


def named(name: str | None) -> Family:
    """The family a record names (a CaseRun's, a StageResult's); None: the one whose records name none."""
    if name is not None:
        return get(name)
    for fam in families().values():
        if fam.owns_converted(None):
            return fam
    raise MalformedModelError("no porting family owns records that name none; install porting's built-in families")


def for_model(path: str | Path, converted: bool = True) -> Family:
    """The family of a source model or (``converted``) a folder ``port convert`` wrote: the strongest claim."""
    p = Path(path)
    if converted:
        named = converted_family(p)
        if named is not False:
            for fam in families().values():
                if fam.owns_converted(named):
                    return fam
            if named is not None:
                get(named)  # one line: not installed
    return _best(((f, f.recognise(p)) for f in families().values()), str(p))


def for_store(golden: str | Path) -> Family:
    """The family whose golden store (or case file) ``golden`` is: the one its cases name."""
    from .golden import case_family

    return named(case_family(golden))


def converted_family(path: Path) -> str | None | bool:
    """The ``family`` a converted folder's config.json names (None: none named), or False when ``path`` holds no
    readable porting config.json. Families use it in ``recognise``."""
    from .io import files

    cfg_path = Path(path) / "config.json"
    try:
        if not Path(path).is_dir() or not files.exists(cfg_path):
            return False
        cfg = files.read_json(cfg_path, "the model config")
    except PortingError:
        return False  # the loader reports it, in one line
    if not isinstance(cfg, dict) or cfg.get("format") != "porting.model/1":
        return False
    return cfg.get("family")
