"""What each model family's processor gets beside pre-sampled frames (one helper for hf generation,
SFT batches and RL rollouts)."""

import re

import numpy as np

from rmsd.gen.frames import Frames, processor_video_kwargs, video_metadata

TIMESTAMPS = [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75]


def _frames() -> Frames:
    return Frames(np.zeros((8, 64, 64, 3), np.uint8), TIMESTAMPS, 2.0, 4.0, (64, 64))


def test_qwen3_vl_prompt_carries_the_real_frame_times():
    """Qwen3-VL writes "<t seconds>" per temporal patch into the prompt; without metadata
    transformers assumes 24 fps from 0 s, which would tell the student the wrong times."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from rmsd.models import build_tokenizer

    tokenizer = build_tokenizer()
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer, video_processor=Qwen3VLVideoProcessor()
    )
    frames = _frames()
    encoded = processor(
        text=["<|vision_start|><|video_pad|><|vision_end|>When?"],
        videos=[frames.array],
        do_sample_frames=False,
        return_tensors="pt",
        **processor_video_kwargs("qwen3_vl", [frames.timestamps], [frames.fps]),
    )
    times = re.findall(r"<([0-9.]+) seconds>", tokenizer.decode(encoded["input_ids"][0]))
    assert [float(t) for t in times] == [0.5, 1.5, 2.5, 3.5]  # the mean time of each pair of frames


def test_each_family_gets_what_it_needs():
    frames = _frames()
    assert processor_video_kwargs("qwen2_vl", [frames.timestamps], [frames.fps]) == {}
    assert processor_video_kwargs("qwen2_5_vl", [frames.timestamps], [frames.fps]) == {"fps": [2.0]}
    meta = processor_video_kwargs("qwen3_vl_moe", [frames.timestamps], [frames.fps])["video_metadata"][0]
    assert [i / meta["fps"] for i in meta["frames_indices"]] == TIMESTAMPS
    assert meta["total_num_frames"] > max(meta["frames_indices"])
    assert video_metadata([])["frames_indices"] == [0]
