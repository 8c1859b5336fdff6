"""The embedded benchmark: synthetic video QA with ground truth exact by construction.

Each video shows 1-4 coloured shapes (square, circle, triangle) moving left, right, up or down,
some visible for only one or two seconds, and one word drawn on the frames for a while. Each video
gets one question of every task type:

=================== ==================================================================
multiple_choice     colour of a shape / direction it moves / which shape has a colour
numerical           how many shapes appear
temporal_grounding  when a shape is visible, ``[start, end]`` in seconds (1 or 2 s of the 4)
spatial_grounding   its box ``[x1, y1, x2, y2]`` in the first frame it is visible
ocr                 which word is shown
open_ended          a reference description of the whole video
=================== ==================================================================

Options keep a fixed order per question kind, so a small model can map answers to letters.

The design (v2) is sized so that a small model can see what the questions ask about, and so that no
constant answer scores well (docs/benchmark.md): frames are 112 x 112, a multiple of the demo
models' 28-pixel merged tokens, so the processor never resizes them; shapes are 22-30 px, about one
merged token; a shape asked about in time is visible for 1 or 2 whole seconds starting on a whole
second, so its appearance and disappearance fall on sampled frames (8 of 32, one every 0.5 s) and
a constant ``[start, end]`` overlaps few answers; the word is drawn 20 px high.
Everything derives from ``(seed, video index)``: the same seed gives the same prompts and frames
whatever the number of worker processes. ``meta`` (JSON) holds the scene facts and a short
``reasoning`` sentence, which ground-truth SFT puts in the response's ``<think>``.

A public, stage-neutral module (it imports no stage): ``rmsd-gen synth`` writes the benchmark
(``synthesise``), ``rmsd.models`` trains its tokenizer on the benchmark's questions
(``make_scene``, ``make_questions``, ``video_rng``, ``WORDS``), and rmsd-train's auxiliary visual
loss rasterises its scene facts (``scene_labels``, ``SCENE_LABELS``, ``COLOURS``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .schemas.grammar import format_answer, option_letters
from .schemas.tables import to_table, write_table

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
WORDS = ("cat", "sun", "tree", "boat", "star", "fish", "moon", "bird", "lamp", "road", "rain", "door")

WIDTH = HEIGHT = 112
FPS = 8
NUM_FRAMES = 32  # 4 seconds
SECONDS = NUM_FRAMES // FPS
SIZES = (22, 30)  # shape sizes in pixels, inclusive
WORD_BAND = 26  # the word is drawn in the bottom band; shapes stay above it
FONT_SIZE = 20
DATASET = "rmsd-synth-v2"


@dataclass
class Shape:
    kind: str
    colour: str
    direction: str
    size: int
    x0: float  # top-left corner at its first visible frame
    y0: float
    speed: float  # pixels per frame
    first: int  # first visible frame
    last: int  # last visible frame (inclusive)

    @property
    def interval(self) -> tuple[float, float]:
        """Seconds during which the shape is shown: from its first frame to the end of its last."""
        return frame_time(self.first), frame_time(self.last + 1)

    def box(self, frame: int) -> tuple[int, int, int, int]:
        dx, dy = DIRECTIONS[self.direction]
        step = frame - self.first
        x = round(self.x0 + dx * self.speed * step)
        y = round(self.y0 + dy * self.speed * step)
        return x, y, x + self.size, y + self.size


@dataclass
class Scene:
    video_id: str
    shapes: list[Shape]
    word: str
    word_first: int
    word_last: int
    split: str


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of video ``index`` under ``seed``: its scene draws from ``(seed, index)``,
    its questions from ``(seed + 1, index)``."""
    digest = hashlib.sha256(f"rmsd-synth/{seed}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def frame_time(frame: int) -> float:
    """Seconds at which a frame is shown (its presentation time)."""
    return frame / FPS


def _visible_seconds(rng: np.random.Generator) -> tuple[int, int]:
    """A short visible interval: 1 or 2 whole seconds, starting on a whole second."""
    length = int(rng.integers(1, 3))
    start = int(rng.integers(0, SECONDS - length + 1))
    return start, start + length


PLACEMENT_TRIES = 20


def _overlap(a: Shape, b: Shape) -> bool:
    """Whether either shape touches the other at the first frame of one of them."""

    def touch(frame: int) -> bool:
        if not (a.first <= frame <= a.last and b.first <= frame <= b.last):
            return False
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a.box(frame), b.box(frame)
        return ax1 < bx2 and bx1 < ax2 and ay1 < by2 and by1 < ay2

    return touch(a.first) or touch(b.first)


def make_scene(seed: int, index: int) -> Scene:
    rng = video_rng(seed, index)
    count = int(rng.integers(1, 5))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    shapes = []
    for i, colour in enumerate(colours):
        kind = str(rng.choice(SHAPES))
        direction = str(rng.choice(list(DIRECTIONS)))
        size = int(rng.integers(SIZES[0], SIZES[1] + 1))
        # the first shape is always short-lived (the temporal question has one to ask about)
        if i > 0 and rng.random() < 0.5:
            first, last = 0, NUM_FRAMES - 1
        else:
            start, end = _visible_seconds(rng)
            first, last = start * FPS, end * FPS - 1
        height = HEIGHT - WORD_BAND
        travel = float(rng.uniform(32, min(WIDTH, height) - size - 8))
        speed = travel / max(last - first, 1)
        dx, dy = DIRECTIONS[direction]
        # start so the whole path stays inside the frame, above the word's band
        lo_x, hi_x = (4 + travel if dx < 0 else 4), (WIDTH - size - 4 - (travel if dx > 0 else 0))
        lo_y, hi_y = (4 + travel if dy < 0 else 4), (height - size - 4 - (travel if dy > 0 else 0))
        # a shape is whole where it first appears (the spatial question's box): redraw its start
        # while it overlaps one already placed at that frame or the other's first frame (a few tries)
        for _ in range(PLACEMENT_TRIES):
            x0 = float(rng.uniform(lo_x, max(lo_x, hi_x)))
            y0 = float(rng.uniform(lo_y, max(lo_y, hi_y)))
            shape = Shape(kind, str(colour), direction, size, round(x0, 1), round(y0, 1), round(speed, 3), first, last)
            if not any(_overlap(shape, other) for other in shapes):
                break
        shapes.append(shape)
    word = str(rng.choice(WORDS))
    word_first = int(rng.integers(0, NUM_FRAMES // 2))
    word_last = int(rng.integers(word_first + 8, NUM_FRAMES))
    bucket = int(rng.integers(0, 10))
    split = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
    return Scene(f"v{seed}-{index:06d}", shapes, word, word_first, word_last, split)


def render_frame(scene: Scene, frame: int, font: ImageFont.ImageFont) -> np.ndarray:
    image = Image.new("RGB", (WIDTH, HEIGHT), (16, 16, 16))
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        if not shape.first <= frame <= shape.last:
            continue
        x1, y1, x2, y2 = shape.box(frame)
        fill = COLOURS[shape.colour]
        if shape.kind == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape.kind == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            draw.polygon(((x1 + x2 - 1) / 2, y1, x2 - 1, y2 - 1, x1, y2 - 1), fill=fill)
    if scene.word_first <= frame <= scene.word_last:
        draw.text(WORD_AT, scene.word.upper(), fill=(255, 255, 255), font=font)
    return np.asarray(image)


def encode_mp4(path: Path, frames, fps: int, keyframe_interval: int, crf: int = 18) -> None:
    """Encode RGB uint8 frames (an iterable of H x W x 3 arrays) as H.264 mp4; the file appears whole."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    write_mp4(str(tmp), frames, fps, keyframe_interval, crf)
    os.replace(tmp, path)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 to the ``(3H/2) x W`` planar yuv420p array PyAV takes: BT.601 limited range in
    integer arithmetic, chroma averaged over 2x2 blocks. Done here rather than by the encoder's swscale,
    whose output was seen to differ between processes on one CI machine (same input, different bytes)."""
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    half = lambda c: (c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 2) >> 2  # noqa: E731
    planes = [y.reshape(-1), half(u).reshape(-1), half(v).reshape(-1)]
    return np.concatenate(planes).astype(np.uint8).reshape(h * 3 // 2, w)


def write_mp4(file, frames, fps: int | Fraction, keyframe_interval: int, crf: int = 18) -> None:
    """Encode RGB uint8 frames (H x W x 3 arrays, H and W even: yuv420p) as H.264 mp4 into ``file``, a
    path or a writable binary file object (``io.BytesIO``). ``fps`` may be a Fraction (a sampling rate)."""
    with av.open(file, mode="w", format="mp4") as container:
        stream = container.add_stream(
            "libx264",
            rate=fps,
            options={"crf": str(crf), "g": str(keyframe_interval), "keyint_min": str(keyframe_interval)},
        )
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1  # deterministic bytes
        for i, array in enumerate(frames):
            if i == 0:
                stream.height, stream.width = array.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


WORD_AT = (4, HEIGHT - WORD_BAND + 2)


@functools.cache
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def word_box(word: str) -> tuple[int, int, int, int]:
    """The pixels the upper-case ``word`` covers, ``(x1, y1, x2, y2)``."""
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(WORD_AT, word.upper(), font=_font())


def write_video(scene: Scene, path: Path) -> None:
    font = _font()
    encode_mp4(path, (render_frame(scene, i, font) for i in range(NUM_FRAMES)), FPS, keyframe_interval=FPS)


def _phrase(shape: Shape) -> str:
    return f"the {shape.colour} {shape.kind}"


def describe(scene: Scene) -> str:
    parts = []
    for shape in scene.shapes:
        clauses = []
        start, end = shape.interval
        if shape.first > 0:
            clauses.append(f"appears at {format_answer('numerical', start)} s")
        clauses.append(f"moves {shape.direction}")
        if shape.last < NUM_FRAMES - 1:
            clauses.append(f"disappears at {format_answer('numerical', end)} s")
        said = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        parts.append(f"A {shape.colour} {shape.kind} {said}.")
    parts.append(f"The word {scene.word.upper()} is shown.")
    return " ".join(parts)


def make_questions(scene: Scene, rng: np.random.Generator) -> list[dict]:
    """One question per task type about ``scene``."""
    shapes = scene.shapes
    colours, directions = list(COLOURS), list(DIRECTIONS)
    kinds_seen = [s.kind for s in shapes]
    unique_kind = [s for s in shapes if kinds_seen.count(s.kind) == 1]
    mc_kinds = ["colour", "direction", "shape"] if unique_kind else ["direction", "shape"]
    mc = mc_kinds[int(rng.integers(0, len(mc_kinds)))]
    target = shapes[int(rng.integers(0, len(shapes)))]
    if mc == "colour":
        target = unique_kind[int(rng.integers(0, len(unique_kind)))]
        question, options, correct = f"What colour is the {target.kind}?", colours, target.colour
    elif mc == "direction":
        question, options, correct = f"Which way does {_phrase(target)} move?", directions, target.direction
    else:
        question, options, correct = f"What shape is the {target.colour} object?", list(SHAPES), target.kind
    letter = option_letters(options)[options.index(correct)]
    mc_reason = {
        "colour": f"the {target.kind} is {target.colour}",
        "direction": f"{_phrase(target)} moves {target.direction}",
        "shape": f"the {target.colour} object is a {target.kind}",
    }[mc]

    timed = [s for s in shapes if s.first > 0 or s.last < NUM_FRAMES - 1] or shapes
    when = timed[int(rng.integers(0, len(timed)))]
    where = shapes[int(rng.integers(0, len(shapes)))]
    start, end = (format_answer("numerical", t) for t in when.interval)
    x1, y1, _, _ = where.box(where.first)
    listed = ", ".join(f"a {s.colour} {s.kind}" for s in shapes)
    # (task type, question, options, answer, extra meta, reasoning for ground-truth responses)
    questions = [
        ("multiple_choice", question, options, letter, {"asks": mc, "target": asdict(target)}, mc_reason),
        ("numerical", "How many shapes appear in the video?", None, str(len(shapes)), {}, f"I see {listed}"),
        (
            "temporal_grounding",
            f"When is {_phrase(when)} visible? Give the start and end time in seconds.",
            None,
            format_answer("temporal_grounding", when.interval),
            {"target": asdict(when)},
            f"{_phrase(when)} is visible from {start} s to {end} s",
        ),
        (
            "spatial_grounding",
            f"Where is {_phrase(where)} when it first appears? Give its box in pixels.",
            None,
            format_answer("spatial_grounding", where.box(where.first)),
            {"target": asdict(where), "frame_size": [WIDTH, HEIGHT]},
            f"{_phrase(where)} starts at x {x1}, y {y1}, {where.size} pixels wide",
        ),
        (
            "ocr",
            "Which word is written in the video?",
            None,
            scene.word.upper(),
            {},
            f"the word {scene.word.upper()} is written at the bottom",
        ),
        ("open_ended", "Describe what happens in the video.", None, describe(scene), {}, f"I see {listed}"),
    ]
    scene_meta = {
        "shapes": [asdict(s) for s in shapes],
        "word": scene.word,
        "word_frames": [scene.word_first, scene.word_last],
        "fps": FPS,
        "num_frames": NUM_FRAMES,
    }
    rows = []
    for task_type, text, opts, answer, extra, reasoning in questions:
        rows.append(
            {
                "prompt_id": f"{scene.video_id}-{task_type}",
                "video": f"videos/{scene.video_id}.mp4",
                "question": text,
                "options": opts,
                "answer": answer,
                "task_type": task_type,
                "dataset": DATASET,
                "split": scene.split,
                "meta": json.dumps({**extra, "reasoning": reasoning, "scene": scene_meta}, sort_keys=True),
            }
        )
    return rows


SCENE_LABELS = {
    "occupancy": len(COLOURS) + len(SHAPES) + 1,
    "count": 4,
    "word": len(WORDS),
    "direction": len(DIRECTIONS) + 1,
}


def scene_labels(
    scene_meta: dict, times: list[float], grid: tuple[int, int], frame_size: tuple[int, int] = (WIDTH, HEIGHT)
) -> dict:
    """What can be seen in a scene at ``times``, for auxiliary visual supervision of a from-scratch
    model (the demo teacher's bootstrap; see rmsd.train.visual_aux).

    ``occupancy``: (len(times), rows, cols, 4 + 3 + 1) booleans, per cell of a ``grid = (rows, cols)``
    raster of the frame: a shape of each colour, of each kind, the word's text, overlaps the cell.
    ``count`` (shapes - 1), ``word`` (index in WORDS), ``direction`` (per colour of COLOURS: 0 absent,
    else 1 + index in DIRECTIONS): the scene's facts, as class indices.
    """
    rows, cols = grid
    width, height = frame_size
    occupancy = np.zeros((len(times), rows, cols, SCENE_LABELS["occupancy"]), dtype=bool)
    shapes = [Shape(**s) for s in scene_meta["shapes"]]
    word_first, word_last = scene_meta["word_frames"]
    fps = scene_meta.get("fps", FPS)

    def cells(x1: float, y1: float, x2: float, y2: float) -> tuple[slice, slice]:
        c1, c2 = int(max(x1, 0) * cols // width), int((min(x2, width) - 1) * cols // width)
        r1, r2 = int(max(y1, 0) * rows // height), int((min(y2, height) - 1) * rows // height)
        return slice(max(r1, 0), min(r2, rows - 1) + 1), slice(max(c1, 0), min(c2, cols - 1) + 1)

    colours, kinds = list(COLOURS), list(SHAPES)
    for i, t in enumerate(times):
        frame = int(round(t * fps))
        for shape in shapes:
            if shape.first <= frame <= shape.last:
                r, c = cells(*shape.box(frame))
                occupancy[i, r, c, colours.index(shape.colour)] = True
                occupancy[i, r, c, len(colours) + kinds.index(shape.kind)] = True
        if word_first <= frame <= word_last:
            r, c = cells(*word_box(scene_meta["word"]))
            occupancy[i, r, c, -1] = True
    direction = np.zeros(len(colours), dtype=np.int64)
    for shape in shapes:
        direction[colours.index(shape.colour)] = 1 + list(DIRECTIONS).index(shape.direction)
    return {
        "occupancy": occupancy,
        "count": len(shapes) - 1,
        "word": WORDS.index(scene_meta["word"]),
        "direction": direction,
    }


def _build_one(args: tuple[int, int, str]) -> list[dict]:
    seed, index, out = args
    scene = make_scene(seed, index)
    path = Path(out) / "videos" / f"{scene.video_id}.mp4"
    if not path.exists():
        write_video(scene, path)
    return make_questions(scene, video_rng(seed + 1, index))


def synthesise(
    out: str | os.PathLike, num: int, seed: int = 0, workers: int = 1, progress: bool = True, split: str | None = None
) -> Path:
    """Write ``num`` videos and their questions to ``out``; return the prompts file. Videos fall in the
    train / validation / test splits 80/10/10, or all in ``split`` (a test set on a seed of its own)."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i, str(out)) for i in range(num)]
    rows: list[dict] = []
    from tqdm import tqdm

    bar = tqdm(total=num, unit="video", desc="synth", disable=not progress)
    # Always in spawned worker processes, one or more: the bytes of a video must not depend on the
    # calling process. In CI, a benchmark rendered in a pytest process that had run other tests gave
    # one video with different bytes from a spawned worker's (cause not found); a fresh process
    # renders the same bytes whoever calls. Spawn, not fork: a forked child inherits Polars' and
    # torch's thread pools in a broken state.
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(_build_one, jobs, chunksize=16):
            rows.extend(result)
            bar.update()
    bar.close()
    if split:
        rows = [dict(row, split=split) for row in rows]
    return write_table(to_table(rows, "prompts"), out / "prompts.parquet", "prompts")
