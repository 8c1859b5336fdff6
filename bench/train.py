"""Weighted SFT step time against plain TRL SFT on the same batch (issue 5).

Both trainers get the same model weights, the same pre-collated batch (video, prompt, response)
and run `training_step` (forward and backward) N times, interleaved so machine noise hits both
alike. Plain: TRL's SFTTrainer loss (its fused LM head, token mean). Weighted: rmsd's
WeightedSFTTrainer (per-example weights, full logits). Goal: weighted within 10% of plain.

    .venv/bin/python bench/train.py [--preset demo] [--batch 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from trl import SFTTrainer

from rmsd.gen.synth import synthesise
from rmsd.models import build_model
from rmsd.schemas.config import FramesConfig
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.data import sft_dataset, video_base
from rmsd.train.sft import SFTSettings, WeightedSFTTrainer, sft_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = synthesise(tmp / "bench", 8, seed=0, progress=False)
        dataset = sft_dataset("gt", prompts, split=None)
        model, processor = build_model(args.preset)
        collator = VideoSFTCollator(processor, FrameCache(FramesConfig(num_frames=8), video_base("gt", prompts)))
        examples = [dict(dataset[i], weight=0.5 + (i % 3) * 0.25) for i in range(args.batch)]
        batch = collator(examples)
        plain_batch = {k: v for k, v in batch.items() if k != "weights"}
        settings = SFTSettings(batch_size=args.batch, learning_rate=1e-4)
        weighted = WeightedSFTTrainer(model=copy.deepcopy(model), args=sft_config(tmp / "w", settings), train_dataset=dataset, data_collator=collator, processing_class=processor)
        plain = SFTTrainer(model=copy.deepcopy(model), args=sft_config(tmp / "p", settings), train_dataset=dataset, data_collator=collator, processing_class=processor)
        for trainer in (weighted, plain):
            trainer.create_optimizer_and_scheduler(num_training_steps=args.steps)
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = 1
        times: dict[str, list[float]] = {"plain": [], "weighted": []}
        for step in range(args.steps + 2):
            for name, trainer, b in (("plain", plain, plain_batch), ("weighted", weighted, batch)):
                start = time.perf_counter()
                trainer.training_step(trainer.model, dict(b), None)
                if step >= 2:  # warm-up
                    times[name].append(time.perf_counter() - start)
        tokens = int(batch["attention_mask"].sum())
        print(f"model preset {args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), batch {args.batch} "
              f"({tokens} tokens, {batch['pixel_values_videos'].shape[0]} video patches), {args.steps} steps each, interleaved")
        p, w = statistics.median(times["plain"]), statistics.median(times["weighted"])
        print(f"plain TRL SFT step:   {p * 1000:.1f} ms (median)")
        print(f"weighted SFT step:    {w * 1000:.1f} ms (median)")
        print(f"weighted / plain = {w / p:.3f} (goal <= 1.10): {'PASS' if w / p <= 1.10 else 'FAIL'}")


if __name__ == "__main__":
    main()
