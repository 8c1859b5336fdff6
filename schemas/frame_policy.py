"""Frame policy end to end: the frame settings (``FramesConfig``: frames or fps and cap, pixel budget,
sampling mode) a model was trained with travel in its checkpoint (``rmsd_frames.json``), the ones a
teacher's samples were generated with in their manifest (``frames``). Evaluation uses a checkpoint's
by default; gen, train and eval warn, naming both, when a run's policy differs from its data's or
its checkpoint's (the paper blames 16 training frames against 64 at evaluation for a lost gain).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import FramesConfig

FRAME_POLICY_FILE = "rmsd_frames.json"


def save_frame_policy(folder: str | Path, frames: FramesConfig) -> Path:
    """Record ``frames`` in a checkpoint folder."""
    path = Path(folder) / FRAME_POLICY_FILE
    path.write_text(json.dumps(frames.model_dump(), indent=1) + "\n")
    return path


def load_frame_policy(folder: str | Path) -> FramesConfig | None:
    """The frame policy a checkpoint was trained with; None for a model rmsd did not train (a built or
    downloaded one)."""
    path = Path(folder) / FRAME_POLICY_FILE
    if not path.exists():
        return None
    try:
        return FramesConfig.model_validate(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: not a frame policy: {exc}") from None


def describe(frames: FramesConfig) -> str:
    """``frames`` in one phrase: '8 frames, <= 12544 px, exact' or '2 fps (<= 64 frames), ...'."""
    rate = (
        f"{frames.num_frames} frames"
        if frames.num_frames is not None
        else f"{frames.fps:g} fps (<= {frames.max_frames} frames)"
    )
    return f"{rate}, <= {frames.max_pixels} px, {frames.mode}"


def same_policy(a: FramesConfig, b: FramesConfig) -> bool:
    """Whether two policies take the same frames (``max_frames`` only matters in fps mode)."""
    if a.num_frames is not None and b.num_frames is not None:
        keys = ("num_frames", "max_pixels", "mode")
        return all(getattr(a, k) == getattr(b, k) for k in keys)
    return a == b


def policy_warning(run: FramesConfig, other: FramesConfig | None, what: str, whose: str) -> str | None:
    """A warning naming both policies when this ``run``'s differs from ``other`` (``what``: 'this
    evaluation', ``whose``: "the checkpoint's (path)"); None when they agree or ``other`` is unknown."""
    if other is None or same_policy(run, other):
        return None
    return f"{what} takes frames as {describe(run)}; {whose} were {describe(other)}"


__all__ = ["FRAME_POLICY_FILE", "describe", "load_frame_policy", "policy_warning", "same_policy", "save_frame_policy"]
