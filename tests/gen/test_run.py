"""rmsd-gen end to end, through its command line, as a user runs it."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import datasets
import polars as pl
import pyarrow.dataset as ds
import pytest

from rmsd.schemas.tables import SAMPLES_SCHEMA, read_table
from tests.conftest import BIN, gen, write_pipelines

pytestmark = pytest.mark.slow


def samples(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(out.glob("samples-*.parquet")))


def test_demo_writes_k_samples_per_prompt_readable_everywhere(demo_run):
    work, done = demo_run
    out = work / "out"
    assert "72/72 samples for 18 prompts" in done.stdout
    df = samples(out)
    assert df.columns == [f.name for f in SAMPLES_SCHEMA]
    assert df.group_by("prompt_id", "teacher").len()["len"].to_list() == [4] * 18
    assert (
        sorted(df.group_by("prompt_id").agg(pl.col("sample_index").sort())["sample_index"].to_list())
        == [[0, 1, 2, 3]] * 18
    )
    assert df["error"].null_count() == len(df) and df["text"].null_count() == 0
    assert df["seed"].n_unique() == len(df)
    assert df["frame_timestamps"].list.len().unique().to_list() == [8]
    assert df["run_id"].n_unique() == 1
    # the three readers users reach for
    assert ds.dataset(out, format="parquet").to_table().num_rows == 72
    assert pl.scan_parquet(out / "*.parquet").select(pl.len()).collect().item() == 72
    assert datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train").num_rows == 72
    for shard in out.glob("samples-*.parquet"):
        read_table(shard, "samples")  # carries the samples schema version


def test_manifest_records_the_job(demo_run):
    work, _ = demo_run
    manifest = json.loads((work / "out" / "_manifest.json").read_text())
    assert manifest["pipeline"] == "demo" and manifest["complete"] is True
    assert manifest["counts"]["samples"] == 72 and manifest["counts"]["error_samples"] == 0
    assert manifest["sampling"]["multiple_choice"]["k"] == 4 and manifest["sampling"]["open_ended"]["max_tokens"] == 96
    assert manifest["models"]["demo-teacher"].endswith("models/demo-teacher")
    assert (
        manifest["prompts_path_relative"] == "../bench/prompts.parquet"
    )  # a copy moved with its prompts still finds them
    assert {"torch", "transformers", "ray", "pyarrow"} <= set(manifest["versions"])
    assert len(manifest["config_hash"]) == 64
    timings = manifest["timings"]  # the engines' start, then generating and writing, within the run
    assert 0 < timings["engine_start_seconds_last_run"] < timings["wall_seconds_last_run"]
    assert 0 < timings["generation_seconds_last_run"] < timings["wall_seconds_last_run"]
    assert "OPENAI_API_KEY" not in json.dumps(manifest)


def test_rerun_of_a_finished_job_does_nothing(demo_run):
    work, _ = demo_run
    out = work / "out"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    done = gen(
        "run", "--pipeline", "demo", "--prompts", work / "bench" / "prompts.parquet", "--out", out, cwd=work, check=0
    )
    assert "0 shards written" in done.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_different_job_in_the_same_folder_is_refused(demo_run):
    work, _ = demo_run
    done = gen(
        "run",
        "--pipeline",
        "demo",
        "--prompts",
        work / "bench" / "prompts.parquet",
        "--out",
        work / "out",
        "--limit",
        5,
        cwd=work,
        check=2,
    )
    assert "holds another rmsd-gen job" in done.stderr


@pytest.fixture
def tiny_pipeline(tmp_path, tiny_model):
    return write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        tiny:
          frames: {{num_frames: 4}}
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
            - id: b
              model: {{path: {tiny_model}}}
          sampling: {{k: 3, max_tokens: 6, teachers: [a]}}
          tasks:
            ocr: {{teachers: [a, b], k: 2, logprobs: 2}}
          gen: {{shard_size: 2}}
    """,
    )


def test_broken_videos_become_error_rows_and_the_run_goes_on(tmp_path, bench_dir, tiny_pipeline):
    data = tmp_path / "data"
    shutil.copytree(bench_dir, data)
    prompts = pl.read_parquet(data / "prompts.parquet").head(12)
    (data / "videos" / "empty.mp4").write_bytes(b"")
    (data / "videos" / "text.mp4").write_text("not a video")
    (data / "videos" / "cut.mp4").write_bytes((data / prompts["video"][0]).read_bytes()[:500])
    broken = ["videos/missing.mp4", "videos/empty.mp4", "videos/text.mp4", "videos/cut.mp4", "../outside.mp4"]
    prompts = prompts.with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(pl.Series(broken + [""] * 7)).otherwise(pl.col("video")).alias("video")
    )
    prompts.write_parquet(data / "broken.parquet")
    done = gen(
        "run",
        "--pipeline",
        "tiny",
        "--config",
        tiny_pipeline,
        "--prompts",
        data / "broken.parquet",
        "--out",
        tmp_path / "out",
        "--no-progress",
        check=3,
    )
    df = samples(tmp_path / "out")
    errors = df.filter(pl.col("error").is_not_null())
    assert set(errors["video"]) == set(broken)
    assert errors["text"].null_count() == len(errors)
    kinds = {e.split(":")[0] for e in errors["error"]}
    assert (
        kinds <= {"missing", "empty", "unreadable", "truncated", "refused"}
        and "refused" in kinds
        and "missing" in kinds
    )
    assert f"{len(errors)} error samples" in done.stdout
    good = df.filter(pl.col("error").is_null())
    assert good["text"].null_count() == 0 and len(good) > 0


def test_teacher_pool_routes_task_types(tmp_path, bench_dir, tiny_pipeline):
    gen(
        "run",
        "--pipeline",
        "tiny",
        "--config",
        tiny_pipeline,
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        12,
        "--out",
        tmp_path / "out",
        "--no-progress",
        check=0,
    )
    df = samples(tmp_path / "out")
    counts = {
        (r["task_type"], r["teacher"]): r["len"]
        for r in df.group_by("task_type", "teacher").len().iter_rows(named=True)
    }
    assert counts[("ocr", "a")] == counts[("ocr", "b")] == 2 * 2  # two videos, k=2 from both teachers
    assert counts[("multiple_choice", "a")] == 2 * 3 and ("multiple_choice", "b") not in counts
    ocr = df.filter(pl.col("task_type") == "ocr")  # per-token logprobs asked for OCR only
    assert (ocr["logprobs"].list.len() == ocr["num_tokens"]).all()
    assert df.filter(pl.col("task_type") != "ocr")["logprobs"].null_count() == df.height - ocr.height


def test_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path, bench_dir, tiny_pipeline):
    out = tmp_path / "out"
    args = [
        str(BIN / "rmsd-gen"),
        "run",
        "--pipeline",
        "tiny",
        "--config",
        str(tiny_pipeline),
        "--prompts",
        str(bench_dir / "prompts.parquet"),
        "--out",
        str(out),
        "--no-progress",
    ]
    ray_dirs = set(Path(tempfile.gettempdir()).glob("rmsd-ray-*"))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("samples-*.parquet"))) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("samples-*.parquet")))
    assert 4 <= written < 24 + 4, "the kill should land part-way"  # 24 slices for teacher a, 4 for b
    killed_ray = set(Path(tempfile.gettempdir()).glob("rmsd-ray-*")) - ray_dirs
    done = gen(
        "run",
        "--pipeline",
        "tiny",
        "--config",
        tiny_pipeline,
        "--prompts",
        bench_dir / "prompts.parquet",
        "--out",
        out,
        "--no-progress",
        check=0,
    )
    assert f"{written} already done" in done.stdout
    df = samples(out)
    keys = df.select("prompt_id", "teacher", "sample_index")
    # 48 prompts: 40 non-OCR x teacher a x k=3, 8 OCR x teachers a, b x k=2
    assert len(keys) == keys.unique().height == 40 * 3 + 8 * 2 * 2
    assert not list(out.glob(".tmp-*"))
    assert killed_ray and not any(d.exists() for d in killed_ray), "the rerun clears what the killed run left of Ray"


def test_a_failed_teacher_does_not_lose_the_other_teachers_samples(tmp_path, bench_dir, tiny_model):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("{not json")
    config = write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        pool:
          frames: {{num_frames: 4}}
          teachers:
            - id: good
              model: {{path: {tiny_model}}}
            - id: bad
              model: {{path: {broken}}}
          sampling: {{k: 2, max_tokens: 4}}
          gen: {{shard_size: 6}}
    """,
    )
    args = (
        "run",
        "--pipeline",
        "pool",
        "--config",
        config,
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        12,
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    done = gen(*args, check=1)
    assert "2 shards failed; rerun the same command to retry" in done.stderr
    df = samples(tmp_path / "out")
    assert set(df["teacher"]) == {"good"} and df.height == 12 * 2
    shutil.rmtree(broken)
    shutil.copytree(tiny_model, broken)  # the teacher is fixed: a rerun does only its shards
    done = gen(*args, check=0)
    assert "2 shards written, 2 already done" in done.stdout
    assert samples(tmp_path / "out").group_by("teacher").len().sort("teacher")["len"].to_list() == [24, 24]
