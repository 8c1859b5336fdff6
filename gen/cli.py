"""``rmsd-gen``: synthesise the embedded benchmark, and sample K teacher responses per prompt."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_ERROR_ROWS = 0, 1, 2, 3


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.secho(f"rmsd-gen: error: {message}", fg="red", err=True)
    raise typer.Exit(code)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="folder to write videos/ and prompts.parquet into"),
    num: int = typer.Option(200, "--num", min=1, help="number of videos (each gets one question of every task type)"),
    seed: int = typer.Option(0, "--seed", help="same seed, same benchmark"),
    workers: int = typer.Option(2, "--workers", min=1, help="processes encoding videos"),
    split: str | None = typer.Option(
        None,
        "--split",
        help="put every video in this split (e.g. test: a test set on a seed of its own); "
        "default: train/validation/test 80/10/10 per video",
    ),
) -> None:
    """Write the synthetic video-QA benchmark: real H.264 mp4 files and prompts.parquet."""
    from ..synth import synthesise

    path = synthesise(out, num, seed=seed, workers=workers, split=split)
    typer.echo(f"wrote {num} videos and {num * 6} prompts: {path}")


def teacher_frame_warnings(cfg) -> list[str]:
    """A warning for each teacher checkpoint trained (by rmsd) with other frame settings than the
    pipeline's, naming both."""
    from ..schemas.frame_policy import load_frame_policy, policy_warning

    found = [(t, t.model.path) for t in cfg.teachers if t.model is not None and Path(t.model.path).is_dir()]
    warnings = [
        policy_warning(cfg.frames, load_frame_policy(path), "this run", f"teacher {t.id}'s training frames ({path})")
        for t, path in found
    ]
    return [w for w in warnings if w]


@app.command()
def run(
    pipeline: str = typer.Option(..., "--pipeline", help="pipeline name in pipelines.yaml"),
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help="prompts: rmsd Parquet, Video-R1 JSON/JSONL or LLaVA-Video JSON (default: the pipeline's)",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="output folder of the shards (default: runs/<pipeline>/samples)"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N prompts"),
    split: str | None = typer.Option(
        None,
        "--split",
        help="only prompts of this split (e.g. train: keep evaluation prompts out of the training data)",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="pipelines file (default: ./pipelines.yaml, else the packaged one)"
    ),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray instance)"),
    media_root: list[Path] = typer.Option([], "--media-root", help="extra folder videos may be read from (repeatable)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar with samples/s"),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="also regenerate the samples recorded as errors, in place, with their seeds"
    ),
    retry_matching: str | None = typer.Option(
        None,
        "--retry-errors-matching",
        metavar="REGEX",
        help="regenerate only the error samples whose error this regular expression finds (implies --retry-errors)",
    ),
) -> None:
    """Sample K responses per prompt from each teacher of the pipeline and write Parquet shards.

    Rerunning the same command resumes an interrupted job and does nothing on a finished one;
    with --retry-errors it also regenerates the error samples (an API outage's, a video since fixed).
    Exit status: 0 all samples written; 3 all written but some are error rows (unusable videos);
    1 some shards failed (rerun to retry them); 2 bad input or configuration, or the folder is
    another job's, in use by another run, or its teacher's checkpoint changed.
    """
    from ..schemas.config import ConfigError, load_pipeline
    from ..schemas.manifests import RunRefused
    from ..schemas.tables import SchemaError
    from .driver import run_job
    from .writer import JobMismatchError

    try:
        cfg = load_pipeline(pipeline, config)
        prompts_path = prompts or (Path(cfg.prompts) if cfg.prompts else None)
        if prompts_path is None:
            _fail(f"pipeline {pipeline!r} names no prompts file; pass --prompts")
        if out is not None and out.exists() and not out.is_dir():
            _fail(f"--out {out}: is a file; give the output folder")
        for warning in teacher_frame_warnings(cfg):
            typer.secho(f"rmsd-gen: warning: {warning}", fg="yellow", err=True)
        summary = run_job(
            cfg,
            pipeline,
            prompts_path,
            out or Path("runs") / pipeline / "samples",
            limit=limit,
            split=split,
            address=address,
            media_roots=[str(p.resolve()) for p in media_root],
            progress=progress,
            retry_errors=retry_matching if retry_matching is not None else "" if retry_errors else None,
        )
    except (ConfigError, SchemaError, JobMismatchError, RunRefused, FileNotFoundError, re.error) as exc:
        _fail(str(exc))
    typer.echo(
        f"rmsd-gen: {summary.samples}/{summary.expected_samples} samples for {summary.prompts} prompts in "
        f"{summary.out} "
        f"({summary.written_shards} shards written, {summary.skipped_shards} already done, {summary.wall_seconds:.1f} "
        "s)"
    )
    if summary.retried_samples:
        typer.echo(f"rmsd-gen: {summary.retried_samples} error samples regenerated")
    if summary.refused:
        typer.echo(f"rmsd-gen: {len(summary.refused)} input rows refused (see {summary.out / '_refused.json'})")
    if summary.error_samples:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.errors_by_reason.items()))
        typer.echo(f"rmsd-gen: {summary.error_samples} error samples ({reasons})")
    if summary.failed_shards:
        for failure in summary.failed_shards:
            typer.secho(f"rmsd-gen: failed {failure}", fg="red", err=True)
        typer.secho(
            f"rmsd-gen: {len(summary.failed_shards)} shards failed; rerun the same command to retry", fg="red", err=True
        )
        raise typer.Exit(EXIT_INCOMPLETE)
    if not summary.complete:
        raise typer.Exit(EXIT_INCOMPLETE)
    if summary.error_samples:
        raise typer.Exit(EXIT_ERROR_ROWS)


@app.command()
def validate(
    config: Path | None = typer.Option(
        None, "--config", help="pipelines file (default: ./pipelines.yaml, else the packaged one)"
    ),
    check_models: bool = typer.Option(
        False,
        "--check-models/--no-check-models",
        help="also require every model folder to exist and every API key variable to be set",
    ),
) -> None:
    """Validate every pipeline of a pipelines file and list them."""
    from ..schemas.config import ConfigError, load_pipeline, pipeline_names

    try:
        for name in pipeline_names(config):
            cfg = load_pipeline(name, config, check_models=check_models)
            typer.echo(f"{name}: ok ({len(cfg.teachers)} teachers) {cfg.description}")
    except ConfigError as exc:
        _fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
