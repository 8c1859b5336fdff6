"""The teacher-reliability report: how good, how consistent and how well-formatted each teacher was,
per task type, in the same statistics the paper reports (METHOD.md).

Statistics are accumulated as sums per group of shards (``partial_stats``) and combined at the
end (``finish_stats``), so the report covers a corpus of any size in bounded memory. Every grouping
keeps its groups in order of first appearance: floats are summed in an order that does not depend
on hashing (Polars' group order changes from call to call), so the report is the same bits each run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

POOL, ALL_TASKS = "(pool)", "(all)"
BINS = 10
PAPER = {
    "mean_quality": 0.75,
    "sigma_quality": 0.22,
    "intra_sigma": "0.07 (multiple choice) .. 0.15 (visual QA)",
    "format_violation_rate": "0.01 overall, 0.10 temporal",
}
SUM_COLUMNS = [
    "questions",
    "sum_q",
    "sumsq_q",
    "sum_intra_sigma",
    "unanimous",
    "samples",
    "outer_violations",
    "task_violations",
    "sum_agreement",
    "kept",
    "sum_correct",
    "labelled",
    *(f"hist_{i}" for i in range(BINS)),
]


# The aggregations below are built once (expressions are immutable): building them for every shard
# group costs more Python than the groupings' own calls.
_COUNTS = ("samples", "outer_violations", "task_violations", "sum_agreement", "kept", "sum_correct", "labelled")
_ADDITIVE = [
    "samples",
    "sum_q",
    "sumsq_q",
    "outer_violations",
    "task_violations",
    "sum_agreement",
    "kept",
    "sum_correct",
    "labelled",
]
_QUESTION_SUMS = (
    pl.col("_row", "_prompt").first(),
    pl.len().alias("samples"),
    pl.col("quality").sum().alias("sum_q"),
    (pl.col("quality") ** 2).sum().alias("sumsq_q"),
    (pl.col("agreement").min() == 1).alias("unanimous"),  # every sample gave the same answer
    pl.col("agreement_pool").min().alias("min_agreement_pool"),
    (~pl.col("format_outer_ok")).sum().alias("outer_violations"),
    (~pl.col("format_task_ok")).sum().alias("task_violations"),
    pl.col("agreement").sum().alias("sum_agreement"),
    pl.col("kept").sum().alias("kept"),
    pl.col("correct").sum().alias("sum_correct"),
    pl.col("correct").is_not_null().sum().alias("labelled"),
)
_POOLED = (
    pl.col("task_type").first(),
    pl.lit(POOL).alias("teacher"),
    *(pl.col(c).sum() for c in _ADDITIVE),
    (pl.col("min_agreement_pool").min() == 1).alias("unanimous"),
)
_Q = pl.col("_q")  # a question's quality, computed once (each aggregation would recompute it)
_PER_QUESTION = {
    "_q2": _Q**2,
    "_intra": (pl.col("sumsq_q") / pl.col("samples") - _Q**2).clip(lower_bound=0).sqrt(),
    "_bin": (_Q * BINS).floor().clip(0, BINS - 1).cast(pl.Int8),
}
_BY_BIN = (
    pl.len().alias("questions"),
    _Q.sum().alias("sum_q"),
    pl.col("_q2").sum().alias("sumsq_q"),
    pl.col("_intra").sum().alias("sum_intra_sigma"),
    pl.col("unanimous").sum().alias("unanimous"),
    *(pl.col(c).sum().alias(c) for c in _COUNTS),
)
_OVER_BINS = (
    *(pl.col(c).sum() for c in ("questions", "sum_q", "sumsq_q", "sum_intra_sigma", "unanimous", *_COUNTS)),
    *(pl.col("questions").filter(pl.col("_bin") == i).sum().alias(f"hist_{i}") for i in range(BINS)),
)
_AS_FLOATS = tuple(pl.col(c).cast(pl.Float64) for c in SUM_COLUMNS)
_ALL_TASKS = (pl.lit(ALL_TASKS).alias("task_type"), *(pl.col(c).sum() for c in SUM_COLUMNS))


def _question_sums(scored: pl.DataFrame) -> pl.DataFrame:
    """Sums per question and teacher over the answered samples: one pass over the rows, grouped on
    the scoring's integer key ``_prompt_teacher``; a question's task type is its first sample's."""
    # eager: Polars' lazy engine takes half as long again for this aggregation
    answered = scored.with_row_index("_row").filter(pl.col("error").is_null())
    questions = answered.group_by("_prompt_teacher", maintain_order=True).agg(*_QUESTION_SUMS)
    # the task type and teacher of each question's first row, gathered once per question: taking
    # them in the aggregation (first()) costs as much as all the sums together
    return questions.hstack(scored.select(pl.col("task_type", "teacher").gather(questions["_row"])))


def _per_task(questions: pl.DataFrame) -> pl.DataFrame:
    """Sums per (task type, teacher) of per-question figures: every statistic's numerator is a
    sum over questions or samples, so partial sums add up across shard groups (and task types).
    Summed per histogram bin first, then over the bins: the histogram is then a choice among a
    few rows rather than ten counts over every question (0.65x the time of one grouping)."""
    questions = questions.with_columns(_q=pl.col("sum_q") / pl.col("samples")).with_columns(**_PER_QUESTION)
    by_bin = questions.group_by("task_type", "teacher", "_bin", maintain_order=True).agg(*_BY_BIN)
    return by_bin.group_by("task_type", "teacher", maintain_order=True).agg(*_OVER_BINS).with_columns(*_AS_FLOATS)


def partial_stats(scored: pl.DataFrame) -> pl.DataFrame:
    """Sums per (task type, teacher), with pooled teachers and all tasks as extra rows, of
    ``score_samples(..., keys=True)`` rows (its group keys ``_prompt`` and ``_prompt_teacher``)."""
    questions = _question_sums(scored)
    # pooling teachers re-aggregates each question's sums over its teachers
    pooled = questions.group_by("_prompt", maintain_order=True).agg(*_POOLED)
    # grouped on the task type and teacher as the scoring's categoricals (integers) where it gives
    # them; the sums as strings (partial sums of groups with categories of their own are combined)
    columns = ["task_type", "teacher", "unanimous", *_ADDITIVE]
    per_task = pl.concat(
        [
            _per_task(q.select(columns)).with_columns(pl.col("task_type", "teacher").cast(pl.String))
            for q in (questions, pooled)
        ]
    )
    all_tasks = per_task.group_by("teacher", maintain_order=True).agg(*_ALL_TASKS)
    return pl.concat([per_task, all_tasks.select(per_task.columns)])


def finish_stats(partials: list[pl.DataFrame]) -> pl.DataFrame:
    sums = pl.concat(partials).group_by("task_type", "teacher").agg(pl.col(c).sum() for c in SUM_COLUMNS)
    mean = pl.col("sum_q") / pl.col("questions")
    return sums.with_columns(
        mean_quality=mean,
        sigma_quality=(pl.col("sumsq_q") / pl.col("questions") - mean**2).clip(lower_bound=0).sqrt(),
        intra_sigma=pl.col("sum_intra_sigma") / pl.col("questions"),
        outer_violation_rate=pl.col("outer_violations") / pl.col("samples"),
        task_violation_rate=pl.col("task_violations") / pl.col("samples"),
        agreement_rate=pl.col("sum_agreement") / pl.col("samples"),
        unanimous_rate=pl.col("unanimous") / pl.col("questions"),
        kept_share=pl.col("kept") / pl.col("samples"),
        accuracy=pl.when(pl.col("labelled") > 0).then(pl.col("sum_correct") / pl.col("labelled")),
    ).sort("task_type", "teacher")


STAT_COLUMNS = [
    "questions",
    "samples",
    "mean_quality",
    "sigma_quality",
    "intra_sigma",
    "outer_violation_rate",
    "task_violation_rate",
    "agreement_rate",
    "unanimous_rate",
    "kept_share",
    "accuracy",
]


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return round(value, 6) if isinstance(value, float) else value


def write_report(stats: pl.DataFrame, dropped: pl.DataFrame, out: Path, header: dict) -> dict[str, Path]:
    """report.json, report.md and PNG plots in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "task_type": r["task_type"],
            "teacher": r["teacher"],
            **{c: _clean(r[c]) for c in STAT_COLUMNS},
            "quality_histogram": [int(r[f"hist_{i}"]) for i in range(BINS)],
        }
        for r in stats.iter_rows(named=True)
    ]
    reasons = {r["reason"]: r["len"] for r in dropped.group_by("reason").len().sort("reason").iter_rows(named=True)}
    report = {
        **header,
        "paper": PAPER,
        "dropped_prompts": {"total": dropped.height, "by_reason": reasons},
        "stats": rows,
    }
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text(_markdown(report))
    paths.update(_plots(stats, out))
    return paths


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _markdown(report: dict) -> str:
    lines = [
        "# Teacher reliability",
        "",
        f"Samples: `{report['samples_dir']}` · tau: {report['tau']} · {report['counts']['samples']} samples, "
        f"{report['counts']['kept']} kept ({_pct(report['counts']['kept'] / max(report['counts']['samples'], 1))}), "
        f"{report['dropped_prompts']['total']} prompts without a kept sample.",
        "",
        "Quality is per question (mean over its K samples); sigma across questions; intra sigma is the",
        "mean over questions of the sigma of quality over the K samples.",
        "",
        "| task type | teacher | questions | mean q | sigma q | intra sigma | outer viol. | task viol. | agreement | "
        "unanimous | kept | accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["stats"]:
        lines.append(
            f"| {r['task_type']} | {r['teacher']} | {r['questions']:.0f} | {_num(r['mean_quality'])} | "
            f"{_num(r['sigma_quality'])} | "
            f"{_num(r['intra_sigma'])} | {_pct(r['outer_violation_rate'])} | {_pct(r['task_violation_rate'])} | "
            f"{_num(r['agreement_rate'])} | {_pct(r['unanimous_rate'])} | {_pct(r['kept_share'])} | "
            f"{_pct(r['accuracy'])} |"
        )
    paper = report["paper"]
    lines += [
        "",
        f"The paper's teacher (Qwen3-VL-235B): mean quality {paper['mean_quality']}, sigma {paper['sigma_quality']} "
        "across "
        f"questions; intra-question sigma {paper['intra_sigma']}; format violations {paper['format_violation_rate']}.",
        "",
        "Prompts without a kept sample: "
        + (", ".join(f"{k} {v}" for k, v in report["dropped_prompts"]["by_reason"].items()) or "none")
        + ".",
        "",
        "![quality](quality_hist.png) ![format](format_violations.png) ![sigma](sigma.png)",
        "",
    ]
    return "\n".join(lines)


def load_plotting() -> None:
    """Import matplotlib with its file backend: a third of a second, best spent while groups are
    scored rather than after them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _plots(stats: pl.DataFrame, out: Path) -> dict[str, Path]:
    load_plotting()
    import matplotlib.pyplot as plt

    pooled = stats.filter((pl.col("teacher") == POOL) & (pl.col("task_type") != ALL_TASKS))
    tasks = pooled["task_type"].to_list()
    paths = {}

    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(2.6 * max(len(tasks), 1), 2.6), sharey=True, squeeze=False)
    for ax, row in zip(axes[0], pooled.iter_rows(named=True)):
        ax.bar(
            [(i + 0.5) / BINS for i in range(BINS)],
            [row[f"hist_{i}"] for i in range(BINS)],
            width=1 / BINS,
            color="#4c72b0",
        )
        ax.set_title(row["task_type"], fontsize=8)
        ax.set_xlabel("question quality", fontsize=8)
    axes[0][0].set_ylabel("questions")
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.2, top=0.88, wspace=0.08
    )  # fixed margins: tight_layout draws the figure twice
    paths["quality_hist"] = out / "quality_hist.png"
    fig.savefig(paths["quality_hist"], dpi=90)
    plt.close(fig)

    per_teacher = stats.filter((pl.col("teacher") != POOL) & (pl.col("task_type") != ALL_TASKS))
    teachers = sorted(set(per_teacher["teacher"]))
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / max(2 * len(teachers), 1)
    for j, teacher in enumerate(teachers):
        rows = {r["task_type"]: r for r in per_teacher.filter(pl.col("teacher") == teacher).iter_rows(named=True)}
        for k, (column, label) in enumerate((("outer_violation_rate", "outer"), ("task_violation_rate", "task"))):
            xs = [i + (2 * j + k) * width for i in range(len(tasks))]
            ax.bar(xs, [rows.get(t, {}).get(column) or 0 for t in tasks], width=width, label=f"{teacher} {label}")
    ax.axhline(0.01, color="grey", ls="--", lw=0.8, label="paper overall 1%")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, fontsize=7, rotation=10)
    ax.set_ylabel("format violation rate")
    ax.legend(fontsize=6)
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.16, top=0.96)
    paths["format_violations"] = out / "format_violations.png"
    fig.savefig(paths["format_violations"], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    xs = range(len(tasks))
    ax.bar(
        [x - 0.2 for x in xs], pooled["sigma_quality"].fill_null(0).to_list(), width=0.4, label="sigma across questions"
    )
    ax.bar([x + 0.2 for x in xs], pooled["intra_sigma"].fill_null(0).to_list(), width=0.4, label="intra-question sigma")
    ax.axhline(0.22, color="C0", ls="--", lw=0.8, label="paper across 0.22")
    ax.axhspan(0.07, 0.15, color="C1", alpha=0.15, label="paper intra 0.07-0.15")
    ax.set_xticks(list(xs), tasks, fontsize=7, rotation=10)
    ax.legend(fontsize=6)
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.16, top=0.96)
    paths["sigma"] = out / "sigma.png"
    fig.savefig(paths["sigma"], dpi=90)
    plt.close(fig)
    return paths
