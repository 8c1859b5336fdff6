"""rmsd-train rl: GRPO on video with the discriminator plug-in."""

import json
import subprocess

import pytest
import torch

from tests.conftest import BIN, torchrun


def test_rl_rows_are_the_questions_and_the_pool_their_kept_answers(distilled):
    from rmsd.train.rl import rl_frame, teacher_pool

    frame = rl_frame(distilled)
    assert frame["prompt_id"].is_unique().all() and frame.height > 0
    pool = teacher_pool(distilled)
    assert set(pool.responses) == set(frame["prompt_id"])
    assert all(
        len(v) == 1 and v[0][0].startswith("<think>") for v in pool.responses.values()
    )  # the unwrapped one was dropped


def _trainer(model_path, distilled, out, num_generations=2):
    import datasets

    from rmsd.models import load_model
    from rmsd.schemas.config import FramesConfig
    from rmsd.train.collate import FrameCache
    from rmsd.train.config import AdversarialConfig
    from rmsd.train.data import video_base
    from rmsd.train.rl import VideoGRPOTrainer, reward_functions, rl_frame, rollout_config

    policy, processor = load_model(model_path)
    args = rollout_config(
        AdversarialConfig(
            output_dir=str(out),
            num_generations=num_generations,
            per_device_train_batch_size=4,
            max_steps=1,
            max_completion_length=8,
            beta=0.0,
            discriminator=False,
        ),
        processor,
    )
    cache = FrameCache(FramesConfig(num_frames=4, max_pixels=12544), video_base("weighted", distilled))
    return VideoGRPOTrainer(
        model=policy,
        args=args,
        reward_funcs=reward_functions(None),
        train_dataset=datasets.Dataset.from_polars(rl_frame(distilled)),
        processing_class=processor,
        frame_cache=cache,
    )


def test_video_log_probs_match_each_row_alone(tiny_model, distilled, tmp_path):
    """The batched, video-sliced log-probabilities equal a plain forward of each row on its own
    video: every row keeps its own frames through TRL's generate -> score -> shuffle path."""
    trainer = _trainer(tiny_model, distilled, tmp_path)
    rows = trainer.train_dataset.to_list()
    other = next(r for r in rows if r["video"] != rows[0]["video"])
    inputs = [rows[0], rows[0], other, other]  # two questions x two rollouts, as TRL's sampler orders them
    batch = trainer._generate_and_score_completions(inputs)
    assert len(batch["pixel_values_videos"]) == 4 and batch["video_grid_thw"].shape == (4, 3)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    keep = batch["completion_ids"].shape[1]
    trainer._video_rows = (batch["pixel_values_videos"], batch["video_grid_thw"])
    batched, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep, batch_size=3)
    trainer._video_rows = None
    model = trainer.model.eval()
    video_token = trainer.processing_class.video_token_id
    for i in range(4):
        row = mask[i].bool()
        row_ids = ids[i][row].unsqueeze(0)
        with torch.no_grad():
            logits = (
                model(
                    input_ids=row_ids,
                    attention_mask=torch.ones_like(row_ids),
                    mm_token_type_ids=(row_ids == video_token).long() * 2,
                    pixel_values_videos=batch["pixel_values_videos"][i],
                    video_grid_thw=batch["video_grid_thw"][i : i + 1],
                )
                .logits[0]
                .float()
            )
        n = int(batch["completion_mask"][i].sum())
        targets = row_ids[0, -n:]
        # TRL scores the completion at the sampling temperature
        alone = torch.log_softmax(logits[-n - 1 : -1] / trainer.temperature, dim=-1).gather(1, targets[:, None])[:, 0]
        torch.testing.assert_close(batched[i, :n].float(), alone, atol=2e-4, rtol=1e-4)
    # the two videos really reach the model as different inputs
    assert not torch.equal(batch["pixel_values_videos"][0], batch["pixel_values_videos"][2])


def _rl(*args):
    return subprocess.run([str(BIN / "rmsd-train"), "rl", *map(str, args)], capture_output=True, text=True)


def _scalars(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (out / "runs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_rl_with_the_discriminator_trains_saves_and_logs(tiny_model, distilled, tmp_path):
    out = tmp_path / "rl"
    common = [
        "--data",
        distilled,
        "--out",
        out,
        "--model",
        tiny_model,
        "--num-generations",
        2,
        "--batch-size",
        4,
        "--max-tokens",
        12,
        "--disc-warmup-steps",
        2,
        "--save-steps",
        1,
    ]
    done = _rl(*common, "--max-steps", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    warmup = json.loads((out / "discriminator_warmup.json").read_text())
    assert warmup["steps_taken"] == len(warmup["history"]) == 2 and all("accuracy" in s for s in warmup["history"])
    # one held-out check (a quarter of the questions held out, 2 rollouts each), at the budget's last step: the
    # default cadence is longer
    pairs = 2 * warmup["heldout_questions"]
    assert (
        pairs
        and [(c["step"], c["pairs"]) for c in warmup["checks"]] == [(2, pairs)]
        and {"accuracy", "margin"} <= set(warmup["checks"][0])
    )
    assert (
        warmup["target"] == 0.6
        and warmup["target_reached"] == (warmup["checks"][0]["accuracy"] > 0.6)
        and warmup["seconds"] > 0
    )
    for folder in (out / "checkpoint-2", out / "final"):
        assert (folder / "discriminator" / "score_head.safetensors").exists()
        assert (folder / "rmsd_frames.json").exists()  # the frame policy it was trained with
    tags = _scalars(out)
    for tag in (
        "train/discriminator/accuracy",
        "train/discriminator/margin",
        "train/discriminator/loss",
        "train/discriminator/reward_std",
        "train/discriminator/reward_min",
        "train/discriminator/reward_max",
        "train/rewards/discriminator_reward/mean",
        "train/rewards/outer_format_reward/mean",
        "train/rewards/task_format_reward/mean",
        "train/rewards/ContentReward/mean",
        "train/kl",
        "train/loss",
    ):
        assert tag in tags, sorted(tags)
    logged = [
        e
        for e in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        if "discriminator/reward_std" in e
    ]
    assert len(logged) == 2 and all(e["discriminator/reward_min"] <= e["discriminator/reward_max"] for e in logged)
    stats = json.loads((out / "discriminator_stats.json").read_text())
    assert stats["warmup"]["steps_taken"] == 2 and stats["warmup"]["accuracy"] == warmup["checks"][0]["accuracy"]
    assert stats["rl"]["logged"] == 2 and stats["rl"]["reward_std"]["last"] == logged[-1]["discriminator/reward_std"]
    assert all(set(stats["rl"][name]) == {"mean", "first", "last"} for name in ("accuracy", "margin", "reward_std"))

    from rmsd.models import load_model
    from rmsd.train.discriminator import Discriminator

    policy, _ = load_model(out / "final")
    assert policy.config.model_type == "qwen2_vl"
    saved = Discriminator.from_student(out / "final" / "discriminator")
    assert saved.head.weight.abs().sum() > 0

    # a rerun of the finished run leaves it as it is (a killed run's resume: test_resume.py)
    done = _rl(*common, "--max-steps", 2)
    assert done.returncode == 0 and "has finished" in done.stdout


@pytest.mark.slow
def test_rl_without_the_discriminator_is_the_verifiable_reward_baseline(tiny_model, distilled, tmp_path):
    out = tmp_path / "rl"
    done = _rl(
        "--data",
        distilled,
        "--out",
        out,
        "--model",
        tiny_model,
        "--num-generations",
        2,
        "--batch-size",
        2,
        "--max-tokens",
        8,
        "--max-steps",
        1,
        "--no-discriminator",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "final" / "discriminator").exists()
    tags = _scalars(out)
    assert "train/rewards/ContentReward/mean" in tags and not any("discriminator" in t for t in tags)


def test_rl_refuses_bad_arguments(tiny_model, distilled, tmp_path, capsys):
    from rmsd.train.config import AdversarialConfig, main_parse

    for args, message in (
        (["--num-generations", "3", "--batch-size", "4"], "multiple of --num-generations"),
        (["--weights", "1", "2"], "--weights"),
        (["--disc-warmup-target", "1.5"], "--disc-warmup-target"),
    ):
        with pytest.raises(SystemExit) as exit:
            main_parse(
                AdversarialConfig, ["--data", str(distilled), "--out", str(tmp_path / "o"), *args], "rmsd-train rl"
            )
        assert exit.value.code == 2 and message in capsys.readouterr().err
    done = _rl("--data", distilled, "--out", tmp_path / "o", "--model", tmp_path / "nope")
    assert done.returncode == 2 and "model folder not found" in done.stderr


@pytest.mark.slow
def test_rl_runs_in_two_processes_over_gloo(tiny_model, distilled, tmp_path):
    """The distributed path of the RL stage (DDP on gloo, as torchrun or accelerate launch it)."""
    out = tmp_path / "ddp"
    done = subprocess.run(
        torchrun(
            29535,
            "-m",
            "rmsd.train.cli",
            "rl",
            "--data",
            str(distilled),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--num-generations",
            "2",
            "--batch-size",
            "2",
            "--max-steps",
            "2",
            "--max-tokens",
            "8",
            "--disc-warmup-steps",
            "1",
            "--save-steps",
            "2",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("RL done") == 2  # both ranks
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (out / "final" / "discriminator" / "score_head.safetensors").exists()
    # the held-out check, every rank its share of the held-out questions, at the warm-up's one step
    warmup = json.loads((out / "discriminator_warmup.json").read_text())
    assert warmup["steps_taken"] == 1 and [(c["step"], c["pairs"]) for c in warmup["checks"]] == [
        (1, 2 * warmup["heldout_questions"])
    ]
    assert json.loads((out / "discriminator_stats.json").read_text())["rl"]["logged"] == 2
