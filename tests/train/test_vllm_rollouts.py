"""RL rollouts on vLLM's CPU build (no mock): after a policy update the engine serves the new
weights (its greedy output equals transformers' for the updated model, tied embeddings included,
on text and on video prompts), colocated and as a server in its own process; a short RL run with
vLLM rollouts completes, saves and resumes (with the engine colocated, then as a server)."""

import json
import subprocess
from importlib.util import find_spec

import pytest
import torch

from rmsd.gen.backends import GenerationRequest
from rmsd.gen.frames import sample_frames
from rmsd.schemas.prompting import build_messages
from tests.conftest import BIN, torchrun
from tests.train.test_resume import kill_after

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_spec("vllm") is None, reason="vLLM is not installed (make setup installs its CPU build on x86-64 only)"
    ),
]


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory):
    """The tiny preset with its output layer tied to its input embeddings."""
    from rmsd.models import init_model, load_model

    folder = init_model(tmp_path_factory.mktemp("tied") / "model", "tiny", seed=1)
    model, processor = load_model(folder)
    model.config.tie_word_embeddings = model.config.get_text_config().tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _updated(model):
    """The model after a stand-in policy update: every weight moved."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def first_token_ids(completions) -> list[list[int]]:
    """Each request's first completion as token ids (end of sequence included)."""
    return [samples[0].token_ids for samples in completions]


def _video_requests(bench_dir, rows, suppress):
    requests = []
    for r in rows:
        # 4 frames: 2 temporal patches, fewer than the merged grid's side, where vLLM and transformers
        # place the text after the video at the same M-RoPE positions (docs/training.md, eval's caveat)
        f = sample_frames(bench_dir / r["video"], num_frames=4)
        requests.append(
            GenerationRequest(
                r["prompt_id"],
                build_messages(r["question"], r["task_type"], r["options"]),
                f.array,
                f.fps,
                f.timestamps,
                seeds=[0],
                temperature=0.0,
                max_tokens=12,
                suppress_tokens=suppress,
            )
        )
    return requests


def test_after_a_policy_update_the_engine_serves_the_new_weights(tied_model, bench_dir):
    import polars as pl

    from rmsd.gen.backends.hf import HFBackend
    from rmsd.models import load_model
    from rmsd.train.rollouts import VLLMRollouts

    rollouts = VLLMRollouts(tied_model, enforce_eager=True)
    model, processor = load_model(tied_model)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    texts = [
        "<|im_start|>user\nHow many red shapes are there?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nWhat colour?<|im_end|>\n",
    ]

    def text_greedy_vllm():
        from vllm import SamplingParams

        outputs = rollouts.backend.llm.generate(texts, SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def text_greedy_hf():
        answers = []
        for text in texts:
            ids = processor.tokenizer(text, return_tensors="pt")
            out = model.generate(
                **ids, do_sample=False, max_new_tokens=12, eos_token_id=processor.tokenizer.eos_token_id
            )
            answers.append(out[0, ids["input_ids"].shape[1] :].tolist())
        return answers

    before = text_greedy_vllm()
    assert before == text_greedy_hf()
    rollouts.sync(_updated(model), step=1)
    after = text_greedy_vllm()
    assert after != before and after == text_greedy_hf()  # the tied output layer moved with the embeddings

    rows = pl.read_parquet(bench_dir / "prompts.parquet").to_dicts()[:8]
    suppress = [processor.video_token_id, processor.image_token_id]
    requests = _video_requests(bench_dir, rows, suppress)
    hf = first_token_ids(HFBackend.from_model(model, processor).generate(requests))
    assert first_token_ids(rollouts.completions(requests)) == hf
    rollouts.sync(model, step=1)  # the same step: no reload
    assert rollouts.synced_step == 1


def test_a_rollout_server_in_its_own_process_serves_the_weights_it_is_sent(tied_model, bench_dir):
    """Server mode: the engine is a Ray actor; after each update the trainer sends the weights, and
    its rollouts equal transformers' greedy ones for the weights sent (the tied output layer too)."""
    import polars as pl
    import ray

    from rmsd.gen.backends.hf import HFBackend
    from rmsd.models import load_model
    from rmsd.train.rollouts import ServedRollouts, start_server

    model, processor = load_model(tied_model)
    rows = pl.read_parquet(bench_dir / "prompts.parquet").to_dicts()[:4]
    requests = _video_requests(bench_dir, rows, [processor.video_token_id, processor.image_token_id])
    try:
        actor = start_server(tied_model, num_cpus=0, enforce_eager=True)
        served = ServedRollouts(actor, run="test", owned=True)
        served.sync(model, 0)
        before = first_token_ids(served.completions(requests))
        assert before == first_token_ids(HFBackend.from_model(model, processor).generate(requests))
        served.sync(_updated(model), 1)
        after = first_token_ids(served.completions(requests))
        assert after != before
        assert after == first_token_ids(HFBackend.from_model(model, processor).generate(requests))
        other = ServedRollouts(actor, run="another run", sends_weights=False)  # waits for its own run's weights
        other.synced_step = 1
        with pytest.raises(ray.exceptions.RayTaskError, match="no weights of run another run step 1"):
            ray.get(actor.completions.remote(requests[:1], other.run, 1, timeout=0.2))
        served.close()
    finally:
        ray.shutdown()


def test_sleep_mode_is_refused_on_a_build_without_it(tiny_model):
    from rmsd.gen.backends.vllm import VLLMBackend

    with pytest.raises(ValueError, match="vLLM's sleep mode needs its CUDA, ROCm or XPU build; this one runs on cpu"):
        VLLMBackend(str(tiny_model), sleep_mode=True)


def _rl(*args):
    return [str(BIN / "rmsd-train"), "rl", *map(str, args)]


def test_rl_with_vllm_rollouts_trains_saves_and_resumes(tiny_model, distilled, tmp_path):
    out = tmp_path / "rl"
    command = _rl(
        "--data",
        distilled,
        "--out",
        out,
        "--model",
        tiny_model,
        "--num-generations",
        2,
        "--batch-size",
        4,
        "--max-tokens",
        12,
        "--disc-warmup-steps",
        1,
        "--max-steps",
        3,
        "--save-steps",
        1,
        "--save-total-limit",
        3,
        "--rollouts",
        "vllm",
        "--rollout-enforce-eager",
        "True",
    )
    kill_after(command, out / "checkpoint-1", timeout=600)
    killed_at = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-1").iterdir()}
    # resumed with the engine in its own process (server mode), started and ended by the run
    command[command.index("vllm")] = "vllm-server"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (out / "final" / "model.safetensors").exists()
    logged = [e for e in state["log_history"] if "completions/mean_length" in e]
    assert len(logged) == 3 and all(0 < e["completions/mean_length"] <= 12 for e in logged)
    assert all("rewards/discriminator_reward/mean" in e for e in logged)
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-1").iterdir()
    } == killed_at  # resumed from it, not started again


def test_two_training_processes_share_one_rollout_server(tiny_model, distilled, tmp_path):
    """Server mode under DDP (gloo, as torchrun launches it): the main process starts the server and
    sends it the weights; the other process finds it by name and waits for each step's weights."""
    out = tmp_path / "ddp"
    command = torchrun(
        29533,
        "-m",
        "rmsd.train.cli",
        *_rl(
            "--data", distilled, "--out", out, "--model", tiny_model, "--num-generations", 2, "--batch-size", 4,
            "--max-tokens", 12, "--disc-warmup-steps", 1, "--max-steps", 2, "--save-steps", 2,
            "--rollouts", "vllm-server", "--rollout-enforce-eager", "True",
        )[1:],
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "completions/mean_length" in e]
    assert state["global_step"] == 2 and len(logged) == 2
    assert all(0 < e["completions/mean_length"] <= 12 for e in logged)


def test_rollout_options_name_the_mode_they_need(tmp_path):
    from rmsd.train.config import AdversarialConfig

    with pytest.raises(ValueError, match="--rollout-sleep puts a colocated engine to sleep: it needs --rollouts vllm"):
        AdversarialConfig(output_dir=str(tmp_path), rollout_sleep=True)
    with pytest.raises(ValueError, match="--rollout-server and --rollout-address are for --rollouts vllm-server"):
        AdversarialConfig(output_dir=str(tmp_path), rollouts="vllm", rollout_server="rmsd-rollouts")


def test_trls_own_vllm_flag_points_to_video_rollouts(tmp_path):
    from rmsd.train.config import AdversarialConfig

    with pytest.raises(
        ValueError, match="TRL's --use_vllm routes images only; for video rollouts on vLLM use --rollouts vllm"
    ):
        AdversarialConfig(output_dir=str(tmp_path), use_vllm=True)
