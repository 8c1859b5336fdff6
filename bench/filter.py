"""rmsd-filter throughput and memory: read, score and write N synthetic sample rows of mixed task types.

Writes N rows as rmsd-gen would (two teachers, K=4, slices of 12,500 prompts; `--slice-prompts 64`
for rmsd-gen's default shard size), then times, in a
child process, the whole `run_filter` job (read, parse, metrics, agreement, weights, write scored
and curated shards, report), its CPU time and its peak memory, both over all the job's processes
(sampled every 50 ms with psutil). The baseline, timed in the same run on a subset,
is a straightforward row-by-row Python implementation of the same scoring (the `re` module, one
response at a time, dictionaries for the per-prompt steps). Goals (issue 4): >= 1 M rows/s,
peak < 3 GB, >= 5x the row-by-row baseline.

    .venv/bin/python bench/filter.py [--rows 10000000] [--baseline-rows 300000] [--repeat N] [--workdir DIR]
        [--slice-prompts N] [--steps GROUPS] [--grammar ROWS] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from rmsd.schemas.tables import to_table, write_table

K, TEACHERS, PROMPTS_PER_SLICE = 4, ("teacher-a", "teacher-b"), 12_500
TASKS = ["multiple_choice", "numerical", "temporal_grounding", "spatial_grounding", "ocr", "open_ended"]
COLOURS = ["red", "green", "blue", "yellow"]
WORDS = ["cat", "sun", "tree", "boat", "star", "fish", "moon", "bird"]
THINK = "<think>the red circle moves left while the blue square stays near the top of the frame</think>"


def _answers(task: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Ground truth (from the prompt's ``truth`` draw) and a sampled answer, right ~70% of the time."""
    n = len(task)
    a, b = truth, rng.integers(0, 8, n)
    right = rng.random(n) < 0.7
    x = truth * 7
    gt, said = [], []
    for i in range(n):
        t = task[i]
        if t == "multiple_choice":
            g = "ABCD"[a[i] % 4]
            s = g if right[i] else "ABCD"[b[i] % 4]
        elif t == "numerical":
            g = str(a[i] + 1)
            s = g if right[i] else str(b[i] + 1)
        elif t == "temporal_grounding":
            g = f"[{a[i] * 0.5}, {a[i] * 0.5 + 2}]"
            s = g if right[i] else f"[{b[i] * 0.5}, {b[i] * 0.5 + 1.5}]"
        elif t == "spatial_grounding":
            g = f"[{x[i]}, {x[i] + 4}, {x[i] + 16}, {x[i] + 20}]"
            s = g if right[i] else f"[{x[i] + 3}, {x[i] + 4}, {x[i] + 18}, {x[i] + 20}]"
        elif t == "ocr":
            g = WORDS[a[i]].upper()
            s = g if right[i] else WORDS[b[i]].upper()
        else:
            g = f"A {COLOURS[a[i] % 4]} circle moves left."
            s = f"A {COLOURS[b[i] % 4]} circle moves left."
        gt.append(g)
        said.append(s)
    return gt, said


def write_corpus(folder: Path, rows: int, seed: int = 0, prompts_per_slice: int = PROMPTS_PER_SLICE) -> int:
    rng = np.random.default_rng(seed)
    slices = math.ceil(rows / (prompts_per_slice * K * len(TEACHERS)))
    written = 0
    for s in range(slices):
        prompts = pl.DataFrame({"p": np.arange(prompts_per_slice)}).with_columns(
            prompt_id=pl.format("v{}-{}", pl.lit(s), pl.col("p")),
            task_type=pl.Series(np.array(TASKS)[rng.integers(0, len(TASKS), prompts_per_slice)]),
            truth=pl.Series(rng.integers(0, 8, prompts_per_slice)),
        )
        for t, teacher in enumerate(TEACHERS):
            frame = prompts.join(pl.DataFrame({"sample_index": np.arange(K, dtype=np.int32)}), how="cross")
            gt, said = _answers(frame["task_type"].to_numpy(), frame["truth"].to_numpy(), rng)
            style = rng.random(frame.height)  # ~3% bad wrapper, ~1% cut off
            text = [
                f"{THINK}<answer>{a}" if st < 0.01 else f"{THINK} {a}" if st < 0.03 else f"{THINK}<answer>{a}</answer>"
                for a, st in zip(said, style)
            ]
            frame = frame.with_columns(
                question=pl.lit("What colour is the circle?"),
                options=pl.when(pl.col("task_type") == "multiple_choice").then(pl.lit(COLOURS)),
                answer=pl.Series(gt),
                video=pl.format("videos/v{}-{}.mp4", pl.lit(s), pl.col("p")),
                teacher=pl.lit(teacher),
                seed=pl.int_range(pl.len(), dtype=pl.Int64) + s * 10_000_000 + t,
                text=pl.Series(text),
                finish_reason=pl.lit("stop"),
                num_tokens=pl.lit(40, pl.Int32),
                cumulative_logprob=pl.lit(-12.5),
                frame_timestamps=pl.lit([0.5, 1.5, 2.5, 3.5]),
                fps=pl.lit(2.0),
                error=pl.lit(None, pl.String),
                run_id=pl.lit("bench"),
            ).drop("p", "truth")
            write_table(
                to_table(frame.to_dict(as_series=False), "samples"),
                folder / f"samples-{teacher}-{s:06d}.parquet",
                "samples",
            )
            written += frame.height
    return written


# --- the row-by-row baseline: the same scoring, one response at a time -------------------------
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
OUTER = re.compile(r"^\s*<think>(?s:.*?)</think>\s*<answer>(?s:.*?)</answer>\s*$")
STRICT = {
    "multiple_choice": re.compile(r"^\s*[A-Za-z]\s*$"),
    "numerical": re.compile(r"^\s*[-+]?(?:\d+(?:\.\d+)?|\.\d+)\s*$"),
    "temporal_grounding": re.compile(r"^\s*\[\s*\d+(?:\.\d+)?\s*,\s*\d+(?:\.\d+)?\s*\]\s*$"),
    "spatial_grounding": re.compile(r"^\s*\[\s*-?\d+(?:\.\d+)?\s*(?:,\s*-?\d+(?:\.\d+)?\s*){3}\]\s*$"),
}
LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")


def _answer_part(text: str) -> tuple[str | None, bool]:
    outer = bool(OUTER.match(text)) and text.count("<answer>") == 1 and text.count("<think>") == 1
    if "<answer>" in text:
        tail = text.split("<answer>")[-1]
        return tail.split("</answer>")[0].strip() or None, outer and "</answer>" in tail
    return text.split("</think>")[-1].strip() or None, False


def _parse(task: str, a: str | None):
    if a is None:
        return None, False
    ok = bool(STRICT[task].search(a)) if task in STRICT else bool(a.strip())
    if task == "multiple_choice":
        m = LETTER.match(a)
        return (m.group(1).upper() if m else None), ok and m is not None
    nums = [float(x.replace(",", "")) for x in NUMBER.findall(a)]
    if task == "numerical":
        return (nums[0] if nums else None), ok and bool(nums)
    if task == "temporal_grounding":
        v = tuple(nums[:2]) if len(nums) >= 2 and nums[0] <= nums[1] else None
        return v, ok and v is not None
    if task == "spatial_grounding":
        v = tuple(nums[:4]) if len(nums) >= 4 and nums[0] <= nums[2] and nums[1] <= nums[3] else None
        return v, ok and v is not None
    return " ".join(a.strip().strip("\"'`*").split()).lower(), ok


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _metric(task, v, g):
    if v is None:
        return 0.0
    if task == "multiple_choice":
        return float(v == g)
    if task == "numerical":
        return float(abs(v - g) <= 0.05 * abs(g)) if g else float(abs(v) <= 0.05)
    if task == "temporal_grounding":
        inter = max(0.0, min(v[1], g[1]) - max(v[0], g[0]))
        union = max(v[1], g[1]) - min(v[0], g[0])
        return inter / union if union > 0 else float(v == g)
    if task == "spatial_grounding":
        w = max(0.0, min(v[2], g[2]) - max(v[0], g[0]))
        h = max(0.0, min(v[3], g[3]) - max(v[1], g[1]))
        union = (v[2] - v[0]) * (v[3] - v[1]) + (g[2] - g[0]) * (g[3] - g[1]) - w * h
        return w * h / union if union > 0 else float(v == g)
    sim = 1 - _levenshtein(v, g) / max(len(v), len(g), 1)
    return sim if sim >= 0.5 else 0.0


def python_baseline(rows: list[dict], tau: float = 0.3) -> list[dict]:
    out = []
    for r in rows:
        a, outer = _answer_part(r["text"])
        v, task_ok = _parse(r["task_type"], a)
        if r["task_type"] == "open_ended":
            correct, q = None, float(outer and task_ok)
        else:
            g, _ = _parse(r["task_type"], r["answer"])
            correct = _metric(r["task_type"], v, g)
            q = float(outer and task_ok) * correct
        out.append(
            {"prompt_id": r["prompt_id"], "teacher": r["teacher"], "v": v, "q": q, "correct": correct, "kept": q >= tau}
        )
    groups, counts = defaultdict(list), Counter()
    for s in out:
        groups[s["prompt_id"]].append(s)
        counts[(s["prompt_id"], s["teacher"], str(s["v"]))] += 1
    for samples in groups.values():
        per_teacher = Counter(s["teacher"] for s in samples)
        total = sum(s["q"] if s["correct"] is not None else 1.0 for s in samples if s["kept"])
        best = max((s for s in samples if s["kept"]), key=lambda s: s["q"], default=None)
        for s in samples:
            s["agreement"] = counts[(s["prompt_id"], s["teacher"], str(s["v"]))] / per_teacher[s["teacher"]]
            raw = (s["q"] if s["correct"] is not None else 1.0) if s["kept"] else 0.0
            s["weight"] = raw / total if total else 0.0
            s["is_best"] = s is best
    return out


CHILD = """
import json, resource, sys, time
from rmsd.filter.run import run_filter
from rmsd.schemas.config import FilterConfig, GenConfig, PipelineConfig, TeacherConfig, ModelConfig
cfg = PipelineConfig(teachers=[TeacherConfig(id="bench", model=ModelConfig(path="unused"))], filter=FilterConfig())
cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))
t, c = time.perf_counter(), cpu()
s = run_filter(cfg, "bench", sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": cpu() - c, "samples": s.samples, "kept": s.kept}))
"""


# The job's steps one by one, as one worker runs them (Polars on one thread), on the corpus's first
# groups: CPU per row, best of three passes; and the same steps on a group of 1,000 rows, whose
# time is nearly all the fixed cost every group pays whatever its size.
STEPS_CHILD = """
import json, sys, time
from pathlib import Path
import polars as pl
from rmsd.filter.report import partial_stats
from rmsd.filter.run import read_group, write_curated, write_scored
from rmsd.filter.score import dropped_prompts, score_samples
from rmsd.schemas.config import FilterConfig
from rmsd.schemas.filtered import shard_groups
cfg, work = FilterConfig(), Path(sys.argv[2])
def timed(files, passes=3):
    best = {}
    for _ in range(passes):
        times, rows = {}, 0
        for group in files:
            t = time.process_time()
            def tick(step):
                nonlocal t
                now = time.process_time()
                times[step] = times.get(step, 0.0) + now - t
                t = now
            samples = read_group(group); tick("read")
            scored = score_samples(samples, cfg, keys=True); tick("score")
            write_scored(scored, work / "scored.parquet"); tick("write scored")
            write_curated(scored, work / "curated.parquet"); tick("write curated")
            partial_stats(scored); tick("report sums")
            dropped_prompts(scored); tick("dropped prompts")
            rows += samples.height
        best = {k: min(best.get(k, 1e9), v / rows) for k, v in times.items()}
    return best, rows
groups = [[str(f) for f in fs] for _, fs in shard_groups(Path(sys.argv[1]))][: int(sys.argv[3])]
per_row, rows = timed(groups)
small = []
for f in groups[0]:
    path = work / ("small-" + Path(f).name)
    pl.read_parquet(f).head(500).write_parquet(path)
    small.append(str(path))
fixed, small_rows = timed([small] * 5, 5)
fixed = {k: v * small_rows / 5 for k, v in fixed.items()}
print(json.dumps({"rows": rows, "per_row": per_row, "small_rows": small_rows // 5, "fixed": fixed}))
"""


def _one_worker(child: str, *args: object) -> dict:
    """Run ``child`` in a process as one rmsd-filter worker runs (its environment: Polars on one
    thread, queries in memory); its last line of output, JSON."""
    from rmsd.filter.executors import WORKER_ENV

    env = {**os.environ, **WORKER_ENV}
    done = subprocess.run([sys.executable, "-c", child, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _steps(samples: Path, work: Path, groups: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    result = _one_worker(STEPS_CHILD, samples, work, groups)
    print(
        f"steps, one worker, CPU per row over {result['rows']:,} rows (best of 3), "
        f"and per group of {result['small_rows']:,} rows:"
    )
    for step, us in result["per_row"].items():
        print(f"  {step:16s} {us * 1e6:6.3f} us per row   {result['fixed'][step] * 1e3:6.1f} ms per small group")
    print(
        f"  {'all':16s} {sum(result['per_row'].values()) * 1e6:6.3f} us per row   "
        f"{sum(result['fixed'].values()) * 1e3:6.1f} ms per small group"
    )


# This code's worker against another checkout's, in one process, group by group: each shard group
# is scored by both in turn (the order alternating), so that the machine's drift, which moves a
# separate run by 10% within minutes here, falls on both alike. CPU time, the first pass a warm-up;
# and wall time, which also counts the moments the worker waits (a thread's wake-up, a disk sync).
AGAINST_CHILD = """
import importlib.util, json, statistics, sys, time
from pathlib import Path
def load(name, folder):  # the other checkout as a package of another name (its imports are relative)
    spec = importlib.util.spec_from_file_location(
        name, Path(folder) / "__init__.py", submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
load("rmsd_against", sys.argv[2])
import rmsd.filter.run as this_run, rmsd.schemas.config as this_config
import rmsd_against.filter.run as that_run, rmsd_against.schemas.config as that_config
def pipeline(config):
    teacher = config.TeacherConfig(id="bench", model=config.ModelConfig(path="unused"))
    return config.PipelineConfig(teachers=[teacher], filter=config.FilterConfig())
runs = {"this": (this_run, pipeline(this_config)), "other": (that_run, pipeline(that_config))}
from rmsd.schemas.filtered import shard_groups
groups = [[str(f) for f in fs] for _, fs in shard_groups(Path(sys.argv[1]))][: int(sys.argv[4])]
totals, walls, ratios, rows = {"this": 0.0, "other": 0.0}, {"this": 0.0, "other": 0.0}, [], 0
for rep in range(int(sys.argv[5]) + 1):
    for i, files in enumerate(groups):
        order = ["this", "other"] if (rep + i) % 2 else ["other", "this"]
        seconds, wall = {}, {}
        for name in order:
            module, cfg = runs[name]
            score = getattr(module, "score_batch", None) or module.score_group  # score_group: its name before
            t, w = time.process_time(), time.perf_counter()
            n = score(f"{name}-{i}", files, cfg, str(Path(sys.argv[3]) / name))["samples"]
            seconds[name], wall[name] = time.process_time() - t, time.perf_counter() - w
        if rep:
            for name in totals:
                totals[name] += seconds[name]; walls[name] += wall[name]
            ratios.append(seconds["other"] / seconds["this"]); rows += n
print(json.dumps({
    "rows": rows, "this": totals["this"] / rows, "other": totals["other"] / rows,
    "ratio": totals["other"] / totals["this"], "wall_ratio": walls["other"] / walls["this"],
    "median": statistics.median(ratios), "pairs": len(ratios),
}))
"""


# The grammar's fast path against its reference definition (``add_response_parts(..., fast=False)``)
# on the corpus's first responses, as one worker runs them (Polars on one thread): CPU per response,
# best of three passes. The number quoted by the fast path's comment in schemas/grammar.py.
GRAMMAR_CHILD = """
import json, sys, time
import polars as pl
from rmsd.schemas.grammar import add_response_parts
texts = pl.scan_parquet(sys.argv[1] + "/*.parquet").select("text").head(int(sys.argv[2])).collect()
best = {}
for _ in range(3):
    for fast in (True, False):
        t = time.process_time()
        add_response_parts(texts, fast=fast)
        best[fast] = min(best.get(fast, 1e9), time.process_time() - t)
print(json.dumps({"rows": texts.height, "fast": best[True] / texts.height, "definition": best[False] / texts.height}))
"""


def _grammar(samples: Path, rows: int) -> None:
    r = _one_worker(GRAMMAR_CHILD, samples, rows)
    print(
        f"grammar, one worker, CPU per response over {r['rows']:,} responses (best of 3): fast path "
        f"{r['fast'] * 1e6:.3f} us, the definition alone {r['definition'] * 1e6:.3f} us "
        f"({r['fast'] / r['definition']:.2f}x)"
    )


def _against(samples: Path, other: Path, work: Path, groups: int, passes: int) -> None:
    if not (other / "filter" / "run.py").exists():
        sys.exit(
            f"--against {other}: not an rmsd checkout (no filter/run.py); make one with `git worktree add DIR COMMIT`"
        )
    work.mkdir(parents=True, exist_ok=True)
    r = _one_worker(AGAINST_CHILD, samples, other.resolve(), work, groups, passes)
    print(
        f"one worker, this code against {other}, alternating group by group ({r['pairs']} pairs, "
        f"{r['rows']:,} rows, CPU time): {r['this'] * 1e6:.3f} against {r['other'] * 1e6:.3f} us per row = "
        f"{r['ratio']:.3f}x (median of the pairs {r['median']:.3f}x); "
        f"wall time {r['wall_ratio']:.3f}x"
    )


def _watch(job: subprocess.Popen, every: float = 0.05, find_every: int = 10) -> tuple[float, float]:
    """Sampled until the job ends: the peak resident memory (GB) of the job and all its processes
    together, and the CPU seconds of its worker processes (their last sample: up to ``every`` of a
    worker's time at its very end is missed). The job's processes are looked up every
    ``find_every`` samples only (its workers start with it and live to its end): a lookup walks
    every process of the machine, 0.69 ms against 0.06 ms for a sample of memory and CPU, and the
    watcher shares the job's two cores."""
    import psutil

    peak, root, worker_cpu, workers, polls = 0.0, psutil.Process(job.pid), {}, [], 0
    while job.poll() is None:
        try:
            if polls % find_every == 0:
                workers = root.children(recursive=True)
            polls += 1
            peak = max(peak, sum(p.memory_info().rss for p in [root, *workers]) / 2**30)
            for p in workers:
                times = p.cpu_times()
                worker_cpu[p.pid] = times.user + times.system
        except psutil.Error:  # a process ended while it was read: look them up again next time
            polls = 0
        time.sleep(every)
    return peak, sum(worker_cpu.values())


def _probe() -> tuple[float, float]:
    """The machine's memory speed at this moment, which the job (memory-bound: most of its steps
    pass over columns far larger than the caches) follows and a cache-resident loop does not: copy
    bandwidth (GB/s) over 200 MB and random 8-byte reads (millions per second) over the same."""
    data = np.ones(25_000_000)
    copy = np.empty_like(data)
    np.copyto(copy, data)
    t = time.perf_counter()
    for _ in range(4):
        np.copyto(copy, data)
    bandwidth = 4 * 2 * data.nbytes / (time.perf_counter() - t) / 1e9
    index = np.random.default_rng(0).integers(0, len(data), 2_000_000)
    t = time.perf_counter()
    data[index].sum()
    return bandwidth, len(index) / (time.perf_counter() - t) / 1e6


def _run(samples: Path, out: Path, subset: list[dict]) -> dict:
    """One timed run of the job, then the row-by-row baseline on ``subset``, back to back."""
    bandwidth, reads = _probe()
    load_before = os.getloadavg()[0]
    job = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(samples), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak, worker_cpu = _watch(job)
    stdout, stderr = job.communicate()
    if job.returncode:
        sys.exit(stderr)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["cpu_seconds"] += worker_cpu
    t = time.perf_counter()
    python_baseline(subset)
    python_rate = len(subset) / (time.perf_counter() - t)
    return {
        **result,
        "rate": result["samples"] / result["seconds"],
        "peak": peak,
        "python_rate": python_rate,
        "bandwidth": bandwidth,
        "reads": reads,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _report(r: dict, subset: int) -> None:
    print(
        f"rmsd-filter (Polars): {r['samples']:,} rows in {r['seconds']:.1f} s = {r['rate'] / 1e6:.2f} M rows/s, "
        f"peak RSS {r['peak']:.2f} GB (the job's processes together, {os.cpu_count()} workers), "
        f"kept {r['kept'] / r['samples']:.1%}, "
        f"load average {r['load_before']:.2f} before, {r['load_after']:.2f} after"
    )
    # CPU time (the job's and its workers') does not count the time other processes held the cores: rows per CPU-second
    # bound what the job reaches with the cores to itself
    print(
        f"  CPU time {r['cpu_seconds']:.1f} s = {r['cpu_seconds'] / r['samples'] * 1e6:.2f} us per row "
        f"({r['samples'] / r['cpu_seconds'] / 1e6:.2f} M rows per CPU-second); "
        f"machine before it: copy {r['bandwidth']:.1f} GB/s, "
        f"random reads {r['reads']:.0f} M/s"
    )
    print(f"row-by-row Python (score only, no I/O, {subset:,} rows): {r['python_rate'] / 1e6:.3f} M rows/s")
    print(
        f"speed-up: {r['rate'] / r['python_rate']:.1f}x (goal >= 5x): "
        f"{'PASS' if r['rate'] >= 5 * r['python_rate'] else 'FAIL'}"
    )
    print(
        f"throughput goal >= 1 M rows/s: {'PASS' if r['rate'] >= 1e6 else 'FAIL'}; "
        f"memory goal < 3 GB: {'PASS' if r['peak'] < 3 else 'FAIL'}"
    )


def _summary(runs: list[dict]) -> None:
    """Over repeated runs: the machine's speed moves by a quarter within minutes here, so one run
    says little; each run's speed-up is against the baseline timed right after it."""
    rates = sorted(r["rate"] / 1e6 for r in runs)
    speedups = sorted(r["rate"] / r["python_rate"] for r in runs)
    cpu = sorted(r["cpu_seconds"] / r["samples"] * 1e6 for r in runs)
    met = sum(r["rate"] >= 1e6 for r in runs)
    each = ", ".join(f"{r['rate'] / 1e6:.2f}" for r in runs)
    print(
        f"{len(runs)} runs: {each} M rows/s (median {statistics.median(rates):.2f}, "
        f"{rates[0]:.2f}-{rates[-1]:.2f}); CPU {cpu[0]:.2f}-{cpu[-1]:.2f} us per row; "
        f"speed-up {speedups[0]:.1f}-{speedups[-1]:.1f}x "
        f"(median {statistics.median(speedups):.1f}x); peak memory up to {max(r['peak'] for r in runs):.2f} GB; "
        f">= 1 M rows/s in {met} of {len(runs)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--baseline-rows", type=int, default=300_000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="time the job N times, each followed by the baseline, and summarise (the median and the range)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the corpus here (default: a temp folder); a corpus found there is reused",
    )
    parser.add_argument(
        "--slice-prompts",
        type=int,
        default=PROMPTS_PER_SLICE,
        metavar="N",
        help=f"prompts per rmsd-gen slice in the written corpus (default {PROMPTS_PER_SLICE:,}; "
        "rmsd-gen's own default is 64)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="GROUPS",
        help="also time the job's steps one by one on this many shard groups (one worker), "
        "and their fixed cost per group",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="DIR",
        help="also time one worker of this code against one of the rmsd checkout in DIR "
        "(e.g. a git worktree of another commit), "
        "alternating group by group in one process",
    )
    parser.add_argument(
        "--against-groups",
        type=int,
        default=6,
        metavar="N",
        help="shard groups for --against (default 6; 5 passes after a warm-up)",
    )
    parser.add_argument(
        "--grammar",
        type=int,
        default=0,
        metavar="ROWS",
        help="also time the grammar's fast path against its reference definition on this many responses (one worker)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        samples = work / "samples"
        t = time.perf_counter()
        if not list(samples.glob("samples-*.parquet")):
            write_corpus(samples, args.rows, prompts_per_slice=args.slice_prompts)
        total = pl.scan_parquet(samples / "*.parquet").select(pl.len()).collect().item()
        size = sum(p.stat().st_size for p in samples.glob("*.parquet")) / 1e9
        print(
            f"corpus: {total:,} rows in {len(list(samples.glob('*.parquet')))} shards, {size:.2f} GB on disk "
            f"({time.perf_counter() - t:.0f} s to write)"
        )

        subset = pl.scan_parquet(samples / "*.parquet").head(args.baseline_rows).collect().to_dicts()
        runs = []
        for i in range(args.repeat):
            if args.repeat > 1:
                print(f"-- run {i + 1} of {args.repeat} ({time.strftime('%H:%M:%S')})")
            runs.append(_run(samples, work / "filtered", subset))
            _report(runs[-1], len(subset))
        if args.repeat > 1:
            _summary(runs)
        if args.steps:
            _steps(samples, work / "steps", args.steps)
        if args.grammar:
            _grammar(samples, args.grammar)
        if args.against:
            _against(samples, args.against, work / "against", args.against_groups, passes=5)


if __name__ == "__main__":
    main()
