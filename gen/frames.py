"""Frame sampling with PyAV: which frames, decoded how, at what size.

Three decoding strategies give the same kind of result (frames, their real timestamps, the
effective fps):

- ``exact``: for each target time seek to the keyframe before it and decode forward to it; when
  the next target lies close ahead, keep decoding instead of seeking again.
- ``keyframe``: seek to each target and keep the keyframe found there (fast; timestamps are the
  keyframes' own, which may be up to a GOP away from the targets).
- ``all``: decode every frame and keep the nearest ones (the reference; slow on long videos).

A public contract beyond rmsd-gen: the frames a sample was made from are decoded by this one module
wherever they are needed again, rmsd-filter's report page (``sample_frames``, ``resolve_video``)
and rmsd-train's batches, RL rollouts and evaluation (``sample_frames``, ``resolve_video``,
``decode_prompts``, ``Frames``, ``processor_video_kwargs``); tests/test_boundaries.py lists it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

Mode = Literal["exact", "keyframe", "all"]


class VideoError(Exception):
    """A video cannot be used. ``kind`` is a short category (missing, empty, unreadable, truncated,
    refused); the message says which file and why. Error rows store ``"<kind>: <message>"``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass(frozen=True)
class Frames:
    array: np.ndarray  # uint8, T x H x W x 3 (RGB)
    timestamps: list[float]  # seconds of each frame actually used
    fps: float  # effective sampling rate: frames / covered duration
    duration: float  # video duration in seconds
    source_size: tuple[int, int]  # (width, height) of the original frames


def video_metadata(timestamps: list[float]) -> dict:
    """Frame metadata for processors that print timestamps into the prompt (Qwen3-VL), on a
    millisecond clock: the timestamps the model reads are the real ones of the sampled frames (an
    index-per-frame clock at the effective fps would shift them to start at 0)."""
    indices = [int(round(t * 1000)) for t in timestamps] or [0]
    total = indices[-1] + 1
    return {"fps": 1000.0, "frames_indices": indices, "total_num_frames": total, "duration": total / 1000.0}


def processor_video_kwargs(model_type: str, timestamps: list[list[float]], fps: list[float]) -> dict:
    """What a Hugging Face processor needs beside pre-sampled frames (one entry per video), per model
    family: Qwen2.5-VL the real sampling rate (its temporal positions), Qwen3-VL the frame
    timestamps (its prompt text); Qwen2-VL nothing. One place for hf generation, SFT batches and
    RL rollouts."""
    if model_type == "qwen2_5_vl":
        return {"fps": list(fps)}
    if model_type.startswith("qwen3"):
        return {"video_metadata": [video_metadata(t) for t in timestamps]}
    return {}


def target_times(
    duration: float, num_frames: int | None = None, fps: float | None = None, max_frames: int = 64
) -> list[float]:
    """Centres of equal segments of the video: N of them, or duration*fps of them capped at max_frames."""
    if duration <= 0:
        raise VideoError("empty", "video has zero duration")
    if num_frames is None:
        if fps is None:
            raise ValueError("give num_frames or fps")
        num_frames = max(1, min(max_frames, int(math.floor(duration * fps))))
    step = duration / num_frames
    return [step * (i + 0.5) for i in range(num_frames)]


def fit_pixels(width: int, height: int, max_pixels: int, multiple: int = 2) -> tuple[int, int]:
    """Largest size with the same aspect and at most ``max_pixels`` pixels (never upscales)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def _check_file(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise VideoError("missing", f"video not found: {path}")
    if not p.is_file():
        raise VideoError("missing", f"not a file: {path}")
    if p.stat().st_size == 0:
        raise VideoError("empty", f"zero-length file: {path}")


def _open(path: str):
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError("unreadable", f"cannot open video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("unreadable", f"no video stream in {path}")
    return container


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    return 0.0


def _frame_time(frame, stream) -> float:
    if frame.pts is None:
        return float(frame.time or 0.0)
    return float((frame.pts - (stream.start_time or 0)) * stream.time_base)


def _decode_all(container, stream, targets: list[float]) -> list:
    chosen: list = [None] * len(targets)
    best = [math.inf] * len(targets)
    for frame in container.decode(stream):
        t = _frame_time(frame, stream)
        for i, target in enumerate(targets):
            if abs(t - target) < best[i]:
                best[i], chosen[i] = abs(t - target), (t, frame)
        if t > targets[-1] and all(c is not None for c in chosen):
            break
    return chosen


def _seek(container, stream, seconds: float) -> None:
    offset = int(seconds / stream.time_base) + (stream.start_time or 0)
    container.seek(max(offset, 0), stream=stream, backward=True, any_frame=False)


def _decode_exact(container, stream, targets: list[float], frame_period: float, reseek_after: float) -> list:
    chosen: list = []
    frames = None
    current = None  # (time, frame) most recently decoded
    for target in targets:
        if current is None or target - current[0] > reseek_after or target < current[0]:
            _seek(container, stream, target)
            frames = container.decode(stream)
            current = None
        previous = current
        for frame in frames:  # type: ignore[union-attr]
            t = _frame_time(frame, stream)
            previous, current = current, (t, frame)
            if t >= target - frame_period / 2:
                break
        if current is None:
            raise VideoError("truncated", "no frame decoded")
        if previous is not None and abs(previous[0] - target) < abs(current[0] - target):
            chosen.append(previous)
        else:
            chosen.append(current)
    return chosen


def _decode_keyframes(container, stream, targets: list[float]) -> list:
    """Decode only the keyframe found at each target. The decoder is drained after that one
    packet: with B-frames it would otherwise hold the frame back until later keyframes arrive."""
    chosen = []
    codec = stream.codec_context
    for target in targets:
        _seek(container, stream, target)  # seeking also flushes the decoder
        frame = None
        for packet in container.demux(stream):
            if packet.size == 0:
                break
            if not packet.is_keyframe:
                continue
            decoded = codec.decode(packet) or codec.decode(None)
            frame = decoded[0] if decoded else None
            break
        if frame is None:
            raise VideoError("truncated", "no keyframe decoded")
        chosen.append((_frame_time(frame, stream), frame))
    return chosen


def sample_frames(
    path: str | os.PathLike,
    num_frames: int | None = 8,
    fps: float | None = None,
    max_frames: int = 64,
    max_pixels: int | None = None,
    mode: Mode = "exact",
    timestamps: list[float] | None = None,
) -> Frames:
    """Decode frames of ``path`` at uniform targets (or at given ``timestamps``, e.g. the ones a
    teacher saw, recorded in its samples); raise VideoError for an unusable video."""
    path = str(path)
    _check_file(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _duration(container, stream)
        targets = list(timestamps) if timestamps else target_times(duration, num_frames, fps, max_frames)
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        if mode == "all":
            chosen = _decode_all(container, stream, targets)
        elif mode == "exact":
            chosen = _decode_exact(container, stream, targets, 1.0 / rate, reseek_after=1.0)
        elif mode == "keyframe":
            chosen = _decode_keyframes(container, stream, targets)
        else:
            raise ValueError(f"unknown frame mode {mode!r}")
        if any(c is None for c in chosen):
            raise VideoError("truncated", f"fewer frames decoded than requested from {path}")
        width, height = stream.codec_context.width, stream.codec_context.height
        size = fit_pixels(width, height, max_pixels) if max_pixels else (width, height)
        arrays = [frame.to_ndarray(format="rgb24", width=size[0], height=size[1]) for _, frame in chosen]
    except av.error.FFmpegError as exc:
        raise VideoError("truncated", f"cannot decode {path}: {exc}") from None
    finally:
        container.close()
    timestamps = [round(t, 6) for t, _ in chosen]
    return Frames(
        array=np.stack(arrays),
        timestamps=timestamps,
        fps=len(timestamps) / duration,
        duration=duration,
        source_size=(width, height),
    )


def resolve_video(video: str, base: Path, media_roots: list[Path]) -> Path:
    """The video's absolute path; refuse one outside every media root (VideoError)."""
    if "://" in video and not video.startswith("file://"):
        raise VideoError("refused", f"remote video URIs are not supported yet: {video}")
    raw = Path(video.removeprefix("file://"))
    path = (raw if raw.is_absolute() else base / raw).resolve()
    for root in media_roots:
        if path.is_relative_to(root.resolve()):
            return path
    raise VideoError(
        "refused", f"{path} is outside the media roots {[str(r) for r in media_roots]} (add one with --media-root)"
    )


@dataclass
class DecodedPrompt:
    row: dict
    frames: Frames | None
    error: str | None  # "<kind>: <message>" when the video could not be used


def decode_prompts(
    rows: list[dict], frames_cfg: dict, base: str | Path, roots: list[str | Path]
) -> list[DecodedPrompt]:
    """Frames of every prompt (``frames_cfg``: sample_frames' keyword arguments); each distinct
    video is decoded once, however many questions ask about it."""
    cache: dict[Path, Frames | VideoError] = {}
    out = []
    for row in rows:
        try:
            path = resolve_video(row["video"], Path(base), [Path(r) for r in roots])
            if path not in cache:
                try:
                    cache[path] = sample_frames(path, **frames_cfg)
                except VideoError as exc:
                    cache[path] = exc
            result = cache[path]
            if isinstance(result, VideoError):
                raise result
            out.append(DecodedPrompt(row, result, None))
        except VideoError as exc:
            out.append(DecodedPrompt(row, None, str(exc)))
    return out
