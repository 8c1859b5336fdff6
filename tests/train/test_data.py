"""Which examples each SFT mode trains on."""

import json
import shutil

import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq
import pytest

from rmsd.filter.run import run_filter
from rmsd.schemas.config import FilterConfig, ModelConfig, PipelineConfig, TeacherConfig
from rmsd.schemas.tables import CURATED_CONTENT, METADATA_KEY, SAMPLE_KEY, SAMPLES_SCHEMA, SCORE_FIELDS, SchemaError
from rmsd.train.data import curated_frame, example_frame, sft_dataset, video_base
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
    assert example_frame("single", filtered / "filtered", seed=0).equals(
        example_frame("single", filtered / "samples", seed=0)
    )
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


def test_curated_shards_index_their_samples_whole_or_streamed(filtered):
    # curated v3 holds keys and weights; the examples' content comes from the samples, on the key
    key, content = (
        ["prompt_id", "teacher", "sample_index"],
        ["question", "options", "video", "frame_timestamps", "text"],
    )
    curated = curated_frame(filtered / "filtered")
    samples = pl.read_parquet(filtered / "samples" / "*.parquet")
    assert curated.select(*key, *content).equals(
        curated.select(key).join(samples.select(*key, *content), on=key, maintain_order="left")
    )
    weighted = example_frame("weighted", filtered / "filtered")
    assert weighted["response"].sort().equals(curated["text"].sort().alias("response"))
    assert example_frame("weighted", filtered / "filtered" / "curated").equals(weighted)  # the curated folder itself
    for mode in ("weighted", "best"):
        stream = list(sft_dataset(mode, filtered / "filtered", streaming=True))
        whole = example_frame(mode, filtered / "filtered")
        assert (
            pl.DataFrame(stream, schema=whole.schema)
            .sort("prompt_id", "response")
            .equals(whole.sort("prompt_id", "response"))
        )


def test_curated_shards_refuse_samples_gone_changed_or_missing_a_key(filtered, tmp_path):
    out = tmp_path / "filtered"
    shutil.copytree(filtered / "filtered", out)
    samples = shutil.copytree(filtered / "samples", tmp_path / "samples")
    manifest = json.loads((out / "_manifest.json").read_text())
    (out / "_manifest.json").write_text(
        json.dumps({**manifest, "samples_dir": str(tmp_path / "gone"), "samples_dir_relative": "../gone"})
    )
    with pytest.raises(SchemaError, match="are not there"):
        example_frame("weighted", out)
    (out / "_manifest.json").write_text(json.dumps({**manifest, "samples_dir": str(samples)}))
    assert example_frame("weighted", out).equals(example_frame("weighted", filtered / "filtered"))
    (samples / "_manifest.json").write_text(json.dumps({"prompts_path": "elsewhere"}))
    with pytest.raises(SchemaError, match="changed since rmsd-filter scored them"):
        example_frame("best", out)
    (out / "_manifest.json").write_text(
        json.dumps({**manifest, "samples_dir": str(samples), "input_manifest_sha256": None})
    )
    shard = next((samples).glob("samples-*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.filter(pa.compute.not_equal(table["prompt_id"], "p1")), shard)  # p1's samples gone
    with pytest.raises(SchemaError, match="changed since rmsd-filter scored them .samples-a-000000.parquet differs"):
        example_frame("weighted", out)  # the shards' sizes are recorded too
    (out / "_manifest.json").write_text(
        json.dumps({**manifest, "samples_dir": str(samples), "input_manifest_sha256": None, "input_shards": None})
    )
    with pytest.raises(SchemaError, match="curated samples do not match exactly one sample"):
        example_frame("weighted", out)  # without a record, the join still finds the key missing


def test_samples_of_an_unfinished_or_changed_rmsd_gen_job_are_refused(filtered, tmp_path):
    samples = shutil.copytree(filtered / "samples", tmp_path / "samples")
    (samples / "_job.json").write_text(
        json.dumps({"run_id": "r"})
    )  # rmsd-gen's, and no manifest: it runs, or was killed
    (samples / "_manifest.json").unlink()
    with pytest.raises(SchemaError, match="its rmsd-gen job is unfinished .no manifest"):
        example_frame("single", samples)
    shard = samples / "samples-a-000000.parquet"
    record = {shard.name: {"bytes": shard.stat().st_size + 1, "sha256": "0" * 64, "rows": 12}}
    (samples / "_manifest.json").write_text(
        json.dumps(
            {"run_id": "r", "complete": False, "counts": {"samples": 12, "expected_samples": 24}, "files": record}
        )
    )
    with pytest.raises(SchemaError, match="manifest says incomplete: 12 of 24 samples"):
        example_frame("unfiltered", samples)
    (samples / "_manifest.json").write_text(json.dumps({"run_id": "r", "complete": True, "files": record}))
    with pytest.raises(SchemaError, match="changed since its rmsd-gen job finished: samples-a-000000.parquet has"):
        example_frame("single", samples)


def test_curated_v2_shards_carry_their_content_and_are_read_as_they_are(filtered, tmp_path):
    whole = example_frame("weighted", filtered / "filtered")
    # curated v2: the key, task type, the samples' content and the weights, in one shard
    fields = {f.name: f for f in [*SAMPLES_SCHEMA, *SCORE_FIELDS]}
    names = [*SAMPLE_KEY, "task_type", *CURATED_CONTENT, "quality", "weight", "is_best"]
    schema = pa.schema(
        [fields[c] for c in names], metadata={METADATA_KEY: json.dumps({"table": "curated", "version": 2}).encode()}
    )
    folder = tmp_path / "curated"  # no rmsd-filter manifest, no samples: a v2 shard needs neither
    folder.mkdir()
    pq.write_table(
        curated_frame(filtered / "filtered").select(names).to_arrow().cast(schema), folder / "part-000000.parquet"
    )
    assert example_frame("weighted", folder).equals(whole)


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
