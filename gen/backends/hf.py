"""``backend: hf``: transformers' ``generate`` on the CPU or one GPU.

The K samples of a prompt are K rows of one batched ``generate`` call. Sampling is done per row
with that row's own ``torch.Generator`` (``SeededRowSampler``), so a sample depends on its seed
only, not on the batch it landed in; ``generate`` then simply takes the chosen token.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ...models import load_model
from ..frames import processor_video_kwargs
from . import Completion, GenerationRequest


class SeededRowSampler(LogitsProcessor):
    """Samples one token per row with the row's generator; returns logits that allow only it.

    Records the log-probability of each chosen token under the model's raw distribution, so the
    caller can sum a sample's ``cumulative_logprob`` (as vLLM reports it).
    """

    def __init__(
        self,
        seeds: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
        device: torch.device,
        top_logprobs: int = 0,
    ):
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.chosen_logprobs: list[torch.Tensor] = []
        self.chosen_tokens: list[torch.Tensor] = []
        self.top_logprobs = top_logprobs
        self.top: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (values, indices) of the top-k

    def _filter(self, logits: torch.Tensor) -> torch.Tensor:
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= self.top_p  # keep the token crossing top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return logits

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        probs = self._filter(scores / self.temperature).softmax(-1)
        tokens = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        logprobs = scores.log_softmax(-1)
        self.chosen_logprobs.append(logprobs.gather(1, tokens).squeeze(1))
        self.chosen_tokens.append(tokens.squeeze(1))
        if self.top_logprobs:
            self.top.append(torch.topk(logprobs, self.top_logprobs, dim=-1))
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, tokens, 0.0)


class HFBackend:
    def __init__(self, model_path: str, dtype: str = "float32", num_threads: int = 1, use_gpu: bool = False):
        if not use_gpu:
            torch.set_num_threads(num_threads)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self._attach(*load_model(model_path, dtype=dtype, device=device))

    @classmethod
    def from_model(cls, model, processor) -> HFBackend:
        """A backend over a model already in memory (rmsd-train's policy: its rollouts for the
        discriminator warm-up)."""
        backend = cls.__new__(cls)
        backend._attach(model, processor)
        return backend

    def _attach(self, model, processor) -> None:
        self.model, self.processor = model, processor
        self.device = next(model.parameters()).device
        self.tokenizer = self.processor.tokenizer  # shared with rmsd-train's collator: padding is chosen per call
        self.eos_ids = self._eos_ids()
        self.model_type = self.model.config.model_type

    def _token_logprobs(self, sampler: SeededRowSampler, row: int, length: int) -> list[list[dict]]:
        """Per generated token: the sampled token, then the top-k alternatives (raw distribution)."""
        positions = []
        for step in range(length):
            chosen = int(sampler.chosen_tokens[step][row])
            entries = [(chosen, float(sampler.chosen_logprobs[step][row]))]
            if sampler.top:
                values, indices = sampler.top[step]
                entries += [(int(t), float(v)) for v, t in zip(values[row], indices[row]) if int(t) != chosen]
            positions.append([{"token_id": t, "token": self.tokenizer.decode([t]), "logprob": v} for t, v in entries])
        return positions

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _inputs(self, requests: list[GenerationRequest]):
        texts = [
            self.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests
        ]
        return self.processor(
            text=texts,
            videos=[np.asarray(r.frames) for r in requests],
            padding=True,
            padding_side="left",
            return_tensors="pt",
            do_sample_frames=False,
            **processor_video_kwargs(self.model_type, [r.timestamps for r in requests], [r.fps for r in requests]),
        ).to(self.device)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """K completions per request; requests of one call must share their sampling settings."""
        first = requests[0]
        ks = {len(r.seeds) for r in requests}
        settings = (first.temperature, first.top_p, first.top_k, first.max_tokens, first.suppress_tokens)
        if len(ks) != 1 or any(
            (r.temperature, r.top_p, r.top_k, r.max_tokens, r.suppress_tokens) != settings for r in requests
        ):
            raise ValueError("one generate call needs one K and one set of sampling settings")
        k = ks.pop()
        inputs = self._inputs(requests)
        greedy = first.temperature == 0  # evaluation: one greedy answer per request
        sampler = SeededRowSampler(
            [s for r in requests for s in r.seeds],
            first.temperature or 1.0,
            first.top_p,
            first.top_k,
            self.device,
            first.logprobs or 0,
        )
        if greedy and k != 1:
            raise ValueError("greedy decoding (temperature 0) gives one sample per request")
        output = self.model.generate(
            **inputs,
            do_sample=not greedy,  # sampling: the sampler leaves one finite logit; generate then takes it
            num_return_sequences=k,
            temperature=None if greedy else 1.0,
            top_k=None,
            top_p=None,
            max_new_tokens=first.max_tokens,
            logits_processor=None if greedy else LogitsProcessorList([sampler]),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            suppress_tokens=first.suppress_tokens or None,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :].cpu()
        step_logprobs = torch.stack(sampler.chosen_logprobs, dim=1).cpu() if sampler.chosen_logprobs else None
        results: list[list[Completion]] = []
        for i, _ in enumerate(requests):
            row_completions = []
            for j in range(k):
                row = i * k + j
                tokens = new_tokens[row].tolist()
                end = next((n for n, t in enumerate(tokens) if t in self.eos_ids), None)
                length = len(tokens) if end is None else end + 1
                logprob = float(step_logprobs[row, :length].sum()) if step_logprobs is not None else None
                text = self.tokenizer.decode(tokens[: end if end is not None else length], skip_special_tokens=True)
                per_token = (
                    self._token_logprobs(sampler, row, length) if first.logprobs is not None and not greedy else None
                )
                row_completions.append(
                    Completion(
                        text,
                        "length" if end is None else "stop",
                        length,
                        logprob,
                        logprobs=per_token,
                        token_ids=tokens[:length],
                    )
                )
            results.append(row_completions)
        return results
