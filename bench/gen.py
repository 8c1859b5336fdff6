"""Teacher backends' throughput: hf (transformers generate) against vllm (vLLM's CPU build), and
what K=4 costs over K=1 with each (issue 3).

Same prompts (synthetic benchmark, 16 frames each), same ~100 M-parameter Qwen2-VL model with
random weights built from a config (so every sample runs to max_tokens: compute dominates), both
engines in this process, one after the other. Goals on 2 CPU cores: vllm >= 2x hf samples/s at
K=4; with vllm, K=4 costs <= 2x the wall time of K=1 (the K samples share the prefill).

    .venv/bin/python bench/gen.py [--prompts 24] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from rmsd.gen.backends import GenerationRequest
from rmsd.gen.frames import sample_frames
from rmsd.models import build_model, init_model
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = synthesise(tmp / "bench", max(1, args.prompts // 6 + 1), seed=0, progress=False)
        rows = read_table(prompts, "prompts").to_pylist()[: args.prompts]
        model_dir = init_model(tmp / "model", "bench")
        params = sum(p.numel() for p in build_model("bench")[0].parameters())
        print(
            f"model: Qwen2-VL from config, {params / 1e6:.0f} M parameters, random weights; {len(rows)} prompts, 16 frames, "
            f"{args.max_tokens} new tokens per sample, {args.batch} prompts per call"
        )
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


if __name__ == "__main__":
    main()
