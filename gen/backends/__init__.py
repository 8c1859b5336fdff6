"""Teacher backends. Each turns a batch of ``GenerationRequest`` into K completions per request.

A backend is created inside a Ray actor (see ``rmsd.gen.driver``), so it may hold a model in
memory for the whole job. Every sample carries its own seed: which engine, batch or position
serves a request never changes what it generates.

This package is rmsd-gen's public contract for generation: rmsd-train's evaluation and RL rollouts
generate with the same engines, importing from here only (``GenerationRequest``, ``Completion``,
``HFBackend``, ``VLLMBackend``, ``OpenAIBackend``; tests/test_boundaries.py). The engines load on
first use, so importing the package does not import torch, vLLM or the OpenAI client.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

# engine class -> its module in this package, imported when the class is first asked for
ENGINES = {"HFBackend": "hf", "VLLMBackend": "vllm", "OpenAIBackend": "openai"}


def __getattr__(name: str):
    if name in ENGINES:
        return getattr(importlib.import_module(f".{ENGINES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class GenerationRequest:
    prompt_id: str
    messages: list[dict]  # chat messages with one {"type": "video"} placeholder
    frames: np.ndarray  # uint8 T x H x W x 3
    fps: float  # effective fps of the frames
    timestamps: list[float]
    seeds: list[int]  # one per sample: K = len(seeds)
    temperature: float = 1.0  # 0 = greedy (one sample)
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 128
    logprobs: int | None = None  # top-k alternatives per token to return (None: no per-token logprobs)
    suppress_tokens: list[int] | None = None  # token ids never sampled (RL rollouts: the vision placeholders)


@dataclass
class Completion:
    text: str | None
    finish_reason: str | None  # "stop" | "length"; None when the sample failed
    num_tokens: int | None
    cumulative_logprob: float | None = None
    error: str | None = None  # why the sample failed (an API teacher out of retries); written as an error row
    logprobs: list | None = None  # per token: [{"token_id", "token", "logprob"}, ...], the sampled token first
    extra: dict = field(default_factory=dict)
    token_ids: list[int] | None = (
        None  # the generated token ids, end-of-sequence included (vllm backend; RL rollouts need them)
    )


def create_backend(teacher, model_path: str | None):
    """The backend named by ``teacher.backend`` (a TeacherConfig), with an install hint if missing."""
    if teacher.backend == "hf":
        from .hf import HFBackend

        return HFBackend(
            model_path,
            dtype=teacher.model.dtype,
            num_threads=max(1, int(teacher.num_cpus)),
            use_gpu=teacher.num_gpus > 0,
        )
    if teacher.backend == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(
            model_path,
            dtype=teacher.model.dtype,
            tensor_parallel_size=teacher.tensor_parallel_size,
            max_model_len=teacher.max_model_len,
            gpu_memory_utilization=teacher.gpu_memory_utilization,
            use_gpu=teacher.num_gpus > 0,
            enforce_eager=teacher.enforce_eager,
        )
    if teacher.backend == "openai":
        from .openai import OpenAIBackend

        api = teacher.api
        return OpenAIBackend(
            api.base_url,
            api.model,
            api.api_key_env,
            api.max_concurrency,
            api.max_retries,
            api.timeout_s,
            api.backoff_s,
            media=api.media,
        )
    raise ValueError(f"unknown backend {teacher.backend!r}")
