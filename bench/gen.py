"""Teacher backends' throughput: hf (transformers generate) against vllm (vLLM's CPU build), and
what K=4 costs over K=1 with each (issue 3).

Same prompts (synthetic benchmark, 16 frames each), same ~100 M-parameter Qwen2-VL model with
random weights built from a config (so every sample runs to max_tokens: compute dominates), both
engines in this process, one after the other. Goals on 2 CPU cores: vllm >= 2x hf samples/s at
K=4; with vllm, K=4 costs <= 2x the wall time of K=1 (the K samples share the prefill).

Second (issue 23), rmsd-gen against its bare engine: the same prompts through ``rmsd-gen run``
with one vllm teacher (Ray actor, frames decoded by Ray tasks, shards written), then the same
requests (frames decoded beforehand, same seeds and batches) through a bare vLLM engine's
``generate`` in this process. rmsd-gen's samples/s counts from the moment its engine was ready
(the manifest's ``generation_seconds_last_run``; decoding overlaps the engine's start), the bare
engine's over its ``generate`` calls. Goal: rmsd-gen >= 90% of the bare engine's samples/s.

    .venv/bin/python bench/gen.py [--prompts 24] [--max-tokens 32] [--only backends|pipeline]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import textwrap
import time
from pathlib import Path

import polars as pl

from rmsd.gen.backends import GenerationRequest
from rmsd.gen.driver import run_job
from rmsd.gen.frames import decode_prompts, sample_frames
from rmsd.models import build_model, init_model
from rmsd.schemas.config import load_pipeline
from rmsd.schemas.prompting import build_messages
from rmsd.schemas.tables import read_table
from rmsd.synth import synthesise


def requests(bench: Path, rows: list[dict], k: int, max_tokens: int) -> list[GenerationRequest]:
    out = []
    for i, row in enumerate(rows):
        f = sample_frames(bench / row["video"], num_frames=16)
        messages = build_messages(row["question"], row["task_type"], row["options"])
        out.append(
            GenerationRequest(
                row["prompt_id"],
                messages,
                f.array,
                f.fps,
                f.timestamps,
                seeds=list(range(1000 * i, 1000 * i + k)),
                max_tokens=max_tokens,
            )
        )
    return out


def timed(backend, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        backend.generate(batch)
    return time.perf_counter() - start


def backends(tmp: Path, rows: list[dict], model_dir: Path, args) -> None:
    """hf against vllm, each at K=1 and K=4, engines in this process one after the other."""
    results: dict[tuple[str, int], float] = {}
    for name in ("hf", "vllm"):
        if name == "hf":
            from rmsd.gen.backends.hf import HFBackend

            backend = HFBackend(str(model_dir), num_threads=2)
        else:
            from rmsd.gen.backends.vllm import VLLMBackend

            backend = VLLMBackend(str(model_dir), max_model_len=4096)
        backend.generate(requests(tmp / "bench", rows[:1], 1, 4))  # warm-up
        for k in (1, 4):
            reqs = requests(tmp / "bench", rows, k, args.max_tokens)
            batches = [reqs[i : i + args.batch] for i in range(0, len(reqs), args.batch)]
            seconds = timed(backend, batches)
            results[(name, k)] = seconds
            print(f"{name:>4} K={k}: {seconds:6.1f} s, {len(rows) * k / seconds:6.2f} samples/s")
        del backend
        gc.collect()
    hf4, vl4 = len(rows) * 4 / results[("hf", 4)], len(rows) * 4 / results[("vllm", 4)]
    print(f"vllm / hf samples/s at K=4: {vl4 / hf4:.2f}x (goal >= 2x): {'PASS' if vl4 >= 2 * hf4 else 'FAIL'}")
    for name in ("hf", "vllm"):
        ratio = results[(name, 4)] / results[(name, 1)]
        goal = f" (goal <= 2x): {'PASS' if ratio <= 2 else 'FAIL'}" if name == "vllm" else ""
        print(f"{name} wall time K=4 / K=1: {ratio:.2f}x{goal}")


def pipeline_against_engine(tmp: Path, prompts: Path, n: int, model_dir: Path, args) -> None:
    """rmsd-gen (Ray actor, decoding tasks, shard writing) against the bare engine on its requests."""
    config = tmp / "pipelines.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        version: 1
        pipelines:
          bench:
            frames: {{num_frames: 16}}
            teachers:
              - id: bench-vllm
                backend: vllm
                model: {{path: {model_dir}}}
                replicas: 1
                num_cpus: 2
                batch_size: {args.batch}
                max_model_len: 4096
            sampling: {{k: 4, temperature: 1.0, max_tokens: {args.max_tokens}}}
            gen: {{shard_size: {2 * args.batch}}}
        """)
    )
    pipeline = load_pipeline("bench", config)
    summary = run_job(pipeline, "bench", prompts, tmp / "samples", limit=n, progress=False)
    samples = pl.read_parquet(tmp / "samples" / "*.parquet").sort("prompt_id", "sample_index")
    gen_rate = samples.height / summary.generation_seconds
    print(
        f"rmsd-gen: {samples.height} samples; engine ready after {summary.engine_start_seconds:.1f} s, then "
        f"{summary.generation_seconds:.1f} s to generate and write: {gen_rate:.2f} samples/s "
        f"(whole run {summary.wall_seconds:.1f} s)"
    )

    # the same requests, frames decoded beforehand: each prompt's seeds as rmsd-gen drew them, the
    # prompts in rmsd-gen's order and batches (shards of two batches, in the prompts' order)
    rows = read_table(prompts, "prompts").to_pylist()[:n]
    decoded = decode_prompts(rows, pipeline.frames.model_dump(), prompts.parent, [prompts.parent])
    seeds = {pid: group["seed"].to_list() for (pid,), group in samples.group_by("prompt_id", maintain_order=True)}
    route = pipeline.route("multiple_choice")  # the one route of every task here
    template = pipeline.templates[route.template]
    reqs = [
        GenerationRequest(
            p.row["prompt_id"],
            build_messages(p.row["question"], p.row["task_type"], p.row["options"], template.system, template.user),
            p.frames.array,
            p.frames.fps,
            p.frames.timestamps,
            seeds=seeds[p.row["prompt_id"]],
            temperature=route.temperature,
            max_tokens=args.max_tokens,
        )
        for p in decoded
    ]
    from rmsd.gen.backends.vllm import VLLMBackend

    started = time.perf_counter()
    engine = VLLMBackend(str(model_dir), max_model_len=4096)
    engine_start = time.perf_counter() - started
    seconds = timed(engine, [reqs[i : i + args.batch] for i in range(0, len(reqs), args.batch)])
    bare_rate = samples.height / seconds
    texts = {(r.prompt_id, k): c.text for r, cs in zip(reqs, engine.generate(reqs[:2])) for k, c in enumerate(cs)}
    same = all(
        texts[(row["prompt_id"], row["sample_index"])] == row["text"]
        for row in samples.iter_rows(named=True)
        if (row["prompt_id"], row["sample_index"]) in texts
    )
    print(
        f"bare engine: {samples.height} samples; engine ready after {engine_start:.1f} s, then {seconds:.1f} s "
        f"to generate: {bare_rate:.2f} samples/s (first two prompts' samples identical to rmsd-gen's: {same})"
    )
    ratio = gen_rate / bare_rate
    print(f"rmsd-gen / bare engine samples/s: {ratio:.2f} (goal >= 0.90): {'PASS' if ratio >= 0.9 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--only", choices=["backends", "pipeline"], help="run one of the two comparisons")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = synthesise(tmp / "bench", max(1, args.prompts // 6 + 1), seed=0, progress=False)
        rows = read_table(prompts, "prompts").to_pylist()[: args.prompts]
        model_dir = init_model(tmp / "model", "bench")
        params = sum(p.numel() for p in build_model("bench")[0].parameters())
        print(
            f"model: Qwen2-VL from config, {params / 1e6:.0f} M parameters, random weights; {len(rows)} prompts, "
            f"16 frames, {args.max_tokens} new tokens per sample, {args.batch} prompts per call"
        )
        if args.only in (None, "backends"):
            backends(tmp, rows, model_dir, args)
        if args.only in (None, "pipeline"):
            pipeline_against_engine(tmp, prompts, len(rows), model_dir, args)


if __name__ == "__main__":
    main()
