"""One scoring everywhere: the pipeline's filter settings (numerical tolerance, ANLS threshold, tau per
task type) score a response alike in rmsd-filter, in the RL content reward and in evaluation."""

import json
import subprocess

import polars as pl
import pytest

from rmsd.filter.score import score_samples
from rmsd.schemas.config import FilterConfig
from rmsd.schemas.grammar import wrap_response
from rmsd.schemas.metrics import score_as_filter
from rmsd.train.evaluate import accuracy_table
from rmsd.train.rl import reward_functions
from tests.conftest import BIN, write_pipelines
from tests.filter.helpers import frame, sample_rows

# 10.8 for 10 is 8% off: wrong at the default 5% tolerance, right at 10%; "HELLO WORD" for "HELLO WORLD"
# has ANLS 0.91: right at the default threshold .5, wrong at .95
ANSWERS = [("n", "numerical", "10", "10.8"), ("o", "ocr", "HELLO WORLD", "HELLO WORD")]
SETTINGS = {
    "default": FilterConfig(),
    "tolerant, strict OCR": FilterConfig(tolerance=0.1, anls_threshold=0.95, tau_by_task={"numerical": 0.9}),
}


def filter_quality(settings):
    rows = [r for pid, task, truth, said in ANSWERS for r in sample_rows(pid, task, truth, [said])]
    scored = score_samples(frame(rows), settings)
    return dict(zip(scored["prompt_id"], scored["quality"])), dict(zip(scored["prompt_id"], scored["kept"]))


def reward(settings):
    content = reward_functions(None, settings)[-1]
    texts = [wrap_response("because", said) for *_, said in ANSWERS]
    values = content(
        None, texts, task_type=[a[1] for a in ANSWERS], options=[None] * len(ANSWERS), answer=[a[2] for a in ANSWERS]
    )
    return dict(zip([a[0] for a in ANSWERS], values))


def evaluation(settings):
    answered = pl.DataFrame(
        {
            "prompt_id": [a[0] for a in ANSWERS],
            "task_type": [a[1] for a in ANSWERS],
            "answer": [a[2] for a in ANSWERS],
            "text": [wrap_response("because", a[3]) for a in ANSWERS],
            "options": [None] * len(ANSWERS),
        },
        schema_overrides={"options": pl.List(pl.String)},
    )
    scored = score_as_filter(answered, settings)
    table = {r["task_type"]: r for r in accuracy_table(scored).to_dicts()}
    return {a[0]: table[a[1]]["accuracy"] for a in ANSWERS}, {a[0]: table[a[1]]["kept"] for a in ANSWERS}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_filter_the_reward_and_evaluation_score_alike(name):
    settings = SETTINGS[name]
    quality, kept = filter_quality(settings)
    accuracy, eval_kept = evaluation(settings)
    assert reward(settings) == pytest.approx(quality)
    assert accuracy == pytest.approx(quality)
    assert eval_kept == {k: float(v) for k, v in kept.items()}


def test_non_default_settings_change_all_three_the_same_way():
    default, changed = SETTINGS["default"], SETTINGS["tolerant, strict OCR"]
    assert filter_quality(default)[0] == {"n": 0.0, "o": pytest.approx(0.909, abs=1e-3)}
    assert filter_quality(changed)[0] == {"n": 1.0, "o": 0.0}
    assert reward(changed) == {"n": 1.0, "o": 0.0} and evaluation(changed)[0] == {"n": 1.0, "o": 0.0}
    assert filter_quality(changed)[1] == {"n": True, "o": False}  # 1.0 >= numerical's own tau .9


@pytest.mark.slow
def test_rmsd_train_eval_scores_with_the_pipelines_filter_settings(tiny_model, bench_dir, tmp_path):
    pipelines = write_pipelines(
        tmp_path / "pipelines.yaml",
        """
        tolerant:
          frames: {num_frames: 4}
          teachers: [{id: t, backend: hf, model: {path: unused}}]
          filter: {tolerance: 0.25, anls_threshold: 0.8, tau_by_task: {ocr: 0.6}}
    """,
    )
    out = tmp_path / "eval"
    done = subprocess.run(
        [
            str(BIN / "rmsd-train"),
            "eval",
            "--model",
            str(tiny_model),
            "--prompts",
            str(bench_dir / "prompts.parquet"),
            "--out",
            str(out),
            "--split",
            "",
            "--limit",
            "6",
            "--max-tokens",
            "8",
            "--no-progress",
            "--pipeline",
            "tolerant",
            "--config",
            str(pipelines),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["scoring"] == {"tolerance": 0.25, "anls_threshold": 0.8, "tau": 0.3, "tau_by_task": {"ocr": 0.6}}
    assert "kept by the filter" in (out / "eval.md").read_text()
