import json

import numpy as np
import polars as pl

from rmsd.gen.frames import sample_frames
from rmsd.schemas.grammar import extract_answer
from rmsd.schemas.tables import TASK_TYPES, read_table
from rmsd.synth import COLOURS, FPS, NUM_FRAMES, synthesise


def test_covers_every_task_type_with_strict_ground_truth(bench_dir):
    prompts = read_table(bench_dir / "prompts.parquet", "prompts").to_pylist()
    assert len(prompts) == 8 * 6
    assert {p["task_type"] for p in prompts} == set(TASK_TYPES)
    for p in prompts:
        parsed = extract_answer(p["answer"], p["task_type"], p["options"])
        assert parsed.task_ok, p
        assert (bench_dir / p["video"]).is_file()
    assert len({p["prompt_id"] for p in prompts}) == len(prompts)


def test_same_seed_same_benchmark_whatever_the_workers(tmp_path, bench_dir):
    synthesise(tmp_path / "b", 8, seed=7, workers=2, progress=False)
    a = pl.read_parquet(bench_dir / "prompts.parquet")
    b = pl.read_parquet(tmp_path / "b" / "prompts.parquet")
    assert a.equals(b)
    # the encoder runs on one thread in a fresh process: the same scene gives the same bytes, one
    # worker (the fixture, built whenever this pytest process first needs it) or two; checked file by
    # file, so that a failure says which video differs before any decoding is involved
    for video in a["video"].unique(maintain_order=True):
        assert (bench_dir / video).read_bytes() == (tmp_path / "b" / video).read_bytes(), video
    first = a["video"][0]
    assert np.array_equal(
        sample_frames(bench_dir / first, num_frames=4).array, sample_frames(tmp_path / "b" / first, num_frames=4).array
    )
    other = synthesise(tmp_path / "c", 8, seed=8, workers=1, progress=False)
    assert not pl.read_parquet(other)["answer"].equals(a["answer"])


def test_splits_keep_all_questions_of_a_video_together(tmp_path):
    synthesise(tmp_path, 60, seed=3, workers=2, progress=False)
    df = pl.read_parquet(tmp_path / "prompts.parquet")
    assert set(df["split"]) == {"train", "validation", "test"}
    assert df.group_by("video").agg(pl.col("split").n_unique())["split"].max() == 1


def test_video_is_real_h264_and_ground_truth_matches_pixels(bench_dir):
    prompts = read_table(bench_dir / "prompts.parquet", "prompts").to_pylist()
    box_rows = [p for p in prompts if p["task_type"] == "spatial_grounding"]
    for p in box_rows:
        target = json.loads(p["meta"])["target"]
        x1, y1, x2, y2 = (int(v) for v in json.loads(p["answer"]))
        # the frame at the shape's first visible time, full size, exact decoding
        t = target["first"] / FPS
        frames = sample_frames(bench_dir / p["video"], num_frames=NUM_FRAMES, mode="exact")
        frame = frames.array[[round(ts * FPS) for ts in frames.timestamps].index(target["first"])]
        centre = frame[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
        assert np.abs(centre - np.array(COLOURS[target["colour"]])).max() < 60, (p["prompt_id"], t, centre)


def test_counting_answers_are_the_number_of_shapes(bench_dir):
    prompts = read_table(bench_dir / "prompts.parquet", "prompts").to_pylist()
    for p in prompts:
        if p["task_type"] == "numerical":
            assert int(p["answer"]) == len(json.loads(p["meta"])["scene"]["shapes"])
