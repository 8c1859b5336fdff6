"""Frame sampling speed: 16 frames from a 60 s 640x360 30 fps H.264 video, keyframe every 2 s.

Compares rmsd's three decoding modes in one run on one file (the figures are ratios, so they
hold across machines): `all` decodes every frame (the baseline), `exact` seeks to the keyframe
before each target and decodes forward, `keyframe` keeps the keyframe at each target.
Goals (issue 2): exact >= 2x faster than all, keyframe >= 10x.

    .venv/bin/python bench/frames.py [--repeats 5] [--frames 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rmsd.gen.frames import sample_frames
from rmsd.synth import encode_mp4

SECONDS, FPS, WIDTH, HEIGHT, GOP_SECONDS = 60, 30, 640, 360, 2


def make_video(path: Path) -> None:
    """Moving gradient plus noise, so the encoder produces realistic P-frames."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, HEIGHT, dtype=np.float32)[:, None, None]
    base = (x * 0.6 + y * 0.4).repeat(3, axis=2)
    noise = rng.integers(0, 16, size=(7, HEIGHT, WIDTH, 3), dtype=np.uint8)  # sensor noise, new each frame

    def frames():
        for i in range(SECONDS * FPS):
            shifted = np.roll(base, i * 3, axis=1) + np.array([i % 255, 0, 255 - i % 255], np.float32) * 0.2
            yield shifted.clip(0, 235).astype(np.uint8) + noise[i % 7]

    encode_mp4(path, frames(), FPS, keyframe_interval=FPS * GOP_SECONDS, crf=28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        started = time.perf_counter()
        make_video(video)
        print(
            f"video: {SECONDS} s {WIDTH}x{HEIGHT} {FPS} fps, keyframe every {GOP_SECONDS} s, "
            f"{video.stat().st_size / 1e6:.1f} MB, encoded in {time.perf_counter() - started:.1f} s"
        )
        times: dict[str, float] = {}
        for mode in ("all", "exact", "keyframe"):
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                frames = sample_frames(video, num_frames=args.frames, mode=mode)
                runs.append(time.perf_counter() - t)
            times[mode] = statistics.median(runs)
            print(f"{mode:>9}: {times[mode]:.3f} s median of {args.repeats}  timestamps {frames.timestamps[:3]}...")
        exact, key = times["all"] / times["exact"], times["all"] / times["keyframe"]
        print(
            f"exact is {exact:.1f}x faster than decoding every frame (goal >= 2x): {'PASS' if exact >= 2 else 'FAIL'}"
        )
        print(
            f"keyframe is {key:.1f}x faster than decoding every frame (goal >= 10x): {'PASS' if key >= 10 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
