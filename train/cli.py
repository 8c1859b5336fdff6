"""``rmsd-train``: build and train students on curated shards."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
    vision_from: Optional[Path] = typer.Option(None, "--vision-from", help="copy the vision tower of this checkpoint (same preset): a student that starts seeing, as a pretrained VLM does"),
) -> None:
    """Write a small Qwen2-VL-architecture model built from its config (random weights, nothing downloaded)."""
    from ..models import PRESETS, init_model as build

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


def _pipeline(name: str, config: Optional[Path]):
    from ..schemas.config import load_pipeline

    return load_pipeline(name, config, check_models=False)


def _student(cfg, pipeline: str, model: Optional[Path], init: Optional[str]) -> tuple[Path, Optional[str]]:
    """--model, or else the pipeline's train.student (with its init preset)."""
    if model is not None:
        return model, init
    if cfg.train.student is None:
        raise ValueError(f"give --model, or set train.student in pipeline {pipeline!r}")
    return Path(cfg.train.student.path), init or cfg.train.student.init


@app.command()
def sft(
    mode: str = typer.Option(..., "--mode", help="best (T_best, the paper's warm-up) | weighted (kept samples, loss weighted by p_k) | filtered (kept samples, uniform) | unfiltered (every answered sample, uniform) | single (one random teacher sample, no filtering) | gt (ground truth)"),
    data: Path = typer.Option(..., "--data", help="best/weighted/filtered/unfiltered: rmsd-filter output; single: rmsd-gen samples folder; gt: a prompts file"),
    out: Path = typer.Option(..., "--out", help="output folder: checkpoints, tensorboard logs, final/"),
    model: Optional[Path] = typer.Option(None, "--model", help="student checkpoint folder (Hugging Face format); default: the pipeline's train.student"),
    init: Optional[str] = typer.Option(None, "--init", help="build the student from this preset (tiny|demo) if --model does not exist"),
    pipeline: str = typer.Option("demo", "--pipeline", help="pipeline whose frames and prompt templates the student sees"),
    config: Optional[Path] = typer.Option(None, "--config", help="pipelines file (default: ./pipelines.yaml, else the packaged one)"),
    epochs: float = typer.Option(1.0, "--epochs", help="passes over the examples (paper: 1)"),
    lr: float = typer.Option(2e-6, "--lr", help="AdamW learning rate (paper: 2e-6)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="examples per device per micro-batch"),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="micro-batches per optimizer step"),
    max_steps: int = typer.Option(-1, "--max-steps", help="stop after this many optimizer steps (-1: by epochs)"),
    save_steps: int = typer.Option(200, "--save-steps", min=1, help="checkpoint every N steps (a killed run resumes from the last)"),
    seed: int = typer.Option(0, "--seed", help="data order, initialisation and the single-sample draw"),
    video_base: Optional[Path] = typer.Option(None, "--video-base", help="folder relative video paths start from (default: found through the manifests)"),
    streaming: bool = typer.Option(False, "--streaming/--in-memory", help="stream curated shards (best, weighted) instead of loading them"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from the newest checkpoint in --out"),
    visual_aux: float = typer.Option(0.0, "--visual-aux", min=0.0, help="gt mode on the synthetic benchmark: weight of the auxiliary visual loss (probes on the vision tower predict the scene; the demo teacher's bootstrap uses 1.0)"),
) -> None:
    """Supervised fine-tuning of the student (weighted SFT on TRL's SFTTrainer)."""
    from ..models import ensure_model, load_model
    from ..schemas.config import ConfigError
    from ..schemas.tables import SchemaError
    from .collate import FrameCache, VideoSFTCollator, templates_by_task
    from .data import MODES, sft_dataset
    from .data import video_base as find_video_base
    from .sft import SFTSettings, run_sft

    if mode not in MODES:
        _fail(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    if visual_aux > 0 and mode != "gt":
        _fail("--visual-aux needs --mode gt (the scene facts come with the synthetic benchmark's prompts)")
    try:
        cfg = _pipeline(pipeline, config)
        model, init = _student(cfg, pipeline, model, init)
        base = video_base or find_video_base(mode, data)
        dataset = sft_dataset(mode, data, seed=seed, streaming=streaming)
        if streaming and max_steps < 0:
            _fail("--streaming needs --max-steps (a stream has no length)")
        student, processor = load_model(ensure_model(model, init))
    except (ConfigError, SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if visual_aux > 0:  # checked before training starts, with the check the batches use
        from .visual_aux import scene_facts

        try:
            for meta in dataset["meta"] if "meta" in dataset.column_names else [None]:
                scene_facts(meta)
        except ValueError as exc:
            _fail(f"--visual-aux: {data}: {exc}")
    collator = VideoSFTCollator(processor, FrameCache(cfg.frames, base), templates_by_task(cfg), student.config.model_type, visual_targets=visual_aux > 0)
    settings = SFTSettings(epochs=epochs, learning_rate=lr, batch_size=batch_size, gradient_accumulation=grad_accum, max_steps=max_steps, save_steps=save_steps, seed=seed)
    final = run_sft(student, processor, dataset, collator, out, settings, resume=resume, visual_aux=visual_aux)
    typer.echo(f"rmsd-train: {mode} SFT done: {final}")


@app.command()
def rl(
    data: Path = typer.Option(..., "--data", help="rmsd-filter output: questions (from the samples it scored) and teacher responses with p_k (curated)"),
    out: Path = typer.Option(..., "--out", help="output folder: checkpoints, tensorboard logs, final/ (policy) and final/discriminator/"),
    model: Optional[Path] = typer.Option(None, "--model", help="the SFT-warmed student checkpoint; default: the pipeline's train.student"),
    pipeline: str = typer.Option("demo", "--pipeline", help="pipeline whose frames and prompt templates the student sees"),
    config: Optional[Path] = typer.Option(None, "--config", help="pipelines file (default: ./pipelines.yaml, else the packaged one)"),
    discriminator: bool = typer.Option(True, "--discriminator/--no-discriminator", help="the adversarial reward D (off: the SFT+RL baseline, verifiable rewards only)"),
    num_generations: int = typer.Option(8, "--num-generations", min=2, help="N rollouts per question (paper: 8)"),
    temperature: float = typer.Option(0.8, "--temperature", help="rollout sampling temperature"),
    lr: float = typer.Option(1e-6, "--lr", help="policy learning rate (paper: 1e-6)"),
    disc_lr: float = typer.Option(1e-6, "--disc-lr", help="discriminator learning rate"),
    beta: float = typer.Option(0.001, "--beta", help="KL coefficient to the reference policy"),
    weights: str = typer.Option("0.4,0.1,0.1,0.4", "--weights", help="alpha,beta,eta,delta: discriminator, outer format, task format, content"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="rollouts per device per micro-batch"),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="micro-batches per optimizer step"),
    epochs: float = typer.Option(1.0, "--epochs", help="passes over the questions (paper: 1)"),
    max_steps: int = typer.Option(-1, "--max-steps", help="stop after this many optimizer steps (-1: by epochs)"),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1, help="rollout length cap"),
    warmup_steps: int = typer.Option(8, "--disc-warmup-steps", min=0, help="discriminator-only steps on the SFT student's rollouts before RL (GAD)"),
    save_steps: int = typer.Option(200, "--save-steps", min=1, help="checkpoint every N steps (a killed run resumes from the last)"),
    seed: int = typer.Option(0, "--seed", help="data order, rollouts and teacher draws"),
    video_base: Optional[Path] = typer.Option(None, "--video-base", help="folder relative video paths start from (default: found through the manifests)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from the newest checkpoint in --out"),
) -> None:
    """Adversarial distillation: GRPO on video with the online discriminator as a reward."""
    from ..models import ensure_model, load_model
    from ..schemas.config import ConfigError
    from ..schemas.tables import SchemaError
    from .collate import FrameCache, templates_by_task
    from .data import video_base as find_video_base
    from .rl import RLSettings, run_rl

    try:
        alpha, beta_w, eta, delta = (float(w) for w in weights.split(","))
    except ValueError:
        _fail(f"--weights takes four numbers alpha,beta,eta,delta; got {weights!r}")
    if (batch_size * grad_accum) % num_generations:
        _fail(f"--batch-size x --grad-accum ({batch_size * grad_accum}) must be a multiple of --num-generations ({num_generations})")
    try:
        cfg = _pipeline(pipeline, config)
        model, _ = _student(cfg, pipeline, model, None)
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model folder not found: {model} (rl starts from an SFT-warmed student)")
        base = video_base or find_video_base("weighted", data)
        policy, processor = load_model(ensure_model(model, None))
    except (ConfigError, SchemaError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    settings = RLSettings(
        num_generations=num_generations, temperature=temperature, learning_rate=lr, disc_learning_rate=disc_lr, beta=beta,
        batch_size=batch_size, gradient_accumulation=grad_accum, epochs=epochs, max_steps=max_steps, max_completion_length=max_tokens,
        warmup_steps=warmup_steps, discriminator=discriminator, save_steps=save_steps, seed=seed,
        weights={"discriminator": alpha, "outer": beta_w, "task": eta, "content": delta},
    )
    try:
        final = run_rl(Path(model), processor, policy, data, FrameCache(cfg.frames, base), templates_by_task(cfg), out, settings, resume=resume)
    except SchemaError as exc:
        _fail(str(exc))
    typer.echo(f"rmsd-train: RL done: {final}")


@app.command("eval")
def evaluate_command(
    model: Path = typer.Option(..., "--model", help="checkpoint folder to evaluate"),
    prompts: Path = typer.Option(..., "--prompts", help="prompts file with ground truth"),
    out: Path = typer.Option(..., "--out", help="folder for eval.json, eval.md and responses.parquet"),
    split: Optional[str] = typer.Option("test", "--split", help="only prompts of this split ('' = all)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N prompts of the split"),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1, help="generated tokens cap"),
    pipeline: str = typer.Option("demo", "--pipeline", help="pipeline whose frames and prompt templates are used"),
    config: Optional[Path] = typer.Option(None, "--config", help="pipelines file"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    backend: str = typer.Option("hf", "--backend", help="hf (transformers generate) or vllm (a vLLM engine: faster on large splits)"),
) -> None:
    """Per-task accuracy with the filter's metrics, greedy decoding; JSON and Markdown outputs."""
    from ..schemas.config import ConfigError
    from .collate import templates_by_task
    from .evaluate import evaluate

    try:
        cfg = _pipeline(pipeline, config)
        if not model.is_dir():
            raise FileNotFoundError(f"model folder not found: {model}")
        if backend not in ("hf", "vllm"):
            raise ValueError(f"unknown --backend {backend!r}; choose hf or vllm")
        result = evaluate(model, prompts, out, split or None, cfg.frames, templates_by_task(cfg), limit, max_tokens, progress, backend)
    except (ConfigError, FileNotFoundError, ValueError, ImportError) as exc:
        _fail(str(exc))
    closed = next(r for r in result["by_task"] if r["task_type"] == "(closed-ended)")
    accuracy = "-" if closed["accuracy"] is None else f"{100 * closed['accuracy']:.1f}%"
    typer.echo(f"rmsd-train: {result['questions']} questions, closed-ended accuracy {accuracy}; {out / 'eval.md'}")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="NAME=EVAL_DIR pairs (folders written by `rmsd-train eval`)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the table to this Markdown file"),
) -> None:
    """One table of several evaluations: accuracy per task type, one column per model."""
    import json

    results = {}
    for pair in runs:
        name, _, folder = pair.partition("=")
        path = Path(folder) / "eval.json"
        if not name or not path.is_file():
            _fail(f"expected NAME=EVAL_DIR with {path} present, got {pair!r}")
        results[name] = {r["task_type"]: r for r in json.loads(path.read_text())["by_task"]}
    tasks = list(next(iter(results.values())))
    lines = ["| task type | " + " | ".join(results) + " |", "| --- |" + " ---: |" * len(results)]
    for task in tasks:
        cells = []
        for by_task in results.values():
            acc = by_task.get(task, {}).get("accuracy")
            cells.append("-" if acc is None else f"{100 * acc:.1f}%")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
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
