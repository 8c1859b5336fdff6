"""Adversarial distillation on video: TRL's GRPOTrainer extended for video prompts, with the
discriminator as a reward plug-in (METHOD.md, stage 3, step 2).

TRL 1.16's GRPOTrainer routes images only. ``VideoGRPOTrainer`` adds video at four seams:

- ``_generate_and_score_completions``: decodes each row's frames (the frames the teacher saw,
  from the shard's timestamps) and builds the chat from the row's question and the pipeline's
  template, then lets TRL generate, score and compute advantages;
- ``_tokenize_prompts``: the processor turns (chat, frames) into prompt ids, ``pixel_values_videos``,
  ``video_grid_thw`` and ``mm_token_type_ids``, which TRL's generate path passes through;
- ``_get_per_token_logps_and_entropies``: the policy, old-policy and reference log-probabilities
  see the video (its rows sliced per example by ``video_grid_thw``);
- the scored batch carries each row's video tensors as per-row lists, so TRL's shuffle and split
  into micro-batches keep every row with its own video.

Everything else (group-normalised advantages, KL to the reference, clipping, logging,
checkpoints, accelerate) is TRL's.

Rewards (``rmsd.train.rewards``): R = alpha*D + beta*R_outer + eta*R_task + delta*R_content with the
paper's .4/.1/.1/.4. ``--no-discriminator`` gives the SFT+RL baseline (verifiable rewards only).
Before RL, the discriminator is warmed up on the Bradley-Terry loss against the SFT student's
own rollouts (GAD's practice), so the first RL rewards are not noise.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import polars as pl
import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from ..gen.backends import GenerationRequest
from ..gen.backends.hf import HFBackend
from ..gen.frames import processor_video_kwargs
from ..schemas.tables import SchemaError
from .collate import FrameCache, VideoSFTCollator, prompt_messages
from .data import _samples_folder, _tables, curated_frame
from .discriminator import Discriminator, DiscriminatorReward, DiscriminatorTrainer, TeacherPool
from .rewards import PAPER_WEIGHTS, ContentReward, outer_format_reward, task_format_reward
from .sft import last_checkpoint, trainer_arguments

RL_COLUMNS = ["prompt_id", "task_type", "question", "options", "answer", "video", "frame_timestamps"]
DISCRIMINATOR_DIR = "discriminator"


def rl_frame(data: Path, split: str | None = "train") -> pl.DataFrame:
    """One row per question of rmsd-filter's output (its samples: every question, kept or not),
    with its ground truth and the frame timestamps the teachers saw."""
    frame = pl.read_parquet(_tables(_samples_folder(Path(data)), "samples"), columns=[*RL_COLUMNS, "error"])
    frame = frame.sort("prompt_id", "error", nulls_last=False).unique("prompt_id", keep="first", maintain_order=True)
    if frame.is_empty():
        raise SchemaError(f"{data}: no questions")
    return frame.select(RL_COLUMNS).sort("prompt_id")


def teacher_pool(data: Path) -> TeacherPool:
    """The curated teacher responses and their p_k: what the discriminator learns to prefer."""
    return TeacherPool.from_curated(curated_frame(Path(data)).select("prompt_id", "text", "weight", "quality"))


class VideoGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rows are (video, question): see the module docstring for the seams."""

    def __init__(self, *args, frame_cache: FrameCache, templates: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.frame_cache, self.templates = frame_cache, templates
        self._video_token_id = getattr(self.processing_class, "video_token_id", None)
        self._batch_frames: list | None = None
        self._video_rows: tuple[list[torch.Tensor], torch.Tensor] | None = None  # per-row pixels, (rows, 3) grid

    def _generate_and_score_completions(self, inputs):
        inputs = [dict(x, prompt=prompt_messages(x, self.templates)) for x in inputs]
        self._batch_frames = [self.frame_cache.get(x["video"], x.get("frame_timestamps")) for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
            pixels, grid = self._video_rows
            output["pixel_values_videos"], output["video_grid_thw"] = pixels, grid
        finally:
            self._batch_frames, self._video_rows = None, None
        return output

    def _tokenize_prompts(self, prompts: list):
        processor = self.processing_class
        texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs) for p in prompts]
        frames = self._batch_frames
        encoded = processor(text=texts, videos=[f.array for f in frames], padding=True, return_tensors="pt", do_sample_frames=False,
                            **processor_video_kwargs(self.model.config.model_type, [f.timestamps for f in frames], [f.fps for f in frames]))
        keep = encoded["attention_mask"].bool()
        prompt_ids = [ids[m].tolist() for ids, m in zip(encoded["input_ids"], keep)]
        mm_types = [t[m].tolist() for t, m in zip(encoded["mm_token_type_ids"], keep)]
        grid = encoded["video_grid_thw"]
        pixels = list(torch.split(encoded["pixel_values_videos"], grid.prod(-1).tolist()))
        self._video_rows = (pixels, grid)
        fields = {"pixel_values_videos": encoded["pixel_values_videos"], "video_grid_thw": grid, "mm_token_type_ids": mm_types}
        return prompt_ids, None, fields

    def _compute_loss(self, model, inputs):
        self._video_rows = (inputs["pixel_values_videos"], inputs["video_grid_thw"])
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._video_rows = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **image_fields):
        if self._video_rows is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **image_fields
            )
        pixels, grid = self._video_rows
        device = input_ids.device
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            mm_types = torch.zeros_like(ids)
            mm_types[ids == self._video_token_id] = 2  # the processor's type of video tokens
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only the completion is scored
            model_inputs = dict(
                input_ids=ids, attention_mask=mask, mm_token_type_ids=mm_types,
                pixel_values_videos=torch.cat(list(pixels[start:end])).to(device), video_grid_thw=grid[start:end].to(device),
            )
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            with self.accelerator.autocast():
                outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(outputs.aux_loss)
        return (
            torch.cat(logps),
            torch.cat(entropies) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )


class SaveDiscriminator(TrainerCallback):
    """The discriminator is saved beside each policy checkpoint and at the end, so a resumed run
    continues with the discriminator it had."""

    def __init__(self, disc: DiscriminatorTrainer, processor):
        self.disc, self.processor = disc, processor

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.disc.disc.save(Path(args.output_dir) / f"checkpoint-{state.global_step}" / DISCRIMINATOR_DIR, self.processor)


@dataclass
class RLSettings:
    """Defaults from the paper and GAD's public script where the paper is silent."""

    num_generations: int = 8  # N rollouts per question
    temperature: float = 0.8
    learning_rate: float = 1e-6
    disc_learning_rate: float = 1e-6
    beta: float = 0.001  # KL coefficient
    max_grad_norm: float = 0.2
    batch_size: int = 8  # rollouts per device per micro-batch (a multiple of num_generations' divisor)
    gradient_accumulation: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    max_completion_length: int = 96
    warmup_steps: int = 8  # discriminator warm-up steps before RL
    discriminator: bool = True
    weights: dict = field(default_factory=lambda: dict(PAPER_WEIGHTS))
    save_steps: int = 200
    logging_steps: int = 1
    seed: int = 0


def reward_functions(discriminator: DiscriminatorReward | None, weights: dict) -> tuple[list, list[float]]:
    """TRL's reward_funcs and reward_weights: R = alpha*D + beta*R_outer + eta*R_task + delta*R_content,
    D left out when there is no discriminator (the SFT+RL baseline)."""
    funcs = [outer_format_reward, task_format_reward, ContentReward()]
    scale = [weights["outer"], weights["task"], weights["content"]]
    if discriminator is None:
        return funcs, scale
    return [discriminator, *funcs], [weights["discriminator"], *scale]


def grpo_config(out: Path, s: RLSettings, processor) -> GRPOConfig:
    # a sampled vision token would not match the vision features
    suppress = [t for t in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None)) if t is not None]
    return GRPOConfig(
        **trainer_arguments(out, s.epochs, s.max_steps, s.learning_rate, s.batch_size, s.gradient_accumulation, s.logging_steps, s.save_steps, s.seed),
        num_generations=s.num_generations,
        temperature=s.temperature,
        top_p=1.0,
        max_completion_length=s.max_completion_length,
        beta=s.beta,
        max_grad_norm=s.max_grad_norm,
        generation_kwargs={"suppress_tokens": suppress},
        log_completions=False,
    )


def warm_up_discriminator(disc: DiscriminatorTrainer, policy, processor, frame: pl.DataFrame, pool: TeacherPool,
                          frame_cache: FrameCache, templates: dict | None, s: RLSettings) -> list[dict]:
    """GAD's warm-up: D learns teacher-vs-student on the SFT student's own rollouts (sampled as in
    RL) before the policy moves. Returns the per-step statistics.

    Under DDP each rank rolls out its own share of the questions with a kept teacher sample, and
    every rank takes all ``s.warmup_steps`` steps (D's update is collective), a rank whose share is
    empty with no pairs."""
    backend = HFBackend.from_model(policy, processor)
    policy.eval()
    rank = torch.distributed.get_rank() if disc.world > 1 else 0
    rows = [r for r in frame.to_dicts() if pool.responses.get(r["prompt_id"])][rank :: disc.world]
    rng = random.Random(s.seed)
    per_step = max(1, s.batch_size // s.num_generations) if rows else 0
    history = []
    for step in range(s.warmup_steps):
        batch = [rows[(step * per_step + i) % len(rows)] for i in range(per_step)]
        requests = [
            GenerationRequest(r["prompt_id"], prompt_messages(r, templates), (f := frame_cache.get(r["video"], r["frame_timestamps"])).array,
                              f.fps, f.timestamps, seeds=[s.seed * 1_000_003 + step * 10_007 + j for j in range(s.num_generations)],
                              temperature=s.temperature, max_tokens=s.max_completion_length)
            for r in batch
        ]
        completions = backend.generate(requests) if requests else []
        students, teachers, quality = [], [], []
        for r, outs in zip(batch, completions):
            for c in outs:
                text, q = pool.draw(r["prompt_id"], rng)
                students.append(dict(r, response=c.text or ""))
                teachers.append(dict(r, response=text))
                quality.append(q)
        stats = disc.step(teachers, students, quality)
        if stats is not None:
            history.append(stats)
    policy.train()
    return history


def run_rl(model_path: Path, processor, policy, data: Path, frame_cache: FrameCache, templates: dict | None, out: Path,
           settings: RLSettings, resume: bool = True, split: str | None = "train") -> Path:
    """Warm up the discriminator, then GRPO with the adversarial reward; save to ``out/final``
    (policy) and ``out/final/discriminator``."""
    out = Path(out)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from accelerate import PartialState

    PartialState()  # under torchrun / accelerate: the process group, before the discriminator syncs over it
    frame = rl_frame(data, split)
    dataset = datasets.Dataset.from_polars(frame)
    s = settings
    disc, disc_reward = None, None
    checkpoint = last_checkpoint(out) if resume else None
    if s.discriminator:
        pool = teacher_pool(data)
        saved = Path(checkpoint) / DISCRIMINATOR_DIR if checkpoint else None
        disc_model = Discriminator.from_student(saved if saved and saved.is_dir() else model_path)
        collator = VideoSFTCollator(processor, frame_cache, templates, policy.config.model_type)
        disc = DiscriminatorTrainer(disc_model, collator, lr=s.disc_learning_rate,
                                    max_grad_norm=s.max_grad_norm)
        if checkpoint is None and s.warmup_steps > 0:
            started = time.perf_counter()
            history = warm_up_discriminator(disc, policy, processor, frame, pool, frame_cache, templates, s)
            out.mkdir(parents=True, exist_ok=True)
            (out / "discriminator_warmup.json").write_text(json.dumps({"seconds": time.perf_counter() - started, "steps": history}, indent=1))
        disc_reward = DiscriminatorReward(disc, pool, seed=s.seed)
    args = grpo_config(out, s, processor)
    reward_funcs, args.reward_weights = reward_functions(disc_reward, s.weights)
    trainer = VideoGRPOTrainer(
        model=policy, args=args, reward_funcs=reward_funcs, train_dataset=dataset, processing_class=processor,
        frame_cache=frame_cache, templates=templates, callbacks=[SaveDiscriminator(disc, processor)] if disc else None,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    final = out / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(final))
        if disc is not None:
            disc.disc.save(final / DISCRIMINATOR_DIR, processor)
    return final


__all__ = ["RLSettings", "VideoGRPOTrainer", "reward_functions", "rl_frame", "run_rl", "teacher_pool", "warm_up_discriminator"]
