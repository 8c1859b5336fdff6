import math

import pytest

from rmsd.gen.backends import GenerationRequest
from rmsd.gen.backends.hf import HFBackend
from rmsd.gen.frames import sample_frames
from rmsd.schemas.prompting import build_messages


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(str(tiny_model))


def _request(bench_dir, pid, seeds, max_tokens=12, video="videos/v7-000000.mp4", question="What colour is the circle?"):
    frames = sample_frames(bench_dir / video, num_frames=4)
    return GenerationRequest(
        prompt_id=pid,
        messages=build_messages(question, "multiple_choice", ["red", "green", "blue", "yellow"]),
        frames=frames.array,
        fps=frames.fps,
        timestamps=frames.timestamps,
        seeds=seeds,
        max_tokens=max_tokens,
    )


def test_k_samples_per_request_with_their_own_seeds(backend, bench_dir):
    out = backend.generate([_request(bench_dir, "a", [1, 2, 3, 4])])
    assert len(out) == 1 and len(out[0]) == 4
    texts = [c.text for c in out[0]]
    assert len(set(texts)) > 1  # sampled, not four copies
    for c in out[0]:
        assert c.finish_reason in ("stop", "length") and 1 <= c.num_tokens <= 12
        assert math.isfinite(c.cumulative_logprob) and c.cumulative_logprob < 0


def test_seeds_decide_not_batching(backend, bench_dir):
    """The same seed gives the same sample alone or batched beside other prompts."""
    alone = backend.generate([_request(bench_dir, "a", [11, 12])])[0]
    other = _request(bench_dir, "b", [99, 98], video="videos/v7-000001.mp4", question="Which way does it move?")
    batched = backend.generate([other, _request(bench_dir, "a", [11, 12])])[1]
    assert [c.text for c in alone] == [c.text for c in batched]
    assert [c.cumulative_logprob for c in alone] == pytest.approx([c.cumulative_logprob for c in batched], abs=1e-3)


def test_token_limit_is_reported_as_length(backend, bench_dir):
    out = backend.generate([_request(bench_dir, "a", [5], max_tokens=1)])[0][0]
    assert out.num_tokens == 1
    assert out.finish_reason in ("length", "stop")


def test_mixed_sampling_settings_in_one_call_are_refused(backend, bench_dir):
    a, b = _request(bench_dir, "a", [1]), _request(bench_dir, "b", [2], max_tokens=3)
    with pytest.raises(ValueError, match="one set of sampling settings"):
        backend.generate([a, b])


def test_per_token_logprobs_when_asked(backend, bench_dir):
    request = _request(bench_dir, "a", [7, 8], max_tokens=6)
    request.logprobs = 3
    with_top = backend.generate([request])[0]
    plain = backend.generate([_request(bench_dir, "a", [7, 8], max_tokens=6)])[0]
    assert [c.text for c in with_top] == [c.text for c in plain]  # asking for logprobs changes no sample
    for c in with_top:
        assert len(c.logprobs) == c.num_tokens
        assert all(
            len(position) == 4 or len(position) == 3 for position in c.logprobs
        )  # sampled + top-3 (minus itself)
        assert sum(position[0]["logprob"] for position in c.logprobs) == pytest.approx(c.cumulative_logprob, abs=1e-3)
        assert all(p["logprob"] <= 0 and isinstance(p["token_id"], int) for position in c.logprobs for p in position)
    assert plain[0].logprobs is None
