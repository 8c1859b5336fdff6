"""``rmsd-filter``: score every teacher sample, keep and weight the good ones, report teacher reliability."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Score, filter and weight teacher samples (R-MSD stage 2)."""


@app.command()
def run(
    pipeline: str = typer.Option(
        ..., "--pipeline", help="pipeline name in pipelines.yaml (its `filter:` section is used)"
    ),
    samples: Path = typer.Option(..., "--samples", help="folder of rmsd-gen sample shards"),
    out: Path = typer.Option(
        ..., "--out", help="output folder: scored/, curated/, dropped_prompts.parquet, report/, _manifest.json"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="pipelines file (default: ./pipelines.yaml, else the packaged one)"
    ),
    tau: float | None = typer.Option(
        None, "--tau", min=0, max=1, help="override the pipeline's tau for every task type"
    ),
    ray: bool = typer.Option(False, "--ray/--local", help="score shard groups as Ray tasks (same results as local)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (implies --ray)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="worker processes (default: one per core; 1: score in this process)"
    ),
    batch_rows: int | None = typer.Option(
        None,
        "--batch-rows",
        min=1,
        help="rows a worker scores at once, in whole shard groups (default 200,000; memory grows with it)",
    ),
    allow_incomplete: bool = typer.Option(
        False,
        "--allow-incomplete",
        help="score the samples of an unfinished (or running) rmsd-gen job as they are; the manifest says so",
    ),
) -> None:
    """Score samples (format, metric, quality, agreement), filter by tau, compute matching weights.

    Exit status: 0 done; 2 bad input or configuration, samples of an unfinished or changed rmsd-gen job
    (unless --allow-incomplete), an --out that is, holds or sits inside the samples, or one in use by another run."""
    from ..schemas.config import ConfigError, load_pipeline
    from ..schemas.manifests import RunRefused
    from ..schemas.tables import SchemaError
    from .run import BATCH_ROWS, run_filter

    try:
        cfg = load_pipeline(pipeline, config, check_models=False)
        if tau is not None:
            cfg = cfg.model_copy(update={"filter": cfg.filter.model_copy(update={"tau": tau, "tau_by_task": {}})})
        if not samples.is_dir():
            raise FileNotFoundError(f"samples folder not found: {samples}")
        summary = run_filter(
            cfg,
            pipeline,
            samples,
            out,
            use_ray=ray or address is not None,
            address=address,
            progress=progress,
            workers=workers,
            batch_rows=batch_rows or BATCH_ROWS,
            allow_incomplete=allow_incomplete,
        )
    except (ConfigError, SchemaError, RunRefused, FileNotFoundError) as exc:
        typer.secho(f"rmsd-filter: error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    share = summary.kept / max(summary.samples, 1)
    typer.echo(
        f"rmsd-filter: {summary.samples} samples of {summary.prompts} prompts scored in {summary.wall_seconds:.1f} s; "
        f"kept {summary.kept} ({100 * share:.1f}%); {summary.dropped} prompts without a kept sample"
    )
    typer.echo(
        f"rmsd-filter: report {summary.out / 'report' / 'report.md'} (browsable page: "
        f"{summary.out / 'report' / 'index.html'}); curated shards {summary.out / 'curated'}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
