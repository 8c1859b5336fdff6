"""The prior baseline: what a model that never looks at the video scores.

For each question template (its task type and exact question text) it answers the one constant that
scores best on the training split, with the filter's own metric: the most common letter or count,
the ``[start, end]`` with the highest mean IoU against the training intervals, and so on. A template
the training split never asked falls back to its task type's best constant. A student that does not
beat this has learned the questions' text priors, not the video.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from ..schemas.config import FilterConfig
from ..schemas.grammar import wrap_response
from ..schemas.metrics import score_as_filter
from .evaluate import split_prompts, write_evaluation

TEMPLATE = ["task_type", "question"]
NO_VIDEO = "the most likely answer to this question, without the video"
CANDIDATES = 32  # the most common training answers of a template tried as its constant


def _best_constants(train: pl.DataFrame, keys: list[str], scoring: FilterConfig) -> pl.DataFrame:
    """Per group of ``keys``: the candidate answer with the highest mean metric over the group's
    training answers (ties: the more common candidate)."""
    counts = train.group_by([*keys, "answer"]).agg(pl.len().alias("n"), pl.col("options").first())
    candidates = counts.sort("n", descending=True).group_by(keys, maintain_order=True).head(CANDIDATES)
    pairs = candidates.rename({"answer": "candidate"}).join(train.select(*keys, "answer"), on=keys)
    scored = score_as_filter(
        pairs.with_columns(
            text=pl.col("candidate").map_elements(lambda a: wrap_response(NO_VIDEO, a), return_dtype=pl.String)
        ),
        scoring,
    )
    means = scored.group_by([*keys, "candidate"]).agg(pl.col("correct").mean().alias("score"), pl.col("n").first())
    return (
        means.sort("score", "n", "candidate", descending=[True, True, False])
        .group_by(keys, maintain_order=True)
        .first()
    )


def fit_prior(train: pl.DataFrame, scoring: FilterConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Best constants per template and per task type, from training prompts with ground truth
    (closed-ended only: open-ended answers have no metric)."""
    scoring = scoring or FilterConfig()
    train = train.filter(pl.col("answer").is_not_null() & (pl.col("task_type") != "open_ended"))
    if train.is_empty():
        raise ValueError("no closed-ended training prompts with an answer to fit the prior on")
    return _best_constants(train, TEMPLATE, scoring), _best_constants(train, ["task_type"], scoring)


def prior_answers(prompts: pl.DataFrame, by_template: pl.DataFrame, by_task: pl.DataFrame) -> pl.DataFrame:
    """``prompts`` with ``text``: the template's constant, else the task type's (null where neither exists)."""
    answered = prompts.join(
        by_template.select(*TEMPLATE, pl.col("candidate").alias("_template")),
        on=TEMPLATE,
        how="left",
        maintain_order="left",
    )
    answered = answered.join(
        by_task.select("task_type", pl.col("candidate").alias("_task")),
        on="task_type",
        how="left",
        maintain_order="left",
    )
    constant = pl.coalesce("_template", "_task")
    return answered.with_columns(
        text=constant.map_elements(lambda answer: wrap_response(NO_VIDEO, answer), return_dtype=pl.String),
        error=pl.lit(None, pl.String),
    ).drop("_template", "_task")


def evaluate_prior(
    prompts_path: str | Path,
    out: str | Path,
    split: str | None = "test",
    fit_split: str = "train",
    scoring: FilterConfig | None = None,
    fit_prompts: str | Path | None = None,
) -> dict:
    """Fit the prior on ``fit_split`` (of ``fit_prompts``, default the same file) and evaluate it on
    ``split`` like ``rmsd-train eval`` does."""
    started = time.time()
    prompts_path = Path(prompts_path)
    fit_path = Path(fit_prompts) if fit_prompts else prompts_path
    columns = ["prompt_id", "task_type", "question", "options", "answer", "video"]
    frame = lambda rows: pl.DataFrame(rows, schema_overrides={"options": pl.List(pl.String)}).select(columns)  # noqa: E731
    by_template, by_task = fit_prior(frame(split_prompts(fit_path, fit_split)), scoring)
    answered = prior_answers(frame(split_prompts(prompts_path, split)), by_template, by_task)
    fitted_on = f"split {fit_split!r}" + (f" of {fit_path}" if fit_prompts else "")
    about = {
        "model": f"prior (best constant answer per question template of {fitted_on}, no video)",
        "prompts": str(prompts_path),
        "split": split,
        "backend": "prior",
    }
    return write_evaluation(
        answered, out, scoring, about, started, f"one constant answer per question template, fit on split `{fit_split}`"
    )


__all__ = ["evaluate_prior", "fit_prior", "prior_answers"]
