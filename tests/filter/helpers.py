"""Sample rows with chosen responses, in the samples schema, for filter tests."""

from __future__ import annotations

import polars as pl

from rmsd.schemas.grammar import wrap_response
from rmsd.schemas.tables import to_table, write_table

COLOURS = ["red", "green", "blue", "yellow"]


def sample_rows(prompt_id, task_type, answer, responses, teacher="a", options=None, errors=None):
    """One row per response (a string wrapped as <think>..</think><answer>..</answer>, or raw
    if it already contains a tag, or None for an error row)."""
    rows = []
    for k, response in enumerate(responses):
        text = None if response is None else (response if "<" in response else wrap_response("because", response))
        rows.append(
            {
                "prompt_id": prompt_id,
                "task_type": task_type,
                "question": "q?",
                "options": options,
                "answer": answer,
                "video": "videos/x.mp4",
                "teacher": teacher,
                "sample_index": k,
                "seed": 1000 + 17 * k + len(prompt_id) * 7 + (teacher == "b"),
                "text": text,
                "finish_reason": None if text is None else "stop",
                "num_tokens": None if text is None else 10,
                "cumulative_logprob": None,
                "frame_timestamps": [0.5, 1.5],
                "fps": 2.0,
                "error": (errors or {}).get(k) or ("missing: video not found" if text is None else None),
                "run_id": "r",
            }
        )
    return rows


def frame(rows) -> pl.DataFrame:
    return pl.from_arrow(to_table(rows, "samples"))


def write_shards(folder, rows_by_shard: dict[str, list[dict]]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in rows_by_shard.items():
        write_table(to_table(rows, "samples"), folder / name, "samples")
    return folder
