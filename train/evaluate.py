"""Evaluation: greedy answers of a model on a split of a prompts file, scored with the filter's
metrics (``schemas/metrics.py``): per task type, accuracy (the mean metric) and format validity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import torch
from tqdm import tqdm

from ..gen.adapters import load_prompts
from ..gen.backends import GenerationRequest
from ..gen.backends.hf import HFBackend
from ..gen.frames import decode_prompts
from ..schemas.config import FilterConfig, FramesConfig, TemplateConfig
from ..schemas.metrics import score_as_filter
from ..schemas.tables import TASK_TYPES
from .collate import prompt_messages


# Prompts per generate call, both backends. hf on two cores (bench/eval.py, demo preset): 64 answer
# 1.2-1.25x as fast as 16 in a process of their own, 128 are slower again; vLLM schedules the
# prompts of a call itself, the more the better.
BATCH_SIZE = 64


def answer_prompts(
    model_path: str | Path,
    prompts: list[dict],
    video_base: Path,
    frames: FramesConfig,
    templates: dict[str, TemplateConfig] | None = None,
    max_tokens: int = 96,
    batch_size: int | None = None,
    progress: bool = True,
    backend: str = "hf",
    enforce_eager: bool = False,
) -> pl.DataFrame:
    """One greedy response per prompt (``text``; null with ``error`` for an unusable video), from
    transformers' generate (``hf``) or a vLLM engine (``vllm``, faster on large splits);
    ``batch_size`` prompts per generate call (None: ``BATCH_SIZE``); ``enforce_eager``: a vLLM engine
    without torch.compile (it starts sooner, generates slower)."""
    engine = _backend(backend, model_path, enforce_eager)
    batch_size = batch_size or BATCH_SIZE
    texts: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    bar = tqdm(total=len(prompts), unit="prompt", desc="eval", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        batch = []
        for p in decode_prompts(prompts[start : start + batch_size], frames.model_dump(), video_base, [video_base]):
            if p.error is not None:
                errors[p.row["prompt_id"]] = p.error
                continue
            f = p.frames
            messages = prompt_messages(p.row, templates)
            batch.append(GenerationRequest(p.row["prompt_id"], messages, f.array, f.fps, f.timestamps, seeds=[0], temperature=0.0, max_tokens=max_tokens))
        if batch:
            for request, (completion,) in zip(batch, engine.generate(batch)):
                texts[request.prompt_id] = completion.text
        bar.update(len(prompts[start : start + batch_size]))
    bar.close()
    frame = pl.DataFrame(prompts, schema_overrides={"options": pl.List(pl.String)}).select("prompt_id", "task_type", "question", "options", "answer", "video")
    return frame.with_columns(
        text=pl.col("prompt_id").replace_strict(texts, default=None, return_dtype=pl.String),
        error=pl.col("prompt_id").replace_strict(errors, default=None, return_dtype=pl.String),
    )


def _backend(name: str, model_path: str | Path, enforce_eager: bool = False):
    use_gpu = torch.cuda.is_available()
    if name == "hf":
        # torch's own thread count: OMP_NUM_THREADS where set (the ablation runs two jobs at once, one
        # thread each), else one per core. Two threads on a core another job holds made generation
        # 10-25x slower (OpenMP's threads wait for each other at every operation).
        return HFBackend(str(model_path), num_threads=torch.get_num_threads(), use_gpu=use_gpu)
    if name == "vllm":
        from ..gen.backends.vllm import VLLMBackend

        return VLLMBackend(str(model_path), dtype="bfloat16" if use_gpu else "float32", max_model_len=None, use_gpu=use_gpu,  # None: the model's own
                           enforce_eager=enforce_eager)
    raise ValueError(f"unknown eval backend {name!r}; choose hf or vllm")


def accuracy_table(scored: pl.DataFrame) -> pl.DataFrame:
    """Per task type (and overall): questions, accuracy (mean metric; open-ended: none), format
    validity, and the share of answers rmsd-filter would keep (q >= tau) as a teacher sample."""
    per_task = scored.group_by("task_type").agg(
        pl.len().alias("questions"),
        pl.col("correct").mean().alias("accuracy"),
        pl.col("valid").mean().alias("format_valid"),
        pl.col("kept").mean().alias("kept"),
    )
    closed = scored.filter(pl.col("correct").is_not_null())
    overall = pl.DataFrame(
        {
            "task_type": ["(closed-ended)"],
            "questions": [closed.height],
            "accuracy": [closed["correct"].mean() if closed.height else None],
            "format_valid": [scored["valid"].mean()],
            "kept": [closed["kept"].mean() if closed.height else None],
        },
        schema=per_task.schema,
    )
    return pl.concat([per_task.sort("task_type"), overall])


def split_prompts(prompts_path: Path, split: str | None, limit: int | None = None, task_types: list[str] | None = None) -> list[dict]:
    """The prompts of ``split`` (None or '': all) and of ``task_types`` (None: all), the first
    ``limit`` of them; none is an error naming the file (``load_prompts``, rmsd-gen's own selection)."""
    if not task_types:
        return load_prompts(prompts_path, split=split or None, limit=limit)[0]
    if unknown := [t for t in task_types if t not in TASK_TYPES]:
        raise ValueError(f"unknown task type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; known: {', '.join(TASK_TYPES)}")
    rows = [r for r in load_prompts(prompts_path, split=split or None)[0] if r["task_type"] in task_types]
    if not rows:
        raise ValueError(f"{prompts_path}: no prompts of task type {', '.join(task_types)}" + (f" in split {split!r}" if split else ""))
    return rows[:limit]


def evaluate(
    model_path: str | Path,
    prompts_path: str | Path,
    out: str | Path,
    split: str | None = "test",
    frames: FramesConfig | None = None,
    templates: dict[str, TemplateConfig] | None = None,
    limit: int | None = None,
    max_tokens: int = 96,
    progress: bool = True,
    backend: str = "hf",
    scoring: FilterConfig | None = None,
    task_types: list[str] | None = None,
    batch_size: int | None = None,
    enforce_eager: bool = False,
) -> dict:
    """Evaluate and write ``eval.json``, ``eval.md`` and ``responses.parquet`` to ``out``, scoring as the
    pipeline's filter does (``scoring``: its tolerance, ANLS threshold and tau per task type).
    ``task_types``: only questions of these (None: all); ``batch_size``: prompts per generate call
    (None: ``BATCH_SIZE``), which never changes an answer."""
    started = time.time()
    prompts_path = Path(prompts_path)
    rows = split_prompts(prompts_path, split, limit, task_types)
    answered = answer_prompts(model_path, rows, prompts_path.parent, frames or FramesConfig(), templates, max_tokens=max_tokens,
                             batch_size=batch_size, progress=progress, backend=backend, enforce_eager=enforce_eager)
    about = {"model": str(model_path), "prompts": str(prompts_path), "split": split, "task_types": list(task_types) if task_types else None, "backend": backend}
    return write_evaluation(answered, out, scoring, about, started, "greedy decoding")


def write_evaluation(answered: pl.DataFrame, out: str | Path, scoring: FilterConfig | None, about: dict, started: float, how: str) -> dict:
    """Score ``answered`` (prompts with ``text``) as the filter does and write ``eval.json``, ``eval.md``
    and ``responses.parquet`` to ``out``; ``about`` (model, prompts, split, ...) heads eval.json."""
    out = Path(out)
    scoring = scoring or FilterConfig()
    scored = score_as_filter(answered, scoring)
    table = accuracy_table(scored)
    out.mkdir(parents=True, exist_ok=True)
    scored.select("prompt_id", "task_type", "answer", "text", "error", "normalised", "valid", "correct", "kept").write_parquet(out / "responses.parquet")
    result = {
        **about,
        "scoring": scoring.model_dump(include={"tolerance", "anls_threshold", "tau", "tau_by_task"}),
        "questions": answered.height,
        "seconds": round(time.time() - started, 2),
        "by_task": table.to_dicts(),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    kinds = f" (task types {', '.join(about['task_types'])})" if about.get("task_types") else ""
    lines = [f"# Evaluation of `{about['model']}`", "", f"{answered.height} questions{kinds} of split `{about['split']}` in `{about['prompts']}`, {how}.", "",
             "| task type | questions | accuracy | format valid | kept by the filter (q >= tau) |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in table.iter_rows(named=True):
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        lines.append(f"| {r['task_type']} | {r['questions']} | {acc} | {100 * (r['format_valid'] or 0):.1f}% | {100 * (r['kept'] or 0):.1f}% |")
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    return result
