"""Supervised fine-tuning of the student on teacher samples: TRL's SFTTrainer, extended at its
``compute_loss`` seam with per-example weights.

The loss of an optimizer step is the weighted token mean over every micro-batch of the step:

    L = sum_i w_i * sum_t l_it  /  sum_i w_i * n_i

(l_it the cross-entropy of response token t of example i, n_i its response tokens, w_i its
weight). The denominator covers the whole gradient-accumulation window (and every rank), so the
step's gradient does not depend on how the batch is split. With all weights 1 it is TRL's own
token-mean loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from trl import SFTTrainer

from ..schemas.config import FramesConfig
from ..schemas.frame_policy import save_frame_policy
from .checkpoints import StrictResume, finished, last_checkpoint, save_final
from .collate import IGNORE
from .config import DistillSFTConfig


class WeightedSFTTrainer(StrictResume, SFTTrainer):
    """SFTTrainer whose batches carry ``weights`` (one per example).

    With ``visual_aux > 0`` (the demo teacher's bootstrap) batches also carry scene targets and the
    loss adds ``visual_aux`` times the auxiliary visual loss of probes on the vision tower's tokens
    (train/visual_aux.py); the probes train with the model and are saved beside each checkpoint.
    Under DDP each rank updates its own copy of the probes from its own batches (they are discarded
    after training); the model's gradients, the vision tower's included, are averaged as usual.
    """

    def __init__(self, *args, visual_aux: float = 0.0, frames: FramesConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's weighted token count
        self.visual_aux, self.probe, self._capture = visual_aux, None, None
        self.frames = frames  # the frame policy, saved in every checkpoint
        if visual_aux > 0:
            from .visual_aux import TokenCapture, VisualProbe

            self.probe = VisualProbe(self.model.config.get_text_config().hidden_size).to(self.model.device)
            self._capture = TokenCapture(self.model)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.probe is not None and not any(
            p is next(self.probe.parameters()) for g in optimizer.param_groups for p in g["params"]
        ):
            optimizer.add_param_group({"params": list(self.probe.parameters()), "weight_decay": 0.0})
            # the Trainer zeroes the model's gradients after each step, not the optimizer's: the probes' would add up
            # over steps
            optimizer.register_step_post_hook(lambda *_: self.probe.zero_grad(set_to_none=True))
        return optimizer

    def _save_checkpoint(self, model, trial):
        if self.is_world_process_zero():  # before the Trainer's trainer_state.json, which marks a checkpoint whole
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            from .visual_aux import PROBE_FILE

            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            if self.probe is not None:
                torch.save(self.probe.state_dict(), folder / PROBE_FILE)
            if self.frames is not None:
                save_frame_policy(folder, self.frames)
        super()._save_checkpoint(model, trial)

    def load_probe(self, checkpoint: str | None) -> None:
        """The probes of the checkpoint a run resumes from (their optimizer state comes with the model's)."""
        from .visual_aux import PROBE_FILE

        if self.probe is None or not checkpoint:
            return
        if not (Path(checkpoint) / PROBE_FILE).exists():
            raise RuntimeError(
                f"{checkpoint}: no {PROBE_FILE}; a run with --visual_aux cannot resume from it (was it trained "
                "without?)"
            )
        self.probe.load_state_dict(torch.load(Path(checkpoint) / PROBE_FILE, map_location=self.model.device))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        total = sum(_weighted_tokens(batch["labels"], batch["weights"]) for batch in batch_samples)
        total = torch.as_tensor(total, dtype=torch.float32, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("weights").float()
        labels = inputs.pop("labels")
        occupancy, scene = inputs.pop("aux_occupancy", None), inputs.pop("aux_scene", None)
        # SFTTrainer patches the model with TRL's fused LM head: per-token log-probabilities of the
        # labels (shifted, zero where ignored) without building the (batch, length, vocab) logits
        outputs = model(**inputs, labels=labels, fused_lm_head=True)
        per_example = -outputs.log_probs.float().sum(dim=1)
        denominator = num_items_in_batch if num_items_in_batch is not None else _weighted_tokens(labels, weights)
        loss = (weights.to(per_example.device) * per_example).sum() / torch.as_tensor(
            denominator, device=per_example.device
        ).clamp(min=1e-8)
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # DDP averages gradients over ranks; the denominator is global
        mode = "train" if model.training else "eval"
        self._metrics[mode]["weighted_tokens"].append(float(_weighted_tokens(labels, weights)))
        if self.probe is not None:
            if occupancy is None:
                raise ValueError(
                    "visual_aux > 0 needs batches with scene targets (VideoSFTCollator(visual_targets=True))"
                )
            sizes = (inputs["video_grid_thw"].prod(-1) // self.processing_class.video_processor.merge_size**2).tolist()
            aux, parts = self.probe.loss(self._capture.pop(), sizes, occupancy, scene)
            loss = loss + self.visual_aux * aux / self.args.gradient_accumulation_steps
            for name, value in parts.items():
                self._metrics[mode][f"visual_aux/{name}"].append(value)
        return (loss, outputs) if return_outputs else loss


def _weighted_tokens(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    tokens = (labels[:, 1:] != IGNORE).sum(dim=1).float()
    return (tokens * weights.float().to(tokens.device)).sum()


def run_sft(
    model, processor, dataset, collator, args: DistillSFTConfig, resume: bool = True, frames: FramesConfig | None = None
) -> Path:
    """Train, resuming from the newest checkpoint in ``args.output_dir`` if there is one; save to
    ``final/`` the model, the processor and the frame policy it was trained with (``frames``, also in
    every checkpoint; auxiliary probes stay in the checkpoints). A run that already finished is left as it is."""
    out = Path(args.output_dir)
    if resume and (done := finished(out)):
        return done
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = WeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        visual_aux=args.visual_aux,
        frames=frames,
    )
    checkpoint = last_checkpoint(out) if resume else None
    trainer.load_probe(checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer._capture is not None:
        trainer._capture.handle.remove()  # the model leaves without the hook that fed the probes
    return save_final(
        trainer, processor, out, extra=None if frames is None else (lambda folder: save_frame_policy(folder, frames))
    )
