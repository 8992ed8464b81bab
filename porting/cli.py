"""`port`: the command-line face of porting. Commands only parse, call and print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import PortingError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Verifiable porting of legacy fastai audio classifiers to plain torch.",
)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(getattr(err, "exit_code", 1))


def _run(fn, *args, **kwargs):
    """Call into the library; typed errors become one `error:` line and a non-zero exit."""
    try:
        return fn(*args, **kwargs)
    except PortingError as err:
        _fail(err)


@app.command()
def convert(
    model: Path = typer.Argument(..., help="learner .pkl (fastai v1 export, fastai v2 Learner, or torch.save'd nn.Module)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (created; must not exist unless --force)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output directory"),
):
    """Read MODEL without executing it, rebuild the network in plain torch, write
    OUT/model.safetensors + OUT/config.json (atomically: nothing is left on failure)."""
    from .convert import convert as do_convert, format_summary

    summary = _run(do_convert, model, out, overwrite=force)
    typer.echo(format_summary(summary))


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="learner .pkl to look into"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Print what a pickle contains (module tree, globals it names, tensors, classes,
    normalization, what was refused) without executing anything or writing files."""
    from .learner import format_report, inspect_pickle

    report = _run(inspect_pickle, model)
    typer.echo(json.dumps(report, indent=1) if as_json else format_report(report))


def main() -> None:  # pragma: no cover - console entry for `python -m porting`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
