"""``backend: openai``: any OpenAI-compatible chat endpoint (hosted API teachers, or ``vllm serve``).

Frames go before the question, as base64 JPEG images, one image part per frame (``api.media:
images``, any vision chat API), or as one video part (``api.media: video``, servers that take video
such as ``vllm serve``): the same sampled frames re-encoded as a small H.264 mp4 at their effective
fps, in a base64 ``video_url``. Re-encoding the sampled frames, rather than sending the source file,
keeps what the teacher sees identical to the frames and timestamps rmsd records (a server may still
resample a video: ``vllm serve`` keeps at most 2 fps of a Qwen-VL video unless started with
``--media-io-kwargs '{"video": {"fps": 30}}'``). Each sample is its own request with its own seed
(``n=1``; hosted APIs differ in ``n`` support), at most ``max_concurrency`` in flight. 429, 5xx,
timeouts and dropped connections are retried with exponential backoff and jitter; a sample still
failing after ``max_retries`` becomes an error row (``error: "api: ..."``) and the job goes on. The
API key is read from the environment variable the config names; it is never written to shards,
manifests or logs, and any text taken from the server (an error's body, a response) has it masked
as ``***``: a server may echo the request's Authorization header, in a 401 body say.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
from PIL import Image

from . import Completion, GenerationRequest

RETRIABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def frame_part(frame: np.ndarray, quality: int = 90) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()},
    }


def video_part(frames: np.ndarray, fps: float) -> dict:
    """The frames as one H.264 mp4 (one keyframe, constant rate ``fps``) in a base64 ``video_url``."""
    from ...synth import write_mp4

    # H.264 in yuv420p needs even width and height: an odd edge gets its last row / column repeated
    # (one pixel of padding; every sampled pixel is still sent).
    height, width = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    write_mp4(buffer, frames, Fraction(fps).limit_denominator(1001), keyframe_interval=len(frames))
    return {
        "type": "video_url",
        "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(buffer.getvalue()).decode()},
    }


def openai_messages(
    messages: list[dict], frames: np.ndarray, fps: float | None = None, media: str = "images"
) -> list[dict]:
    """rmsd's chat (one {"type": "video"} placeholder) in the OpenAI format: the frames as one image
    part each (``media="images"``), or as one mp4 video part at ``fps`` (``media="video"``)."""
    if media not in ("images", "video"):
        raise ValueError(f"media must be 'images' or 'video', not {media!r}")
    out = []
    for message in messages:
        parts = []
        for part in (
            message["content"]
            if isinstance(message["content"], list)
            else [{"type": "text", "text": message["content"]}]
        ):
            if part["type"] == "video":
                if media == "video":
                    parts.append(video_part(frames, fps))
                else:
                    parts.extend(frame_part(f) for f in frames)
            elif part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        backoff_s: float = 1.0,
        seed: int = 0,
        media: str = "images",
    ):
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise ImportError("backend: openai needs the OpenAI client: pip install 'rmsd[openai]'") from exc

        key = "EMPTY"
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise RuntimeError(
                    f"backend: openai: the environment variable {api_key_env} (api.api_key_env) is not set"
                )
        self.secret = key if api_key_env else None
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout_s)
        self.model, self.max_concurrency, self.max_retries, self.backoff_s = (
            model,
            max_concurrency,
            max_retries,
            backoff_s,
        )
        self.media = media
        self.jitter = random.Random(seed)

    def _masked(self, text: str | None) -> str | None:
        """Text from the server with the API key masked, before rmsd stores or prints it."""
        if text is None or not self.secret:
            return text
        return text.replace(self.secret, "***")

    def _retriable(self, exc: Exception) -> bool:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRIABLE_STATUS

    def _sample(self, r: GenerationRequest, messages: list[dict], seed: int) -> Completion:
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    n=1,
                    seed=seed,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    max_tokens=r.max_tokens,
                    logprobs=True,
                    **({"top_logprobs": r.logprobs} if r.logprobs else {}),
                )
                choice = response.choices[0]
                logprobs = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
                tokens = response.usage.completion_tokens if response.usage else (len(logprobs) if logprobs else 0)
                per_token = None
                if r.logprobs is not None and logprobs:
                    per_token = [
                        [{"token_id": None, "token": t.token, "logprob": t.logprob}]
                        + [
                            {"token_id": None, "token": a.token, "logprob": a.logprob}
                            for a in (t.top_logprobs or [])
                            if a.token != t.token
                        ]
                        for t in logprobs
                    ]
                return Completion(
                    self._masked(choice.message.content or ""),
                    "length" if choice.finish_reason == "length" else "stop",
                    int(tokens),
                    sum(t.logprob for t in logprobs) if logprobs else None,
                    logprobs=per_token,
                )
            except Exception as exc:  # noqa: BLE001 - classified below; anything else is not retried
                if not self._retriable(exc):
                    return Completion(None, None, None, None, error=self._masked(f"api: {type(exc).__name__}: {exc}"))
                if attempt == self.max_retries:
                    return Completion(
                        None,
                        None,
                        None,
                        None,
                        error=self._masked(f"api: gave up after {attempt + 1} attempts: {type(exc).__name__}: {exc}"),
                    )
                time.sleep(self.backoff_s * 2**attempt * self.jitter.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        jobs = []
        for i, r in enumerate(requests):
            messages = openai_messages(r.messages, r.frames, r.fps, self.media)
            jobs += [(i, k, r, messages, seed) for k, seed in enumerate(r.seeds)]
        results: list[list] = [[None] * len(r.seeds) for r in requests]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self._sample, r, messages, seed): (i, k) for i, k, r, messages, seed in jobs}
            for future, (i, k) in futures.items():
                results[i][k] = future.result()
        return results
