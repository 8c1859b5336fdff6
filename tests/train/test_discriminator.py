"""The discriminator learns to separate teacher from student answers; the verifiable rewards."""

import random
from pathlib import Path

import polars as pl
import pytest
import torch

from rmsd.models import load_model
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


def test_bradley_terry_loss_by_hand():
    teacher, student, q = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])
    expected = (
        1.0 * -torch.nn.functional.logsigmoid(torch.tensor(2.0))
        + 0.5 * -torch.nn.functional.logsigmoid(torch.tensor(-1.0))
    ) / 2
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
    pool = TeacherPool.from_curated(
        pl.DataFrame(
            {
                "prompt_id": [e["prompt_id"] for e in examples],
                "text": [e["response"] for e in examples],
                "weight": [1.0] * len(examples),
                "quality": [1.0] * len(examples),
            }
        )
    )
    trainer = DiscriminatorTrainer(Discriminator.from_student(tiny_model), collator, lr=1e-3)
    reward = DiscriminatorReward(trainer, pool)
    columns = {
        k: [e[k] for e in examples]
        for k in ("prompt_id", "question", "task_type", "options", "video", "frame_timestamps")
    }
    before = trainer.score([dict(e, response="bad answer") for e in examples])
    logged = {}
    rewards = reward(prompts=None, completions=["bad answer"] * len(examples), log_metric=logged.__setitem__, **columns)
    assert rewards == pytest.approx(before.tolist(), abs=1e-5)  # the rewards come from D before its update
    assert len(reward.history) == 1 and reward.history[0]["loss"] > 0
    # the reward's spread over the batch, and D's accuracy and margin on the pairs it trained on, go to TRL's log
    spread = {"reward_std": before.std().item(), "reward_min": before.min().item(), "reward_max": before.max().item()}
    assert {k: logged[f"discriminator/{k}"] for k in spread} == pytest.approx(spread, abs=1e-5)
    assert {"discriminator/accuracy", "discriminator/margin", "discriminator/loss"} <= set(logged)
    after = trainer.score([dict(e, response="bad answer") for e in examples])
    assert not torch.allclose(before, after)


def test_rollouts_of_prompts_without_teacher_samples_get_rewards_and_no_pair(tiny_model, pieces):
    """The reward's one forward pass scores every rollout and pairs only those whose prompt has kept
    teacher samples, each with its own: the update's loss is the Bradley-Terry loss of exactly those
    pairs, scored by D before the update."""
    examples, collator = pieces
    with_teacher = {e["prompt_id"] for e in examples[::2]}
    teachers = {e["prompt_id"]: (f"teacher answer {i}", 0.5 + i / 20) for i, e in enumerate(examples[::2])}
    pool = TeacherPool({p: [(text, 1.0, q)] for p, (text, q) in teachers.items()})
    trainer = DiscriminatorTrainer(Discriminator.from_student(tiny_model), collator, lr=1e-3)
    reward = DiscriminatorReward(trainer, pool)
    completions = [f"student answer {i}" for i in range(len(examples))]
    students = [dict(e, response=c) for e, c in zip(examples, completions)]
    paired = [i for i, e in enumerate(examples) if e["prompt_id"] in with_teacher]
    before = trainer.score(students)
    teacher_scores = trainer.score([dict(examples[i], response=teachers[examples[i]["prompt_id"]][0]) for i in paired])
    quality = torch.tensor([teachers[examples[i]["prompt_id"]][1] for i in paired])
    columns = {
        k: [e[k] for e in examples]
        for k in ("prompt_id", "question", "task_type", "options", "video", "frame_timestamps")
    }
    rewards = reward(prompts=None, completions=completions, **columns)
    assert rewards == pytest.approx(before.tolist(), abs=1e-5)
    stats = reward.history[0]
    assert stats["pairs"] == len(paired) == 4
    expected = bradley_terry_loss(teacher_scores, before[paired], quality).item()
    assert stats["loss"] == pytest.approx(expected, abs=1e-5)


def test_a_teacher_answer_drawn_for_several_rollouts_goes_through_d_once(tiny_model, pieces):
    """Four rollouts of each of two questions, one teacher answer per question: D reads 8 + 2 answers,
    and its update is the update on the 8 pairs with the teacher answer repeated in each."""
    examples, collator = pieces
    rows = [examples[i // 4] for i in range(8)]
    pool = TeacherPool(
        {e["prompt_id"]: [(f"teacher answer {i}", 1.0, 0.5 + i / 4)] for i, e in enumerate(examples[:2])}
    )
    completions = [f"student answer {i}" for i in range(len(rows))]
    columns = {
        k: [e[k] for e in rows] for k in ("prompt_id", "question", "task_type", "options", "video", "frame_timestamps")
    }
    read: list[int] = []

    def counting(batch):
        read.append(len(batch))
        return collator(batch)

    counting.processor = collator.processor
    trainers = []
    for collate in (counting, collator):
        torch.manual_seed(0)  # the same head
        trainers.append(DiscriminatorTrainer(Discriminator.from_student(tiny_model), collate, lr=1e-3))
    once, repeated = trainers
    reward = DiscriminatorReward(once, pool)
    rewards = reward(prompts=None, completions=completions, **columns)
    assert read == [len(rows) + 2]
    teachers = [dict(e, response=pool.responses[e["prompt_id"]][0][0]) for e in rows]
    students = [dict(e, response=c) for e, c in zip(rows, completions)]
    quality = [pool.responses[e["prompt_id"]][0][2] for e in rows]
    before = repeated.score(students)
    stats = repeated.step(teachers, students, quality)
    assert rewards == pytest.approx(before.tolist(), abs=1e-5)
    assert {k: reward.history[0][k] for k in stats} == pytest.approx(stats, abs=1e-5)
    for a, b in zip(once.disc.parameters(), repeated.disc.parameters()):  # the update's (clipped) gradients
        assert (a.grad is None) == (b.grad is None)
        # equal up to float32 sums in another order (the head's bias: zero, as D(T) - D(S) cancels it)
        assert a.grad is None or (a.grad - b.grad).norm() <= 1e-3 * b.grad.norm() + 1e-8


def test_bf16_discriminator_runs_under_autocast_and_keeps_float32_weights(tiny_model, pieces):
    """--bf16: D's passes in bfloat16 (its scores near, not equal to, float32's), its weights, optimizer
    and scores in float32."""
    examples, collator = pieces
    students = [dict(e, response="um so maybe") for e in examples[:4]]
    scores = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        trainer = DiscriminatorTrainer(Discriminator.from_student(tiny_model), collator, lr=1e-3, bf16=bf16)
        scores[bf16] = trainer.score(students)
        assert trainer.step(examples[:4], students, [1.0] * 4)["pairs"] == 4
        assert {p.dtype for p in trainer.disc.parameters()} == {torch.float32}
    assert scores[True].dtype == torch.float32
    assert not torch.equal(scores[True], scores[False])
    assert torch.allclose(scores[True], scores[False], atol=0.05 * scores[False].abs().max().item())


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


@pytest.fixture(scope="module")
def two_ranks(tiny_model, bench_dir, tmp_path_factory):
    """ddp_discriminator.py on two ranks: its output, and why it stopped if it failed. A rank left
    waiting in a collective fails at the process group's timeout (set there); if torchrun still
    runs past ours, it is stopped with its ranks."""
    import os
    import subprocess

    from tests.conftest import torchrun

    script = Path(__file__).with_name("ddp_discriminator.py")
    logs = tmp_path_factory.mktemp("ddp")
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        run = subprocess.Popen(
            torchrun(29537, script, tiny_model, bench_dir / "prompts.parquet"),
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            run.wait(timeout=300)
        except subprocess.TimeoutExpired:
            run.terminate()  # torchrun stops its ranks (each in a session of its own) before it exits
            run.wait(timeout=60)
    stderr = (logs / "stderr").read_text()
    return (logs / "stdout").read_text(), f"exit status {run.returncode}: {stderr[-3000:]}"


def test_one_discriminator_across_two_processes(two_ranks):
    """Under DDP every rank updates D from all ranks' pairs, from rank 0's initial head."""
    stdout, failure = two_ranks
    assert "each rank its own pairs: discriminators identical across ranks" in stdout, failure


def test_a_rank_without_pairs_takes_part_in_every_update(two_ranks):
    """A rank whose prompts have no kept teacher sample (rl_frame keeps them) still joins every
    update of D, in the online reward and in the warm-up, and every held-out check of the warm-up
    (where it holds no held-out pair): no rank waits forever for it, every rank holds the same D,
    learnt from the other ranks' pairs, and all stop the warm-up at the same step."""
    stdout, failure = two_ranks
    assert "rank 1 without pairs: discriminators identical across ranks" in stdout, failure


def test_warm_up_rollouts_are_left_padded_at_every_step(tiny_model, bench_dir, monkeypatch):
    """The warm-up alternates the policy's rollouts (left padding) with D's updates (the collator,
    right padding) over one processor: at every step, prompts of different lengths in a batch, its
    rollouts (texts and log-probabilities) are those of a fresh backend for the same requests and seeds."""
    from rmsd.gen.backends.hf import HFBackend
    from rmsd.train.config import AdversarialConfig
    from rmsd.train.rl import warm_up_discriminator

    prompts = bench_dir / "prompts.parquet"
    # two steps of two questions, each pair of unequal prompt lengths (task types' prompts differ)
    tasks = ["multiple_choice", "numerical", "spatial_grounding", "temporal_grounding"]
    frame = (
        example_frame("gt", prompts, split=None)
        .filter(pl.col("task_type").is_in(tasks))
        .unique("task_type", keep="first")
        .sort("prompt_id")
    )
    pool = TeacherPool({p: [("<think>x</think><answer>A</answer>", 1.0, 1.0)] for p in frame["prompt_id"]})
    policy, processor = load_model(tiny_model)
    cache = FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts))
    disc = DiscriminatorTrainer(Discriminator.from_student(tiny_model), VideoSFTCollator(processor, cache), lr=1e-3)
    rollouts = []  # (requests, completions) of each generate call of the warm-up
    generate = HFBackend.generate

    def recorded(backend, requests):
        completions = generate(backend, requests)
        rollouts.append((requests, completions))
        return completions

    monkeypatch.setattr(HFBackend, "generate", recorded)
    # a target no accuracy is above: the whole budget, with a held-out check after each step
    settings = AdversarialConfig(
        output_dir="unused",
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=8,
        disc_warmup_steps=2,
        disc_warmup_target=1.0,
        disc_warmup_check_steps=1,
    )
    warmup = warm_up_discriminator(disc, policy, processor, frame, pool, cache, None, settings)
    monkeypatch.undo()
    assert (warmup["steps_taken"], len(warmup["history"]), warmup["target_reached"]) == (2, 2, False)
    assert [c["step"] for c in warmup["checks"]] == [1, 2] and all(
        c["pairs"] == 2 for c in warmup["checks"]
    )  # 1 held-out question

    fresh = HFBackend.from_model(policy.eval(), load_model(tiny_model)[1])
    held_out, *steps = rollouts  # the held-out question's rollouts come first, once
    assert len(held_out[0]) == 1 and len(steps) == 2
    for requests, completions in rollouts:
        if len(requests) > 1:
            assert fresh._inputs(requests)["attention_mask"].sum(dim=1).unique().numel() > 1  # padding there is
        again = fresh.generate(requests)
        # the tiny model's texts barely depend on the prompt; the log-probabilities do
        assert [[c.text for c in outs] for outs in completions] == [[c.text for c in outs] for outs in again]
        assert [c.cumulative_logprob for outs in completions for c in outs] == pytest.approx(
            [c.cumulative_logprob for outs in again for c in outs], abs=1e-3
        )


def test_held_out_questions_are_a_quarter_at_most_drawn_from_the_seed():
    from rmsd.train.rl import HELDOUT_PAIRS, heldout_questions

    ids = [f"q{i:03d}" for i in range(400)]
    held = heldout_questions(ids, 8, seed=0)
    assert len(held) == HELDOUT_PAIRS // 8 and held <= set(ids)
    assert heldout_questions(list(reversed(ids)), 8, seed=0) == held != heldout_questions(ids, 8, seed=1)
    assert len(heldout_questions(ids[:40], 1, seed=0)) == 10  # a quarter of the questions
    assert heldout_questions(ids[:3], 8, seed=0) == set()


def test_warm_up_stops_at_the_first_check_above_the_target(tiny_model, bench_dir):
    """With a target of 0 the first check that finds one held-out pair ranked right ends the
    warm-up, long before its budget."""
    from rmsd.train.config import AdversarialConfig
    from rmsd.train.rl import warm_up_discriminator

    prompts = bench_dir / "prompts.parquet"
    frame = example_frame("gt", prompts, split=None).head(16)
    pool = TeacherPool({r["prompt_id"]: [(r["response"], 1.0, 1.0)] for r in frame.to_dicts()})
    policy, processor = load_model(tiny_model)
    cache = FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts))
    disc = DiscriminatorTrainer(Discriminator.from_student(tiny_model), VideoSFTCollator(processor, cache), lr=1e-3)
    settings = AdversarialConfig(
        output_dir="unused",
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=4,
        disc_warmup_steps=20,
        disc_warmup_target=0.0,
        disc_warmup_check_steps=2,
    )
    warmup = warm_up_discriminator(disc, policy, processor, frame, pool, cache, None, settings)
    assert (warmup["steps_taken"], warmup["target_reached"], warmup["heldout_questions"]) == (2, True, 4)
    assert len(warmup["checks"]) == 1 and warmup["checks"][0]["step"] == 2 and warmup["checks"][0]["pairs"] == 8
    assert warmup["checks"][0]["accuracy"] > 0 and len(warmup["history"]) == 2
