"""``rmsd-train``: build and train students on curated shards."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Train students on curated shards."""


@app.command("init-model")
def init_model(
    out: Path = typer.Option(..., "--out", help="folder to write the model, tokenizer and processor into (must not exist)"),
    preset: str = typer.Option("tiny", "--preset", help="tiny (~0.25 M parameters, tests) or demo (~0.8 M, the demo's teacher and student)"),
    seed: int = typer.Option(0, "--seed", help="weight initialisation seed"),
) -> None:
    """Write a small Qwen2-VL-architecture model built from its config (random weights, nothing downloaded)."""
    from ..models import PRESETS, init_model as build

    if preset not in PRESETS:
        typer.secho(f"rmsd-train: error: unknown preset {preset!r}; known: {sorted(PRESETS)}", fg="red", err=True)
        raise typer.Exit(2)
    if out.exists():
        typer.secho(f"rmsd-train: error: {out} already exists", fg="red", err=True)
        raise typer.Exit(2)
    path = build(out, preset, seed)
    typer.echo(f"wrote {preset} model to {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
