"""Weighted SFT step time against plain TRL SFT on the same batch, and an RL step's time split
into generation, discriminator and policy update (issue 5).

Both trainers get the same model weights, the same pre-collated batch (video, prompt, response)
and run `training_step` (forward and backward) N times, interleaved so machine noise hits both
alike. Plain: TRL's SFTTrainer loss (its fused LM head, token mean). Weighted: rmsd's
WeightedSFTTrainer (per-example weights, full logits). Goal: weighted within 10% of plain.

RL (``--rl-steps``, 0 to skip): rmsd's VideoGRPOTrainer with the discriminator reward, N rollouts
per question, KL to the reference; each part of a step is timed where it runs, once per rollout
engine of ``--rl-rollouts`` (hf: transformers' generate; vllm: a colocated vLLM engine, weight sync
included in its generation time), same model, questions and settings, one after the other.
Goals (issue 23, 2 cores): generation >= 3x faster with vllm, the whole step >= 1.5x. The machine's
speed drifts within minutes (the same step measured up to 1.5x apart in two runs of one sitting), so the
engines run in the order given, which may repeat them: hf,vllm,vllm,hf cancels a steady drift,
and each engine's figures are the means of its runs.

    .venv/bin/python bench/train.py [--preset demo] [--batch 8] [--steps 20] [--rl-steps 4]
    .venv/bin/python bench/train.py --preset bench --steps 0 --rl-steps 3 --batch 8 --rl-generations 8 \
        --rl-tokens 128 --rl-rollouts hf,vllm,vllm,hf
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from trl import SFTTrainer

from rmsd.models import build_model
from rmsd.schemas.config import FramesConfig
from rmsd.synth import synthesise
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.config import AdversarialConfig, DistillSFTConfig
from rmsd.train.data import sft_dataset, video_base
from rmsd.train.host_memory import keep_freed_memory
from rmsd.train.sft import WeightedSFTTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rl-steps", type=int, default=4, help="RL steps to time (0: skip)")
    parser.add_argument("--rl-generations", type=int, default=4, help="N rollouts per question")
    parser.add_argument("--rl-tokens", type=int, default=48, help="rollout length cap")
    parser.add_argument(
        "--rl-rollouts", default="hf", help="rollout engines to time, in this order, comma-separated: hf, vllm"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="RL in bf16 mixed precision on the CPU too (rmsd-train rl --bf16; a GPU run has it by default)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as rmsd-train sft and rl do (on CPU)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = synthesise(tmp / "bench", 8, seed=0, progress=False)
        dataset = sft_dataset("gt", prompts, split=None)
        model, processor = build_model(args.preset)
        collator = VideoSFTCollator(processor, FrameCache(FramesConfig(num_frames=8), video_base("gt", prompts)))
        examples = [dict(dataset[i], weight=0.5 + (i % 3) * 0.25) for i in range(args.batch)]
        batch = collator(examples)
        plain_batch = {k: v for k, v in batch.items() if k != "weights"}

        def config(out):
            return DistillSFTConfig(
                output_dir=str(out), mode="weighted", per_device_train_batch_size=args.batch, learning_rate=1e-4
            )

        weighted = WeightedSFTTrainer(
            model=copy.deepcopy(model),
            args=config(tmp / "w"),
            train_dataset=dataset,
            data_collator=collator,
            processing_class=processor,
        )
        plain = SFTTrainer(
            model=copy.deepcopy(model),
            args=config(tmp / "p"),
            train_dataset=dataset,
            data_collator=collator,
            processing_class=processor,
        )
        for trainer in (weighted, plain):
            trainer.create_optimizer_and_scheduler(num_training_steps=args.steps)
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = 1
        times: dict[str, list[float]] = {"plain": [], "weighted": []}
        for step in range(args.steps + 2 if args.steps else 0):
            for name, trainer, b in (("plain", plain, plain_batch), ("weighted", weighted, batch)):
                start = time.perf_counter()
                trainer.training_step(trainer.model, dict(b), None)
                if step >= 2:  # warm-up
                    times[name].append(time.perf_counter() - start)
        if args.steps:
            sft_summary(args, model, batch, times)
        if args.rl_steps:
            runs: dict[str, list[tuple[float, float]]] = {}
            for i, engine in enumerate(args.rl_rollouts.split(",")):
                runs.setdefault(engine, []).append(rl_step_split(args, processor, prompts, tmp, engine, i))
            totals = {e: tuple(statistics.mean(r[j] for r in rs) for j in (0, 1)) for e, rs in runs.items()}
            if {"hf", "vllm"} <= set(totals):
                (hf_gen, hf_total), (vl_gen, vl_total) = totals["hf"], totals["vllm"]
                print(
                    f"over {args.rl_rollouts}: generation hf {hf_gen:.2f} s, vllm {vl_gen:.2f} s; "
                    f"whole step hf {hf_total:.2f} s, vllm {vl_total:.2f} s"
                )
                print(
                    f"vllm / hf: generation {hf_gen / vl_gen:.2f}x faster (goal >= 3x): "
                    f"{'PASS' if hf_gen >= 3 * vl_gen else 'FAIL'}; "
                    f"whole step {hf_total / vl_total:.2f}x faster (goal >= 1.5x): "
                    f"{'PASS' if hf_total >= 1.5 * vl_total else 'FAIL'}"
                )


def sft_summary(args, model, batch, times) -> None:
    tokens = int(batch["attention_mask"].sum())
    print(
        f"model preset {args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), batch "
        f"{args.batch} "
        f"({tokens} tokens, {batch['pixel_values_videos'].shape[0]} video patches), {args.steps} steps each, "
        "interleaved"
    )
    p, w = statistics.median(times["plain"]), statistics.median(times["weighted"])
    print(f"plain TRL SFT step:   {p * 1000:.1f} ms (median)")
    print(f"weighted SFT step:    {w * 1000:.1f} ms (median)")
    print(f"weighted / plain = {w / p:.3f} (goal <= 1.10): {'PASS' if w / p <= 1.10 else 'FAIL'}")


def _timed(times: dict, name: str, fn):
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def rl_step_split(args, processor, prompts: Path, tmp: Path, engine: str = "hf", run: int = 0) -> tuple[float, float]:
    """One RL configuration, its steps timed part by part (the parts nest: discriminator inside
    rewards inside scoring; policy update = the rest of the step), rollouts on ``engine``; returns
    the mean generation and whole-step seconds."""
    import json

    import datasets
    import polars as pl
    from transformers import TrainerCallback

    from rmsd.models import init_model, load_model
    from rmsd.train.discriminator import Discriminator, DiscriminatorReward, DiscriminatorTrainer, TeacherPool
    from rmsd.train.rl import RL_COLUMNS, VideoGRPOTrainer, reward_functions, rollout_config

    questions = pl.read_parquet(prompts).filter(pl.col("answer").is_not_null())
    questions = questions.with_columns(frame_timestamps=pl.lit(None, pl.List(pl.Float64))).select(RL_COLUMNS)
    gt = datasets.Dataset.from_polars(questions)
    # the teacher pool: ground-truth answers (the bench times the machinery, not the teacher)
    pool = TeacherPool(
        {
            r["prompt_id"]: [(f"<think>seen</think><answer>{r['answer']}</answer>", 1.0, 1.0)]
            for r in questions.to_dicts()
        }
    )
    path = tmp / "rl-student"
    if not path.exists():
        init_model(path, args.preset, seed=0)
    policy, processor = load_model(path)
    cache = FrameCache(FramesConfig(num_frames=8), video_base("gt", prompts))
    config = rollout_config(
        AdversarialConfig(
            output_dir=str(tmp / f"rl-{engine}-{run}"),
            num_generations=args.rl_generations,
            per_device_train_batch_size=args.batch,
            max_steps=args.rl_steps,
            max_completion_length=args.rl_tokens,
            learning_rate=1e-5,
            bf16=True if args.bf16 else None,  # None: bf16 where the GPU has it (rmsd-train's default)
            report_to=[],
        ),
        processor,
    )
    disc = DiscriminatorTrainer(Discriminator.from_student(path), VideoSFTCollator(processor, cache), bf16=config.bf16)
    reward_funcs = reward_functions(DiscriminatorReward(disc, pool))
    times: dict[str, float] = {}
    steps: list[dict] = []

    class Split(TrainerCallback):
        def on_step_begin(self, *_, **__):
            times.clear()
            times["_start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            total = time.perf_counter() - times.pop("_start")
            steps.append(dict(times, total=total))

    rollouts = None
    if engine == "vllm":
        from rmsd.train.rollouts import VLLMRollouts

        gpu = torch.cuda.is_available()
        rollouts = VLLMRollouts(path, use_gpu=gpu, dtype="bfloat16" if config.bf16 else "float32")
    trainer = VideoGRPOTrainer(
        model=policy,
        args=config,
        train_dataset=gt,
        processing_class=processor,
        frame_cache=cache,
        callbacks=[Split()],
        reward_funcs=reward_funcs,
        rollouts=rollouts,
    )
    trainer._generate = _timed(times, "generation", trainer._generate)
    trainer._calculate_rewards = _timed(times, "rewards", trainer._calculate_rewards)
    trainer._generate_and_score_completions = _timed(times, "generate+score", trainer._generate_and_score_completions)
    disc.score_and_step = _timed(times, "discriminator", disc.score_and_step)
    trainer.train()
    timed = steps[1:] or steps  # the first step includes one-off warm-up
    mean = {k: statistics.mean(step.get(k, 0.0) for step in timed) for k in timed[0]}
    d = mean.get("discriminator", 0)
    parts = {
        "generation (policy rollouts)": mean["generation"],
        "discriminator: score rollouts and update": d,
        "format + content rewards": mean["rewards"] - d,
        "old/reference log-probs": mean["generate+score"] - mean["generation"] - mean["rewards"],
        "policy update (forward, backward, optimizer)": mean["total"] - mean["generate+score"],
    }
    n = config.per_device_train_batch_size
    print(
        f"RL step, {engine} rollouts: {n} rollouts ({n // config.num_generations} questions x "
        f"N={config.num_generations}), "
        f"up to {config.max_completion_length} tokens, KL beta {config.beta}; mean of steps 2..{len(steps)}:"
    )
    for name, value in parts.items():
        print(f"  {name:46s} {value:7.2f} s  {100 * value / mean['total']:5.1f}%")
    print(f"  {'total':46s} {mean['total']:7.2f} s")
    print(json.dumps({k: round(v, 3) for k, v in parts.items()}))
    if rollouts is not None:
        del rollouts, trainer
        import gc

        gc.collect()
    return mean["generation"], mean["total"]


if __name__ == "__main__":
    main()
