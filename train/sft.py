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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer

from .collate import IGNORE


class WeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose batches carry ``weights`` (one per example).

    With ``visual_aux > 0`` (the demo teacher's bootstrap) batches also carry scene targets and the
    loss adds ``visual_aux`` times the auxiliary visual loss of probes on the vision tower's tokens
    (train/visual_aux.py); the probes train with the model and are saved beside each checkpoint.
    Under DDP each rank updates its own copy of the probes from its own batches (they are discarded
    after training); the model's gradients, the vision tower's included, are averaged as usual.
    """

    def __init__(self, *args, visual_aux: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's weighted token count
        self.visual_aux, self.probe, self._capture = visual_aux, None, None
        if visual_aux > 0:
            from .visual_aux import TokenCapture, VisualProbe

            self.probe = VisualProbe(self.model.config.get_text_config().hidden_size).to(self.model.device)
            self._capture = TokenCapture(self.model)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.probe is not None and not any(p is next(self.probe.parameters()) for g in optimizer.param_groups for p in g["params"]):
            optimizer.add_param_group({"params": list(self.probe.parameters()), "weight_decay": 0.0})
        return optimizer

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.probe is not None and self.is_world_process_zero():
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            from .visual_aux import PROBE_FILE

            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            torch.save(self.probe.state_dict(), folder / PROBE_FILE)

    def load_probe(self, checkpoint: str | None) -> None:
        from .visual_aux import PROBE_FILE

        if self.probe is not None and checkpoint and (Path(checkpoint) / PROBE_FILE).exists():
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
        loss = (weights.to(per_example.device) * per_example).sum() / torch.as_tensor(denominator, device=per_example.device).clamp(min=1e-8)
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # DDP averages gradients over ranks; the denominator is global
        mode = "train" if model.training else "eval"
        self._metrics[mode]["weighted_tokens"].append(float(_weighted_tokens(labels, weights)))
        if self.probe is not None:
            if occupancy is None:
                raise ValueError("visual_aux > 0 needs batches with scene targets (VideoSFTCollator(visual_targets=True))")
            sizes = (inputs["video_grid_thw"].prod(-1) // self.processing_class.video_processor.merge_size**2).tolist()
            aux, parts = self.probe.loss(self._capture.pop(), sizes, occupancy, scene)
            loss = loss + self.visual_aux * aux / self.args.gradient_accumulation_steps
            for name, value in parts.items():
                self._metrics[mode][f"visual_aux/{name}"].append(value)
        return (loss, outputs) if return_outputs else loss


def _weighted_tokens(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    tokens = (labels[:, 1:] != IGNORE).sum(dim=1).float()
    return (tokens * weights.float().to(tokens.device)).sum()


@dataclass
class SFTSettings:
    """Defaults follow the paper where it speaks (1 epoch, AdamW); the demo raises the lr for tiny models."""

    epochs: float = 1.0
    learning_rate: float = 2e-6
    batch_size: int = 8
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_steps: int = -1
    save_steps: int = 200
    logging_steps: int = 10
    seed: int = 0


def trainer_arguments(out: Path, epochs: float, max_steps: int, learning_rate: float, batch_size: int, gradient_accumulation: int,
                      logging_steps: int, save_steps: int, seed: int) -> dict:
    """The TrainingArguments every rmsd trainer shares (SFT and RL): the GPU in bf16 where there is
    one, TensorBoard, two checkpoints kept with their optimizer state, the dataset's columns kept."""
    use_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(out), num_train_epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation,
        logging_steps=logging_steps, save_steps=save_steps, save_total_limit=2, seed=seed, report_to=["tensorboard"],
        use_cpu=not use_gpu, bf16=use_gpu and torch.cuda.is_bf16_supported(), remove_unused_columns=False,
        dataloader_num_workers=0, save_only_model=False,
    )


def sft_config(out: Path, s: SFTSettings, **overrides) -> SFTConfig:
    return SFTConfig(
        **trainer_arguments(out, s.epochs, s.max_steps, s.learning_rate, s.batch_size, s.gradient_accumulation, s.logging_steps, s.save_steps, s.seed),
        lr_scheduler_type="cosine",
        warmup_steps=s.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=s.weight_decay,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        **overrides,
    )


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one was cut
    short (a kill while saving) and cannot be resumed from."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in ``out``."""
    checkpoints = sorted(Path(out).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in checkpoints if _complete(c)]
    return str(complete[-1]) if complete else None


def run_sft(model, processor, dataset, collator, out: Path, settings: SFTSettings, resume: bool = True, visual_aux: float = 0.0) -> Path:
    """Train, resuming from the newest checkpoint in ``out`` if there is one; save to ``out/final``
    (the model and processor only: auxiliary probes stay in the checkpoints)."""
    out = Path(out)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = WeightedSFTTrainer(
        model=model,
        args=sft_config(out, settings),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        visual_aux=visual_aux,
    )
    checkpoint = last_checkpoint(out) if resume else None
    trainer.load_probe(checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer._capture is not None:
        trainer._capture.handle.remove()  # the model leaves without the hook that fed the probes
    final = out / "final"
    trainer.save_model(str(final))  # the main process writes; every process waits for it
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(final))
    return final
