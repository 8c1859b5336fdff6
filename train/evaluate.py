"""Evaluation: greedy answers of a model on a split of a prompts file, scored with the filter's
metrics (``schemas/metrics.py``): per task type, accuracy (the mean metric) and format validity.

The blind-video check (``blind=True``) answers every question a second time with its frames
replaced by uninformative ones (the same number, size and timestamps, every pixel mid-grey) and
reports both accuracies and the share of answers that change: a student whose loss looked healthy
but whose answers do not depend on the video shows here.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from ..gen.adapters import load_prompts
from ..gen.backends import GenerationRequest, HFBackend
from ..gen.frames import decode_prompts
from ..schemas.config import FilterConfig, FramesConfig, TemplateConfig
from ..schemas.frame_policy import load_frame_policy, policy_warning
from ..schemas.metrics import score_as_filter
from ..schemas.tables import TASK_TYPES
from .collate import prompt_messages

# Prompts per generate call, both backends. hf on two cores (bench/eval.py, demo preset): 64 answer
# 1.2-1.25x as fast as 16 in a process of their own, 128 are slower again; vLLM schedules the
# prompts of a call itself, the more the better.
BATCH_SIZE = 64
BLIND_GREY = 128  # the uninformative frames' pixel value
# the blind check warns when fewer answers than this share change without the video (closed-ended)
BLIND_CHANGED_MIN = 0.10


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
    blind: bool = False,
) -> pl.DataFrame:
    """One greedy response per prompt (``text``; null with ``error`` for an unusable video), from
    transformers' generate (``hf``) or a vLLM engine (``vllm``, faster on large splits);
    ``batch_size`` prompts per generate call (None: ``BATCH_SIZE``); ``enforce_eager``: a vLLM engine
    without torch.compile (it starts sooner, generates slower). ``blind``: also ``text_blind``, the
    answer with every frame replaced by a mid-grey one (the blind-video check)."""
    engine = _backend(backend, model_path, enforce_eager)
    batch_size = batch_size or BATCH_SIZE
    texts: dict[str, str | None] = {}
    blind_texts: dict[str, str | None] = {}
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
            batch.append(
                GenerationRequest(
                    p.row["prompt_id"],
                    messages,
                    f.array,
                    f.fps,
                    f.timestamps,
                    seeds=[0],
                    temperature=0.0,
                    max_tokens=max_tokens,
                )
            )
        if batch:
            for request, (completion,) in zip(batch, engine.generate(batch)):
                texts[request.prompt_id] = completion.text
        if batch and blind:
            grey = [replace(r, frames=np.full_like(r.frames, BLIND_GREY)) for r in batch]
            for request, (completion,) in zip(grey, engine.generate(grey)):
                blind_texts[request.prompt_id] = completion.text
        bar.update(len(prompts[start : start + batch_size]))
    bar.close()
    frame = pl.DataFrame(prompts, schema_overrides={"options": pl.List(pl.String)}).select(
        "prompt_id", "task_type", "question", "options", "answer", "video"
    )
    frame = frame.with_columns(
        text=pl.col("prompt_id").replace_strict(texts, default=None, return_dtype=pl.String),
        error=pl.col("prompt_id").replace_strict(errors, default=None, return_dtype=pl.String),
    )
    if blind:
        frame = frame.with_columns(
            text_blind=pl.col("prompt_id").replace_strict(blind_texts, default=None, return_dtype=pl.String)
        )
    return frame


def _backend(name: str, model_path: str | Path, enforce_eager: bool = False):
    use_gpu = torch.cuda.is_available()
    if name == "hf":
        # torch's own thread count: OMP_NUM_THREADS where set (the ablation runs two jobs at once, one
        # thread each), else one per core. Two threads on a core another job holds made generation
        # 10-25x slower (OpenMP's threads wait for each other at every operation).
        return HFBackend(str(model_path), num_threads=torch.get_num_threads(), use_gpu=use_gpu)
    if name == "vllm":
        from ..gen.backends import VLLMBackend

        return VLLMBackend(
            str(model_path),
            dtype="bfloat16" if use_gpu else "float32",
            max_model_len=None,
            use_gpu=use_gpu,  # None: the model's own
            enforce_eager=enforce_eager,
        )
    raise ValueError(f"unknown eval backend {name!r}; choose hf or vllm")


def evaluation_frames(
    model: Path, pipeline_frames: FramesConfig, pipeline: str, options: dict
) -> tuple[FramesConfig, str, str | None]:
    """The frame policy an evaluation of ``model`` uses: the one the checkpoint was trained with
    (``rmsd_frames.json``), else the pipeline's, with the given ``options`` (FramesConfig fields; None
    = not given) over it; where it came from; and a warning naming both when it differs from the
    checkpoint's."""
    trained = load_frame_policy(model)
    base, source = (
        (trained, "the checkpoint's training frames")
        if trained is not None
        else (pipeline_frames, f"pipeline {pipeline}'s")
    )
    given = {k: v for k, v in options.items() if v is not None}
    if given:
        flags = [
            f"--{'frame-mode' if k == 'mode' else k.replace('_', '-')} {v}" for k, v in given.items()
        ]  # as the CLI spells them
        source += f", with {', '.join(flags)}"
        if "fps" in given and "num_frames" not in given:
            given["num_frames"] = None
        elif "num_frames" in given and "fps" not in given:
            given["fps"] = None
    frames = FramesConfig.model_validate({**base.model_dump(), **given})
    return (
        frames,
        source,
        policy_warning(frames, trained, "this evaluation", f"the checkpoint's training frames ({model})"),
    )


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


def split_prompts(
    prompts_path: Path, split: str | None, limit: int | None = None, task_types: list[str] | None = None
) -> list[dict]:
    """The prompts of ``split`` (None or '': all) and of ``task_types`` (None: all), the first
    ``limit`` of them; none is an error naming the file (``load_prompts``, rmsd-gen's own selection)."""
    if not task_types:
        return load_prompts(prompts_path, split=split or None, limit=limit)[0]
    if unknown := [t for t in task_types if t not in TASK_TYPES]:
        raise ValueError(
            f"unknown task type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(TASK_TYPES)}"
        )
    rows = [r for r in load_prompts(prompts_path, split=split or None)[0] if r["task_type"] in task_types]
    if not rows:
        raise ValueError(
            f"{prompts_path}: no prompts of task type {', '.join(task_types)}"
            + (f" in split {split!r}" if split else "")
        )
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
    blind: bool = False,
    frames_source: str | None = None,
) -> dict:
    """Evaluate and write ``eval.json``, ``eval.md`` and ``responses.parquet`` to ``out``, scoring as the
    pipeline's filter does (``scoring``: its tolerance, ANLS threshold and tau per task type).
    ``task_types``: only questions of these (None: all); ``batch_size``: prompts per generate call
    (None: ``BATCH_SIZE``), which never changes an answer; ``blind``: the blind-video check too;
    ``frames_source``: where ``frames`` came from, recorded in eval.json."""
    started = time.time()
    prompts_path = Path(prompts_path)
    rows = split_prompts(prompts_path, split, limit, task_types)
    answered = answer_prompts(
        model_path,
        rows,
        prompts_path.parent,
        frames or FramesConfig(),
        templates,
        max_tokens=max_tokens,
        batch_size=batch_size,
        progress=progress,
        backend=backend,
        enforce_eager=enforce_eager,
        blind=blind,
    )
    about = {
        "model": str(model_path),
        "prompts": str(prompts_path),
        "split": split,
        "task_types": list(task_types) if task_types else None,
        "backend": backend,
        "frames": (frames or FramesConfig()).model_dump(),
        "frames_source": frames_source,
    }
    return write_evaluation(answered, out, scoring, about, started, "greedy decoding")


def write_evaluation(
    answered: pl.DataFrame, out: str | Path, scoring: FilterConfig | None, about: dict, started: float, how: str
) -> dict:
    """Score ``answered`` (prompts with ``text``) as the filter does and write ``eval.json``, ``eval.md``
    and ``responses.parquet`` to ``out``; ``about`` (model, prompts, split, ...) heads eval.json."""
    out = Path(out)
    scoring = scoring or FilterConfig()
    scored = score_as_filter(answered, scoring)
    table = accuracy_table(scored)
    columns = ["prompt_id", "task_type", "answer", "text", "error", "normalised", "valid", "correct", "kept"]
    check = None
    if "text_blind" in answered.columns:
        blind = score_as_filter(answered, scoring, text="text_blind").select("normalised", "correct")
        scored = scored.with_columns(
            text_blind=answered["text_blind"], normalised_blind=blind["normalised"], correct_blind=blind["correct"]
        )
        columns += ["text_blind", "normalised_blind", "correct_blind"]
        check = blind_check(scored)
    out.mkdir(parents=True, exist_ok=True)
    scored.select(columns).write_parquet(out / "responses.parquet")
    result = {
        **about,
        "scoring": scoring.model_dump(include={"tolerance", "anls_threshold", "tau", "tau_by_task"}),
        "questions": answered.height,
        "seconds": round(time.time() - started, 2),
        "by_task": table.to_dicts(),
        "blind": check,
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    kinds = f" (task types {', '.join(about['task_types'])})" if about.get("task_types") else ""
    lines = [
        f"# Evaluation of `{about['model']}`",
        "",
        f"{answered.height} questions{kinds} of split `{about['split']}` in `{about['prompts']}`, {how}.",
        "",
        "| task type | questions | accuracy | format valid | kept by the filter (q >= tau) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table.iter_rows(named=True):
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        lines.append(
            f"| {r['task_type']} | {r['questions']} | {acc} | {100 * (r['format_valid'] or 0):.1f}% | "
            f"{100 * (r['kept'] or 0):.1f}% |"
        )
    lines += ["", blind_summary(check)]
    if check is not None:
        lines += [
            "",
            "| task type | accuracy with the video | without (grey frames) | answers that change |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['task_type']} | {_percent(r['accuracy'])} | {_percent(r['accuracy_blind'])} | "
            f"{_percent(r['changed'])} |"
            for r in check["by_task"]
        ]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    return result


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def blind_check(scored: pl.DataFrame) -> dict:
    """The blind-video check of scored answers with (``normalised``, ``correct``) and without the video
    (``normalised_blind``, ``correct_blind``): per task type and over the closed-ended questions,
    both accuracies and the share of answered questions whose extracted answer changes; a warning
    when under ``BLIND_CHANGED_MIN`` of the closed-ended answers change."""
    answered = scored.filter(pl.col("error").is_null())
    changed = pl.col("normalised").ne_missing(pl.col("normalised_blind")).mean().alias("changed")
    accuracies = (pl.col("correct").mean().alias("accuracy"), pl.col("correct_blind").mean().alias("accuracy_blind"))
    per_task = answered.group_by("task_type").agg(pl.len().alias("questions"), *accuracies, changed).sort("task_type")
    closed = answered.filter(pl.col("correct").is_not_null())
    overall = closed.select(
        pl.lit("(closed-ended)").alias("task_type"), pl.len().alias("questions"), *accuracies, changed
    )
    summary = overall.row(0, named=True)
    warning = None
    if summary["questions"] and summary["changed"] < BLIND_CHANGED_MIN:
        warning = (
            f"the answers barely depend on the video: {100 * summary['changed']:.1f}% of closed-ended answers change "
            "when every frame "
            f"is grey (under {100 * BLIND_CHANGED_MIN:.0f}%); accuracy {_percent(summary['accuracy'])} with the video, "
            f"{_percent(summary['accuracy_blind'])} without"
        )
    return {
        "frames": f"every pixel {BLIND_GREY} (mid-grey), same frame count, size and timestamps",
        "changed_min": BLIND_CHANGED_MIN,
        "closed_ended": {k: summary[k] for k in ("questions", "accuracy", "accuracy_blind", "changed")},
        "by_task": pl.concat([per_task, overall], how="vertical_relaxed").to_dicts(),
        "warning": warning,
    }


def blind_summary(check: dict | None) -> str:
    """The evaluation summary's line on the blind-video check."""
    if check is None:
        return "Blind-video check: not run (`rmsd-train eval --blind` answers every question again with grey frames)."
    c = check["closed_ended"]
    line = (
        f"Blind-video check: closed-ended accuracy {_percent(c['accuracy'])} with the video, "
        f"{_percent(c['accuracy_blind'])} with grey frames; "
        f"{_percent(c['changed'])} of the answers change."
    )
    return line + (f" **Warning: {check['warning']}.**" if check["warning"] else "")
