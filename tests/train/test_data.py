"""Which examples each SFT mode trains on."""

import json

import polars as pl
import pytest

from rmsd.filter.run import run_filter
from rmsd.schemas.config import FilterConfig, ModelConfig, PipelineConfig, TeacherConfig
from rmsd.schemas.tables import SchemaError
from rmsd.train.data import example_frame, video_base
from tests.filter.helpers import COLOURS, sample_rows, write_shards


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    root = tmp_path_factory.mktemp("filtered")
    prompts = root / "data" / "prompts.parquet"
    prompts.parent.mkdir()
    rows = (
        sample_rows("p1", "multiple_choice", "A", ["A", "A", "B", "C"], teacher="a", options=COLOURS)
        + sample_rows("p2", "temporal_grounding", "[1, 3]", ["[1, 3]", "[1, 2]", "[0, 9]", None], teacher="a")
        + sample_rows("p3", "numerical", "4", ["5", "6", "7", "8"], teacher="a")
    )
    samples = write_shards(root / "samples", {"samples-a-000000.parquet": rows})
    (samples / "_manifest.json").write_text(json.dumps({"prompts_path": str(prompts)}))
    cfg = PipelineConfig(teachers=[TeacherConfig(id="a", model=ModelConfig(path="unused"))], filter=FilterConfig())
    run_filter(cfg, "t", samples, root / "filtered", progress=False, workers=1)
    return root


def test_best_takes_one_highest_quality_sample_per_prompt(filtered):
    best = example_frame("best", filtered / "filtered")
    assert sorted(best["prompt_id"]) == ["p1", "p2"]  # p3 has no kept sample
    assert best.filter(pl.col("prompt_id") == "p2")["response"].item().endswith("<answer>[1, 3]</answer>")
    assert best["weight"].to_list() == [1.0, 1.0]


def test_weighted_takes_every_kept_sample_with_p_k(filtered):
    weighted = example_frame("weighted", filtered / "filtered")
    sums = weighted.group_by("prompt_id").agg(pl.col("weight").sum(), pl.len())
    assert dict(zip(sums["prompt_id"], sums["len"])) == {"p1": 2, "p2": 2}
    assert sums["weight"].to_list() == pytest.approx([1.0, 1.0])
    p2 = weighted.filter(pl.col("prompt_id") == "p2").sort("weight")
    assert p2["weight"].to_list() == pytest.approx([0.5 / 1.5, 1 / 1.5])  # IoU 0.5 and 1


def test_filtered_and_unfiltered_weigh_samples_uniformly(filtered):
    kept = example_frame("filtered", filtered / "filtered")
    assert kept.group_by("prompt_id").agg(pl.col("weight").sum())["weight"].to_list() == pytest.approx([1.0, 1.0])
    assert kept.filter(pl.col("prompt_id") == "p2")["weight"].to_list() == [0.5, 0.5]  # p_k would be 1/3, 2/3
    every = example_frame("unfiltered", filtered / "filtered")
    counts = dict(every.group_by("prompt_id").len().iter_rows())
    assert counts == {"p1": 4, "p2": 3, "p3": 4}  # p2's error row has no answer to learn from
    assert every.filter(pl.col("prompt_id") == "p2")["weight"].to_list() == pytest.approx([1 / 3] * 3)


def test_single_takes_one_answered_sample_per_prompt_unfiltered(filtered):
    one = example_frame("single", filtered / "samples", seed=0)
    assert sorted(one["prompt_id"]) == ["p1", "p2", "p3"]  # p3's wrong answers too: no filtering
    assert one["response"].null_count() == 0
    assert example_frame("single", filtered / "samples", seed=0).equals(one)
    draws = {tuple(example_frame("single", filtered / "samples", seed=s)["response"]) for s in range(8)}
    assert len(draws) > 1  # the seed decides which sample


def test_filter_output_leads_to_its_samples_and_says_when_they_moved(filtered, tmp_path):
    # scored shards hold scores only: the answered samples come from the folder they were scored from
    assert example_frame("single", filtered / "filtered", seed=0).equals(example_frame("single", filtered / "samples", seed=0))
    moved = tmp_path / "filtered"
    moved.mkdir()
    (moved / "scored").mkdir()
    manifest = json.loads((filtered / "filtered" / "_manifest.json").read_text())
    (moved / "_manifest.json").write_text(json.dumps({**manifest, "samples_dir": str(tmp_path / "gone")}))
    with pytest.raises(SchemaError, match="are not there; pass that samples folder"):
        example_frame("unfiltered", moved)
    (moved / "_manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "samples_dir"}))
    with pytest.raises(SchemaError, match="are not there; pass that samples folder"):  # not the working directory
        example_frame("single", moved)


def test_gt_uses_reasoning_and_answer_of_the_train_split(bench_dir):
    gt = example_frame("gt", bench_dir / "prompts.parquet")
    prompts = pl.read_parquet(bench_dir / "prompts.parquet").filter(pl.col("split") == "train")
    assert gt.height == prompts.height
    row = prompts.row(0, named=True)
    expected = f"<think>{json.loads(row['meta'])['reasoning']}</think><answer>{row['answer']}</answer>"
    assert gt.filter(pl.col("prompt_id") == row["prompt_id"])["response"].item() == expected


def test_video_base_follows_the_manifests(filtered):
    prompts_dir = filtered / "data"
    assert video_base("best", filtered / "filtered") == prompts_dir
    assert video_base("weighted", filtered / "filtered" / "curated") == prompts_dir
    assert video_base("single", filtered / "samples") == prompts_dir


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    from rmsd.train.sft import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step in (4, 8, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8}')
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')  # cut off mid-write
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
