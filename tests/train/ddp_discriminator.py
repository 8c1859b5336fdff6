"""Run by test_discriminator under torchrun: two ranks, different pairs, one discriminator."""

import sys

import torch
import torch.distributed as dist

from rmsd.models import load_model
from rmsd.schemas.config import FramesConfig
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.data import example_frame, video_base
from rmsd.train.discriminator import Discriminator, DiscriminatorTrainer


def main(model: str, prompts: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)  # a different random head on each rank before the broadcast
    examples = example_frame("gt", prompts, split=None).slice(4 * rank, 4).to_dicts()  # each rank its own pairs
    _, processor = load_model(model)
    collator = VideoSFTCollator(processor, FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts)))
    trainer = DiscriminatorTrainer(Discriminator.from_student(model), collator, lr=1e-2, max_grad_norm=1.0)
    for _ in range(2):
        trainer.step(examples, [dict(e, response="no idea") for e in examples], [1.0] * len(examples))
    flat = torch.cat([p.detach().flatten() for p in trainer.disc.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), "the ranks' discriminators diverged"
    if rank == 0:
        print("discriminators identical across ranks")
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
