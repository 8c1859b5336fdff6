"""rmsd-gen's folder under faults: error samples retried in place, one run per folder (a killed
run's lock blocks nothing), a teacher checkpoint swapped mid-job refused, and rmsd-filter refusing
the samples of an unfinished job."""

import json
import os
import shutil
import signal
import subprocess
import time

import polars as pl
import pytest

from rmsd.models import init_model
from tests.conftest import BIN, gen, write_pipelines

pytestmark = pytest.mark.slow
KEY = ["prompt_id", "teacher", "sample_index"]


def samples(out):
    return pl.read_parquet(sorted(out.glob("samples-*.parquet"))).sort(KEY)


def pipelines(path, model):
    return write_pipelines(
        path,
        f"""
        tiny:
          frames: {{num_frames: 4}}
          teachers:
            - id: a
              model: {{path: {model}}}
          sampling: {{k: 2, max_tokens: 4}}
          gen: {{shard_size: 2}}
    """,
    )


def filter_run(samples_dir, out, *more):
    return subprocess.run(
        [
            BIN / "rmsd-filter",
            "run",
            "--pipeline",
            "demo",
            "--samples",
            samples_dir,
            "--out",
            out,
            "--workers",
            "1",
            "--no-progress",
            *more,
        ],
        capture_output=True,
        text=True,
    )


def test_error_samples_are_retried_in_place_with_their_seeds(tmp_path, bench_dir, tiny_model):
    data = shutil.copytree(bench_dir, tmp_path / "data")
    prompts = pl.read_parquet(data / "prompts.parquet").head(8)
    prompts.write_parquet(data / "some.parquet")
    gone, broken = data / prompts["video"][0], data / prompts["video"][7]
    assert gone != broken
    gone.rename(tmp_path / "gone.mp4")  # an outage of the storage: missing for the first run
    shutil.copy(broken, tmp_path / "broken.mp4")
    broken.write_text("not a video")
    args = (
        "run",
        "--pipeline",
        "tiny",
        "--config",
        pipelines(tmp_path / "p.yaml", tiny_model),
        "--prompts",
        data / "some.parquet",
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    gen(*args, check=3)
    first = samples(tmp_path / "out")
    errors = first.filter(pl.col("error").is_not_null())
    assert {e.split(":")[0] for e in errors["error"]} == {"missing", "unreadable"} and errors[
        "text"
    ].null_count() == errors.height
    (tmp_path / "gone.mp4").rename(gone)  # fixed
    shutil.copy(tmp_path / "broken.mp4", broken)
    assert "0 shards written" in gen(*args, check=3).stdout  # without the option a finished job stays as it is

    done = gen(*args, "--retry-errors-matching", "^missing", check=3)  # only those of missing videos
    missing = errors.filter(pl.col("error").str.starts_with("missing"))
    assert f"{missing.height} error samples regenerated" in done.stdout
    second = samples(tmp_path / "out")
    unreadable = pl.col("error").str.starts_with("unreadable")
    assert second.filter(unreadable).equals(first.filter(unreadable))  # left as they were
    assert second.filter(pl.col("error").is_not_null()).height == errors.height - missing.height
    done = gen(*args, "--retry-errors", check=0)
    assert f"{errors.height - missing.height} error samples regenerated" in done.stdout
    third = samples(tmp_path / "out")
    assert (
        third.height == first.height and third.select(KEY).unique().height == third.height
    )  # none lost, none duplicated
    assert third["error"].null_count() == third.height and third["text"].null_count() == 0
    assert third["seed"].equals(first["seed"]) and third["run_id"].equals(
        first["run_id"]
    )  # the same samples, regenerated
    untouched = ~pl.col("prompt_id").is_in(errors["prompt_id"].unique().implode())
    assert third.filter(untouched).equals(first.filter(untouched))
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["error_samples"] == 0
    assert sorted(manifest["files"]) == sorted(p.name for p in (tmp_path / "out").glob("samples-*.parquet"))
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_one_run_per_folder_and_a_killed_run_blocks_nothing(tmp_path, bench_dir, tiny_model):
    out = tmp_path / "out"
    args = [
        "run",
        "--pipeline",
        "tiny",
        "--config",
        str(pipelines(tmp_path / "p.yaml", tiny_model)),
        "--prompts",
        str(bench_dir / "prompts.parquet"),
        "--limit",
        "24",
        "--out",
        str(out),
        "--no-progress",
    ]
    first = subprocess.Popen(
        [BIN / "rmsd-gen", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 60
        while not (out / "_job.json").exists() and time.time() < deadline:  # written once the folder is locked
            time.sleep(0.05)
        second = gen(*args)
        assert second.returncode == 2 and "is in use by another rmsd-gen or rmsd-filter run" in second.stderr, (
            second.stdout + second.stderr
        )
        assert first.poll() is None, "the first run should still be going"
        scoring = filter_run(out, tmp_path / "filtered")  # its samples, while it writes them
        assert scoring.returncode == 2 and "rmsd-gen is writing these samples now" in scoring.stderr, scoring.stderr
        while not list(out.glob("samples-*.parquet")) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (out / "_manifest.json").exists()  # withdrawn before the first shard
    unfinished = filter_run(out, tmp_path / "filtered")
    assert (
        unfinished.returncode == 2
        and "its rmsd-gen job is unfinished (no manifest" in unfinished.stderr
        and "--allow-incomplete" in unfinished.stderr
    )
    assert filter_run(out, tmp_path / "partial", "--allow-incomplete").returncode == 0
    partial = json.loads((tmp_path / "partial" / "_manifest.json").read_text())
    assert partial["input_complete"] is False and partial["input_manifest_sha256"] is None
    done = gen(*args, check=0)  # the killed run's lock holds nothing back
    assert "already done" in done.stdout
    scored = filter_run(out, tmp_path / "filtered")
    assert scored.returncode == 0, scored.stderr
    manifest = json.loads((tmp_path / "filtered" / "_manifest.json").read_text())
    assert manifest["input_complete"] is True and len(manifest["input_manifest_sha256"]) == 64
    shard = sorted(out.glob("samples-*.parquet"))[0]
    shard.rename(tmp_path / shard.name)  # the samples change after their job finished
    changed = filter_run(out, tmp_path / "again")
    assert (
        changed.returncode == 2
        and f"it changed since its rmsd-gen job finished: 1 recorded files are missing (e.g. {shard.name})"
        in changed.stderr
    )


def test_a_teacher_checkpoint_swapped_mid_job_is_refused(tmp_path, bench_dir, tiny_model):
    model = shutil.copytree(tiny_model, tmp_path / "teacher")
    args = (
        "run",
        "--pipeline",
        "tiny",
        "--config",
        pipelines(tmp_path / "p.yaml", model),
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        4,
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    gen(*args, check=0)
    shutil.rmtree(model)
    init_model(model, "tiny", seed=1)  # another model of the same architecture, at the same path
    refused = gen(*args, check=2)
    assert "the checkpoint of teacher a is not the one this job began with" in refused.stderr
    shutil.rmtree(model)
    shutil.copytree(tiny_model, model)  # the same model back (a copy: other mtimes)
    assert "0 shards written" in gen(*args, check=0).stdout
    job = json.loads((tmp_path / "out" / "_job.json").read_text())
    assert (
        job["model_fingerprints"]["a"]["sha256"]
        == json.loads((tmp_path / "out" / "_manifest.json").read_text())["model_fingerprints"]["a"]["sha256"]
    )


def test_an_output_folder_holding_the_prompts_is_refused(tmp_path, bench_dir, tiny_model):
    data = shutil.copytree(bench_dir, tmp_path / "data")
    done = gen(
        "run",
        "--pipeline",
        "tiny",
        "--config",
        pipelines(tmp_path / "p.yaml", tiny_model),
        "--prompts",
        data / "prompts.parquet",
        "--out",
        data,
        check=2,
    )
    assert f"the output folder {data} holds the prompts file" in done.stderr
    assert not (data / "_job.json").exists()
