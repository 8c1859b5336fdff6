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
from pathlib import Path

import datasets
import polars as pl
import torch
from transformers import set_seed
from trl import GRPOTrainer

from ..gen.backends import GenerationRequest
from ..gen.backends.hf import HFBackend
from ..gen.frames import processor_video_kwargs
from ..schemas.config import FilterConfig
from ..schemas.tables import SchemaError
from .collate import FrameCache, VideoSFTCollator, prompt_messages
from .data import _samples_folder, _tables, curated_frame
from .discriminator import Discriminator, DiscriminatorReward, DiscriminatorTrainer, TeacherPool
from .rewards import ContentReward, outer_format_reward, task_format_reward
from .checkpoints import StrictResume, finished, last_checkpoint, save_final
from .config import AdversarialConfig

RL_COLUMNS = ["prompt_id", "task_type", "question", "options", "answer", "video", "frame_timestamps"]
DISCRIMINATOR_DIR = "discriminator"


def rl_frame(data: Path, split: str | None = "train", samples: Path | None = None) -> pl.DataFrame:
    """One row per question of rmsd-filter's output (its samples: every question, kept or not),
    with its ground truth and the frame timestamps the teachers saw."""
    frame = pl.read_parquet(_tables(_samples_folder(Path(data), samples), "samples"), columns=[*RL_COLUMNS, "error"])
    frame = frame.sort("prompt_id", "error", nulls_last=False).unique("prompt_id", keep="first", maintain_order=True)
    if frame.is_empty():
        raise SchemaError(f"{data}: no questions")
    return frame.select(RL_COLUMNS).sort("prompt_id")


def teacher_pool(data: Path, samples: Path | None = None) -> TeacherPool:
    """The curated teacher responses and their p_k: what the discriminator learns to prefer."""
    return TeacherPool.from_curated(curated_frame(Path(data), samples).select("prompt_id", "text", "weight", "quality"))


class VideoGRPOTrainer(StrictResume, GRPOTrainer):
    """GRPOTrainer whose rows are (video, question): see the module docstring for the seams. With a
    ``discriminator`` reward, each checkpoint holds it (weights, optimizer, teacher draws)."""

    def __init__(self, *args, frame_cache: FrameCache, templates: dict | None = None, discriminator: DiscriminatorReward | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.discriminator = discriminator
        self.frame_cache, self.templates = frame_cache, templates
        self._video_token_id = getattr(self.processing_class, "video_token_id", None)
        self._batch_frames: list | None = None
        self._video_rows: tuple[list[torch.Tensor], torch.Tensor] | None = None  # per-row pixels, (rows, 3) grid

    def _save_checkpoint(self, model, trial):
        if self.discriminator is not None:  # before the Trainer's trainer_state.json, which marks a checkpoint whole
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}" / DISCRIMINATOR_DIR
            self.discriminator.save_state(folder, self.processing_class, weights=self.is_world_process_zero())
        super()._save_checkpoint(model, trial)

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


def reward_functions(discriminator: DiscriminatorReward | None, scoring: FilterConfig | None = None) -> list:
    """TRL's reward_funcs, in the order of ``AdversarialConfig.weights``: R = alpha*D + beta*R_outer +
    eta*R_task + delta*R_content, D left out when there is no discriminator (the SFT+RL baseline).
    The content reward scores with the pipeline's filter settings (``scoring``)."""
    funcs = [outer_format_reward, task_format_reward, ContentReward(scoring or FilterConfig())]
    return funcs if discriminator is None else [discriminator, *funcs]


def rollout_config(args: AdversarialConfig, processor) -> AdversarialConfig:
    """``args`` with the processor's vision tokens suppressed in rollouts (a sampled vision token would
    not match the vision features)."""
    suppress = [t for t in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None)) if t is not None]
    args.generation_kwargs = {"suppress_tokens": suppress, **(args.generation_kwargs or {})}
    return args


def warm_up_discriminator(disc: DiscriminatorTrainer, policy, processor, frame: pl.DataFrame, pool: TeacherPool,
                          frame_cache: FrameCache, templates: dict | None, s: AdversarialConfig) -> list[dict]:
    """GAD's warm-up: D learns teacher-vs-student on the SFT student's own rollouts (sampled as in
    RL) before the policy moves. Returns the per-step statistics.

    Under DDP each rank rolls out its own share of the questions with a kept teacher sample, and
    every rank takes all ``s.disc_warmup_steps`` steps (D's update is collective), a rank whose share is
    empty with no pairs."""
    backend = HFBackend.from_model(policy, processor)
    policy.eval()
    rank = torch.distributed.get_rank() if disc.world > 1 else 0
    rows = [r for r in frame.to_dicts() if pool.responses.get(r["prompt_id"])][rank :: disc.world]
    rng = random.Random(s.seed)
    per_step = max(1, s.per_device_train_batch_size // s.num_generations) if rows else 0
    history = []
    for step in range(s.disc_warmup_steps):
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


def run_rl(model_path: Path, processor, policy, data: Path, frame_cache: FrameCache, templates: dict | None, args: AdversarialConfig,
           resume: bool = True, split: str | None = "train", scoring: FilterConfig | None = None, samples: Path | None = None) -> Path:
    """Warm up the discriminator, then GRPO with the adversarial reward; save to ``final/`` (policy)
    and ``final/discriminator``. A killed run resumes from its newest checkpoint: the policy, the
    discriminator, both optimizers and the teacher draws continue where they were. A run that already
    finished is left as it is."""
    out = Path(args.output_dir)
    if resume and (done := finished(out)):
        return done
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from accelerate import PartialState

    PartialState()  # under torchrun / accelerate: the process group, before the discriminator syncs over it
    set_seed(args.seed)  # the discriminator's head is drawn before the Trainer seeds: the same run draws the same head
    frame = rl_frame(data, split, samples=samples)
    dataset = datasets.Dataset.from_polars(frame)
    disc_reward = None
    checkpoint = last_checkpoint(out) if resume else None
    if args.discriminator:
        pool = teacher_pool(data, samples=samples)
        saved = Path(checkpoint) / DISCRIMINATOR_DIR if checkpoint else None
        if saved is not None and not saved.is_dir():
            raise FileNotFoundError(f"{checkpoint}: no {DISCRIMINATOR_DIR}/; a run with the discriminator cannot resume from it (was it trained without?)")
        collator = VideoSFTCollator(processor, frame_cache, templates, policy.config.model_type)
        disc = DiscriminatorTrainer(Discriminator.from_student(saved or model_path), collator, lr=args.disc_learning_rate, max_grad_norm=args.max_grad_norm)
        disc_reward = DiscriminatorReward(disc, pool, seed=args.seed)
        if saved is not None:
            disc_reward.load_state(saved)
        elif args.disc_warmup_steps > 0:
            started = time.perf_counter()
            history = warm_up_discriminator(disc, policy, processor, frame, pool, frame_cache, templates, args)
            out.mkdir(parents=True, exist_ok=True)
            (out / "discriminator_warmup.json").write_text(json.dumps({"seconds": time.perf_counter() - started, "steps": history}, indent=1))
    trainer = VideoGRPOTrainer(
        model=policy, args=rollout_config(args, processor), reward_funcs=reward_functions(disc_reward, scoring), train_dataset=dataset,
        processing_class=processor, frame_cache=frame_cache, templates=templates, discriminator=disc_reward,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    save_disc = None if disc_reward is None else (lambda folder: disc_reward.trainer.disc.save(folder / DISCRIMINATOR_DIR, processor))
    return save_final(trainer, processor, out, extra=save_disc)


__all__ = ["VideoGRPOTrainer", "reward_functions", "rl_frame", "rollout_config", "run_rl", "teacher_pool", "warm_up_discriminator"]
