"""The discriminator learns to separate teacher from student answers; the verifiable rewards."""

from pathlib import Path
import random

import polars as pl
import pytest
import torch

from rmsd.schemas.config import FramesConfig
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.data import example_frame, video_base
from rmsd.train.discriminator import (
    Discriminator,
    DiscriminatorReward,
    DiscriminatorTrainer,
    TeacherPool,
    bradley_terry_loss,
)
from rmsd.train.rewards import content_reward, outer_format_reward, task_format_reward
from rmsd.models import load_model


def test_bradley_terry_loss_by_hand():
    teacher, student, q = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])
    expected = (1.0 * -torch.nn.functional.logsigmoid(torch.tensor(2.0)) + 0.5 * -torch.nn.functional.logsigmoid(torch.tensor(-1.0))) / 2
    assert bradley_terry_loss(teacher, student, q).item() == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def pieces(tiny_model, bench_dir):
    prompts = bench_dir / "prompts.parquet"
    examples = example_frame("gt", prompts, split=None).head(8).to_dicts()
    _, processor = load_model(tiny_model)
    collator = VideoSFTCollator(processor, FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts)))
    return examples, collator


def test_discriminator_loss_falls_and_accuracy_rises_on_separable_answers(tiny_model, pieces):
    examples, collator = pieces
    torch.manual_seed(0)
    trainer = DiscriminatorTrainer(Discriminator.from_student(tiny_model), collator, lr=3e-3, max_grad_norm=1.0)
    teachers = examples  # well-formed ground-truth answers
    students = [dict(e, response="um so maybe it is the thing i think") for e in examples]
    history = [trainer.step(teachers, students, [1.0] * len(examples)) for _ in range(25)]
    first, last = history[:3], history[-3:]
    assert sum(h["loss"] for h in last) < 0.5 * sum(h["loss"] for h in first)
    assert min(h["accuracy"] for h in last) == 1.0
    scores = trainer.score(teachers + students)
    assert (scores[: len(teachers)].min() > scores[len(teachers) :].max()).item()


def test_discriminator_saves_and_loads_with_its_head(tiny_model, pieces, tmp_path):
    examples, collator = pieces
    disc = Discriminator.from_student(tiny_model)
    before = DiscriminatorTrainer(disc, collator).score(examples[:2])
    disc.save(tmp_path / "disc", collator.processor)
    again = DiscriminatorTrainer(Discriminator.from_student(tmp_path / "disc"), collator).score(examples[:2])
    assert torch.allclose(before, again, atol=1e-5)


def test_discriminator_reward_scores_rollouts_then_updates_online(tiny_model, pieces):
    examples, collator = pieces
    pool = TeacherPool.from_curated(pl.DataFrame({
        "prompt_id": [e["prompt_id"] for e in examples], "text": [e["response"] for e in examples],
        "weight": [1.0] * len(examples), "quality": [1.0] * len(examples),
    }))
    trainer = DiscriminatorTrainer(Discriminator.from_student(tiny_model), collator, lr=1e-3)
    reward = DiscriminatorReward(trainer, pool)
    columns = {k: [e[k] for e in examples] for k in ("prompt_id", "question", "task_type", "options", "video", "frame_timestamps")}
    before = trainer.score([dict(e, response="bad answer") for e in examples])
    rewards = reward(prompts=None, completions=["bad answer"] * len(examples), **columns)
    assert rewards == pytest.approx(before.tolist(), abs=1e-5)  # the rewards come from D before its update
    assert len(reward.history) == 1 and reward.history[0]["loss"] > 0
    after = trainer.score([dict(e, response="bad answer") for e in examples])
    assert not torch.allclose(before, after)


def test_teacher_responses_are_drawn_from_p():
    pool = TeacherPool({"p": [("good", 0.9, 1.0), ("meh", 0.1, 0.4)], "empty": []})
    rng = random.Random(0)
    draws = [pool.draw("p", rng)[0] for _ in range(2000)]
    assert 0.85 < draws.count("good") / len(draws) < 0.95
    assert pool.draw("empty", rng) is None and pool.draw("unknown", rng) is None


def test_verifiable_reward_components():
    completions = [
        "<think>x</think><answer>B</answer>",
        [{"role": "assistant", "content": "<think>x</think><answer>(C)</answer>"}],
        "<answer>[1, 2]</answer>",
        "<think>x</think><answer>a cat</answer>",
    ]
    columns = dict(
        task_type=["multiple_choice", "multiple_choice", "temporal_grounding", "open_ended"],
        options=[["a", "b", "c"], ["a", "b", "c"], None, None],
        answer=["B", "B", "[1, 3]", "a dog"],
    )
    assert outer_format_reward(None, completions, **columns) == [1.0, 1.0, 0.0, 1.0]
    assert task_format_reward(None, completions, **columns) == [1.0, 0.0, 1.0, 1.0]
    assert content_reward(None, completions, **columns) == pytest.approx([1.0, 0.0, 0.5, None])


def test_one_discriminator_across_two_processes(tiny_model, bench_dir):
    """Under DDP every rank updates D from all ranks' pairs, from rank 0's initial head."""
    import subprocess

    from tests.conftest import BIN

    script = Path(__file__).with_name("ddp_discriminator.py")
    done = subprocess.run(
        [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29537", str(script), str(tiny_model), str(bench_dir / "prompts.parquet")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "discriminators identical across ranks" in done.stdout
