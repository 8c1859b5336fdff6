"""Batches for Qwen2-VL-family students: video frames, the chat prompt, the target response.

The loss sees only the response: prompt, vision and padding tokens are masked out of ``labels``
(-100). Each example's loss weight travels in ``weights``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from ..gen.frames import Frames, processor_video_kwargs, resolve_video, sample_frames
from ..schemas.config import FramesConfig, TemplateConfig
from ..schemas.prompting import build_messages

IGNORE = -100


class FrameCache:
    """Decoded frames of recently used (video, timestamps); an epoch over a small corpus decodes once."""

    def __init__(self, frames: FramesConfig, video_base: Path, media_roots: list[Path] | None = None, size: int = 4096):
        self.frames, self.base, self.size = frames, Path(video_base), size
        self.roots = [self.base, *(media_roots or [])]
        self._cache: OrderedDict = OrderedDict()

    def get(self, video: str, timestamps: list[float] | None) -> Frames:
        key = (video, tuple(timestamps or ()))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        cfg = self.frames
        path = resolve_video(video, self.base, self.roots)
        frames = sample_frames(
            path, cfg.num_frames, cfg.fps, cfg.max_frames, cfg.max_pixels, cfg.mode, timestamps=timestamps or None
        )
        self._cache[key] = frames
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return frames


def prompt_messages(example: dict, templates: dict[str, TemplateConfig] | None = None) -> list[dict]:
    """The chat the teacher saw: the pipeline's template of the example's task type."""
    template = (templates or {}).get(example["task_type"]) or TemplateConfig()
    return build_messages(example["question"], example["task_type"], example["options"], template.system, template.user)


def templates_by_task(pipeline) -> dict[str, TemplateConfig]:
    from ..schemas.tables import TASK_TYPES

    return {task: pipeline.templates[pipeline.route(task).template] for task in TASK_TYPES}


class VideoSFTCollator:
    def __init__(
        self,
        processor,
        frame_cache: FrameCache,
        templates: dict[str, TemplateConfig] | None = None,
        model_type: str = "qwen2_vl",
        visual_targets: bool = False,
    ):
        self.processor, self.frames, self.templates, self.model_type = processor, frame_cache, templates, model_type
        self.visual_targets = visual_targets  # add the scene targets of the auxiliary visual loss (train/visual_aux.py)
        self.tokenizer = processor.tokenizer
        self.end = self.tokenizer.eos_token or ""
        self.masked_ids = [
            i
            for i in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None))
            if i is not None
        ]

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [
            self.processor.apply_chat_template(
                prompt_messages(e, self.templates), add_generation_prompt=True, tokenize=False
            )
            for e in examples
        ]
        targets = [e["response"] + self.end for e in examples]
        videos = [self.frames.get(e["video"], e.get("frame_timestamps")) for e in examples]
        batch = self.processor(  # right padding per call: the processor may be shared with a left-padding generator
            text=[p + t for p, t in zip(prompts, targets)],
            videos=[v.array for v in videos],
            padding=True,
            padding_side="right",
            return_tensors="pt",
            do_sample_frames=False,
            **processor_video_kwargs(self.model_type, [v.timestamps for v in videos], [v.fps for v in videos]),
        )
        labels = batch["input_ids"].clone()
        lengths = batch["attention_mask"].sum(dim=1)
        for i, target in enumerate(targets):
            n_target = len(self.tokenizer(target, add_special_tokens=False)["input_ids"])
            labels[i, : int(lengths[i]) - n_target] = IGNORE  # the prompt, video tokens included
        labels[batch["attention_mask"] == 0] = IGNORE
        for token in self.masked_ids:
            labels[labels == token] = IGNORE
        batch["labels"] = labels
        batch["weights"] = torch.tensor([float(e.get("weight", 1.0)) for e in examples], dtype=torch.float32)
        if self.visual_targets:
            from .visual_aux import batch_targets

            batch.update(
                batch_targets(
                    [e.get("meta") for e in examples],
                    [v.timestamps for v in videos],
                    batch["video_grid_thw"],
                    [v.source_size for v in videos],
                    merge=self.processor.video_processor.merge_size,
                    temporal_patch=self.processor.video_processor.temporal_patch_size,
                )
            )
        return batch
