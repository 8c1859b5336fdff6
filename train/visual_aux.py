"""Auxiliary visual supervision for bootstrapping a from-scratch video model (the demo's teacher).

A small model trained from scratch on (video, question, answer) text learns the answer *format* and
the text priors first; the gradient that reaches its vision tower then fades and it never learns to
look (ENVIRONMENT.md: loss flat at chance on the video). Real teachers and students are pretrained
VLMs that already see. For the embedded demo, the teacher's ground-truth SFT adds linear probes on
the vision tower's merged tokens (what the language model reads) that must predict what the scene
shows:

- per merged token (a cell of the frame over ``temporal_patch_size`` frames): which colours, which
  shape kinds and whether the word's text overlap it (binary cross-entropy);
- per video, from the mean of its tokens: how many shapes, which word, which way each colour moves
  (cross-entropy).

The probes live beside the model only while it trains and are discarded after (saved with each
checkpoint so a resumed run continues them). Ground truth comes from the synthetic benchmark's scene
facts (``meta.scene`` of its prompts, rasterised by ``rmsd.synth.scene_labels``).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models import vision_tower
from ..synth import COLOURS, SCENE_LABELS, scene_labels

PROBE_FILE = "visual_probe.pt"


class VisualProbe(nn.Module):
    """Linear heads on the merged visual tokens: per token, occupancy; per video, count, word, directions."""

    def __init__(self, hidden: int):
        super().__init__()
        self.occupancy = nn.Linear(hidden, SCENE_LABELS["occupancy"])
        self.count = nn.Linear(hidden, SCENE_LABELS["count"])
        self.word = nn.Linear(hidden, SCENE_LABELS["word"])
        self.direction = nn.Linear(hidden, len(COLOURS) * SCENE_LABELS["direction"])  # one head per colour

    def loss(
        self, tokens: torch.Tensor, sizes: list[int], occupancy: torch.Tensor, scene: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """``tokens``: (sum of sizes, hidden) merged tokens of the batch's videos in order; ``occupancy``:
        (same, labels) 0/1; ``scene``: (videos, 2 + colours) count, word, direction of each colour."""
        tokens = tokens.float()
        occ = F.binary_cross_entropy_with_logits(self.occupancy(tokens), occupancy.float())
        pooled = torch.stack([chunk.mean(dim=0) for chunk in torch.split(tokens, sizes)])
        count = F.cross_entropy(self.count(pooled), scene[:, 0])
        word = F.cross_entropy(self.word(pooled), scene[:, 1])
        direction = F.cross_entropy(
            self.direction(pooled).view(-1, SCENE_LABELS["direction"]), scene[:, 2:].reshape(-1)
        )
        parts = {"occupancy": occ, "count": count, "word": word, "direction": direction}
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}


def scene_facts(meta: str | None) -> dict:
    """The synthetic scene recorded in an example's ``meta`` (ValueError when there is none)."""
    facts = json.loads(meta) if meta else {}
    if "scene" not in facts:
        raise ValueError(
            "auxiliary visual loss needs the synthetic benchmark's scene facts (meta.scene) for every example "
            "(rmsd-gen synth writes them)"
        )
    return facts["scene"]


def batch_targets(
    metas: list[str | None],
    timestamps: list[list[float]],
    grid_thw: torch.Tensor,
    source_sizes: list[tuple[int, int]],
    merge: int = 2,
    temporal_patch: int = 2,
) -> dict[str, torch.Tensor]:
    """Targets for the merged tokens of each video in a batch, in the vision tower's token order
    (time, row, column). A cell is occupied when it is in either frame of its temporal patch."""
    occupancy, scene = [], []
    for meta, times, (t, h, w), size in zip(metas, timestamps, grid_thw.tolist(), source_sizes):
        labels = scene_labels(scene_facts(meta), times, (h // merge, w // merge), size)
        frames = labels["occupancy"]
        pad = t * temporal_patch - len(frames)  # the processor repeats the last frame to fill a temporal patch
        if pad > 0:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        merged = frames.reshape(t, temporal_patch, *frames.shape[1:]).any(axis=1)
        occupancy.append(torch.from_numpy(merged.reshape(-1, merged.shape[-1])))
        scene.append(torch.tensor([labels["count"], labels["word"], *labels["direction"].tolist()]))
    return {"aux_occupancy": torch.cat(occupancy).to(torch.uint8), "aux_scene": torch.stack(scene)}


class TokenCapture:
    """Holds the vision tower's merged tokens from the model's forward (a forward hook), gradients kept."""

    def __init__(self, model):
        self.tokens: torch.Tensor | None = None
        self.handle = vision_tower(model).register_forward_hook(self._grab)

    def _grab(self, module, args, output) -> None:
        pooled = getattr(output, "pooler_output", None)
        self.tokens = pooled if torch.is_tensor(pooled) else output[1] if isinstance(output, tuple) else output

    def pop(self) -> torch.Tensor:
        tokens, self.tokens = self.tokens, None
        if tokens is None:
            raise RuntimeError("the vision tower did not run in this forward (no video in the batch?)")
        return tokens


__all__ = [
    "PROBE_FILE",
    "TokenCapture",
    "VisualProbe",
    "batch_targets",
    "scene_facts",
]
