from pathlib import Path

import numpy as np
import pytest

from rmsd.gen.frames import VideoError, fit_pixels, resolve_video, sample_frames, target_times
from rmsd.synth import encode_mp4

FPS, GOP = 30, 10


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> Path:
    """2 s at 30 fps, 64x48; frame i is a flat grey of level 4*i, so a frame tells its own index."""
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    encode_mp4(path, (np.full((48, 64, 3), 4 * i, np.uint8) for i in range(60)), FPS, GOP)
    return path


def frame_indices(frames) -> list[int]:
    return [round(float(a.mean()) / 4) for a in frames.array]


def test_uniform_targets_are_segment_centres():
    assert target_times(4.0, num_frames=4) == [0.5, 1.5, 2.5, 3.5]


def test_fps_mode_caps_frames_and_lowers_effective_fps(ramp):
    frames = sample_frames(ramp, num_frames=None, fps=10, max_frames=8)
    assert len(frames.timestamps) == 8
    assert frames.fps == pytest.approx(4.0)  # 8 frames over 2 s, not the 10 asked for
    frames = sample_frames(ramp, num_frames=None, fps=2, max_frames=64)
    assert len(frames.timestamps) == 4 and frames.fps == pytest.approx(2.0)


def test_exact_mode_matches_decoding_every_frame(ramp):
    exact = sample_frames(ramp, num_frames=6, mode="exact")
    every = sample_frames(ramp, num_frames=6, mode="all")
    assert exact.timestamps == every.timestamps
    assert frame_indices(exact) == frame_indices(every) == [round(t * FPS) for t in exact.timestamps]
    assert np.abs(exact.array.astype(int) - every.array.astype(int)).max() == 0
    assert all(abs(t - target) <= 0.5 / FPS + 1e-6 for t, target in zip(exact.timestamps, target_times(2.0, 6)))


def test_keyframe_mode_returns_keyframes_with_their_real_timestamps(ramp):
    frames = sample_frames(ramp, num_frames=6, mode="keyframe")
    indices = frame_indices(frames)
    assert all(i % GOP == 0 for i in indices)
    assert [round(t * FPS) for t in frames.timestamps] == indices


def test_frames_are_resized_to_the_pixel_budget(ramp):
    frames = sample_frames(ramp, num_frames=2, max_pixels=32 * 24)
    assert frames.array.shape == (2, 24, 32, 3) and frames.array.dtype == np.uint8
    assert frames.source_size == (64, 48)
    assert fit_pixels(640, 360, 112 * 112)[0] * fit_pixels(640, 360, 112 * 112)[1] <= 112 * 112


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make,kind",
    [
        (lambda d: d / "absent.mp4", "missing"),
        (lambda d: d, "missing"),  # a folder
        (lambda d: _write(d / "empty.mp4", b""), "empty"),
        (lambda d: _write(d / "text.mp4", b"hello, not a video"), "unreadable"),
    ],
)
def test_unusable_files_raise_video_error(tmp_path, make, kind):
    with pytest.raises(VideoError) as err:
        sample_frames(make(tmp_path), num_frames=4)
    assert err.value.kind == kind and str(err.value).startswith(kind + ":")


def test_truncated_video_raises_video_error(tmp_path, ramp):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(ramp.read_bytes()[:600])
    with pytest.raises(VideoError):
        sample_frames(cut, num_frames=4)


def test_media_roots(tmp_path):
    inside = tmp_path / "data" / "videos" / "a.mp4"
    assert resolve_video("videos/a.mp4", tmp_path / "data", [tmp_path / "data"]) == inside
    with pytest.raises(VideoError, match="outside the media roots") as err:
        resolve_video("../secret.mp4", tmp_path / "data", [tmp_path / "data"])
    assert err.value.kind == "refused"
    assert resolve_video(str(tmp_path / "other" / "b.mp4"), tmp_path / "data", [tmp_path / "data", tmp_path / "other"])


def test_frames_at_recorded_timestamps_reproduce_the_teachers_frames(ramp):
    seen = sample_frames(ramp, num_frames=5, mode="exact")
    again = sample_frames(ramp, timestamps=seen.timestamps, mode="exact")
    assert again.timestamps == seen.timestamps
    assert (again.array == seen.array).all()
