"""``backend: openai``: any OpenAI-compatible chat endpoint (hosted API teachers, or ``vllm serve``).

Frames are sent as base64 JPEG images, one image part per frame, before the question. Each
sample is its own request with its own seed (``n=1``; hosted APIs differ in ``n`` support), at
most ``max_concurrency`` in flight. 429, 5xx, timeouts and dropped connections are retried with
exponential backoff and jitter; a sample still failing after ``max_retries`` becomes an error row
(``error: "api: ..."``) and the job goes on. The API key is read from the environment variable the
config names; it is never written to shards, manifests or logs.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from . import Completion, GenerationRequest

RETRIABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def frame_part(frame: np.ndarray, quality: int = 90) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()}}


def openai_messages(messages: list[dict], frames: np.ndarray) -> list[dict]:
    """rmsd's chat (one {"type": "video"} placeholder) in the OpenAI format, frames as images."""
    out = []
    for message in messages:
        parts = []
        for part in message["content"] if isinstance(message["content"], list) else [{"type": "text", "text": message["content"]}]:
            if part["type"] == "video":
                parts.extend(frame_part(f) for f in frames)
            elif part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, max_concurrency: int = 8,
                 max_retries: int = 5, timeout_s: float = 120.0, backoff_s: float = 1.0, seed: int = 0):
        from openai import OpenAI

        key = "EMPTY"
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise RuntimeError(f"backend: openai: the environment variable {api_key_env} (api.api_key_env) is not set")
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)
        self.model, self.max_concurrency, self.max_retries, self.backoff_s = model, max_concurrency, max_retries, backoff_s
        self.jitter = random.Random(seed)

    def _retriable(self, exc: Exception) -> bool:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRIABLE_STATUS

    def _sample(self, r: GenerationRequest, messages: list[dict], seed: int) -> Completion:
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=messages, n=1, seed=seed, temperature=r.temperature, top_p=r.top_p,
                    max_tokens=r.max_tokens, logprobs=True, **({"top_logprobs": r.logprobs} if r.logprobs else {}),
                )
                choice = response.choices[0]
                logprobs = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
                tokens = response.usage.completion_tokens if response.usage else (len(logprobs) if logprobs else 0)
                per_token = None
                if r.logprobs is not None and logprobs:
                    per_token = [
                        [{"token_id": None, "token": t.token, "logprob": t.logprob}]
                        + [{"token_id": None, "token": a.token, "logprob": a.logprob} for a in (t.top_logprobs or []) if a.token != t.token]
                        for t in logprobs
                    ]
                return Completion(
                    choice.message.content or "", "length" if choice.finish_reason == "length" else "stop", int(tokens),
                    sum(t.logprob for t in logprobs) if logprobs else None, logprobs=per_token,
                )
            except Exception as exc:  # noqa: BLE001 - classified below; anything else is not retried
                if not self._retriable(exc):
                    return Completion(None, None, None, None, error=f"api: {type(exc).__name__}: {exc}")
                if attempt == self.max_retries:
                    return Completion(None, None, None, None, error=f"api: gave up after {attempt + 1} attempts: {type(exc).__name__}: {exc}")
                time.sleep(self.backoff_s * 2**attempt * self.jitter.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        jobs = []
        for i, r in enumerate(requests):
            messages = openai_messages(r.messages, r.frames)
            jobs += [(i, k, r, messages, seed) for k, seed in enumerate(r.seeds)]
        results: list[list] = [[None] * len(r.seeds) for r in requests]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self._sample, r, messages, seed): (i, k) for i, k, r, messages, seed in jobs}
            for future, (i, k) in futures.items():
                results[i][k] = future.result()
        return results
