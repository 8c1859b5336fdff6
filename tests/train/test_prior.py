"""The reference rows of every results table: the prior baseline (best constant answer per question
template, no video) and the headroom a run recovers between a baseline and the ground-truth ceiling."""

import json
import subprocess

import polars as pl
import pytest

from rmsd.train.prior import evaluate_prior, fit_prior, prior_answers
from tests.conftest import BIN

WHEN = "When is the red circle visible? Give the start and end time in seconds."


def prompts(rows):
    return pl.DataFrame(
        [
            dict(prompt_id=f"p{i}", task_type=t, question=q, options=None, answer=a, video=f"videos/v{i}.mp4")
            for i, (t, q, a) in enumerate(rows)
        ],
        schema_overrides={"options": pl.List(pl.String)},
    )


def test_each_template_gets_the_constant_that_scores_best_on_the_training_answers():
    train = prompts(
        [
            ("numerical", "How many shapes?", "2"),
            ("numerical", "How many shapes?", "2"),
            ("numerical", "How many shapes?", "3"),
            # summed IoU against these: [1, 3] 1 + 2/3 + 2/3 = 2.33; [0, 3] 2/3 + 1 + 1/2 = 2.17;
            # [1, 4] 2/3 + 1/2 + 1 = 2.17
            ("temporal_grounding", WHEN, "[1, 3]"),
            ("temporal_grounding", WHEN, "[0, 3]"),
            ("temporal_grounding", WHEN, "[1, 4]"),
            *[("temporal_grounding", "When is the green square visible?", "[5, 8]")]
            * 4,  # the task type's best constant: [5, 8]
            ("open_ended", "Describe it.", "a red circle"),
        ]
    )
    by_template, by_task = fit_prior(train)
    best = dict(zip(by_template["question"], by_template["candidate"]))
    assert best == {
        "How many shapes?": "2",
        WHEN: "[1, 3]",
        "When is the green square visible?": "[5, 8]",
    }  # open-ended answers have no metric to fit
    test = prompts(
        [
            ("numerical", "How many shapes?", "3"),
            ("temporal_grounding", WHEN, "[0, 3]"),
            ("temporal_grounding", "When is the blue square visible?", "[0, 3]"),
        ]
    )
    answered = prior_answers(test, by_template, by_task)
    # a template the training split never asked takes its task type's constant
    count, when, unseen = answered["text"].to_list()
    assert (
        count.endswith("<answer>2</answer>")
        and when.endswith("<answer>[1, 3]</answer>")
        and unseen.endswith("<answer>[5, 8]</answer>")
    )


def test_the_prior_answers_without_the_video(bench_dir, tmp_path):
    result = evaluate_prior(bench_dir / "prompts.parquet", tmp_path / "prior", split=None, fit_split="train")
    responses = pl.read_parquet(tmp_path / "prior" / "responses.parquet").join(
        pl.read_parquet(bench_dir / "prompts.parquet").select("prompt_id", "question"), on="prompt_id"
    )
    # one answer per question text, whatever the video
    assert (
        responses.filter(pl.col("task_type") != "open_ended")
        .group_by("question")
        .agg(pl.col("text").n_unique())["text"]
        .max()
        == 1
    )
    assert result["backend"] == "prior" and {r["task_type"] for r in result["by_task"]} >= {
        "numerical",
        "(closed-ended)",
    }
    assert json.loads((tmp_path / "prior" / "eval.json").read_text())["by_task"] == result["by_task"]


def test_a_test_set_of_its_own_gets_the_constants_of_the_benchmarks_train_split(bench_dir, tmp_path):
    from rmsd.synth import synthesise

    test_set = synthesise(tmp_path / "test-set", 4, seed=9, progress=False, split="test")
    evaluate_prior(test_set, tmp_path / "own", split="test", fit_prompts=bench_dir / "prompts.parquet")
    evaluate_prior(bench_dir / "prompts.parquet", tmp_path / "bench", split=None)

    def constants(folder):
        return dict(
            pl.read_parquet(folder / "responses.parquet")
            .join(
                pl.concat(
                    [
                        pl.read_parquet(f).select("prompt_id", "question")
                        for f in (test_set, bench_dir / "prompts.parquet")
                    ]
                ),
                on="prompt_id",
            )
            .select("question", "text")
            .unique()
            .iter_rows()
        )

    own, bench = constants(tmp_path / "own"), constants(tmp_path / "bench")
    assert own and all(bench[q] == text for q, text in own.items() if q in bench)
    with pytest.raises(ValueError, match="train"):  # a test set has no train split to fit on
        evaluate_prior(test_set, tmp_path / "none", split="test")


def write_eval(folder, accuracy):
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({"by_task": [{"task_type": "(closed-ended)", "accuracy": accuracy}]}))
    return folder


def test_compare_reports_the_headroom_each_run_recovers(tmp_path):
    runs = [
        f"{name}={write_eval(tmp_path / name, acc)}"
        for name, acc in (("prior", 0.3), ("A", 0.4), ("D", 0.55), ("ceiling", 0.9))
    ]
    done = subprocess.run(
        [str(BIN / "rmsd-train"), "compare", *runs, "--baseline", "A", "--ceiling", "ceiling"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "| headroom recovered: (run - A) / (ceiling - A) | -0.20 | +0.00 | +0.30 | +1.00 |" in done.stdout
    done = subprocess.run(
        [str(BIN / "rmsd-train"), "compare", *runs, "--baseline", "A"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--ceiling" in done.stderr


@pytest.mark.parametrize("split", [None, "test"])
def test_synth_puts_every_video_in_one_split_on_request(tmp_path, split):
    from rmsd.synth import synthesise

    path = synthesise(tmp_path / "b", 10, seed=3, progress=False, split=split)
    splits = set(pl.read_parquet(path)["split"])
    assert splits == {"test"} if split else len(splits) > 1
