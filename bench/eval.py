"""rmsd-train eval's greedy answers with the hf backend on the CPU, before and after it took its
thread count from torch (OMP_NUM_THREADS) instead of one thread per core, on the same prompts in
the same run, alone and two at once as experiments/ablation.py runs them; and where the time goes.

Prompts: the closed-ended questions of a synthetic test set (``rmsd-gen synth --split test``, 8
frames of 112x112 as the demo pipeline samples them); model: the demo preset (0.83 M parameters)
with random weights. An untrained model never says EOS, so every answer runs to --max-tokens: 32
by default, about the longest closed-ended ground-truth answer (33 tokens for spatial grounding),
so that a batch decodes as many steps as a trained model's does. Each evaluation runs in a process
of its own (``answer_prompts``: model load, frames, processor, generate); the arms alternate which
goes first; the answers of every run must be the same.

    .venv/bin/python bench/eval.py [--videos 100] [--rounds 2] [--batch-sizes 8 16 32 64] [--no-pair]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLOSED = ["multiple_choice", "numerical", "temporal_grounding", "spatial_grounding", "ocr"]


def worker(args) -> None:
    """One evaluation's answers, timed step by step; one JSON line on stdout."""
    import torch

    from rmsd.gen.backends.hf import HFBackend
    from rmsd.schemas.config import load_pipeline
    from rmsd.train import evaluate
    from rmsd.train.collate import templates_by_task

    if args.worker == "before":
        torch.set_num_threads(
            os.cpu_count() or 1
        )  # what rmsd-train eval gave the hf backend, whatever OMP_NUM_THREADS said
    parts = dict.fromkeys(["decode frames", "processor", "generate"], 0.0)

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] += time.perf_counter() - start

        return wrapper

    evaluate.decode_prompts = timed("decode frames", evaluate.decode_prompts)
    HFBackend._inputs = timed("processor", HFBackend._inputs)
    HFBackend.generate = timed("generate", HFBackend.generate)
    cfg = load_pipeline("demo", None, check_models=False)
    rows = evaluate.split_prompts(args.prompts, "test", task_types=CLOSED)
    start = time.perf_counter()
    answered = evaluate.answer_prompts(
        args.model,
        rows,
        args.prompts.parent,
        cfg.frames,
        templates_by_task(cfg),
        args.max_tokens,
        batch_size=args.batch_size,
        progress=False,
    )
    seconds = time.perf_counter() - start
    parts["generate"] -= parts["processor"]  # the processor runs inside generate
    digest = hashlib.sha256(json.dumps(answered.select("prompt_id", "text").rows()).encode()).hexdigest()[:12]
    print(json.dumps({"seconds": seconds, "parts": parts, "answers": digest, "threads": torch.get_num_threads()}))


def run(arm: str, prompts: Path, model: Path, max_tokens: int, batch_size: int, copies: int) -> list[dict]:
    """``copies`` evaluations of ``arm`` at once (2: each with OMP_NUM_THREADS=1, as the ablation's --jobs 2 gives "
    "them)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if copies > 1 else {})}
    command = [
        sys.executable,
        __file__,
        "--worker",
        arm,
        "--prompts",
        str(prompts),
        "--model",
        str(model),
        "--max-tokens",
        str(max_tokens),
        "--batch-size",
        str(batch_size),
    ]
    started = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(copies)
    ]
    outputs = [p.communicate()[0] for p in started]
    if any(p.returncode for p in started):
        raise SystemExit(f"a {arm} evaluation failed; run it alone: {' '.join(command)}")
    return [json.loads(out.splitlines()[-1]) for out in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100, help="test-set videos (five closed-ended questions each)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", help="also time the current code alone at these batch sizes"
    )
    parser.add_argument("--no-pair", action="store_true", help="skip the two-at-once runs (before takes minutes there)")
    parser.add_argument("--worker", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from rmsd.models import init_model
    from rmsd.synth import synthesise
    from rmsd.train.evaluate import BATCH_SIZE

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = synthesise(tmp / "bench", args.videos, seed=3, workers=2, progress=False, split="test")
        model = init_model(tmp / "model", "demo")
        print(
            f"{5 * args.videos} closed-ended prompts, demo preset (random weights), {args.max_tokens} new tokens "
            f"each, {os.cpu_count()} cores, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f} "
            "before the start",
            flush=True,
        )
        # (arm, batch size, evaluations at once): before is the old thread count at the old batch size
        runs = [("before", 16, 1), ("after", BATCH_SIZE, 1)]
        runs += [("after", b, 1) for b in args.batch_sizes or [] if b != BATCH_SIZE]
        runs += [] if args.no_pair else [("before", 16, 2), ("after", BATCH_SIZE, 2)]
        results: dict[tuple, list[dict]] = {}
        for round_ in range(args.rounds):
            for key in runs if round_ % 2 == 0 else runs[::-1]:
                out = run(*key[:1], prompts, model, args.max_tokens, *key[1:])
                results.setdefault(key, []).extend(out)
                print(
                    f"  round {round_ + 1}: {key[0]:6s} batch {key[1]:3d}, {key[2]} at once: "
                    + ", ".join(f"{o['seconds']:.1f} s ({o['threads']} threads)" for o in out),
                    flush=True,
                )
        print("where the time goes, mean of the runs alone:")
        for key, outs in results.items():
            if key[2] == 1:
                parts = {k: sum(o["parts"][k] for o in outs) / len(outs) for k in outs[0]["parts"]}
                total = sum(o["seconds"] for o in outs) / len(outs)
                print(
                    f"  {key[0]:6s} batch {key[1]:3d}: {total:6.1f} s = "
                    + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in parts.items())
                    + f", the rest {total - sum(parts.values()):.1f} s (model load, tables)"
                )
        for copies in sorted({k[2] for k in results}):
            before = min(o["seconds"] for o in results[("before", 16, copies)])
            for key in (k for k in results if k[2] == copies):
                best = min(o["seconds"] for o in results[key])
                print(
                    f"{copies} at once, {key[0]:6s} batch {key[1]:3d}: best {best:6.1f} s per evaluation, before / "
                    f"this = {before / best:.2f}x"
                )
        print("same answers in every run:", len({o["answers"] for outs in results.values() for o in outs}) == 1)


if __name__ == "__main__":
    main()
