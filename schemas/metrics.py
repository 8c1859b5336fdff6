"""Task metrics and sample quality, column-wise: the scoring rmsd-filter applies to every teacher
sample and rmsd-train applies to rollouts (rewards) and to evaluation.

=================== ===================================================================
multiple_choice     exact match of the option letter
numerical           epsilon-accuracy: |pred - gt| <= tolerance * |gt| (|pred| <= tolerance if gt = 0)
temporal_grounding  temporal IoU of [start, end]
spatial_grounding   box IoU
ocr                 ANLS: 1 - normalised edit distance, 0 below the threshold (default 0.5)
open_ended          none (null)
=================== ===================================================================

``quality`` q = valid x metric, valid = outer_ok and task_ok (METHOD.md). Open-ended samples,
and closed-ended ones without ground truth, have no metric: their quality is validity alone (the
paper's uniform weighting of valid samples).
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cpdist

from .grammar import parse_answers, parse_responses

DEFAULT_TOLERANCE = 0.05
DEFAULT_ANLS_THRESHOLD = 0.5
SCORE_COLUMNS = ("valid", "correct", "quality")


def _iou_1d(s1: pl.Expr, e1: pl.Expr, s2: pl.Expr, e2: pl.Expr) -> pl.Expr:
    inter = (pl.min_horizontal(e1, e2) - pl.max_horizontal(s1, s2)).clip(lower_bound=0)
    union = pl.max_horizontal(e1, e2) - pl.min_horizontal(s1, s2)
    return pl.when(union > 0).then(inter / union).otherwise(((s1 == s2) & (e1 == e2)).cast(pl.Float64))


def _box_iou() -> pl.Expr:
    p = [pl.col(f"v{i}") for i in range(4)]
    g = [pl.col(f"gt_v{i}") for i in range(4)]
    w = (pl.min_horizontal(p[2], g[2]) - pl.max_horizontal(p[0], g[0])).clip(lower_bound=0)
    h = (pl.min_horizontal(p[3], g[3]) - pl.max_horizontal(p[1], g[1])).clip(lower_bound=0)
    inter = w * h
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return (
        pl.when(union > 0)
        .then(inter / union)
        .otherwise((pl.all_horizontal([a == b for a, b in zip(p, g)])).cast(pl.Float64))
    )


def _numeric(tolerance: float) -> pl.Expr:
    pred, gt = pl.col("v0"), pl.col("gt_v0")
    return (
        pl.when(gt == 0)
        .then(pred.abs() <= tolerance)
        .otherwise((pred - gt).abs() <= tolerance * gt.abs())
        .cast(pl.Float64)
    )


@functools.cache  # expressions are immutable: built once per tolerance, not per batch
def _metrics(tolerance: float) -> dict[str, tuple[list[str], pl.Expr]]:
    """The metric of each task type with one (OCR: see ``anls``), and the columns it reads."""
    numbers = lambda k: [f"{p}v{i}" for p in ("", "gt_") for i in range(k)]  # noqa: E731
    return {
        "multiple_choice": (
            ["normalised", "gt_normalised"],
            (pl.col("normalised") == pl.col("gt_normalised")).cast(pl.Float64),
        ),
        "numerical": (numbers(1), _numeric(tolerance)),
        "temporal_grounding": (numbers(2), _iou_1d(pl.col("v0"), pl.col("v1"), pl.col("gt_v0"), pl.col("gt_v1"))),
        "spatial_grounding": (numbers(4), _box_iou()),
    }


def anls(
    predictions: list[str | None], truths: list[str | None], threshold: float = DEFAULT_ANLS_THRESHOLD
) -> np.ndarray:
    """ANLS of aligned pairs (rapidfuzz, C++); a missing prediction scores 0."""
    similarity = cpdist(
        [p or "" for p in predictions], [t or "" for t in truths], scorer=Levenshtein.normalized_similarity, workers=1
    )
    similarity = np.where(similarity >= threshold, similarity, 0.0)
    return np.where([p is None for p in predictions], 0.0, similarity)


# _correct's expressions, built once: the label's and answer's columns, the metric's base (null
# without a label, 0 without an answer) and each task type's answered rows
_HAS_GT = pl.col("gt_normalised").is_not_null() & (pl.col("task_type") != "open_ended")
_ANSWERED = _HAS_GT & pl.col("normalised").is_not_null()
_NARROW = (
    pl.col("task_type", "normalised", "gt_normalised", *(f"{p}v{i}" for p in ("", "gt_") for i in range(4))),
    pl.when(_HAS_GT).then(pl.when(_ANSWERED).then(pl.lit(None, pl.Float64)).otherwise(0.0)).alias("_base"),
    _ANSWERED.alias("_answered"),
)
# (the task types with a metric: _metrics' own, whatever the tolerance, and OCR's ANLS)
_ROWS_OF = {
    task: (pl.col("_answered") & (pl.col("task_type") == task)).arg_true()
    for task in (*_metrics(DEFAULT_TOLERANCE), "ocr")
}


def _correct(frame: pl.DataFrame, tolerance: float, anls_threshold: float) -> pl.Series:
    """``correct``: null without a label, 0 without an answer, else the task's metric, computed on
    that task's rows only (a when/then chain over task types would compute every metric on every row)."""
    narrow = frame.select(*_NARROW)
    correct = narrow.get_column("_base").alias("correct")
    for task, (reads, metric) in _metrics(tolerance).items():
        rows = narrow.select(_ROWS_OF[task]).to_series()
        if rows.len():  # only the columns the metric reads are gathered
            correct.scatter(rows, narrow.select(pl.col(reads).gather(rows)).select(metric).to_series())
    # ANLS: an exact match has similarity 1 without computing it; only the others go through Python lists
    rows = narrow.select(_ROWS_OF["ocr"]).to_series()
    if rows.len():
        pairs = narrow.select(pl.col("normalised", "gt_normalised").gather(rows))
        values = np.full(rows.len(), 1.0 if 1.0 >= anls_threshold else 0.0)
        other = (pairs["normalised"] != pairs["gt_normalised"]).arg_true().to_numpy()
        if len(other):
            values[other] = anls(
                pairs["normalised"].gather(other).to_list(),
                pairs["gt_normalised"].gather(other).to_list(),
                anls_threshold,
            )
        correct.scatter(rows, values)
    return correct


def score_parsed(
    frame: pl.DataFrame, tolerance: float = DEFAULT_TOLERANCE, anls_threshold: float = DEFAULT_ANLS_THRESHOLD
) -> pl.DataFrame:
    """Add ``valid``, ``correct`` and ``quality`` to a frame holding parsed responses and ``gt_`` columns."""
    frame = frame.with_columns(
        valid=(pl.col("outer_ok") & pl.col("task_ok")).fill_null(False),
        correct=_correct(frame, tolerance, anls_threshold),
    )
    return frame.with_columns(
        quality=pl.when(pl.col("correct").is_not_null())
        .then(pl.col("valid").cast(pl.Float64) * pl.col("correct"))
        .otherwise(pl.col("valid").cast(pl.Float64))
    )


def taus(tau: float, tau_by_task: tuple[tuple[str, float], ...] = ()) -> pl.Expr:
    """Each row's tau (a sample is kept when its quality is at least this): the default, where no
    task type has its own (a literal: mapping every row's task type, even to one value, costs 0.03 us
    per row), else a choice among the task types that do."""
    overrides = {task: value for task, value in tau_by_task if value != tau}
    if not overrides:
        return pl.lit(tau, pl.Float64)
    chain = pl
    for task, value in overrides.items():
        chain = chain.when(pl.col("task_type") == task).then(pl.lit(value, pl.Float64))
    return chain.otherwise(pl.lit(tau, pl.Float64))


def score_responses(
    frame: pl.DataFrame,
    text: str = "text",
    answer: str = "answer",
    tolerance: float = DEFAULT_TOLERANCE,
    anls_threshold: float = DEFAULT_ANLS_THRESHOLD,
) -> pl.DataFrame:
    """Parse responses and ground truth, then score: the whole stage-2 scoring of a batch.

    ``frame`` needs ``text``, ``answer``, ``task_type`` and ``options``. Adds the grammar's columns
    (``answer_text``, ``outer_ok``, ``truncated``, ``task_ok``, ``normalised``, ``display``, ``v0..v3``),
    the ground truth's (``gt_`` prefixed), and ``valid``, ``correct``, ``quality``."""
    frame = parse_responses(frame, text)
    frame = parse_answers(frame, answer, prefix="gt_").drop("gt_display", "gt_task_ok")
    return score_parsed(frame, tolerance, anls_threshold)


def score_as_filter(frame: pl.DataFrame, settings, text: str = "text", answer: str = "answer") -> pl.DataFrame:
    """``score_responses`` with a pipeline's filter settings (``schemas.config.FilterConfig``: tolerance,
    ANLS threshold, tau per task type), plus ``kept``: whether rmsd-filter would keep the response
    (q >= its task type's tau). The filter, the RL content reward and evaluation score alike through it."""
    scored = score_responses(frame, text, answer, settings.tolerance, settings.anls_threshold)
    return scored.with_columns(
        kept=pl.col("quality") >= taus(settings.tau, tuple(sorted(settings.tau_by_task.items())))
    )


__all__ = ["SCORE_COLUMNS", "anls", "score_as_filter", "score_parsed", "score_responses", "taus"]
