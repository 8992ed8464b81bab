"""`port`: the command-line face of porting. Commands only parse, call and print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import family as registry  # light (no torch): the commands take every registered family's options
from .errors import PortingError
from .outputs import cli_spelling

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Verifiable porting of audio classifiers (fastai learners, Hugging Face audio models) to plain torch.",
)

#: Library parameter -> this CLI's flag: errors raised while a command runs name the flag (porting.outputs.spell).
FLAGS = {
    "out": "--out", "overwrite": "--force", "exports": "--export", "golden": "--golden", "model": "--model",
    "json_out": "--json", "csv_out": "--csv", "report": "--report", "device": "--device", "backend": "--backend",
    "batch_size": "--batch-size", "threshold": "--threshold", "positive": "--positive",
}  # and every family option's flag (porting.family.Option)


def _family_options(command: str):
    """Every registered family's own options of ``command`` (``porting.family.options_for``) added to a typer
    command's signature; the command receives them in ``**family_options`` (None: not given) and passes them on.
    A family shipped as its own package gets its flags in ``port`` without an engine change."""
    import inspect as _inspect

    def wrap(fn):
        sig = _inspect.signature(fn, eval_str=True)
        params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
        taken = {p.name for p in params}
        for opt in registry.options_for(command):
            if opt.name not in taken:
                params.append(_inspect.Parameter(opt.name, _inspect.Parameter.KEYWORD_ONLY, annotation=Optional[opt.type],
                                                 default=typer.Option(None, opt.flag, help=opt.help)))
        fn.__signature__ = sig.replace(parameters=params)
        return fn

    return wrap


def _flags() -> dict:
    return {**FLAGS, **{o.name: o.flag for c in ("convert", "inspect", "detect") for o in registry.options_for(c)}}


def _package_version() -> str:
    """porting's version without importing the package's modules: the installed metadata, else the source."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("porting")
    except (ImportError, PackageNotFoundError):
        import re

        text = (Path(__file__).resolve().parent / "__init__.py").read_text(encoding="utf-8")
        m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
        return m.group(1) if m else "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"porting {_package_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print porting's version and exit"),
) -> None:
    ctx.with_resource(cli_spelling(_flags()))


def _fail(err: Exception) -> None:
    typer.echo(f"error: {_one_line(err)}", err=True)
    raise typer.Exit(getattr(err, "exit_code", 1))


def _run(fn, *args, **kwargs):
    """Call into the library; typed errors become one `error:` line and a non-zero exit."""
    try:
        return fn(*args, **kwargs)
    except PortingError as err:
        _fail(err)


@app.command()
@_family_options("convert")
def convert(
    model: Path = typer.Argument(..., help="learner .pkl (fastai v1 export, fastai v2 Learner, or torch.save'd nn.Module), a Hugging Face model folder, or a PANNs checkpoint .pth"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (created; must not exist unless --force)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output directory"),
    export: Optional[str] = typer.Option(
        None, "--export", help="onnx,torchscript,pt2,tflite (comma list), all, or none; default: every available format"),
    golden: Optional[Path] = typer.Option(
        None, "--golden", help="golden store (golden/, golden/hf for HF folders, golden/panns for PANNs checkpoints): also verify the exports on the cases captured from this model"),
    **family_options,
):
    """Read MODEL without executing it, rebuild the network in plain torch, write
    OUT/model.safetensors + OUT/config.json, the exports, parity.json, preprocessor_config.json and (learners)
    a README.md model card, atomically: nothing is left on failure. MODEL is a learner pickle, a Hugging Face
    model folder (config.json + model.safetensors or pytorch_model.bin + preprocessor_config.json) or a PANNs
    checkpoint (.pth of audioset_tagging_cnn / panns_inference; --preset, --sample-rate, --hop-size where its
    frontend is not a published one). Every export
    is run in its own runtime and checked by the parity contract (logits: 1e-5 + 1e-5 * max|row|; probabilities:
    1e-5 absolute) against the eager port (HF models: at two input lengths) and, with --golden, every capture of
    this model's golden cases in its tier; exit 1 if any artifact misses it (kept, marked FAILED in parity.json)."""
    from .convert import convert as do_convert, failed_artifacts_message, format_summary
    from .errors import ExportError
    from .export import format_parity, parse_formats
    from .outputs import check_output_dir

    _run(check_output_dir, out, "out", exists_ok=force, replace=True)
    formats = _run(parse_formats, export)
    summary = _run(do_convert, model, out, overwrite=force, exports=formats, golden=golden,
                   log=lambda msg: typer.echo(msg, err=True), strict=False, **registry.given(family_options))
    typer.echo(format_summary(summary))
    parity = summary["exports"]
    typer.echo(format_parity(parity))
    if not parity["passed"]:
        _fail(ExportError(failed_artifacts_message(out, parity)))


@app.command()
@_family_options("inspect")
def inspect(
    model: Path = typer.Argument(..., help="learner .pkl, Hugging Face model folder or PANNs checkpoint .pth to look into"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    **family_options,
):
    """Print what a pickle contains (module tree, globals it names, tensors, classes, normalization, what was
    refused), what an HF model folder holds (architecture from config and keys, labels, tensors,
    preprocessor), or a PANNs checkpoint (body, frontend and how it was identified, what else the file holds),
    without executing anything or writing files."""
    from .errors import MalformedModelError
    from .outputs import check_name

    _run(check_name, model, "model", MalformedModelError)
    fam = _run(registry.for_model, model, False)
    report = _run(fam.inspect, model, **registry.given(family_options))
    if as_json:
        from .summary import strict_json

        report, _ = strict_json(report)  # a pickle's NaN normalization stats would be a bare NaN token otherwise
        typer.echo(json.dumps(report, indent=1, allow_nan=False))
    else:
        typer.echo(fam.format_inspect(report))


@app.command()
@_family_options("detect")
def detect(
    audio: List[Path] = typer.Argument(..., help="recordings: WAV for OrcaHello (2-s windows, 1-s hop); WAV, FLAC or OGG for HF models"),
    model: Path = typer.Option(..., "--model", "-m", help="converted model DIR (from `port convert`), a learner .pkl, an HF model folder, or a PANNs checkpoint .pth"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write everything as JSON here: per-window outputs, events, and (OrcaHello) the legacy per-second table"),
    csv_out: Optional[str] = typer.Option(None, "--csv", help="write a CSV here: OrcaHello, one row per event (file, start_s, end_s, duration_s, peak_confidence, peak_s, mean_confidence, n_intervals); HF models, one row per window (file, start_s, end_s, partial, label, prob_<label>...)"),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="a second (HF: a window) is in an event when its confidence is > this; OrcaHello's per-second calls use it too (legacy: 0.5)"),
    positive: Optional[str] = typer.Option(None, "--positive", help="HF models: the label whose probability makes events (default: no events, per-window rows only)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="windows per forward pass (default 32; HF models 16)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on stderr"),
    backend: str = typer.Option("auto", "--backend", help="torch; onnx: the verified ONNX model of a converted DIR in onnxruntime (frontend stays torch); winograd: BN folded, fused ReLU/residual, Winograd F(2,3) convolutions from 256 channels (CPU, compiled kernel when built); auto: onnx when it passed verification and runs on CPU, else winograd when it passed, else torch"),
    **family_options,
):
    """Run a converted classifier on recordings without its original stack.

    OrcaHello learners: per-window confidences, the per-second table (each interior second = mean of the two
    windows covering it) as production computed them, and events: the stretches of seconds above --threshold,
    each with its start, end, peak and mean confidence. Hugging Face models (an HF folder or its `port convert`
    output): per-window logits and probabilities in config.id2label order, windows starting every --hop-s of
    exactly --window-s at the feature extractor's rate (a shorter tail is scored alone and marked partial);
    events of one label with --positive. PANNs taggers (a .pth or its conversion): the same per-window layout
    with one sigmoid probability per class (AudioSet's 527 labels), 10-s windows by default. Each file is
    reported as it finishes: its results on stdout, or its error on stderr (the others go on; exit 1 if any
    failed)."""
    from .detect import FileError, check_backend, check_device, check_positive, load_detector, run_many
    from .outputs import check_output_files, write_text_atomic
    from .summary import detection_csv, detection_payload, format_file, plural

    _run(check_output_files, inputs=[(a, "recording") for a in audio] + [(model, "model")], json_out=json_out,
         csv_out=csv_out)
    _run(check_device, device)
    _run(check_backend, backend)
    det = _run(load_detector, model, device=device, batch_size=batch_size, backend=backend, threshold=threshold,
               **registry.given(family_options))
    positive = _run(check_positive, det, positive)
    typer.echo(f"model {model}: backend {det.backend}, device {det.device}, batch size {det.batch_size}", err=True)

    notes: list[list[str]] = []

    def show(result, warnings: list[str]) -> None:  # as each file finishes: results on stdout, problems on stderr
        notes.append(warnings)
        for text in warnings:
            typer.echo(f"warning: {_one_line(text)}", err=True)
        if isinstance(result, FileError):
            typer.echo(f"error: {result.message()}", err=True)
        else:
            typer.echo(format_file(result, threshold, positive))

    results = run_many(det, audio, progress=progress, on_file=show)
    if json_out is not None:
        payload = detection_payload(det, results, threshold, positive, notes)
        _run(write_text_atomic, json_out, json.dumps(payload, indent=1, allow_nan=False) + "\n", "json_out")
        typer.echo(f"wrote {json_out}")
    if csv_out is not None:
        _run(write_text_atomic, csv_out, detection_csv(det, results, threshold, positive), "csv_out")
        typer.echo(f"wrote {csv_out}")
    failed = [r for r in results if isinstance(r, FileError)]
    if failed and len(results) > 1:
        typer.echo(_one_line(f"{len(failed)} of {plural(len(results), 'recording')} failed: "
                             f"{', '.join(str(r.path) for r in failed)}"), err=True)
    if failed:
        raise typer.Exit(1)


golden_app = typer.Typer(no_args_is_help=True, help="The golden store: captured legacy tensors, the specification.")
app.add_typer(golden_app, name="golden")


@golden_app.command("verify")
def golden_verify(
    directory: Path = typer.Argument(Path("golden"), help="golden store holding MANIFEST.json"),
):
    """Check every file of DIRECTORY against MANIFEST.json (sha256 and size): missing, extra and changed
    files, and cases whose model/audio no longer match. Exit 1 with the list when anything differs."""
    from .errors import GoldenError
    from .golden import verify_store
    from .outputs import check_name
    from .summary import plural

    _run(check_name, directory, "directory", GoldenError)

    result = _run(verify_store, directory)
    if result.ok:
        typer.echo(f"ok: {plural(result.n_files, 'file')}, {result.n_bytes:,} bytes match {directory / 'MANIFEST.json'}")
        return
    for line in result.problems():
        typer.echo(line)
    _fail(PortingError(
        f"{directory}: {plural(len(result.problems()), 'difference')} from MANIFEST.json; restore the files from version "
        "control, or regenerate with tools/regenerate_golden (reference/README.md)"
    ))


@app.command()
def parity(
    golden: Path = typer.Option(Path("golden"), "--golden", "-g", help="golden/cases/<case>.json or a golden store (every case); golden/hf for the Hugging Face family"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="converted DIR or .pkl (default: each case's own model in golden/models)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (TF32 disabled)"),
    report: Optional[Path] = typer.Option(None, "--report", help="write OUT/report.md and PNGs here"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="windows per forward pass for all.*"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write every stage's statistics as JSON"),
    backend: str = typer.Option("torch", "--backend", help="what `port detect` runs: torch (the pad-folded eager model), onnx (detector.onnx of a converted --model DIR) or winograd (porting.families.orcahello.winograd, pad-folded)"),
):
    """Run the port on each golden case's recording, as `port detect` runs it, and compare every stage
    with every capture of the case (chained from the recording, and each stage fed its golden input).
    Strict tier (1e-5 on every stage) against a capture made on a machine with this machine's numerics
    fingerprint; portable tier (A bitwise, FFT stages by the derived error model) against the others;
    confidences within 1e-5 and decisions exact in both. Exit 1 if any stage fails."""
    from .detect import check_device
    from .outputs import check_output_dir, check_output_files, write_text_atomic
    from .parity.report import format_table, write_report
    from .parity.run import reports_json, run_parity

    from .errors import GoldenError
    from .outputs import check_name, check_not_inputs

    _run(check_name, golden, "golden", GoldenError)
    if model is not None:
        _run(check_name, model, "model", GoldenError)
    inputs = [(golden, "golden store"), (model, "model")]
    if report is not None:
        _run(check_output_dir, report, "report", exists_ok=True)
        _run(check_not_inputs, report, "report", inputs)
    if json_out is not None:
        _run(check_output_files, inputs=inputs, json_out=json_out)
    device = _run(check_device, device)
    if device.startswith("cuda"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    runs = _run(run_parity, golden, model, device, batch_size, lambda name: typer.echo(f"checking {name} ...", err=True),
                backend)
    typer.echo(format_table(runs))
    if report is not None:
        typer.echo(f"wrote {_run(write_report, runs, report, golden=golden)}")
    if json_out is not None:
        _run(write_text_atomic, json_out, reports_json(runs) + "\n", "json_out")
        typer.echo(f"wrote {json_out}")
    failed = [r.report for r in runs if not r.report.passed]
    if failed:
        for r in failed:
            for s in r.failures():
                typer.echo(f"FAIL {r.case} ({r.capture}): {s.message()}", err=True)
            typer.echo(f"  {r.note}", err=True)
        from .summary import plural

        _fail(PortingError(f"parity failed for {len(failed)} of {plural(len(runs), 'case capture')}: "
                           f"{', '.join(f'{r.case} ({r.capture})' for r in failed)}"))


def _terminated(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C: every ``finally`` runs, so ``convert``'s temp directory and ``--json``'s temp
    file are removed (the default action kills the process where it stands and leaves them)."""
    raise SystemExit(128 + signum)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _run_app(prog_name: str) -> int:
    """The app without click's standalone handling: a usage error (click's ClickException, vendored by typer or
    not: recognised by its ``format_message``/``exit_code``) becomes one line naming the command's --help."""
    try:
        code = app(prog_name=prog_name, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            text = ctx.get_help()  # what giving nothing asks for (rich prints it and returns "")
            if text:
                print(text)
        else:
            where = f"`{ctx.command_path} --help`" if ctx is not None else f"`{prog_name} --help`"
            print(f"error: {_one_line(exc.format_message())}; see {where}", file=sys.stderr)
        return exc.exit_code


def main(prog_name: str = "port") -> None:
    """The console entry point (`port`, `python -m porting`): the app, then an exit without the interpreter's
    teardown. Everything is written and flushed by then (outputs atomically, by the commands); what is skipped is
    freeing torch's and onnxruntime's state module by module: measured 0.3 s of a 3.0-s `port detect` on the bundled
    recording (2 cores).

    Every way out is one line on stderr: a usage error (a bad option value) as ``error: <click's reason>; see
    `port CMD --help```, exit 2, instead of click's boxed panel; an exception porting did not expect as
    ``error: internal error (Type: reason) ...``, exit 70, its traceback shown only with ``PORTING_DEBUG=1`` (the
    hostile-input tests set it, so such a case fails them)."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    code = 0
    args = sys.argv[1:]
    try:
        code = _run_app(prog_name)
    except SystemExit as exc:  # typer.Exit inside a command; SIGTERM (_terminated)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if code == 128 + signal.SIGTERM:
            print("error: terminated (SIGTERM); nothing half-written was left behind", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was left behind", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 -- the last line of defence: one line, never a traceback wall
        if os.environ.get("PORTING_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)[:300]}) running `{prog_name} "
              f"{' '.join(args[:1])}`; this is a bug in porting: please report it with PORTING_DEBUG=1 set for the "
              "traceback", file=sys.stderr)
        code = 70
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
