"""Fixtures of the training tests: a filter output to train on."""

import json

import polars as pl
import pytest

from rmsd.filter.run import run_filter
from rmsd.schemas.config import FilterConfig, ModelConfig, PipelineConfig, TeacherConfig
from rmsd.schemas.grammar import wrap_response
from rmsd.schemas.manifests import record_path
from rmsd.schemas.tables import to_table, write_table


def distil(root, prompts):
    """root/samples (per train question of ``prompts`` one right, well-formed teacher answer and one
    unwrapped answer, dropped by the filter; the manifest paths rmsd-gen records) and root/filtered
    (rmsd-filter's output over them)."""
    rows = []
    for p in pl.read_parquet(prompts).filter(pl.col("split") == "train").to_dicts():
        answer = p["answer"] or "a short description"
        for k, text in enumerate([wrap_response("I watched the whole video.", answer), f"the answer is {answer}"]):
            rows.append(
                dict(
                    prompt_id=p["prompt_id"],
                    task_type=p["task_type"],
                    question=p["question"],
                    options=p["options"],
                    answer=p["answer"],
                    video=p["video"],
                    teacher="t",
                    sample_index=k,
                    seed=k,
                    text=text,
                    finish_reason="stop",
                    num_tokens=12,
                    cumulative_logprob=None,
                    frame_timestamps=None,
                    fps=None,
                    error=None,
                    run_id="r",
                )
            )
    samples = root / "samples"
    samples.mkdir()
    write_table(to_table(rows, "samples"), samples / "samples-t-000000.parquet", "samples")
    (samples / "_manifest.json").write_text(json.dumps(record_path("prompts_path", prompts, samples)))
    cfg = PipelineConfig(teachers=[TeacherConfig(id="t", model=ModelConfig(path="unused"))], filter=FilterConfig())
    run_filter(cfg, "t", samples, root / "filtered", progress=False, workers=1)
    return root / "filtered"


@pytest.fixture(scope="module")
def distilled(bench_dir, tmp_path_factory):
    """rmsd-filter output over the benchmark's train questions (``distil``)."""
    return distil(tmp_path_factory.mktemp("rl"), bench_dir / "prompts.parquet")
