"""rmsd-train from its command line: SFT, its options and recipes, and evaluation."""

import json
import subprocess
from importlib.util import find_spec

import pytest

from tests.conftest import BIN, torchrun

pytestmark = pytest.mark.slow


def train(*args, **popen):
    return [str(BIN / "rmsd-train"), *map(str, args)]


def test_sft_builds_its_student_trains_logs_and_eval_scores_the_result(bench_dir, tmp_path, rmsd_home):
    """The happy path end to end (a killed run's resume: test_resume.py)."""
    out = tmp_path / "sft"
    command = train(
        "sft",
        "--mode",
        "gt",
        "--data",
        bench_dir / "prompts.parquet",
        "--model",
        tmp_path / "student",
        "--init",
        "tiny",
        "--out",
        out,
        "--lr",
        "1e-3",
        "--batch-size",
        "2",
        "--max-steps",
        "8",
        "--save-steps",
        "4",
    )
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "building the 'tiny' preset" in done.stderr
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert (out / "final" / "model.safetensors").exists()
    from rmsd.schemas.config import load_pipeline
    from rmsd.schemas.frame_policy import load_frame_policy

    frames = load_pipeline("demo", check_models=False).frames
    assert (
        load_frame_policy(out / "final") == load_frame_policy(out / "checkpoint-4") == frames
    )  # the frames it was trained with
    assert list((out / "runs").rglob("events.out.tfevents.*")), "TensorBoard logs"
    # the final checkpoint loads in transformers as any Hugging Face checkpoint
    from rmsd.models import load_model

    model, _ = load_model(out / "final")
    assert model.config.model_type == "qwen2_vl"

    done = subprocess.run(
        train(
            "eval",
            "--model",
            out / "final",
            "--prompts",
            bench_dir / "prompts.parquet",
            "--out",
            tmp_path / "eval",
            "--split",
            "",
            "--limit",
            12,
            "--no-progress",
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rmsd-train: frames: 8 frames, <= 12544 px, exact (the checkpoint's training frames)" in done.stdout
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["frames_source"] == "the checkpoint's training frames"
    tasks = {r["task_type"] for r in result["by_task"]}
    assert tasks == {
        "multiple_choice",
        "numerical",
        "temporal_grounding",
        "spatial_grounding",
        "ocr",
        "open_ended",
        "(closed-ended)",
    }
    assert "| multiple_choice |" in (tmp_path / "eval" / "eval.md").read_text()

    # the same checkpoint in a vLLM engine (CPU build): loadable by vLLM, every question answered
    if find_spec("vllm") is None:
        pytest.skip(
            "vLLM is not installed (make setup installs its CPU build on x86-64 only): all but the vLLM evaluation "
            "passed"
        )
    done = subprocess.run(
        train(
            "eval",
            "--model",
            out / "final",
            "--prompts",
            bench_dir / "prompts.parquet",
            "--out",
            tmp_path / "eval-vllm",
            "--split",
            "",
            "--limit",
            12,
            "--no-progress",
            "--backend",
            "vllm",
            "--enforce-eager",
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "eval-vllm" / "eval.json").read_text())["backend"] == "vllm"
    import polars as pl

    responses = pl.read_parquet(tmp_path / "eval-vllm" / "responses.parquet")
    assert responses.height == 12 and responses["text"].null_count() == 0


def test_bad_mode_and_missing_data_fail_clearly(tmp_path):
    done = subprocess.run(
        train("sft", "--mode", "best-of", "--data", tmp_path, "--model", tmp_path, "--out", tmp_path / "o"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--mode: invalid choice: 'best-of'" in done.stderr
    done = subprocess.run(
        train("sft", "--mode", "best", "--data", tmp_path, "--model", tmp_path, "--out", tmp_path / "o"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no curated shards" in done.stderr or "manifest" in done.stderr


def test_a_rollout_server_needs_a_model_folder(tmp_path):
    done = subprocess.run(train("rollout-server", "--model", tmp_path), capture_output=True, text=True)
    assert done.returncode == 2 and f"--model {tmp_path}: not a model folder (no config.json)" in done.stderr


def test_sft_runs_in_two_processes_over_gloo(bench_dir, tiny_model, tmp_path):
    """The distributed path (DDP on the gloo backend), as torchrun or accelerate launch it."""
    import math

    import polars as pl

    out = tmp_path / "ddp"
    command = torchrun(
        29531,
        "-m",
        "rmsd.train.cli",
        "sft",
        "--mode",
        "gt",
        "--data",
        str(bench_dir / "prompts.parquet"),
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--lr",
        "1e-3",
        "--batch-size",
        "2",
        "--max-steps",
        "4",
        "--save-steps",
        "4",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    examples = pl.read_parquet(bench_dir / "prompts.parquet").filter(pl.col("split") == "train").height
    assert state["epoch"] == pytest.approx(4 / math.ceil(examples / (2 * 2)), rel=1e-3)  # 2 ranks x 2 examples per step
    assert (out / "final" / "model.safetensors").exists() and (out / "final" / "processor_config.json").exists()


def test_sft_and_rl_take_every_trl_option_from_the_command_line_and_a_recipe(tmp_path, capsys):
    """--help documents TRL's options; a YAML recipe sets them, the command line overrides it."""
    from rmsd.train.config import AdversarialConfig, DistillSFTConfig, parse

    done = subprocess.run(train("sft", "--help"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(SystemExit):
        parse(AdversarialConfig, ["--help"], "rmsd-train rl")  # the same parser rmsd-train rl builds
    rl_help = capsys.readouterr().out
    for text, own in ((done.stdout, "--visual-aux"), (rl_help, "--disc-warmup-steps")):
        for option in ("--gradient_checkpointing", "--bf16", "--deepspeed", "--report_to", "--config", own):
            assert option in text, option
    assert "--disc-warmup-target" in rl_help and "--disc-warmup-check-steps" in rl_help

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "mode: weighted\ndata: curated\noutput_dir: out\nlearning_rate: 3.0e-4\ngradient_checkpointing: "
        "false\nweight_decay: 0.1\n"
    )
    inputs, args = parse(DistillSFTConfig, ["--config", str(recipe), "--lr", "1e-3"], "rmsd-train sft")
    assert (inputs.data, args.mode, args.output_dir) == ("curated", "weighted", "out")
    assert (args.learning_rate, args.gradient_checkpointing, args.weight_decay) == (1e-3, False, 0.1)
    _, rl = parse(
        AdversarialConfig,
        ["--out", "o", "--no-discriminator", "--weights", "0.5", "0.2", "0.1", "0.3"],
        "rmsd-train rl",
    )
    assert rl.reward_weights == [0.2, 0.1, 0.3]  # outer, task, content: no discriminator reward

    pipelines = tmp_path / "pipelines.yaml"
    pipelines.write_text("version: 1\npipelines: {}\n")
    done = subprocess.run(
        train("sft", "--config", pipelines, "--mode", "gt", "--data", tmp_path, "--out", tmp_path / "o"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--pipelines-file" in done.stderr
