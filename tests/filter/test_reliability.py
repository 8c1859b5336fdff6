"""rmsd-filter's output folder is always one complete result: a rerun killed at any point leaves
the previous result or the new one for rmsd-train to read (or, killed in the swap, a folder it
refuses), never a mix; one run per folder; the output apart from its samples."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from rmsd.filter.run import run_filter
from rmsd.schemas.manifests import LOCK_FILE, RunRefused
from rmsd.schemas.tables import SchemaError
from rmsd.train.data import curated_frame, sft_dataset
from tests.conftest import BIN
from tests.filter.test_run import pipeline, samples_dir  # noqa: F401 - fixtures

KEY = ["prompt_id", "teacher", "sample_index"]
# rmsd-filter killed (SIGKILL) just before its Nth call to one of the calls that change files
# (N = 0: never; it prints the calls it made)
KILLED_AT = """
import json, os, shutil, signal, sys
point, calls = int(sys.argv[1]), []
def hooked(name, fn):
    def call(*args, **kwargs):
        calls.append([name, *map(str, args)])
        if len(calls) == point:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return call
for name in ("replace", "rename", "unlink"):
    setattr(os, name, hooked(name, getattr(os, name)))
shutil.rmtree = hooked("rmtree", shutil.rmtree)
from rmsd.filter.cli import app
try:
    app(sys.argv[2:])
finally:
    if point == 0:
        print(json.dumps(calls), file=sys.stderr)
"""


def read(out):
    """What rmsd-train reads of an rmsd-filter output: its curated samples, or its refusal."""
    try:
        return curated_frame(out).select(*KEY, "weight").sort(KEY)
    except SchemaError as exc:
        return str(exc)


def test_a_rerun_killed_at_any_point_leaves_one_complete_result(pipeline, samples_dir, tmp_path):  # noqa: F811
    path, cfg = pipeline
    old = tmp_path / "old"
    run_filter(cfg, "f", samples_dir, old, progress=False, workers=1)  # tau 0.3
    new = tmp_path / "new"
    run_filter(
        cfg.model_copy(update={"filter": cfg.filter.model_copy(update={"tau": 0.0})}),
        "f",
        samples_dir,
        new,
        progress=False,
        workers=1,
    )
    before, after = read(old), read(new)
    assert isinstance(before, pl.DataFrame) and isinstance(after, pl.DataFrame) and after.height > before.height

    def rerun(point, out):
        args = [
            "run",
            "--pipeline",
            "f",
            "--config",
            str(path),
            "--samples",
            str(samples_dir),
            "--out",
            str(out),
            "--tau",
            "0",
            "--workers",
            "1",
            "--no-progress",
        ]
        return subprocess.Popen([sys.executable, "-c", KILLED_AT, str(point), *args], stderr=subprocess.PIPE, text=True)

    traced = tmp_path / "traced"
    shutil.copytree(old, traced)
    trace = rerun(0, traced)
    calls = json.loads(trace.communicate()[1].strip().splitlines()[-1])
    assert trace.returncode == 0 and read(traced).equals(after)
    # kill points: the first call, the last, and every call that changes the output folder itself
    # (not a temporary name in it); each on a copy of the previous result
    changes = [
        i for i, c in enumerate(calls, 1) if any(Path(a).is_relative_to(traced) and ".tmp-" not in a for a in c[1:])
    ]
    points = sorted({1, *changes, len(calls)})
    outs, runs = {}, []
    for point in points:
        outs[point] = tmp_path / f"killed-{point}"
        shutil.copytree(old, outs[point])
    for start in range(0, len(points), 3):  # three at a time
        batch = [(point, rerun(point, outs[point])) for point in points[start : start + 3]]
        for point, proc in batch:
            proc.communicate()
            runs.append((point, proc.returncode))
    assert all(code == -9 for _, code in runs), runs  # each was killed
    views = {}
    for point in points:
        seen = read(outs[point])
        if (outs[point] / "_manifest.json").exists():  # a completion record: the result it records, whole
            assert isinstance(seen, pl.DataFrame) and (seen.equals(before) or seen.equals(after)), (
                point,
                calls[point - 1],
                seen,
            )
            views[point] = "previous" if seen.equals(before) else "new"
        else:  # none (killed in the swap): refused, not read
            assert isinstance(seen, str) and "so no complete rmsd-filter result" in seen, (point, seen)
            views[point] = "refused"
    assert (
        views[points[0]] == "previous" and views[points[-1]] == "new"
    )  # scored aside: until the swap, the previous result stays
    for point in points:  # the killed run's lock holds nothing back: a rerun completes, over what it left
        run_filter(
            cfg.model_copy(update={"filter": cfg.filter.model_copy(update={"tau": 0.0})}),
            "f",
            samples_dir,
            outs[point],
            progress=False,
            workers=1,
        )
        assert read(outs[point]).equals(after)
        assert sorted(p.name for p in outs[point].iterdir()) == sorted(
            [LOCK_FILE, "_manifest.json", "curated", "dropped_prompts.parquet", "report", "scored"]
        )
    # the completion record is withdrawn before anything else in the folder changes, and written after
    assert calls[changes[0] - 1][0] == "unlink" and calls[changes[0] - 1][1].endswith("/_manifest.json"), calls[
        changes[0] - 1
    ]
    assert calls[changes[-1] - 1][0] == "replace" and calls[changes[-1] - 1][2].endswith("/_manifest.json"), calls[
        changes[-1] - 1
    ]


def test_readers_refuse_a_result_that_is_not_the_one_recorded(pipeline, samples_dir, tmp_path):  # noqa: F811
    _, cfg = pipeline
    out = tmp_path / "out"
    run_filter(cfg, "f", samples_dir, out, progress=False, workers=1)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and set(manifest["files"]) >= {
        "curated/part-000000.parquet",
        "scored/part-000001.parquet",
        "dropped_prompts.parquet",
    }
    assert manifest["input_complete"] is True and len(manifest["input_shards"]) == 4
    streamed = sft_dataset("weighted", out, streaming=True)
    part = out / "curated" / "part-000001.parquet"
    part.rename(out / "part.bak")
    with pytest.raises(SchemaError, match="1 recorded files are missing .e.g. curated/part-000001.parquet"):
        curated_frame(out)
    run_filter(
        cfg.model_copy(update={"filter": cfg.filter.model_copy(update={"tau": 0.0})}),
        "f",
        samples_dir,
        tmp_path / "other",
        progress=False,
        workers=1,
    )
    shutil.copy(tmp_path / "other" / "curated" / "part-000001.parquet", part)  # another run's shard in its place
    with pytest.raises(
        SchemaError, match="not the complete rmsd-filter result its manifest records .curated/part-000001.parquet has"
    ):
        curated_frame(out)
    shutil.copy(out / "curated" / "part-000000.parquet", part)  # one of the same size: read, it hashes otherwise
    with pytest.raises(
        SchemaError, match="part-000001.parquet: not the curated shard its rmsd-filter manifest records"
    ):
        curated_frame(out)
    (out / "part.bak").rename(part)
    assert curated_frame(out).height == manifest["counts"]["kept"]
    data = bytearray(part.read_bytes())
    data[-20] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(
        SchemaError, match="not the curated shard"
    ):  # a stream set up before the change checks each shard as it reads it
        list(streamed)


def test_one_run_per_output_folder(pipeline, samples_dir, tmp_path):  # noqa: F811
    path, cfg = pipeline
    out = tmp_path / "out"
    out.mkdir()
    hold = (
        "import fcntl, sys, time\nlock = open(sys.argv[1], 'a')\nfcntl.flock(lock, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )  # a run on the folder
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            [
                BIN / "rmsd-filter",
                "run",
                "--pipeline",
                "f",
                "--config",
                path,
                "--samples",
                samples_dir,
                "--out",
                out,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and "is in use by another rmsd-gen or rmsd-filter run" in done.stderr, done.stderr
        assert not (out / "_manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    run_filter(cfg, "f", samples_dir, out, progress=False, workers=1)


def test_an_output_folder_that_is_holds_or_sits_inside_the_samples_is_refused(pipeline, samples_dir, tmp_path):  # noqa: F811
    path, cfg = pipeline
    before = {p.name: p.read_bytes() for p in samples_dir.iterdir()}
    done = subprocess.run(
        [
            BIN / "rmsd-filter",
            "run",
            "--pipeline",
            "f",
            "--config",
            path,
            "--samples",
            samples_dir,
            "--out",
            samples_dir,
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and f"the output folder {samples_dir} is the samples folder" in done.stderr, done.stderr
    with pytest.raises(RunRefused, match="sits inside the samples folder"):
        run_filter(cfg, "f", samples_dir, samples_dir / "filtered", progress=False, workers=1)
    with pytest.raises(RunRefused, match="holds the samples folder"):
        run_filter(cfg, "f", samples_dir, samples_dir.parent, progress=False, workers=1)
    assert {p.name: p.read_bytes() for p in samples_dir.iterdir()} == before
