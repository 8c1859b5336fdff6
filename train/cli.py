"""``rmsd-train``: build and train students on curated shards."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .host_memory import keep_freed_memory

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Train students on curated shards."""


@app.command("init-model")
def init_model(
    out: Path = typer.Option(
        ..., "--out", help="folder to write the model, tokenizer and processor into (must not exist)"
    ),
    preset: str = typer.Option(
        "tiny", "--preset", help="tiny (~0.25 M parameters, tests) or demo (~0.8 M, the demo's teacher and student)"
    ),
    seed: int = typer.Option(0, "--seed", help="weight initialisation seed"),
    vision_from: Path | None = typer.Option(
        None,
        "--vision-from",
        help="copy the vision tower of this checkpoint (same preset): a student that starts seeing, "
        "as a pretrained VLM does",
    ),
) -> None:
    """Write a small Qwen2-VL-architecture model built from its config (random weights, nothing downloaded)."""
    from ..models import PRESETS
    from ..models import init_model as build

    if preset not in PRESETS:
        typer.secho(f"rmsd-train: error: unknown preset {preset!r}; known: {sorted(PRESETS)}", fg="red", err=True)
        raise typer.Exit(2)
    if out.exists():
        typer.secho(f"rmsd-train: error: {out} already exists", fg="red", err=True)
        raise typer.Exit(2)
    if vision_from is not None and not (vision_from / "config.json").exists():
        _fail(f"--vision-from {vision_from}: not a model folder (no config.json)")
    try:
        path = build(out, preset, seed, vision_from=vision_from)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {preset} model to {path}" + (f" (vision tower from {vision_from})" if vision_from else ""))


def _fail(message: str) -> None:
    typer.secho(f"rmsd-train: error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _pipeline(inputs):
    from ..schemas.config import load_pipeline

    return load_pipeline(inputs.pipeline, _path(inputs.pipelines_file), check_models=False)


def _student(cfg, inputs) -> tuple[Path, str | None]:
    """--model, or else the pipeline's train.student (with its init preset)."""
    if inputs.model is not None:
        return Path(inputs.model), inputs.init
    if cfg.train.student is None:
        raise ValueError(f"give --model, or set train.student in pipeline {inputs.pipeline!r}")
    return Path(cfg.train.student.path), inputs.init or cfg.train.student.init


def _warn_frame_policy(frames, mode: str, data: Path, samples: Path | None, model: Path) -> None:
    """Warn, naming both, when the pipeline's frame settings differ from the data's (the teachers'
    samples) or from those the starting checkpoint was trained with."""
    from ..schemas.frame_policy import load_frame_policy, policy_warning
    from .data import data_frame_policy

    warnings = [
        policy_warning(frames, data_frame_policy(mode, data, samples), "this run", f"the teachers' samples' ({data})"),
        policy_warning(
            frames,
            load_frame_policy(model) if Path(model).is_dir() else None,
            "this run",
            f"the checkpoint's ({model})",
        ),
    ]
    for warning in filter(None, warnings):
        typer.secho(f"rmsd-train: warning: {warning}", fg="yellow", err=True)


# sft and rl take every option of their TRL config (train/config.py): the command line is parsed by
# TRL's parser, not by typer, so typer passes it through untouched (--help included).
_TRL_COMMAND = dict(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)


@app.command(**_TRL_COMMAND)
def sft(ctx: typer.Context) -> None:
    """Supervised fine-tuning of the student (weighted SFT on TRL's SFTTrainer); --help lists every option."""
    from ..models import ensure_model, load_model
    from ..schemas.config import ConfigError
    from ..schemas.tables import SchemaError
    from .collate import FrameCache, VideoSFTCollator, templates_by_task
    from .config import DistillSFTConfig, main_parse
    from .data import sft_dataset
    from .data import video_base as find_video_base
    from .sft import run_sft

    inputs, args = main_parse(DistillSFTConfig, ctx.args, "rmsd-train sft")
    _stop_if_finished(inputs, args)
    keep_freed_memory()  # training on CPU: malloc keeps what a step frees for the next
    try:
        cfg = _pipeline(inputs)
        model, init = _student(cfg, inputs)
        data = _required_data(inputs)
        base = (
            Path(inputs.video_base)
            if inputs.video_base
            else find_video_base(args.mode, data, samples=_path(inputs.samples))
        )
        dataset = sft_dataset(args.mode, data, seed=args.seed, streaming=args.streaming, samples=_path(inputs.samples))
        _warn_frame_policy(cfg.frames, args.mode, data, _path(inputs.samples), model)
        student, processor = load_model(ensure_model(model, init))
    except (ConfigError, SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if args.visual_aux > 0:  # checked before training starts, with the check the batches use
        from .visual_aux import scene_facts

        try:
            for meta in dataset["meta"] if "meta" in dataset.column_names else [None]:
                scene_facts(meta)
        except ValueError as exc:
            _fail(f"--visual_aux: {data}: {exc}")
    collator = VideoSFTCollator(
        processor,
        FrameCache(cfg.frames, base),
        templates_by_task(cfg),
        student.config.model_type,
        visual_targets=args.visual_aux > 0,
    )
    final = run_sft(student, processor, dataset, collator, args, resume=inputs.resume, frames=cfg.frames)
    typer.echo(f"rmsd-train: {args.mode} SFT done: {final}")


@app.command(**_TRL_COMMAND)
def rl(ctx: typer.Context) -> None:
    """Adversarial distillation: GRPO on video with the online discriminator as a reward; --help lists every option."""
    from ..models import ensure_model, load_model
    from ..schemas.config import ConfigError
    from ..schemas.tables import SchemaError
    from .collate import FrameCache, templates_by_task
    from .config import AdversarialConfig, main_parse
    from .data import video_base as find_video_base
    from .rl import run_rl

    inputs, args = main_parse(AdversarialConfig, ctx.args, "rmsd-train rl")
    _stop_if_finished(inputs, args)
    keep_freed_memory()  # training on CPU: malloc keeps what a step frees for the next
    try:
        cfg = _pipeline(inputs)
        model, _ = _student(cfg, inputs)
        data = _required_data(inputs)
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model folder not found: {model} (rl starts from an SFT-warmed student)")
        base = (
            Path(inputs.video_base)
            if inputs.video_base
            else find_video_base("weighted", data, samples=_path(inputs.samples))
        )
        _warn_frame_policy(cfg.frames, "weighted", data, _path(inputs.samples), model)
        policy, processor = load_model(ensure_model(model, None))
        final = run_rl(
            Path(model),
            processor,
            policy,
            data,
            FrameCache(cfg.frames, base),
            templates_by_task(cfg),
            args,
            resume=inputs.resume,
            scoring=cfg.filter,
            samples=_path(inputs.samples),
        )
    except (ConfigError, SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"rmsd-train: RL done: {final}")


def _stop_if_finished(inputs, args) -> None:
    """A rerun of a finished run leaves it as it is."""
    from .checkpoints import finished

    if inputs.resume and (final := finished(Path(args.output_dir))):
        typer.echo(f"rmsd-train: {final} exists: this run has finished (--no-resume trains it again from the start)")
        raise typer.Exit(0)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _required_data(inputs) -> Path:
    if not inputs.data:
        raise ValueError("--data is required")
    return Path(inputs.data)


@app.command("eval", context_settings={"allow_extra_args": True})  # the extra arguments: --task-types' further names
def evaluate_command(
    ctx: typer.Context,
    model: Path = typer.Option(..., "--model", help="checkpoint folder to evaluate"),
    prompts: Path = typer.Option(..., "--prompts", help="prompts file with ground truth"),
    out: Path = typer.Option(..., "--out", help="folder for eval.json, eval.md and responses.parquet"),
    split: str | None = typer.Option("test", "--split", help="only prompts of this split ('' = all)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N prompts of the split"),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1, help="generated tokens cap"),
    pipeline: str = typer.Option(
        "demo",
        "--pipeline",
        help="pipeline whose frames, prompt templates and scoring settings (filter: tolerance, ANLS threshold, tau) "
        "are used",
    ),
    config: Path | None = typer.Option(None, "--config", help="pipelines file"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    backend: str = typer.Option(
        "hf", "--backend", help="hf (transformers generate) or vllm (a vLLM engine: faster on large splits)"
    ),
    task_types: str | None = typer.Option(
        None, "--task-types", metavar="T [T ...]", help="only questions of these task types (default: all)"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="prompts per generate call (default: 64); the answers do not depend on it"
    ),
    enforce_eager: bool = typer.Option(
        False,
        "--enforce-eager",
        help="vllm: no torch.compile; the engine starts sooner (about 30 s on the CPU build) and generates slower",
    ),
    num_frames: int | None = typer.Option(
        None,
        "--num-frames",
        min=1,
        help="frames per video (default: the checkpoint's training frames, else the pipeline's)",
    ),
    fps: float | None = typer.Option(
        None, "--fps", min=0.001, help="frames per second instead of --num-frames, capped by --max-frames"
    ),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="cap on frames per video in fps mode"),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=784, help="pixel budget per frame"),
    frame_mode: str | None = typer.Option(None, "--frame-mode", help="exact or keyframe"),
    blind: bool = typer.Option(
        False,
        "--blind",
        help="blind-video check: answer every question again with grey frames; report both accuracies and the share "
        "of answers that change",
    ),
) -> None:
    """Per-task accuracy with the filter's metrics, greedy decoding; JSON and Markdown outputs."""
    from ..schemas.config import ConfigError, load_pipeline
    from ..schemas.frame_policy import describe
    from .collate import templates_by_task
    from .evaluate import evaluate, evaluation_frames

    if ctx.args and task_types is None:
        _fail(f"unexpected argument {ctx.args[0]!r}")
    try:
        cfg = load_pipeline(pipeline, config, check_models=False)
        if not model.is_dir():
            raise FileNotFoundError(f"model folder not found: {model}")
        if backend not in ("hf", "vllm"):
            raise ValueError(f"unknown --backend {backend!r}; choose hf or vllm")
        selected = [task_types, *ctx.args] if task_types is not None else None
        frames, source, warning = evaluation_frames(
            model,
            cfg.frames,
            pipeline,
            dict(num_frames=num_frames, fps=fps, max_frames=max_frames, max_pixels=max_pixels, mode=frame_mode),
        )
        if warning:
            typer.secho(f"rmsd-train: warning: {warning}", fg="yellow", err=True)
        typer.echo(f"rmsd-train: frames: {describe(frames)} ({source})")
        result = evaluate(
            model,
            prompts,
            out,
            split or None,
            frames,
            templates_by_task(cfg),
            limit,
            max_tokens,
            progress,
            backend,
            scoring=cfg.filter,
            task_types=selected,
            batch_size=batch_size,
            enforce_eager=enforce_eager,
            blind=blind,
            frames_source=source,
        )
    except (ConfigError, FileNotFoundError, ValueError, ImportError) as exc:
        _fail(str(exc))
    closed = next(r for r in result["by_task"] if r["task_type"] == "(closed-ended)")
    accuracy = "-" if closed["accuracy"] is None else f"{100 * closed['accuracy']:.1f}%"
    typer.echo(f"rmsd-train: {result['questions']} questions, closed-ended accuracy {accuracy}; {out / 'eval.md'}")
    if result["blind"] is not None:
        from .evaluate import blind_summary

        typer.echo(f"rmsd-train: {blind_summary(dict(result['blind'], warning=None))}")
        if result["blind"]["warning"]:
            typer.echo(f"rmsd-train: warning: {result['blind']['warning']}", err=True)


@app.command("rollout-server")
def rollout_server(
    model: Path = typer.Option(..., "--model", help="the policy's starting checkpoint (the RL run's --model)"),
    name: str = typer.Option("rmsd-rollouts", "--name", help="the name runs find it by (rl --rollout-server NAME)"),
    address: str = typer.Option(
        "auto", "--address", help="the Ray cluster to run in (`ray start --head` first; auto: the one on this node)"
    ),
    gpus: float = typer.Option(1.0, "--gpus", help="GPUs of the server (0: vLLM's CPU build)"),
    memory: float = typer.Option(0.9, "--memory", help="the share of its GPU's memory the engine takes"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="weights' dtype in the engine (the policy's)"),
    enforce_eager: bool = typer.Option(False, "--enforce-eager", help="no torch.compile: starts sooner, runs slower"),
    stop: bool = typer.Option(False, "--stop", help="end the server of this name instead"),
) -> None:
    """Start a vLLM rollout server for `rmsd-train rl --rollouts vllm-server --rollout-server NAME` (a detached
    Ray actor: it serves runs, one after another, until --stop ends it)."""
    import ray

    from .rollouts import SERVER_NAMESPACE, connect_ray, start_server

    if stop:
        connect_ray(address)
        try:
            ray.kill(ray.get_actor(name, namespace=SERVER_NAMESPACE))
        except ValueError:
            _fail(f"no rollout server named {name!r} in the Ray cluster at {address}")
        typer.echo(f"rmsd-train: rollout server {name!r} stopped")
        return
    if not (model / "config.json").exists():
        _fail(f"--model {model}: not a model folder (no config.json)")
    try:
        start_server(model.resolve(), name, address, gpus, 1, memory, dtype, enforce_eager, detached=True)
    except ConnectionError as exc:
        _fail(f"{exc} (start the cluster first: `ray start --head`)")
    typer.echo(f"rmsd-train: rollout server {name!r} serves {model} in the Ray cluster at {address}")


@app.command()
def prior(
    prompts: Path = typer.Option(..., "--prompts", help="prompts file with ground truth"),
    out: Path = typer.Option(
        ..., "--out", help="folder for eval.json, eval.md and responses.parquet (as rmsd-train eval writes)"
    ),
    split: str | None = typer.Option("test", "--split", help="evaluate on the prompts of this split ('' = all)"),
    fit_split: str = typer.Option("train", "--fit-split", help="fit the constants on the prompts of this split"),
    fit_prompts: Path | None = typer.Option(
        None,
        "--fit-prompts",
        help="fit on this prompts file's --fit-split (a test set on a seed of its own has no train split); "
        "default: --prompts",
    ),
    pipeline: str = typer.Option(
        "demo", "--pipeline", help="pipeline whose scoring settings (filter: tolerance, ANLS threshold, tau) are used"
    ),
    config: Path | None = typer.Option(None, "--config", help="pipelines file"),
) -> None:
    """The prior baseline: one constant answer per question template, the best on the training split, no video."""
    from ..schemas.config import ConfigError, load_pipeline
    from .prior import evaluate_prior

    try:
        cfg = load_pipeline(pipeline, config, check_models=False)
        result = evaluate_prior(prompts, out, split or None, fit_split, scoring=cfg.filter, fit_prompts=fit_prompts)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    closed = next(r for r in result["by_task"] if r["task_type"] == "(closed-ended)")
    accuracy = "-" if closed["accuracy"] is None else f"{100 * closed['accuracy']:.1f}%"
    typer.echo(
        f"rmsd-train: prior baseline, {result['questions']} questions, closed-ended accuracy {accuracy}; "
        f"{out / 'eval.md'}"
    )


@app.command()
def compare(
    runs: list[str] = typer.Argument(
        ..., help="NAME=EVAL_DIR pairs (folders written by `rmsd-train eval` or `rmsd-train prior`)"
    ),
    out: Path | None = typer.Option(None, "--out", help="also write the table to this Markdown file"),
    baseline: str | None = typer.Option(
        None, "--baseline", help="with --ceiling: the run headroom is measured from (e.g. the single-sample student)"
    ),
    ceiling: str | None = typer.Option(
        None, "--ceiling", help="with --baseline: the run headroom is measured to (the student trained on ground truth)"
    ),
) -> None:
    """One table of several evaluations: accuracy per task type, one column per model; with
    --baseline and --ceiling, the share of the headroom each recovers: (run - baseline) / (ceiling - baseline)."""
    import json

    results = {}
    for pair in runs:
        name, _, folder = pair.partition("=")
        path = Path(folder) / "eval.json"
        if not name or not path.is_file():
            _fail(f"expected NAME=EVAL_DIR with {path} present, got {pair!r}")
        results[name] = {r["task_type"]: r for r in json.loads(path.read_text())["by_task"]}
    if (baseline is None) != (ceiling is None) or any(n is not None and n not in results for n in (baseline, ceiling)):
        _fail(f"--baseline and --ceiling name two of the runs ({', '.join(results)}), or neither")
    tasks = list(next(iter(results.values())))
    lines = ["| task type | " + " | ".join(results) + " |", "| --- |" + " ---: |" * len(results)]
    for task in tasks:
        cells = []
        for by_task in results.values():
            acc = by_task.get(task, {}).get("accuracy")
            cells.append("-" if acc is None else f"{100 * acc:.1f}%")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if baseline is not None:
        closed = {name: by_task["(closed-ended)"]["accuracy"] for name, by_task in results.items()}
        span = closed[ceiling] - closed[baseline]
        cells = ["-" if span <= 0 else f"{(closed[name] - closed[baseline]) / span:+.2f}" for name in results]
        lines.append(
            f"| headroom recovered: (run - {baseline}) / ({ceiling} - {baseline}) | " + " | ".join(cells) + " |"
        )
    table = "\n".join(lines)
    typer.echo(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")


def _leave_process_group() -> None:
    """Under torchrun or accelerate launch the trainer joined a process group: leave it before the
    interpreter exits. Left to the exit, gloo's threads can be torn down while running and abort a
    rank (SIGABRT, "terminate called without an active exception") after training finished."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main() -> None:
    try:
        app()
    finally:
        _leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
