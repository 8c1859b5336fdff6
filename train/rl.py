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
checkpoints, accelerate) is TRL's. With ``--rollouts vllm`` a fifth seam, ``_generate_single_turn``,
samples the rollouts on a colocated vLLM engine that follows the policy's weights (``train/rollouts.py``).

Rewards (``rmsd.train.rewards``): R = alpha*D + beta*R_outer + eta*R_task + delta*R_content with the
paper's .4/.1/.1/.4. ``--no-discriminator`` gives the SFT+RL baseline (verifiable rewards only).
Before RL, the discriminator is warmed up on the Bradley-Terry loss against the SFT student's
own rollouts (GAD's practice), so the first RL rewards are not noise: until it tells the teacher's
answers from the student's on held-out questions (``--disc-warmup-target``), or for at most
``--disc-warmup-steps`` steps.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import datasets
import polars as pl
import torch
from transformers import set_seed
from trl import GRPOTrainer

from ..gen.backends import Completion, GenerationRequest, HFBackend
from ..gen.frames import processor_video_kwargs
from ..schemas.config import FilterConfig
from ..schemas.frame_policy import save_frame_policy
from ..schemas.tables import SchemaError
from .checkpoints import StrictResume, finished, last_checkpoint, save_final
from .collate import FrameCache, VideoSFTCollator, prompt_messages
from .config import AdversarialConfig
from .data import curated_frame, sample_shards
from .discriminator import Discriminator, DiscriminatorReward, DiscriminatorTrainer, TeacherPool, distinct
from .health import write_health_report
from .rewards import ContentReward, outer_format_reward, task_format_reward
from .rollouts import Rollouts, ServedRollouts, VLLMRollouts, start_server

RL_COLUMNS = ["prompt_id", "task_type", "question", "options", "answer", "video", "frame_timestamps"]
DISCRIMINATOR_DIR = "discriminator"
WARMUP_FILE = "discriminator_warmup.json"
STATS_FILE = "discriminator_stats.json"
RL_STATS = ("accuracy", "margin", "reward_std")  # summarised in STATS_FILE


def rl_frame(data: Path, split: str | None = "train", samples: Path | None = None) -> pl.DataFrame:
    """One row per question of rmsd-filter's output (its samples: every question, kept or not),
    with its ground truth and the frame timestamps the teachers saw."""
    frame = pl.read_parquet(sample_shards(Path(data), samples), columns=[*RL_COLUMNS, "error"])
    frame = frame.sort("prompt_id", "error", nulls_last=False).unique("prompt_id", keep="first", maintain_order=True)
    if frame.is_empty():
        raise SchemaError(f"{data}: no questions")
    return frame.select(RL_COLUMNS).sort("prompt_id")


def teacher_pool(data: Path, samples: Path | None = None) -> TeacherPool:
    """The curated teacher responses and their p_k: what the discriminator learns to prefer."""
    return TeacherPool.from_curated(
        curated_frame(Path(data), samples).select("prompt_id", "text", "weight", "quality", "is_best")
    )


class VideoGRPOTrainer(StrictResume, GRPOTrainer):
    """GRPOTrainer whose rows are (video, question): see the module docstring for the seams. With a
    ``discriminator`` reward, each checkpoint holds it (weights, optimizer, teacher draws)."""

    def __init__(
        self,
        *args,
        frame_cache: FrameCache,
        templates: dict | None = None,
        discriminator: DiscriminatorReward | None = None,
        rollouts: Rollouts | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.discriminator, self.rollouts = discriminator, rollouts
        self.frame_cache, self.templates = frame_cache, templates
        self._video_token_id = getattr(self.processing_class, "video_token_id", None)
        self._batch_frames: list | None = None
        self._batch_messages: list | None = None
        self._batch_ids: list[str] | None = None
        self._video_rows: tuple[list[torch.Tensor], torch.Tensor] | None = None  # per-row pixels, (rows, 3) grid

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.discriminator is not None:  # before the Trainer's trainer_state.json, which marks a checkpoint whole
            self.discriminator.save_state(
                folder / DISCRIMINATOR_DIR, self.processing_class, weights=self.is_world_process_zero()
            )
        if self.is_world_process_zero():
            folder.mkdir(parents=True, exist_ok=True)
            save_frame_policy(folder, self.frame_cache.frames)
        super()._save_checkpoint(model, trial)

    def _generate_and_score_completions(self, inputs):
        inputs = [dict(x, prompt=prompt_messages(x, self.templates)) for x in inputs]
        self._batch_frames = [self.frame_cache.get(x["video"], x.get("frame_timestamps")) for x in inputs]
        self._batch_messages = [x["prompt"] for x in inputs]
        self._batch_ids = [x["prompt_id"] for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
            pixels, grid = self._video_rows
            output["pixel_values_videos"], output["video_grid_thw"] = pixels, grid
        finally:
            self._batch_frames, self._batch_messages, self._video_rows = None, None, None
        return output

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """With ``rollouts`` (vLLM): the engine, serving the policy's current weights, samples one
        completion per row from the row's chat and frames; each rollout's seed derives from --seed,
        the step, the process and the row. TRL's rows repeat each question ``num_generations`` times
        in a row: those rows are one request of K samples on consecutive seeds, which share the
        question's prefill and video encoding (vLLM's n=K, as rmsd-gen samples a teacher)."""
        if self.rollouts is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        self.rollouts.sync(self.accelerator.unwrap_model(self.model), self.state.global_step)
        base = self.args.seed * 1_000_003 + self.state.global_step * 10_007 + self.accelerator.process_index * 1_009
        suppress = list(self.generation_kwargs.get("suppress_tokens") or [])
        requests, end = [], 0
        for _, rows in itertools.groupby(self._batch_ids):  # a question's consecutive rows
            start, end = end, end + len(list(rows))
            f = self._batch_frames[start]
            requests.append(
                GenerationRequest(
                    str(start),
                    self._batch_messages[start],
                    f.array,
                    f.fps,
                    f.timestamps,
                    seeds=[(base + i) % 2**31 for i in range(start, end)],
                    temperature=self.temperature,
                    top_p=self.top_p,
                    top_k=self.top_k or 0,
                    max_tokens=self.max_completion_length,
                    suppress_tokens=suppress,
                )
            )
        return [c.token_ids for completions in self.rollouts.completions(requests) for c in completions], None

    def _tokenize_prompts(self, prompts: list):
        processor = self.processing_class
        texts = [
            processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs)
            for p in prompts
        ]
        frames = self._batch_frames
        encoded = processor(
            text=texts,
            videos=[f.array for f in frames],
            padding=True,
            return_tensors="pt",
            do_sample_frames=False,
            **processor_video_kwargs(
                self.model.config.model_type, [f.timestamps for f in frames], [f.fps for f in frames]
            ),
        )
        keep = encoded["attention_mask"].bool()
        prompt_ids = [ids[m].tolist() for ids, m in zip(encoded["input_ids"], keep)]
        mm_types = [t[m].tolist() for t, m in zip(encoded["mm_token_type_ids"], keep)]
        grid = encoded["video_grid_thw"]
        pixels = list(torch.split(encoded["pixel_values_videos"], grid.prod(-1).tolist()))
        self._video_rows = (pixels, grid)
        fields = {
            "pixel_values_videos": encoded["pixel_values_videos"],
            "video_grid_thw": grid,
            "mm_token_type_ids": mm_types,
        }
        return prompt_ids, None, fields

    def _compute_loss(self, model, inputs):
        self._video_rows = (inputs["pixel_values_videos"], inputs["video_grid_thw"])
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._video_rows = None

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **image_fields,
    ):
        if self._video_rows is None:
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **image_fields,
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
                input_ids=ids,
                attention_mask=mask,
                mm_token_type_ids=mm_types,
                pixel_values_videos=torch.cat(list(pixels[start:end])).to(device),
                video_grid_thw=grid[start:end].to(device),
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
    suppress = [
        t
        for t in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None))
        if t is not None
    ]
    args.generation_kwargs = {"suppress_tokens": suppress, **(args.generation_kwargs or {})}
    return args


HELDOUT_PAIRS = 64  # (teacher, student) pairs of the warm-up's held-out check, at most a quarter of the questions


def heldout_questions(prompt_ids: list[str], num_generations: int, seed: int) -> set[str]:
    """The questions the warm-up sets aside for its held-out check, drawn with ``seed``: enough for
    ``HELDOUT_PAIRS`` pairs of ``num_generations`` rollouts each, at most a quarter of ``prompt_ids``
    (none below four questions: then the warm-up takes its whole budget)."""
    count = min(-(-HELDOUT_PAIRS // num_generations), len(prompt_ids) // 4)
    return set(random.Random(seed).sample(sorted(prompt_ids), count))


def _rollouts(
    complete: Callable[[list[GenerationRequest]], list[list[Completion]]],
    rows: list[dict],
    frame_cache: FrameCache,
    templates: dict | None,
    s: AdversarialConfig,
    seed: int,
) -> list[list[str]]:
    """``s.num_generations`` rollouts of each row's question, sampled as in RL; sample j's seed is ``seed + j``."""
    requests = [
        GenerationRequest(
            r["prompt_id"],
            prompt_messages(r, templates),
            (f := frame_cache.get(r["video"], r["frame_timestamps"])).array,
            f.fps,
            f.timestamps,
            seeds=[seed + j for j in range(s.num_generations)],
            temperature=s.temperature,
            max_tokens=s.max_completion_length,
        )
        for r in rows
    ]
    return [[c.text or "" for c in outs] for outs in complete(requests)] if requests else []


def warm_up_discriminator(
    disc: DiscriminatorTrainer,
    policy,
    processor,
    frame: pl.DataFrame,
    pool: TeacherPool,
    frame_cache: FrameCache,
    templates: dict | None,
    s: AdversarialConfig,
    rollouts: Rollouts | None = None,
) -> dict:
    """GAD's warm-up: D learns teacher-vs-student on the SFT student's own rollouts (sampled as in
    RL) before the policy moves, until it tells them apart on held-out pairs or its step budget ends.

    The held-out pairs: the questions ``heldout_questions`` sets aside from the updates, the SFT
    student's rollouts on them (sampled once, before the first step) each paired with the
    question's T_best. Every ``s.disc_warmup_check_steps`` steps, and at the last step of the budget,
    D scores them; the warm-up stops once its accuracy (the share of pairs where D ranks the
    teacher's answer above the student's) is above ``s.disc_warmup_target``, after at most
    ``s.disc_warmup_steps`` steps. Returns the target, the checks (step, accuracy, margin = mean
    D(T) - D(S), pairs), whether the target was reached, the steps taken and each step's statistics.

    Under DDP each rank rolls out its own share of the questions with a kept teacher sample (and of
    the held-out ones), and every rank takes part in every update and check (D's update and its
    accuracy are collective, over all ranks' pairs): all ranks read the same accuracy and stop at
    the same step, a rank whose share is empty with no pairs."""
    if rollouts is not None:
        rollouts.sync(policy, 0)  # a server's first weights (a colocated engine starts with them)
    complete = rollouts.completions if rollouts is not None else HFBackend.from_model(policy, processor).generate
    policy.eval()
    rank = torch.distributed.get_rank() if disc.world > 1 else 0
    questions = [r for r in frame.to_dicts() if pool.responses.get(r["prompt_id"])]
    held = heldout_questions([r["prompt_id"] for r in questions], s.num_generations, s.seed)
    rows = [r for r in questions if r["prompt_id"] not in held][rank :: disc.world]
    per_step = max(1, s.per_device_train_batch_size // s.num_generations)
    held_teachers, held_students, held_pairs = [], [], []  # T_best once per question, paired with its rollouts
    held_rows = [r for r in questions if r["prompt_id"] in held][rank :: disc.world]
    for start in range(
        0, len(held_rows), per_step
    ):  # in the warm-up's batches, with seeds of a range apart from its steps'
        batch = held_rows[start : start + per_step]
        for r, texts in zip(
            batch, _rollouts(complete, batch, frame_cache, templates, s, 2**31 + s.seed * 1_000_003 + start * 10_007)
        ):
            held_pairs += [(len(held_students) + j, len(held_teachers)) for j in range(len(texts))]
            held_teachers.append(dict(r, response=pool.best[r["prompt_id"]]))
            held_students += [dict(r, response=text) for text in texts]
    rng = random.Random(s.seed)
    history, checks, steps = [], [], 0
    while steps < s.disc_warmup_steps:
        batch = [rows[(steps * per_step + i) % len(rows)] for i in range(per_step)] if rows else []
        students, drawn, teachers, quality = [], [], [], []
        for r, texts in zip(
            batch, _rollouts(complete, batch, frame_cache, templates, s, s.seed * 1_000_003 + steps * 10_007)
        ):
            for text in texts:
                answer, q = pool.draw(r["prompt_id"], rng)
                students.append(dict(r, response=text))
                drawn.append((r["prompt_id"], answer))
                teachers.append(dict(r, response=answer))
                quality.append(q)
        teachers, which = distinct(drawn, teachers)
        stats = disc.step(teachers, students, quality, list(enumerate(which)))
        if stats is not None:
            history.append(stats)
        steps += 1
        if held and (steps % s.disc_warmup_check_steps == 0 or steps == s.disc_warmup_steps):
            check = disc.compare(held_teachers, held_students, s.per_device_train_batch_size, held_pairs)
            checks.append({"step": steps, **check})
            if check["accuracy"] > s.disc_warmup_target:
                break
    policy.train()
    reached = bool(checks) and checks[-1]["accuracy"] > s.disc_warmup_target
    return {
        "target": s.disc_warmup_target,
        "max_steps": s.disc_warmup_steps,
        "check_steps": s.disc_warmup_check_steps,
        "heldout_questions": len(held),
        "checks": checks,
        "target_reached": reached,
        "steps_taken": steps,
        "history": history,
    }


def discriminator_stats(out: Path, log_history: list[dict]) -> dict:
    """The discriminator's summary (``discriminator_stats.json``): the warm-up's outcome (from
    ``discriminator_warmup.json``; None without a warm-up) and, over RL, the first, last and mean of
    its logged ``discriminator/*`` metrics (accuracy and margin on the pairs it trains on, the
    spread of its reward), each logged value a logging step's mean."""
    warmup = None
    if (out / WARMUP_FILE).exists():
        run = json.loads((out / WARMUP_FILE).read_text())
        last = run["checks"][-1] if run["checks"] else {}
        warmup = {
            "target": run["target"],
            "target_reached": run["target_reached"],
            "steps_taken": run["steps_taken"],
            "max_steps": run["max_steps"],
            "accuracy": last.get("accuracy"),
            "margin": last.get("margin"),
            "seconds": run["seconds"],
        }
    rl = {"logged": sum("discriminator/accuracy" in entry for entry in log_history)}
    for name in RL_STATS:
        values = [
            entry[f"discriminator/{name}"] for entry in log_history if entry.get(f"discriminator/{name}") is not None
        ]
        rl[name] = {"mean": sum(values) / len(values), "first": values[0], "last": values[-1]} if values else None
    return {"warmup": warmup, "rl": rl}


def run_rl(
    model_path: Path,
    processor,
    policy,
    data: Path,
    frame_cache: FrameCache,
    templates: dict | None,
    args: AdversarialConfig,
    resume: bool = True,
    split: str | None = "train",
    scoring: FilterConfig | None = None,
    samples: Path | None = None,
) -> Path:
    """Warm up the discriminator (``discriminator_warmup.json``), then GRPO with the adversarial
    reward; save to ``final/`` (policy, its frame policy) and ``final/discriminator``, the
    discriminator's summary to ``discriminator_stats.json`` and its health report (``train/health.py``)
    beside them. A killed run resumes from its newest checkpoint (no second warm-up): the policy,
    the discriminator, both optimizers and the teacher draws continue where they were. A run that
    already finished is left as it is."""
    out = Path(args.output_dir)
    if resume and (done := finished(out)):
        return done
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from accelerate import PartialState

    main_process = (
        PartialState().is_main_process
    )  # under torchrun / accelerate: the process group, before the discriminator syncs over it
    set_seed(args.seed)  # the discriminator's head is drawn before the Trainer seeds: the same run draws the same head
    frame = rl_frame(data, split, samples=samples)
    dataset = datasets.Dataset.from_polars(frame)
    disc_reward = None
    checkpoint = last_checkpoint(out) if resume else None
    rollouts = vllm_rollouts(args, model_path, main_process)
    if args.discriminator:
        pool = teacher_pool(data, samples=samples)
        saved = Path(checkpoint) / DISCRIMINATOR_DIR if checkpoint else None
        if saved is not None and not saved.is_dir():
            raise FileNotFoundError(
                f"{checkpoint}: no {DISCRIMINATOR_DIR}/; a run with the discriminator cannot resume from it (was it "
                "trained without?)"
            )
        collator = VideoSFTCollator(processor, frame_cache, templates, policy.config.model_type)
        disc = DiscriminatorTrainer(
            Discriminator.from_student(saved or model_path),
            collator,
            lr=args.disc_learning_rate,
            max_grad_norm=args.max_grad_norm,
            bf16=args.bf16,
        )
        disc_reward = DiscriminatorReward(disc, pool, seed=args.seed)
        if saved is not None:
            disc_reward.load_state(saved)
        elif args.disc_warmup_steps == 0:
            if main_process:
                (out / WARMUP_FILE).unlink(missing_ok=True)  # an earlier run's, in this folder (--no-resume)
        else:
            started = time.perf_counter()
            warmup = warm_up_discriminator(disc, policy, processor, frame, pool, frame_cache, templates, args, rollouts)
            if main_process:
                out.mkdir(parents=True, exist_ok=True)
                (out / WARMUP_FILE).write_text(
                    json.dumps({**warmup, "seconds": time.perf_counter() - started}, indent=1)
                )
    trainer = VideoGRPOTrainer(
        model=policy,
        args=rollout_config(args, processor),
        reward_funcs=reward_functions(disc_reward, scoring),
        train_dataset=dataset,
        processing_class=processor,
        frame_cache=frame_cache,
        templates=templates,
        discriminator=disc_reward,
        rollouts=rollouts,
    )
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if isinstance(rollouts, ServedRollouts):
            rollouts.close()
    if main_process:
        if disc_reward is not None:
            (out / STATS_FILE).write_text(json.dumps(discriminator_stats(out, trainer.state.log_history), indent=1))
        warmup = json.loads((out / WARMUP_FILE).read_text()) if (out / WARMUP_FILE).exists() else None
        for warning in write_health_report(out, trainer.state.log_history, warmup)[2]:
            print(f"rmsd-train: warning: {warning}", file=sys.stderr)

    def extra(folder: Path) -> None:
        save_frame_policy(folder, frame_cache.frames)
        if disc_reward is not None:
            disc_reward.trainer.disc.save(folder / DISCRIMINATOR_DIR, processor)

    return save_final(trainer, processor, out, extra=extra)


def vllm_rollouts(args: AdversarialConfig, model_path: Path, main_process: bool) -> Rollouts | None:
    """The run's vLLM rollout engine (``--rollouts vllm`` or ``vllm-server``), None with hf rollouts.

    Server mode: the main process starts the server (named after a token all processes share) or
    finds the one named ``--rollout-server``; the other processes find it by its name once it is up,
    and only the main process sends it weights."""
    dtype = "bfloat16" if args.bf16 else "float32"
    if args.rollouts == "vllm":
        use_gpu = torch.cuda.is_available()
        return VLLMRollouts(
            model_path, args.rollout_memory, use_gpu, dtype, args.rollout_enforce_eager, args.rollout_sleep
        )
    if args.rollouts != "vllm-server":
        return None
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    token = [uuid.uuid4().hex[:12]]
    if distributed:
        torch.distributed.broadcast_object_list(token, src=0)
    run = token[0]
    name, owned = args.rollout_server or f"rmsd-rollouts-{run}", args.rollout_server is None
    served = None
    if main_process and owned:  # its handle keeps it alive (an actor without handles ends), until close()
        gpus = args.rollout_gpus if args.rollout_gpus >= 0 else float(torch.cuda.is_available())
        server = start_server(
            model_path, name, args.rollout_address, gpus, 1, args.rollout_memory, dtype, args.rollout_enforce_eager
        )
        served = ServedRollouts(server, run, sends_weights=True, owned=True)
    if distributed:
        torch.distributed.barrier()  # the server is up before the other processes look for it
    if served is None:
        address = args.rollout_address or (None if main_process else "auto")  # "auto": the main process's Ray
        served = ServedRollouts.connect(name, run, address, sends_weights=main_process)
    return served


__all__ = [
    "VideoGRPOTrainer",
    "discriminator_stats",
    "heldout_questions",
    "reward_functions",
    "rl_frame",
    "rollout_config",
    "run_rl",
    "vllm_rollouts",
    "teacher_pool",
    "warm_up_discriminator",
]
