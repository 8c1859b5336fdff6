"""backend: vllm through the CPU build of vLLM, on the tiny model with video (no mock)."""

import math
from importlib.util import find_spec

import polars as pl
import pytest

from rmsd.gen.backends import GenerationRequest
from rmsd.gen.frames import sample_frames
from rmsd.schemas.prompting import build_messages
from tests.conftest import gen, write_pipelines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_spec("vllm") is None, reason="vLLM is not installed (make setup installs its CPU build on x86-64 only)"
    ),
]


@pytest.fixture(scope="module")
def engine(tiny_model):
    from rmsd.gen.backends.vllm import VLLMBackend

    return VLLMBackend(str(tiny_model), max_model_len=2048, enforce_eager=True)  # no torch.compile: starts ~30 s sooner


def _request(bench_dir, seeds, video="videos/v7-000000.mp4"):
    f = sample_frames(bench_dir / video, num_frames=4)
    messages = build_messages("How many shapes appear in the video?", "numerical")
    return GenerationRequest("p", messages, f.array, f.fps, f.timestamps, seeds=seeds, max_tokens=12)


def test_k_samples_share_one_request_and_each_is_reproducible_from_its_seed(engine, bench_dir):
    (samples,) = engine.generate([_request(bench_dir, [500, 501, 502, 503])])
    assert len(samples) == 4 and len({s.text for s in samples}) > 1
    for s in samples:
        assert s.finish_reason in ("stop", "length") and 1 <= s.num_tokens <= 12
        assert s.cumulative_logprob is not None and math.isfinite(s.cumulative_logprob)
    (alone,) = engine.generate([_request(bench_dir, [502])])  # sample 2 alone, with its recorded seed
    assert alone[0].text == samples[2].text


def test_non_consecutive_seeds_are_honoured_one_by_one(engine, bench_dir):
    (pair,) = engine.generate([_request(bench_dir, [501, 503])])
    (run,) = engine.generate([_request(bench_dir, [500, 501, 502, 503])])
    assert [p.text for p in pair] == [run[1].text, run[3].text]


def test_two_engine_actors_give_the_same_samples_as_one(engine, tmp_path, bench_dir, tiny_model):
    """rmsd-gen with two engine actors writes, for every sample, what one engine (this module's, with
    the teacher's settings) generates from the request rebuilt from the sample's row and seeds."""
    from rmsd.schemas.config import load_pipeline

    path = write_pipelines(
        tmp_path / "p.yaml",
        f"""
        v:
          frames: {{num_frames: 4}}
          teachers:
            - id: t
              backend: vllm
              model: {{path: {tiny_model}}}
              replicas: 2
              max_model_len: 2048
              enforce_eager: true
          sampling: {{k: 3, max_tokens: 10}}
          gen: {{shard_size: 6}}
    """,
    )
    gen(
        "run",
        "--pipeline",
        "v",
        "--config",
        path,
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        12,
        "--out",
        tmp_path / "out",
        "--no-progress",
        check=0,
        timeout=600,
    )
    two = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("prompt_id", "sample_index")
    assert two.height == 12 * 3
    pipeline = load_pipeline("v", path)
    requests = []
    for (prompt_id,), rows in two.group_by("prompt_id", maintain_order=True):
        r = rows.row(0, named=True)
        route = pipeline.route(r["task_type"])
        template = pipeline.templates[route.template]
        f = sample_frames(bench_dir / r["video"], **pipeline.frames.model_dump())
        requests.append(
            GenerationRequest(
                prompt_id,
                build_messages(r["question"], r["task_type"], r["options"], template.system, template.user),
                f.array,
                f.fps,
                f.timestamps,
                seeds=rows["seed"].to_list(),
                temperature=route.temperature,
                top_p=route.top_p,
                top_k=route.top_k,
                max_tokens=route.max_tokens,
            )
        )
    one = [c.text for samples in engine.generate(requests) for c in samples]
    assert one == two["text"].to_list()


def test_per_token_logprobs_when_asked(engine, bench_dir):
    request = _request(bench_dir, [500, 501])
    request.logprobs = 2
    samples = engine.generate([request])[0]
    for s in samples:
        assert len(s.logprobs) == s.num_tokens
        assert sum(p[0]["logprob"] for p in s.logprobs) == pytest.approx(s.cumulative_logprob, abs=1e-3)
        assert all(2 <= len(p) <= 3 for p in s.logprobs)
