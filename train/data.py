"""Training examples from rmsd's Parquet tables, as Hugging Face datasets.

Every example has: ``prompt_id``, ``task_type``, ``question``, ``options``, ``video``,
``frame_timestamps`` (the frames the teacher saw; null = sample with the pipeline's settings),
``response`` (the target text) and ``weight`` (its weight in the loss).

SFT modes (METHOD.md, stage 3):

==========  =========================================================  =====================
mode        examples                                                   read from
==========  =========================================================  =====================
best        T_best of every prompt (the paper's warm-up), weight 1     rmsd-filter output
weighted    every kept sample, weight p_k (sums to 1 per prompt)       rmsd-filter output
filtered    every kept sample, uniform weight 1/n_kept (ablation C)    rmsd-filter output
unfiltered  every answered sample, uniform weight 1/n (ablation B)     rmsd-gen samples
single      one random answered teacher sample per prompt, no filtering  rmsd-gen samples
gt          the ground truth, with the prompt's reasoning if it has one  a prompts file
==========  =========================================================  =====================
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import datasets
import polars as pl

from ..schemas.tables import SchemaError, check_file

Mode = Literal["best", "weighted", "filtered", "unfiltered", "single", "gt"]
MODES: tuple[str, ...] = ("best", "weighted", "filtered", "unfiltered", "single", "gt")
EXAMPLE_COLUMNS = ["prompt_id", "task_type", "question", "options", "video", "frame_timestamps", "response", "weight"]


def _tables(folder: Path, table: str) -> list[Path]:
    paths = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not paths:
        raise SchemaError(f"{folder}: no {table} shards (*.parquet)")
    for p in paths:
        check_file(p, table)
    return paths


def _curated_folder(data: Path) -> Path:
    return data / "curated" if (data / "curated").is_dir() else data


def _samples_folder(data: Path) -> Path:
    """The rmsd-gen samples of ``data``: the folder itself, or the one an rmsd-filter output was
    scored from (its manifest's ``samples_dir``; scored shards hold scores, not the samples)."""
    manifest = data / "_manifest.json"
    if (data / "scored").is_dir() and manifest.exists():
        samples = json.loads(manifest.read_text()).get("samples_dir")
        if not samples or not Path(samples).is_dir():
            raise SchemaError(f"{data}: the samples it was scored from ({samples}) are not there; pass that samples folder as --data")
        return Path(samples)
    return data


def video_base(mode: str, data: Path) -> Path:
    """The folder the examples' relative video paths start from, found through the manifests
    (filter output -> its samples folder -> the prompts file rmsd-gen read)."""
    data = Path(data).resolve()
    if mode == "gt":
        return data.parent
    folder = data
    for _ in range(3):
        manifest = folder / "_manifest.json"
        if folder.name in ("curated", "scored"):
            folder = folder.parent
            continue
        if not manifest.exists():
            break
        info = json.loads(manifest.read_text())
        if "prompts_path" in info:
            return Path(info["prompts_path"]).parent
        if "samples_dir" in info:
            folder = Path(info["samples_dir"])
            continue
        break
    raise FileNotFoundError(f"cannot tell where the videos of {data} are (no manifest chain to the prompts file); pass --video-base")


def _pick_seed(seed: int) -> pl.Expr:
    key = pl.concat_str([pl.lit(str(seed)), pl.col("prompt_id"), pl.col("teacher"), pl.col("sample_index").cast(pl.String)], separator="/")
    return key.map_elements(lambda k: int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little") >> 1, return_dtype=pl.Int64)


def example_frame(mode: str, data: Path, seed: int = 0, split: str | None = "train") -> pl.DataFrame:
    """The examples of ``mode`` as a Polars frame (columns EXAMPLE_COLUMNS)."""
    data = Path(data)
    if mode in ("best", "weighted"):
        frame = pl.read_parquet(_tables(_curated_folder(data), "curated"))
        if mode == "best":
            frame = frame.filter(pl.col("is_best")).with_columns(weight=pl.lit(1.0))
        frame = frame.rename({"text": "response"})
    elif mode == "filtered":
        frame = pl.read_parquet(_tables(_curated_folder(data), "curated")).rename({"text": "response"})
        frame = frame.with_columns(weight=1.0 / pl.len().over("prompt_id"))
    elif mode == "unfiltered":
        frame = pl.read_parquet(_tables(_samples_folder(data), "samples")).filter(pl.col("error").is_null() & pl.col("text").is_not_null())
        frame = frame.rename({"text": "response"}).with_columns(weight=1.0 / pl.len().over("prompt_id"))
    elif mode == "single":
        frame = pl.read_parquet(_tables(_samples_folder(data), "samples")).filter(pl.col("error").is_null() & pl.col("text").is_not_null())
        frame = frame.with_columns(_pick=_pick_seed(seed)).sort("_pick").unique("prompt_id", keep="first", maintain_order=True)
        frame = frame.rename({"text": "response"}).with_columns(weight=pl.lit(1.0))
    elif mode == "gt":
        from ..gen.adapters import load_prompts

        rows, _ = load_prompts(data)
        frame = pl.DataFrame(rows, schema_overrides={"options": pl.List(pl.String)})
        if split and "split" in frame.columns and frame["split"].is_not_null().any():
            frame = frame.filter(pl.col("split") == split)
        frame = frame.filter(pl.col("answer").is_not_null())
        reasoning = pl.col("meta").map_elements(lambda m: (json.loads(m) if m else {}).get("reasoning", ""), return_dtype=pl.String)
        frame = frame.with_columns(
            response=pl.concat_str([pl.lit("<think>"), reasoning.fill_null(""), pl.lit("</think><answer>"), pl.col("answer"), pl.lit("</answer>")]),
            frame_timestamps=pl.lit(None, pl.List(pl.Float64)),
            weight=pl.lit(1.0),
        )
    else:
        raise ValueError(f"unknown SFT mode {mode!r}; known: {list(MODES)}")
    if frame.is_empty():
        raise SchemaError(f"{data}: no {mode} examples")
    extra = ["meta"] if mode == "gt" and "meta" in frame.columns else []  # scene facts for the auxiliary visual loss
    return frame.select(EXAMPLE_COLUMNS + extra).sort("prompt_id", maintain_order=True)


def sft_dataset(mode: str, data: Path, seed: int = 0, split: str | None = "train", streaming: bool = False):
    """A Hugging Face dataset of the examples; ``streaming`` reads curated shards lazily (best,
    weighted) for corpora larger than memory."""
    if streaming and mode in ("best", "weighted"):
        files = [str(p) for p in _tables(_curated_folder(Path(data)), "curated")]
        stream = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
        if mode == "best":
            stream = stream.filter(lambda row: row["is_best"]).map(lambda row: {"weight": 1.0})
        return stream.rename_column("text", "response").select_columns(EXAMPLE_COLUMNS)
    return datasets.Dataset.from_polars(example_frame(mode, data, seed, split))


__all__ = ["EXAMPLE_COLUMNS", "MODES", "example_frame", "sft_dataset", "video_base"]
