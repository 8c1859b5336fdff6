"""Run by test_discriminator under torchrun: two ranks, one discriminator, in two scenarios: each
rank its own pairs; rank 1's prompts without a kept teacher sample (in the online reward and in the
warm-up), so it has no pair to learn from, nor one to check D on (the warm-up's held-out check, one
question held out: rank 0's). Rank 0 prints a line for each scenario that held."""

import sys
from datetime import timedelta

import polars as pl
import torch
import torch.distributed as dist

from rmsd.models import load_model
from rmsd.schemas.config import FramesConfig
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.config import AdversarialConfig
from rmsd.train.data import example_frame, video_base
from rmsd.train.discriminator import Discriminator, DiscriminatorReward, DiscriminatorTrainer, TeacherPool
from rmsd.train.rl import warm_up_discriminator


def assert_same_across_ranks(trainer: DiscriminatorTrainer, when: str) -> None:
    flat = torch.cat([p.detach().flatten() for p in trainer.disc.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), f"the ranks' discriminators diverged {when}"


def each_rank_its_own_pairs(trainer: DiscriminatorTrainer, examples: list[dict]) -> None:
    for _ in range(2):
        trainer.step(examples, [dict(e, response="no idea") for e in examples], [1.0] * len(examples))
    assert_same_across_ranks(trainer, "after two steps")


def rank_1_without_pairs(
    trainer: DiscriminatorTrainer, examples: list[dict], frame: pl.DataFrame, model: str, processor, cache
) -> None:
    # the online reward: kept teacher samples for rank 0's prompts only
    kept = frame.slice(0, 4)
    pool = TeacherPool.from_curated(
        kept.select("prompt_id", text=pl.col("response"), weight=pl.lit(1.0), quality=pl.lit(1.0))
    )
    reward = DiscriminatorReward(trainer, pool)
    columns = {
        k: [e[k] for e in examples]
        for k in ("prompt_id", "question", "task_type", "options", "video", "frame_timestamps")
    }
    for _ in range(2):
        reward(prompts=None, completions=["no idea"] * len(examples), **columns)
    assert_same_across_ranks(trainer, "after the online rewards")
    assert [h["pairs"] for h in reward.history] == [4, 4], reward.history  # rank 0's pairs, on both ranks

    # the warm-up: one question with a kept sample, so rank 1's share of the questions is empty
    policy, _ = load_model(model)
    one = TeacherPool({frame["prompt_id"][0]: [("<answer>A</answer>", 1.0, 1.0)]})
    settings = AdversarialConfig(
        output_dir="unused",
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        disc_warmup_steps=2,
    )
    warmup = warm_up_discriminator(trainer, policy, processor, frame, one, cache, None, settings)
    assert [h["pairs"] for h in warmup["history"]] == [2, 2] and warmup["checks"] == [], (
        warmup
    )  # too few questions to hold any out
    assert_same_across_ranks(trainer, "after the warm-up")

    # the held-out check: four questions with a kept sample, one held out, so rank 1 has no held-out pair
    four = TeacherPool({p: [("<answer>A</answer>", 1.0, 1.0)] for p in frame["prompt_id"][:4]})
    settings = AdversarialConfig(
        output_dir="unused",
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        disc_warmup_steps=3,
        disc_warmup_target=0.0,
        disc_warmup_check_steps=1,
    )
    warmup = warm_up_discriminator(trainer, policy, processor, frame, four, cache, None, settings)
    assert warmup["checks"] and all(c["pairs"] == 2 for c in warmup["checks"]), warmup  # rank 0's pairs, on both ranks
    assert warmup["steps_taken"] == warmup["checks"][-1]["step"]
    outcomes = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, (warmup["steps_taken"], warmup["checks"]))
    assert all(o == outcomes[0] for o in outcomes), f"the ranks stopped apart: {outcomes}"
    assert_same_across_ranks(trainer, "after the warm-up with held-out checks")


def main(model: str, prompts: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))  # a rank left waiting fails, not hangs
    rank = dist.get_rank()
    frame = example_frame("gt", prompts, split=None)
    examples = frame.slice(4 * rank, 4).to_dicts()  # each rank its own prompts
    _, processor = load_model(model)
    cache = FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts))
    for scenario in ("each rank its own pairs", "rank 1 without pairs"):
        torch.manual_seed(rank)  # a different random head on each rank before the broadcast
        trainer = DiscriminatorTrainer(
            Discriminator.from_student(model), VideoSFTCollator(processor, cache), lr=1e-2, max_grad_norm=1.0
        )
        if scenario == "each rank its own pairs":
            each_rank_its_own_pairs(trainer, examples)
        else:
            rank_1_without_pairs(trainer, examples, frame, model, processor, cache)
        if rank == 0:
            print(f"{scenario}: discriminators identical across ranks", flush=True)
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
