"""The auxiliary visual loss of the demo teacher's bootstrap, and a student that starts with its vision tower."""

import json
import subprocess

import pytest
import torch

from rmsd.models import init_model, load_model, vision_tower
from rmsd.schemas.config import FramesConfig
from rmsd.synth import COLOURS, DIRECTIONS, SHAPES, WORDS, scene_labels
from rmsd.train.collate import FrameCache, VideoSFTCollator
from rmsd.train.data import sft_dataset, video_base
from rmsd.train.visual_aux import VisualProbe, batch_targets
from tests.conftest import BIN

SCENE = {
    "shapes": [
        # a 16 px red square moving right from (10, 10) at 4 px a frame, visible frames 0-31
        {
            "kind": "square",
            "colour": "red",
            "direction": "right",
            "size": 16,
            "x0": 10.0,
            "y0": 10.0,
            "speed": 4.0,
            "first": 0,
            "last": 31,
        },
        # a blue triangle low on the left, visible frames 16-31 only
        {
            "kind": "triangle",
            "colour": "blue",
            "direction": "up",
            "size": 12,
            "x0": 5.0,
            "y0": 70.0,
            "speed": 0.5,
            "first": 16,
            "last": 31,
        },
    ],
    "word": "moon",
    "word_frames": [0, 7],
    "fps": 8,
    "num_frames": 32,
}


def test_scene_labels_put_each_shape_in_its_cells_at_each_time():
    labels = scene_labels(SCENE, [0.0, 1.0, 2.0, 3.0], grid=(3, 3), frame_size=(96, 96))
    occ = labels["occupancy"]
    red, blue, square, triangle, word = (
        COLOURS_INDEX["red"],
        COLOURS_INDEX["blue"],
        4 + SHAPES.index("square"),
        4 + SHAPES.index("triangle"),
        -1,
    )
    assert occ.shape == (4, 3, 3, len(COLOURS) + len(SHAPES) + 1)
    # frame 0: the square covers x 10-25, y 10-25: the top-left cell only; no triangle yet; the word is shown
    assert occ[0, :, :, red].sum() == 1 and occ[0, 0, 0, red] and occ[0, 0, 0, square]
    assert not occ[0, :, :, blue].any() and occ[0, 2, 0, word]
    # frame 8 (1 s): x 42-57, the middle column; the word is gone
    assert occ[1, 0, 1, red] and not occ[1, 0, 0, red] and not occ[1, :, :, word].any()
    # frame 16 (2 s): x 74-89, the right column; the triangle has appeared, bottom left
    assert occ[2, 0, 2, red] and occ[2, 2, 0, blue] and occ[2, 2, 0, triangle] and occ[2, :, :, blue].sum() == 1
    # frame 24 (3 s): the square has left the frame (x from 106): no cell shows it
    assert not occ[3, :, :, red].any() and occ[3, 2, 0, blue]
    assert labels["count"] == 1 and labels["word"] == WORDS.index("moon")
    direction = labels["direction"]
    assert direction[COLOURS_INDEX["red"]] == 1 + list(DIRECTIONS).index("right")
    assert direction[COLOURS_INDEX["green"]] == 0  # absent


COLOURS_INDEX = {c: i for i, c in enumerate(COLOURS)}


def test_batch_targets_follow_the_vision_tokens_order_and_pad_like_the_processor():
    meta = json.dumps({"scene": SCENE})
    # 3 frames: the processor pads to 4 (two temporal patches of 2) by repeating the last frame
    grid = torch.tensor([[2, 6, 6]])
    targets = batch_targets([meta], [[0.0, 1.0, 2.0]], grid, [(96, 96)])
    occ = targets["aux_occupancy"].view(2, 3, 3, -1).bool()
    assert occ.shape[0] * occ.shape[1] * occ.shape[2] == int(grid.prod() // 4)
    red = COLOURS_INDEX["red"]
    # temporal patch 0 holds frames 0 and 8: the square is in the top-left and top-middle cells
    assert occ[0, 0, 0, red] and occ[0, 0, 1, red] and not occ[0, 0, 2, red]
    # temporal patch 1 holds frame 16 twice
    assert occ[1, 0, 2, red] and not occ[1, 0, 0, red]
    assert targets["aux_scene"].tolist() == [
        [1, WORDS.index("moon"), *scene_labels(SCENE, [0.0], (3, 3))["direction"].tolist()]
    ]
    with pytest.raises(ValueError, match="scene facts"):
        batch_targets([json.dumps({"reasoning": "x"})], [[0.0]], torch.tensor([[1, 2, 2]]), [(96, 96)])


def test_the_auxiliary_loss_trains_the_vision_tower(tiny_model, bench_dir):
    """Its gradient reaches the vision tower, and a few steps on one batch lower it."""
    model, processor = load_model(tiny_model)
    prompts = bench_dir / "prompts.parquet"
    dataset = sft_dataset("gt", prompts, split=None)
    assert "meta" in dataset.column_names
    collator = VideoSFTCollator(
        processor, FrameCache(FramesConfig(num_frames=4), video_base("gt", prompts)), visual_targets=True
    )
    batch = collator([dataset[i] for i in range(4)])
    probe = VisualProbe(model.config.get_text_config().hidden_size)
    visual = vision_tower(model)
    optimizer = torch.optim.Adam([*probe.parameters(), *visual.parameters()], lr=1e-2)
    sizes = (batch["video_grid_thw"].prod(-1) // 4).tolist()
    losses = []
    for _ in range(8):
        tokens = visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"]).pooler_output
        loss, parts = probe.loss(tokens, sizes, batch["aux_occupancy"], batch["aux_scene"])
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in visual.merger.parameters())
            assert set(parts) == {"occupancy", "count", "word", "direction"}
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_teacher_bootstrap_with_visual_aux_and_a_student_with_its_vision_tower(bench_dir, tmp_path):
    out = tmp_path / "teacher"
    done = subprocess.run(
        [
            str(BIN / "rmsd-train"),
            "sft",
            "--mode",
            "gt",
            "--data",
            str(bench_dir / "prompts.parquet"),
            "--model",
            str(tmp_path / "init"),
            "--init",
            "tiny",
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--max-steps",
            "10",
            "--save-steps",
            "5",
            "--lr",
            "1e-3",
            "--visual-aux",
            "1.0",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoint-5" / "visual_probe.pt").exists()  # a resumed run continues its probes
    history = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())["log_history"]
    assert any("visual_aux/occupancy" in entry for entry in history)
    assert not any(
        "probe" in name for name in _safetensor_names(out / "final" / "model.safetensors")
    )  # probes are not part of the model

    student = init_model(tmp_path / "student", "tiny", seed=1, vision_from=out / "final")
    teacher_model, _ = load_model(out / "final")
    student_model, _ = load_model(student)
    for (name, a), (_, b) in zip(
        vision_tower(teacher_model).state_dict().items(), vision_tower(student_model).state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(
        teacher_model.lm_head.weight, student_model.lm_head.weight
    )  # only the vision tower is shared

    done = subprocess.run(
        [
            str(BIN / "rmsd-train"),
            "sft",
            "--mode",
            "single",
            "--data",
            str(tmp_path),
            "--model",
            str(student),
            "--out",
            str(tmp_path / "x"),
            "--visual-aux",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--visual-aux needs --mode gt" in done.stderr


def _safetensor_names(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_vision_tower_of_another_preset_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="vision towers differ"):
        init_model(tmp_path / "demo", "demo", vision_from=tiny_model)
    assert not (tmp_path / "demo").exists()
