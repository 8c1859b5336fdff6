"""rmsd-filter end to end: outputs, determinism, every executor writing the same files, the report's
figures, demo output."""

import hashlib
import json
import shutil
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq
import pytest

from rmsd.filter import run as filter_run
from rmsd.filter.executors import run_local, run_ray, run_serial, worker_context
from rmsd.filter.run import plan_batches, run_filter, score_batch
from rmsd.schemas.config import load_pipeline
from rmsd.schemas.filtered import batch_files, shard_groups
from rmsd.schemas.tables import SchemaError, read_table
from rmsd.train.data import curated_frame
from tests.conftest import BIN, write_pipelines
from tests.filter.helpers import COLOURS, sample_rows, write_shards


@pytest.fixture
def pipeline(tmp_path, tiny_model):
    path = write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        f:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
            - id: b
              model: {{path: {tiny_model}}}
          filter: {{tau: 0.3}}
    """,
    )
    return path, load_pipeline("f", path)


@pytest.fixture
def samples_dir(tmp_path):
    """Two slices, two teachers: teacher a always right and well formatted; b right half the time,
    one format error on temporal questions."""
    shards = {}
    for s in range(2):
        rows_a, rows_b = [], []
        for i in range(3):
            p = f"s{s}-q{i}"
            rows_a += sample_rows(f"{p}-mc", "multiple_choice", "A", ["A"] * 4, teacher="a", options=COLOURS)
            rows_b += sample_rows(f"{p}-mc", "multiple_choice", "A", ["A", "A", "B", "C"], teacher="b", options=COLOURS)
            rows_a += sample_rows(f"{p}-t", "temporal_grounding", "[1, 2]", ["[1, 2]"] * 4, teacher="a")
            rows_b += sample_rows(
                f"{p}-t", "temporal_grounding", "[1, 2]", ["[1, 2]", "[1, 2]", "1 to", "[5, 6]"], teacher="b"
            )
        shards[f"samples-a-{s:06d}.parquet"] = rows_a
        shards[f"samples-b-{s:06d}.parquet"] = rows_b
    return write_shards(tmp_path / "samples", shards)


def _bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in (".parquet", ".json") and p.name != "_manifest.json"
    }


def test_outputs_and_curated_weights(pipeline, samples_dir, tmp_path):
    _, cfg = pipeline
    summary = run_filter(cfg, "f", samples_dir, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    scored = pl.concat([pl.from_arrow(read_table(p, "scored")) for p in sorted((out / "scored").glob("*.parquet"))])
    curated = pl.concat([pl.from_arrow(read_table(p, "curated")) for p in sorted((out / "curated").glob("*.parquet"))])
    assert scored.height == summary.samples == 2 * 3 * 2 * 2 * 4
    assert curated.height == summary.kept == scored["kept"].sum()
    # scored: every sample once, on the samples' key; curated: the kept ones' keys and weights,
    # which rmsd-train joins with the samples' content
    samples = pl.read_parquet(samples_dir / "*.parquet")
    key = ["prompt_id", "teacher", "sample_index"]
    assert scored.select(key).sort(key).equals(samples.select(key).sort(key))
    assert curated.columns == [*key, "task_type", "quality", "weight", "is_best"]
    assert curated.sort(key).equals(scored.filter("kept").select(curated.columns).sort(key))
    kept = scored.filter("kept").join(samples, on=key).select(*key, "question", "video", "text", "weight").sort(key)
    assert curated_frame(out).select(*key, "question", "video", "text", "weight").sort(key).equals(kept)
    sums = curated.group_by("prompt_id").agg(pl.col("weight").sum(), pl.col("is_best").sum())
    assert sums["weight"].to_list() == pytest.approx([1.0] * sums.height) and set(sums["is_best"]) == {1}
    assert read_table(out / "dropped_prompts.parquet", "dropped").num_rows == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["tau"] == 0.3 and manifest["counts"]["samples"] == scored.height
    assert summary.prompts == manifest["counts"]["prompts"] == samples["prompt_id"].n_unique()
    assert len(manifest["input_shards"]) == 4 and len(manifest["config_hash"]) == 64
    # scores take few values per shard: dictionary-encoded (smaller, and faster to write)
    chunks = pq.ParquetFile(sorted((out / "scored").glob("*.parquet"))[0]).metadata.row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    assert all(
        "RLE_DICTIONARY" in encodings[c] for c in ("extracted", "quality", "agreement", "agreement_pool", "weight")
    )


def test_report_figures_match_a_hand_count(pipeline, samples_dir, tmp_path):
    _, cfg = pipeline
    report = run_filter(cfg, "f", samples_dir, tmp_path / "out", progress=False).report
    stats = {(r["task_type"], r["teacher"]): r for r in report["stats"]}
    a_mc, b_mc, b_t = (
        stats[("multiple_choice", "a")],
        stats[("multiple_choice", "b")],
        stats[("temporal_grounding", "b")],
    )
    assert (a_mc["questions"], a_mc["mean_quality"], a_mc["sigma_quality"], a_mc["intra_sigma"]) == (6, 1.0, 0.0, 0.0)
    assert b_mc["mean_quality"] == 0.5 and b_mc["intra_sigma"] == 0.5  # q = 1, 1, 0, 0 per question
    assert b_mc["kept_share"] == 0.5 and b_mc["unanimous_rate"] == 0.0
    assert b_mc["agreement_rate"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)
    assert b_t["task_violation_rate"] == 0.25 and b_t["outer_violation_rate"] == 0.0
    assert stats[("(all)", "(pool)")]["samples"] == 96
    for name in ("report.md", "quality_hist.png", "format_violations.png", "sigma.png"):
        assert (tmp_path / "out" / "report" / name).stat().st_size > 0
    assert "| multiple_choice | b | 6 | 0.500 |" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_same_input_gives_identical_bytes_and_ray_matches_local(pipeline, samples_dir, tmp_path):
    import ray

    _, cfg = pipeline
    run_filter(cfg, "f", samples_dir, tmp_path / "one", progress=False)
    run_filter(cfg, "f", samples_dir, tmp_path / "two", progress=False)
    run_filter(cfg, "f", samples_dir, tmp_path / "inline", progress=False, workers=1)  # no worker processes
    ray.init(include_dashboard=False, logging_level="WARNING")  # once, for both uses below (they keep it)
    try:
        run_filter(cfg, "f", samples_dir, tmp_path / "ray", use_ray=True, progress=False)
        _check_executor_alone("ray", cfg, samples_dir, tmp_path / "alone")  # the Ray executor without run_filter
    finally:
        ray.shutdown()
    one = _bytes(tmp_path / "one")
    assert len(one) >= 6
    assert one == _bytes(tmp_path / "two")
    assert one == _bytes(tmp_path / "ray")
    assert one == _bytes(tmp_path / "inline")


def test_consecutive_groups_are_scored_in_batches_with_the_same_scores(pipeline, samples_dir, tmp_path, monkeypatch):
    _, cfg = pipeline
    run_filter(cfg, "f", samples_dir, tmp_path / "one", progress=False)  # 96 rows: a batch per group (16 batches asked)
    monkeypatch.setattr(filter_run, "MIN_BATCHES", 1)
    summary = run_filter(cfg, "f", samples_dir, tmp_path / "both", progress=False, batch_rows=96)
    assert sorted(p.name for p in (tmp_path / "one" / "scored").iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert [p.name for p in (tmp_path / "both" / "scored").iterdir()] == ["part-000000-000001.parquet"]
    assert (
        json.loads((tmp_path / "both" / "_manifest.json").read_text())["counts"]["batches"] == summary.groups // 2 == 1
    )
    for table in ("scored", "curated"):
        one, both = (pl.read_parquet(tmp_path / run / table / "*.parquet") for run in ("one", "both"))
        assert both.equals(one)
    key = ["prompt_id", "teacher", "sample_index"]
    assert (
        curated_frame(tmp_path / "both").sort(key).equals(curated_frame(tmp_path / "one").sort(key))
    )  # content found per batch
    reports = [json.loads((tmp_path / run / "report" / "report.json").read_text()) for run in ("one", "both")]
    assert reports[1]["stats"] == reports[0]["stats"]


def test_batches_hold_whole_groups_up_to_the_row_target(tmp_path, monkeypatch):
    rows = lambda n: sample_rows(f"p{n}", "numerical", "1", ["1"] * n)  # noqa: E731
    shards = {
        "samples-a-000000.parquet": rows(3),
        "samples-b-000000.parquet": rows(2),
        "samples-a-000001.parquet": rows(4),
        "samples-a-000002.parquet": rows(6),
        "samples-a-000003.parquet": rows(1),
        "extra.parquet": rows(1),
    }
    folder = write_shards(tmp_path / "samples", shards)
    groups = shard_groups(folder)
    footers = {f: pq.read_metadata(f) for _, files in groups for f in files}
    monkeypatch.setattr(filter_run, "MIN_BATCHES", 1)
    batches = plan_batches(groups, footers, batch_rows=9)
    assert [(b.name, b.groups, len(b.files)) for b in batches] == [
        ("000000-000001", 2, 3),
        ("000002-000003", 2, 2),
        ("other", 1, 1),
    ]
    assert [b.name for b in plan_batches(groups, footers, batch_rows=1)] == [
        "000000",
        "000001",
        "000002",
        "000003",
        "other",
    ]
    monkeypatch.setattr(filter_run, "MIN_BATCHES", 3)  # 17 rows in 3 batches at least: 6 rows each at most
    assert [b.name for b in plan_batches(groups, footers, batch_rows=9)] == [
        "000000",
        "000001",
        "000002",
        "000003",
        "other",
    ]
    by_key = dict(groups)
    assert batch_files(by_key, "000000-000001") == [*by_key["000000"], *by_key["000001"]]
    assert batch_files(by_key, "000002") == by_key["000002"] and batch_files(by_key, "000009") is None


@pytest.fixture(scope="module")
def demo_filtered(demo_run, tmp_path_factory):
    """rmsd-filter's CLI on the demo generation (real videos, the demo teacher's samples)."""
    work, _ = demo_run
    out = tmp_path_factory.mktemp("demo-filtered") / "f"
    done = subprocess.run(
        [BIN / "rmsd-filter", "run", "--pipeline", "demo", "--samples", work / "out", "--out", out, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=work,
    )
    return work, out, done


@pytest.mark.slow
def test_filter_runs_on_the_demo_generation(demo_filtered):
    work, out, done = demo_filtered
    assert done.returncode == 0, done.stderr
    assert "72 samples of 18 prompts scored" in done.stdout
    scored = pl.read_parquet(out / "scored" / "*.parquet")
    dropped = pl.read_parquet(out / "dropped_prompts.parquet")
    kept_prompts = set(scored.filter("kept")["prompt_id"])
    assert kept_prompts | set(dropped["prompt_id"]) == set(scored["prompt_id"])  # every prompt accounted for
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["input_manifest_sha256"]
    assert manifest["outputs"]["page"] == "report/index.html" and "report/index.html" in manifest["files"]


def _page_questions(page):
    text = page.read_text()
    start = text.index('<script type="application/json" id="questions">') + len(
        '<script type="application/json" id="questions">'
    )
    data = json.loads(text[start : text.index("</script>", start)])
    return text, [dict(q, thumbs=data["frames"].get(q["frames"], [])) for q in data["questions"]]


@pytest.mark.slow
def test_the_report_page_shows_every_question_with_its_frames_and_scored_samples(demo_filtered):
    work, out, done = demo_filtered
    page = out / "report" / "index.html"
    assert f"browsable page: {page}" in done.stdout
    text, questions = _page_questions(page)
    assert (
        "18 of 18 questions shown" in text and 'src="http' not in text and "href=" not in text
    )  # nothing fetched from a network
    scored = pl.read_parquet(out / "scored" / "*.parquet")
    samples = pl.read_parquet(work / "out" / "*.parquet")
    dropped = dict(pl.read_parquet(out / "dropped_prompts.parquet").select("prompt_id", "reason").iter_rows())
    assert sorted(q["id"] for q in questions) == sorted(samples["prompt_id"].unique())
    report = json.loads((out / "report" / "report.json").read_text())
    for row in report["stats"]:  # the reliability table, per task type and teacher
        assert (
            f"<td>{row['task_type']}</td><td>{row['teacher']}</td><td>{int(row['questions'])}</td><td>{row['mean_quality']:.3f}</td>"
            in text
        )
    assert text.count("data:image/png;base64,") == 3  # the report's plots, inline
    for q in questions:
        mine = scored.filter(pl.col("prompt_id") == q["id"]).sort("teacher", "sample_index")
        assert q["status"] == dropped.get(q["id"], "kept") and q["task"] == mine["task_type"][0]
        assert q["unanimous"] == (mine["agreement_pool"].min() == 1)
        assert [
            (
                s["extracted"],
                s["format_outer_ok"],
                s["format_task_ok"],
                s["quality"],
                s["agreement"],
                s["kept"],
                s["weight"],
            )
            for s in q["samples"]
        ] == list(
            mine.select(
                "extracted", "format_outer_ok", "format_task_ok", "quality", "agreement", "kept", "weight"
            ).iter_rows()
        )
        seen = samples.filter(pl.col("prompt_id") == q["id"]).sort("sample_index")
        assert q["answer"] == seen["answer"][0] and [s["text"] for s in q["samples"]] == seen["text"].to_list()
        assert [t["t"] for t in q["thumbs"]] == seen["frame_timestamps"][0].to_list()  # the frames the teacher saw
        assert all(t["src"].startswith("data:image/jpeg;base64,") for t in q["thumbs"]) and q["note"] is None


@pytest.mark.slow
def test_the_report_page_renders_in_a_headless_browser(demo_filtered, tmp_path):
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt install chromium)")
    _, out, _ = demo_filtered
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            (out / "report" / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('<div class="q ') == 18  # the script built a card per question
    assert "18 match" in done.stdout and "ground truth: " in done.stdout


def test_a_large_corpus_gets_a_stratified_selection_with_every_stratum():
    from rmsd.filter.page import MIN_PER_STRATUM, batch_questions, select_questions

    strata = ["ocr / kept"] * 900 + ["ocr / below_tau"] * 90 + ["numerical / no_valid_format"] * 10
    ids = [f"p{i}" for i in range(1000)]
    questions = batch_questions(pl.DataFrame({"prompt_id": ids, "task_type": "ocr"}))
    table = questions.with_columns(stratum=pl.Series(strata))
    chosen = select_questions(table, limit=100)
    counts = dict(chosen.group_by("stratum").len().iter_rows())
    assert counts == {"ocr / kept": 90, "ocr / below_tau": 9, "numerical / no_valid_format": MIN_PER_STRATUM}
    first_by_hash = sorted(ids[:900], key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:90]
    assert set(chosen.filter(pl.col("stratum") == "ocr / kept")["prompt_id"]) == set(first_by_hash)
    assert select_questions(table, limit=100).equals(chosen)  # the same questions every run
    assert select_questions(table, limit=1000).height == 1000


def test_cli_reports_bad_input(tmp_path):
    done = subprocess.run(
        [BIN / "rmsd-filter", "run", "--pipeline", "demo", "--samples", tmp_path / "none", "--out", tmp_path / "o"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "samples folder not found" in done.stderr
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [BIN / "rmsd-filter", "run", "--pipeline", "demo", "--samples", tmp_path / "empty", "--out", tmp_path / "o"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no samples shards" in done.stderr


def test_a_shard_that_breaks_inside_a_worker_is_named_in_a_clean_error(pipeline, samples_dir, tmp_path):
    # the footer reads (the shard passes the schema check) but a data page does not: the worker's
    # error reaches the caller as a SchemaError naming the shards, not a broken pool
    _, cfg = pipeline
    broken = tmp_path / "broken"
    shutil.copytree(samples_dir, broken)
    shard = broken / "samples-b-000001.parquet"
    data = bytearray(shard.read_bytes())
    data[8:400] = b"\x00" * 392
    shard.write_bytes(bytes(data))
    with pytest.raises(SchemaError, match=r"cannot read the samples shards .*samples-b-000001\.parquet"):
        run_filter(cfg, "f", broken, tmp_path / "out", progress=False, workers=2)


def test_a_script_without_a_main_guard_is_told_what_to_do(samples_dir, tmp_path):
    # worker processes import the calling script again; unguarded, it cannot start them
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from rmsd.filter.run import run_filter\n"
        "from rmsd.schemas.config import FilterConfig, ModelConfig, PipelineConfig, TeacherConfig\n"
        "cfg = PipelineConfig(teachers=[TeacherConfig(id='a', model=ModelConfig(path='unused'))], "
        "filter=FilterConfig())\n"
        f"run_filter(cfg, 'f', {str(samples_dir)!r}, {str(tmp_path / 'out')!r}, progress=False, workers=2)\n"
    )
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and "workers=1" in done.stderr


def _batches(samples_dir):
    groups = shard_groups(samples_dir)
    footers = {f: pq.read_metadata(f) for _, files in groups for f in files}
    return plan_batches(groups, footers)


@pytest.mark.parametrize("executor", ["serial", "local"])  # ray: in the test above, which starts Ray once
def test_each_executor_alone_writes_the_same_files(executor, pipeline, samples_dir, tmp_path):
    _check_executor_alone(executor, pipeline[1], samples_dir, tmp_path)


def _check_executor_alone(executor, cfg, samples_dir, tmp_path):
    """score_batch run by one executor, with nothing else of run_filter: the serial executor's
    files and statistics, whatever runs it."""
    batches = _batches(samples_dir)
    assert len(batches) == 2

    def tasks(out):
        (out / "scored").mkdir(parents=True)
        (out / "curated").mkdir()
        return [(b.name, b.files, cfg, str(out)) for b in batches]

    expected = run_serial(score_batch, tasks(tmp_path / "expected"))
    done = []
    if executor == "serial":
        results = run_serial(score_batch, tasks(tmp_path / executor), done=done.append)
    elif executor == "local":
        results = run_local(score_batch, tasks(tmp_path / executor), workers=2, done=done.append)
    else:
        results = run_ray(score_batch, tasks(tmp_path / executor), done=done.append)
    assert done == [0, 1]  # each result as it comes, in order
    assert _bytes(tmp_path / executor) == _bytes(tmp_path / "expected") and len(_bytes(tmp_path / "expected")) == 4
    for got, want in zip(results, expected):
        assert got["dropped"].equals(want["dropped"]) and got["stats"].equals(want["stats"])
        assert {k: got[k] for k in ("samples", "kept", "prompts")} == {
            k: want[k] for k in ("samples", "kept", "prompts")
        }


def _raise_if_negative(x):
    if x < 0:
        raise SchemaError(f"negative: {x}")
    return x * 2


def test_the_local_executor_returns_in_order_and_raises_a_task_error_as_it_was():
    context = worker_context()
    assert run_local(_raise_if_negative, [(i,) for i in range(5)], workers=2, context=context) == [0, 2, 4, 6, 8]
    with pytest.raises(SchemaError, match="negative: -1"):
        run_local(_raise_if_negative, [(1,), (-1,)], workers=2, context=context)
    assert run_local(_raise_if_negative, [], workers=2) == []
