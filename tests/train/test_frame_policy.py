"""Frame policy end to end: a checkpoint's frame settings are the evaluation's default, an explicit
option overrides them, and gen, train and eval warn, naming both, when a run's differ."""

import json

from typer.testing import CliRunner

from rmsd.gen.cli import teacher_frame_warnings
from rmsd.schemas.config import FramesConfig, load_pipeline
from rmsd.schemas.frame_policy import describe, load_frame_policy, policy_warning, save_frame_policy
from rmsd.train.data import data_frame_policy
from rmsd.train.evaluate import evaluation_frames
from tests.conftest import write_pipelines

TRAINED = FramesConfig(num_frames=16, max_pixels=56 * 56)


def test_a_checkpoints_frames_are_the_evaluations_default_and_an_option_overrides_them(tmp_path):
    save_frame_policy(tmp_path, TRAINED)
    assert load_frame_policy(tmp_path) == TRAINED
    frames, source, warning = evaluation_frames(tmp_path, FramesConfig(), "demo", {})
    assert (frames, source, warning) == (TRAINED, "the checkpoint's training frames", None)

    frames, source, warning = evaluation_frames(tmp_path, FramesConfig(), "demo", {"num_frames": 64, "fps": None})
    assert frames == FramesConfig(num_frames=64, max_pixels=56 * 56) and source.endswith("with --num-frames 64")
    assert (
        warning == "this evaluation takes frames as 64 frames, <= 3136 px, exact; "
        f"the checkpoint's training frames ({tmp_path}) were 16 frames, <= 3136 px, exact"
    )

    frames, source, _ = evaluation_frames(tmp_path, FramesConfig(), "demo", {"fps": 2.0, "mode": "keyframe"})
    assert (frames.num_frames, frames.fps, frames.mode) == (None, 2.0, "keyframe") and source.endswith(
        "with --fps 2.0, --frame-mode keyframe"
    )


def test_a_model_rmsd_did_not_train_is_evaluated_with_the_pipelines_frames(tmp_path):
    frames, source, warning = evaluation_frames(tmp_path, FramesConfig(num_frames=4), "mine", {})
    assert (frames, source, warning) == (FramesConfig(num_frames=4), "pipeline mine's", None)


def test_max_frames_only_matters_in_fps_mode():
    assert policy_warning(FramesConfig(max_frames=32), FramesConfig(max_frames=64), "a", "b") is None
    assert (
        policy_warning(
            FramesConfig(num_frames=None, fps=1.0, max_frames=32), FramesConfig(num_frames=None, fps=1.0), "a", "b"
        )
        is not None
    )
    assert describe(FramesConfig(num_frames=None, fps=0.5)) == "0.5 fps (<= 64 frames), <= 12544 px, exact"


def test_gen_warns_when_a_teacher_was_trained_with_other_frames(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    save_frame_policy(teacher, TRAINED)
    path = write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        p:
          teachers:
            - id: t
              model: {{path: {teacher}}}
    """,
    )
    (warning,) = teacher_frame_warnings(load_pipeline("p", path, check_models=False))
    assert (
        warning == "this run takes frames as 8 frames, <= 12544 px, exact; "
        f"teacher t's training frames ({teacher}) were 16 frames, <= 3136 px, exact"
    )


def test_train_knows_the_frames_of_its_data(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "_manifest.json").write_text(json.dumps({"frames": TRAINED.model_dump()}))
    assert data_frame_policy("single", samples) == TRAINED
    assert data_frame_policy("gt", tmp_path / "prompts.parquet") is None
    (samples / "_manifest.json").write_text("{}")  # an older manifest records none
    assert data_frame_policy("single", samples) is None


def test_eval_refuses_frame_options_that_do_not_make_a_policy(tiny_model, bench_dir, tmp_path):
    from rmsd.train.cli import app

    done = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_model),
            "--prompts",
            str(bench_dir / "prompts.parquet"),
            "--out",
            str(tmp_path / "e"),
            "--frame-mode",
            "sometimes",
        ],
    )
    assert done.exit_code == 2 and "mode" in done.output
    assert not (tmp_path / "e").exists()
