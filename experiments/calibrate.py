"""Choose a teacher's sampling temperature from rmsd-filter's own reliability report.

R-MSD is about a teacher that is mostly right when it answers greedily and unreliable when sampled:
the paper's Qwen3-VL-235B has mean sample quality ~0.75, an intra-question sigma of .07-.15 and a
few per cent of format violations. This sweep samples the teacher K times per question at each
temperature on a validation split, scores every corpus with rmsd-filter, and picks

    among the temperatures whose format-violation rate (outer or task grammar) is at most
    --max-violations, the one whose mean quality is closest to --target (ties: the lower T),

on the task types given (default: every closed-ended one). Students are never involved: the choice
is made from the teacher's samples of questions no student trains or is tested on. Run it on your
own teacher with your own pipeline:

    .venv/bin/python experiments/calibrate.py --pipeline demo --prompts runs/demo/validation/prompts.parquet \\
        --split validation --out runs/calibration [--temperatures 0.7 1.0 1.3 1.6 2.0] [--task-types ...]

It writes OUT/calibration.json (every temperature's figures and the choice) and OUT/calibration.md;
set the chosen temperature in your pipeline's `sampling.temperature`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPERATURES = (0.7, 1.0, 1.3, 1.6, 2.0)
CLOSED = ("multiple_choice", "numerical", "temporal_grounding", "spatial_grounding", "ocr")


def _run(cmd: list, log: Path, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(
            [str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
    if done.returncode:
        raise RuntimeError(f"failed ({done.returncode}): {' '.join(map(str, cmd))}; log {log}")


def pipelines_with(pipeline: str, config: Path | None, out: Path, **sampling) -> Path:
    """A pipelines file holding ``pipeline`` alone, with its sampling settings changed."""
    source = yaml.safe_load((config or ROOT / "pipelines.yaml").read_text())
    chosen = source["pipelines"][pipeline]
    chosen["sampling"].update(sampling)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump({"version": source.get("version", 1), "pipelines": {pipeline: chosen}}))
    return out


def pooled(report: dict, task_types: list[str], scored: pl.DataFrame) -> dict:
    """The report's per-task figures of the pooled teachers, combined over ``task_types``: means
    weighted by questions (quality, sigma) or by samples (accuracy); the violation rate, the share
    of samples breaking the outer or the task grammar (or both), from rmsd-filter's scored rows."""
    rows = [r for r in report["stats"] if r["task_type"] in task_types and r["teacher"] == "(pool)"] or [
        r for r in report["stats"] if r["task_type"] in task_types
    ]
    questions, samples = sum(r["questions"] for r in rows), sum(r["samples"] for r in rows)
    by_q = lambda key: sum(r["questions"] * (r[key] or 0) for r in rows) / questions  # noqa: E731
    by_s = lambda key: sum(r["samples"] * (r[key] or 0) for r in rows) / samples  # noqa: E731
    return {
        "questions": questions,
        "samples": samples,
        "mean_quality": by_q("mean_quality"),
        "sigma_quality": by_q("sigma_quality"),
        "intra_sigma": by_q("intra_sigma"),
        "violation_rate": scored.filter(pl.col("task_type").is_in(task_types))
        .select(1 - (pl.col("format_outer_ok") & pl.col("format_task_ok")).mean())
        .item(),
        "accuracy": by_s("accuracy"),
        "by_task": {
            r["task_type"]: {
                k: r[k]
                for k in ("mean_quality", "intra_sigma", "outer_violation_rate", "task_violation_rate", "accuracy")
            }
            for r in rows
        },
    }


def choose(figures: dict[float, dict], target: float, max_violations: float) -> float:
    """Rule 2 of docs/benchmark.md: closest mean quality to ``target`` among the temperatures within
    the violation limit (all of them if none is), ties to the lower temperature."""
    allowed = [t for t, f in figures.items() if f["violation_rate"] <= max_violations] or list(figures)
    return min(sorted(allowed), key=lambda t: abs(figures[t]["mean_quality"] - target))


def calibrate(
    pipeline: str,
    prompts: Path,
    split: str | None,
    out: Path,
    temperatures=TEMPERATURES,
    task_types=CLOSED,
    target: float = 0.75,
    max_violations: float = 0.10,
    config: Path | None = None,
    env: dict | None = None,
) -> dict:
    figures = {}
    for t in temperatures:
        folder = out / f"T{t}"
        pipelines = pipelines_with(pipeline, config, folder / "pipelines.yaml", temperature=float(t))
        split_args = ["--split", split] if split else []
        if not (folder / "filtered" / "_manifest.json").exists():
            _run(
                [
                    BIN / "rmsd-gen",
                    "run",
                    "--pipeline",
                    pipeline,
                    "--config",
                    pipelines,
                    "--prompts",
                    prompts,
                    *split_args,
                    "--out",
                    folder / "samples",
                    "--no-progress",
                ],
                folder / "gen.log",
                env,
            )
            _run(
                [
                    BIN / "rmsd-filter",
                    "run",
                    "--pipeline",
                    pipeline,
                    "--config",
                    pipelines,
                    "--samples",
                    folder / "samples",
                    "--out",
                    folder / "filtered",
                    "--no-progress",
                ],
                folder / "filter.log",
                env,
            )
        figures[t] = pooled(
            json.loads((folder / "filtered" / "report" / "report.json").read_text()),
            list(task_types),
            pl.read_parquet(
                folder / "filtered" / "scored" / "*.parquet", columns=["task_type", "format_outer_ok", "format_task_ok"]
            ),
        )
        f = figures[t]
        print(
            f"  T={t}: mean q {f['mean_quality']:.3f}, intra sigma {f['intra_sigma']:.3f}, "
            f"violations {100 * f['violation_rate']:.1f}%",
            flush=True,
        )
    chosen = choose(figures, target, max_violations)
    result = {
        "pipeline": pipeline,
        "split": split,
        "task_types": list(task_types),
        "target_quality": target,
        "max_violation_rate": max_violations,
        "temperature": chosen,
        "by_temperature": {str(t): f for t, f in figures.items()},
    }
    (out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "calibration.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        f"Temperature sweep of pipeline `{result['pipeline']}` on split `{result['split']}`, task types "
        f"{', '.join(result['task_types'])} (pooled). Rule: among temperatures with format violations <= "
        f"{100 * result['max_violation_rate']:.0f}%, mean quality closest to {result['target_quality']}. "
        f"Chosen: **T = {result['temperature']}**. The paper's teacher: mean q ~0.75, intra sigma .07-.15, "
        "violations 1-10%.",
        "",
        "| T | questions | mean q | sigma q | intra sigma | format violations | sample accuracy |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t, f in result["by_temperature"].items():
        mark = " (chosen)" if float(t) == result["temperature"] else ""
        lines.append(
            f"| {t}{mark} | {f['questions']:.0f} | {f['mean_quality']:.3f} | {f['sigma_quality']:.3f} | "
            f"{f['intra_sigma']:.3f} | "
            f"{100 * f['violation_rate']:.1f}% | {100 * f['accuracy']:.1f}% |"
        )
    chosen = result["by_temperature"][str(result["temperature"])]["by_task"]
    lines += [
        "",
        f"At T = {result['temperature']}, per task type:",
        "",
        "| task type | mean q | intra sigma | outer viol. | task viol. | sample accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {task} | {f['mean_quality']:.3f} | {f['intra_sigma']:.3f} | {100 * f['outer_violation_rate']:.1f}% | "
        f"{100 * f['task_violation_rate']:.1f}% | {100 * (f['accuracy'] or 0):.1f}% |"
        for task, f in sorted(chosen.items())
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="demo")
    parser.add_argument("--config", type=Path, help="pipelines file (default: ./pipelines.yaml)")
    parser.add_argument("--prompts", type=Path, required=True, help="validation prompts with ground truth")
    parser.add_argument("--split", default="validation", help="split of --prompts to sample ('' = all)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--task-types", nargs="+", default=list(CLOSED))
    parser.add_argument(
        "--target", type=float, default=0.75, help="mean sample quality to aim at (the paper's teacher: 0.75)"
    )
    parser.add_argument("--max-violations", type=float, default=0.10, help="largest acceptable format-violation rate")
    args = parser.parse_args()
    result = calibrate(
        args.pipeline,
        args.prompts,
        args.split or None,
        args.out.resolve(),
        args.temperatures,
        args.task_types,
        args.target,
        args.max_violations,
        args.config,
    )
    print(f"chosen temperature: {result['temperature']} ({args.out / 'calibration.md'})")


if __name__ == "__main__":
    main()
