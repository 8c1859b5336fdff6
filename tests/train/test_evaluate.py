"""rmsd-train eval: greedy answers that do not depend on the batch they are generated in, and the
questions it is told to ask (--task-types)."""

import json

import polars as pl
from typer.testing import CliRunner

from rmsd.gen.adapters import load_prompts
from rmsd.models import load_model
from rmsd.schemas.config import FramesConfig
from rmsd.train.cli import app
from rmsd.train.collate import prompt_messages
from rmsd.train.evaluate import answer_prompts


def test_greedy_answers_are_the_same_alone_and_left_padded_in_one_batch(tiny_model, bench_dir):
    rows = load_prompts(bench_dir / "prompts.parquet")[0][:8]  # every task type of one video, and two of the next
    _, processor = load_model(tiny_model)
    lengths = {
        len(
            processor.tokenizer(
                processor.apply_chat_template(prompt_messages(r), add_generation_prompt=True, tokenize=False)
            )["input_ids"]
        )
        for r in rows
    }
    assert len(lengths) > 1, "the batch needs padding"

    def answers(batch_size):
        frame = answer_prompts(
            tiny_model, rows, bench_dir, FramesConfig(), max_tokens=8, batch_size=batch_size, progress=False
        )
        return frame["text"].to_list()

    alone = answers(1)
    assert len(set(alone)) > 1, "answers that differ from prompt to prompt"
    assert answers(len(rows)) == alone


def test_eval_asks_only_the_task_types_it_is_given_and_names_the_known_ones(tiny_model, bench_dir, tmp_path):
    command = [
        "eval",
        "--model",
        str(tiny_model),
        "--prompts",
        str(bench_dir / "prompts.parquet"),
        "--split",
        "",
        "--max-tokens",
        "4",
        "--no-progress",
    ]
    unknown = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "bad"), "--task-types", "ocr", "counting"])
    assert unknown.exit_code == 2
    assert (
        "unknown task type 'counting'; known: multiple_choice, numerical, temporal_grounding, spatial_grounding, "
        "ocr, open_ended" in unknown.output
    )
    assert not (tmp_path / "bad").exists()

    done = CliRunner().invoke(
        app, [*command, "--out", str(tmp_path / "eval"), "--task-types", "ocr", "numerical", "--batch-size", "5"]
    )
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["task_types"] == ["ocr", "numerical"]
    assert result["questions"] == 16  # 8 videos, one question of each type
    assert {r["task_type"] for r in result["by_task"]} == {"ocr", "numerical", "(closed-ended)"}
    assert "16 questions (task types ocr, numerical)" in (tmp_path / "eval" / "eval.md").read_text()


def _video_blind_copy(tiny_model, folder):
    """The tiny model with its vision merger's output layer zeroed: every video becomes the same
    (zero) embeddings, so its answers cannot depend on the frames."""
    import torch

    model, processor = load_model(tiny_model)
    last = model.model.visual.merger.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_the_blind_check_warns_about_a_model_that_ignores_its_video(tiny_model, bench_dir, tmp_path):
    command = [
        "eval",
        "--prompts",
        str(bench_dir / "prompts.parquet"),
        "--split",
        "",
        "--max-tokens",
        "6",
        "--no-progress",
        "--blind",
    ]
    blind_model = _video_blind_copy(tiny_model, tmp_path / "blind-model")
    done = CliRunner().invoke(app, [*command, "--model", str(blind_model), "--out", str(tmp_path / "ignores")])
    assert done.exit_code == 0, done.output
    check = json.loads((tmp_path / "ignores" / "eval.json").read_text())["blind"]
    assert check["closed_ended"]["changed"] == 0.0
    assert check["closed_ended"]["accuracy"] == check["closed_ended"]["accuracy_blind"]
    assert "the answers barely depend on the video: 0.0% of closed-ended answers change" in check["warning"]
    assert "warning: the answers barely depend on the video" in done.output
    assert "**Warning: the answers barely depend on the video" in (tmp_path / "ignores" / "eval.md").read_text()
    responses = pl.read_parquet(tmp_path / "ignores" / "responses.parquet")
    assert responses["text"].to_list() == responses["text_blind"].to_list()

    # the same model before the change sees its frames: grey ones change some answers, and no warning
    sees = CliRunner().invoke(app, [*command, "--model", str(tiny_model), "--out", str(tmp_path / "sees")])
    assert sees.exit_code == 0, sees.output
    result = json.loads((tmp_path / "sees" / "eval.json").read_text())
    assert result["blind"]["closed_ended"]["changed"] >= 0.10 and result["blind"]["warning"] is None
    closed = next(r for r in result["by_task"] if r["task_type"] == "(closed-ended)")
    assert result["blind"]["closed_ended"]["accuracy"] == closed["accuracy"]
    assert "warning" not in sees.output


def test_every_evaluation_summary_says_whether_the_blind_check_ran(tiny_model, bench_dir, tmp_path):
    done = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_model),
            "--prompts",
            str(bench_dir / "prompts.parquet"),
            "--split",
            "",
            "--limit",
            "3",
            "--max-tokens",
            "4",
            "--no-progress",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["blind"] is None
    assert "Blind-video check: not run (`rmsd-train eval --blind`" in (tmp_path / "eval" / "eval.md").read_text()
