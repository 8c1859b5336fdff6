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

rmsd-filter's curated shards (v3) index the kept samples by their key with their weights; the
examples' content (question, options, video, frames, response) is read from the samples shards the
run scored (its manifest's ``samples_dir``, relative to the output first: a filter output moved
together with its samples still finds them; or ``samples``, given explicitly), curated shard by
curated shard (``curated_sources``). Curated v2 shards carry that content and are read as they are.

Every folder is checked against its completion record before it is read (``schemas.manifests``):
an rmsd-filter output's curated shards against its manifest's ``files`` (names and sizes, and each
shard's sha256 as it is read), its samples against the identity it recorded of them, and a samples
folder read directly against rmsd-gen's manifest (a finished job, its shards as recorded).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Literal

import datasets
import polars as pl
import pyarrow as pa

from ..schemas.manifests import MANIFEST_FILE, check_recorded, recorded_paths, samples_unfinished
from ..schemas.tables import CURATED_CONTENT, SAMPLE_KEY, SAMPLES_SCHEMA, SchemaError, check_file, file_schema_version

Mode = Literal["best", "weighted", "filtered", "unfiltered", "single", "gt"]
MODES: tuple[str, ...] = ("best", "weighted", "filtered", "unfiltered", "single", "gt")
EXAMPLE_COLUMNS = ["prompt_id", "task_type", "question", "options", "video", "frame_timestamps", "response", "weight"]
# what to do when an rmsd-filter output's samples are not where its manifest says
MOVED_SAMPLES_HINT = (
    "; move the samples folder and the filter output together (their places relative to each other are recorded), "
    "or pass the samples folder explicitly (--samples)"
)


def _tables(folder: Path, table: str) -> list[Path]:
    paths = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not paths:
        raise SchemaError(f"{folder}: no {table} shards (*.parquet)")
    for p in paths:
        check_file(p, table)
    return paths


def _curated_folder(data: Path) -> Path:
    return data / "curated" if (data / "curated").is_dir() else data


def _filter_output(curated: Path) -> Path:
    """The rmsd-filter output folder of a curated folder (the one with its manifest)."""
    return curated.parent if curated.name == "curated" and not (curated / "_manifest.json").exists() else curated


def _indexed_samples(curated: Path, samples: Path | None = None) -> dict[str, list[Path]]:
    """The shards of the samples folder rmsd-filter scored to write ``curated``'s shards (or of
    ``samples``, that folder given explicitly), by the shard group (``shard_groups``; curated
    ``part-<batch>.parquet`` covers a batch of them). Refused if the samples are gone or changed
    since (``_check_scored_samples``)."""
    from ..schemas.filtered import shard_groups

    manifest = _filter_output(curated) / MANIFEST_FILE
    if not manifest.exists():
        raise SchemaError(
            f"{curated}: curated shards index the samples rmsd-filter scored, and there is no rmsd-filter manifest "
            f"({manifest}) to find them"
        )
    info = json.loads(manifest.read_text())
    samples = _recorded_samples(_filter_output(curated), info, MOVED_SAMPLES_HINT, samples)
    _check_scored_samples(samples, info)
    return dict(shard_groups(samples))


def _check_scored_samples(samples: Path, info: dict) -> None:
    """Refuse samples that are not the ones the rmsd-filter manifest ``info`` records it scored:
    their manifest's hash, and the names and sizes of their shards."""
    from ..schemas.filtered import input_manifest_hash

    recorded = info.get("input_manifest_sha256")
    if recorded and input_manifest_hash(samples) != recorded:  # the hash rmsd-filter recorded, computed the same way
        raise SchemaError(
            f"{samples}: the samples changed since rmsd-filter scored them (their manifest's hash differs); run "
            "rmsd-filter again"
        )
    shards = info.get("input_shards")
    if isinstance(shards, dict):  # rmsd-filter before completion records listed names only
        present = {p.name: p.stat().st_size for p in samples.glob("*.parquet") if not p.name.startswith(".")}
        if present != shards:
            changed = sorted(set(present) ^ set(shards)) or sorted(n for n in shards if present[n] != shards[n])
            raise SchemaError(
                f"{samples}: the samples changed since rmsd-filter scored them ({changed[0]} differs); run "
                "rmsd-filter again"
            )


def _check_complete(output: Path, files: list[Path], prefix: str) -> dict[Path, str]:
    """The sha256 the rmsd-filter output ``output`` records for each of ``files`` (its files under
    ``prefix``), once they are checked to be the complete result its manifest records (names and
    sizes). An output without a manifest (curated v2 shards) has no record to check: empty."""
    manifest = output / MANIFEST_FILE
    if not manifest.exists():
        if any(
            file_schema_version(p)[1] >= 3 for p in files
        ):  # v3 shards: written by an rmsd-filter that writes a manifest
            raise SchemaError(
                f"{output}: no manifest, so no complete rmsd-filter result (a run was interrupted, or is running); "
                "run rmsd-filter again"
            )
        return {}
    recorded = json.loads(manifest.read_text()).get("files")
    if recorded is None:
        raise SchemaError(
            f"{output}: its manifest does not record its files (an older rmsd-filter wrote it); run rmsd-filter again"
        )
    if why := check_recorded(output, recorded, files, prefix):
        raise SchemaError(
            f"{output}: the files are not the complete rmsd-filter result its manifest records ({why}); run "
            "rmsd-filter again"
        )
    return {path: recorded[path.relative_to(output).as_posix()]["sha256"] for path in files}


def _with_content(curated: pl.DataFrame, samples: list[Path], where: Path) -> pl.DataFrame:
    """Curated rows with their samples' content (``CURATED_CONTENT``), joined on the sample key, in
    the curated rows' order; every row must find its sample."""
    content = pl.scan_parquet(samples).select(*SAMPLE_KEY, *CURATED_CONTENT)
    joined = curated.lazy().join(content, on=list(SAMPLE_KEY), how="left", maintain_order="left").collect()
    missing = joined.filter(pl.col("question").is_null())
    if joined.height != curated.height or missing.height:
        example = missing.row(0, named=True) if missing.height else {}
        raise SchemaError(
            f"{where}: {missing.height or joined.height - curated.height} curated samples do not match exactly one "
            f"sample in {samples[0].parent} (e.g. {', '.join(f'{k}={example.get(k)!r}' for k in SAMPLE_KEY)}); "
            "run rmsd-filter again"
        )
    return joined


def curated_parts(data: Path) -> list[Path]:
    """The curated shards of an rmsd-filter output (or of its ``curated`` folder), checked against
    the output's completion record (``_check_complete``)."""
    data = Path(data)
    curated = _curated_folder(data)
    if curated == data and any((data / name).exists() for name in ("scored", "dropped_prompts.parquet", MANIFEST_FILE)):
        raise SchemaError(
            f"{data}: no curated folder, so no complete rmsd-filter result (a run was interrupted, or is running); "
            "run rmsd-filter again"
        )
    parts = _tables(curated, "curated")
    _curated_record(parts)
    return parts


def curated_digests(parts: list[Path]) -> list[str | None]:
    """The sha256 the rmsd-filter output records for each curated shard (None where it has no record)."""
    digests = _curated_record(parts)
    return [digests.get(p) for p in parts]


def _curated_record(parts: list[Path]) -> dict[Path, str]:
    curated = parts[0].parent
    output = _filter_output(curated)
    return _check_complete(output, parts, f"{curated.relative_to(output).as_posix()}/" if curated != output else "")


def curated_sources(parts: list[Path], samples: Path | None = None) -> list[list[Path] | None]:
    """For each curated shard, the samples shards that hold its samples' content: those of its
    batch of shard groups (``part-<batch>``, ``schemas.filtered.batch_files``; all of them for a shard of
    another name), or None for a v2 shard, which carries it. The samples folder (``samples``, else
    the one the filter output records) is checked once, here."""
    from ..schemas.filtered import batch_files

    v3 = [file_schema_version(p)[1] >= 3 for p in parts]
    if not any(v3):
        return [None] * len(parts)
    groups = _indexed_samples(parts[0].parent, samples)
    every = [f for files in groups.values() for f in files]
    return [(batch_files(groups, p.stem.removeprefix("part-")) or every) if new else None for p, new in zip(parts, v3)]


def read_curated(path: Path, samples: list[Path] | None, sha256: str | None = None) -> pl.DataFrame:
    """One curated shard with its samples' content (``curated_sources``): joined on the key from
    ``samples``, or as it is where ``samples`` is None (v2). ``sha256``: what the shard must hash to
    (``curated_digests``); read from the very bytes hashed, so a shard replaced since is refused."""
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise SchemaError(
            f"{path}: not the curated shard its rmsd-filter manifest records (replaced by another run since?); run "
            "rmsd-filter again"
        )
    frame = pl.read_parquet(io.BytesIO(data))
    return frame if samples is None else _with_content(frame, samples, path)


def curated_frame(data: Path, samples: Path | None = None) -> pl.DataFrame:
    """Every kept sample of an rmsd-filter output with its content and weights (the content read
    from ``samples``, else from the samples folder the output records)."""
    parts = curated_parts(data)
    sources, digests = curated_sources(parts, samples), curated_digests(parts)
    return pl.concat([read_curated(p, s, d) for p, s, d in zip(parts, sources, digests)], how="diagonal_relaxed")


def _samples_folder(data: Path, samples: Path | None = None) -> Path:
    """The rmsd-gen samples of ``data``: the folder itself, or the one an rmsd-filter output was
    scored from (``samples``, else its manifest's ``samples_dir``; scored shards hold scores, not
    the samples)."""
    manifest = data / MANIFEST_FILE
    if (data / "scored").is_dir() and manifest.exists():
        info = json.loads(manifest.read_text())
        folder = _recorded_samples(
            data, info, "; pass that samples folder as --data, or move it and the filter output together", samples
        )
        _check_scored_samples(folder, info)
        return folder
    if why := samples_unfinished(data, [p for p in data.glob("*.parquet") if not p.name.startswith(".")]):
        raise SchemaError(f"{data}: {why}; finish it (rerun the same rmsd-gen command) before training on it")
    return data


def sample_shards(data: Path, samples: Path | None = None) -> list[Path]:
    """The rmsd-gen sample shards of ``data`` (a samples folder, or an rmsd-filter output and the
    samples it scored: ``samples``, else the folder its manifest records), each checked against
    the samples schema."""
    return _tables(_samples_folder(data, samples), "samples")


def _recorded_samples(out: Path, info: dict, hint: str, samples: Path | None = None) -> Path:
    """The samples folder an rmsd-filter output (``out``, its manifest ``info``) scored: ``samples``
    if given, else where the manifest says, relative to ``out`` first, then absolute. Refused, with
    ``hint`` and every folder tried, if it is not there."""
    tried = [Path(samples)] if samples is not None else recorded_paths("samples_dir", info, out)
    for folder in tried:
        if folder.is_dir():
            return folder
    where = " nor ".join(str(folder) for folder in tried) or "none recorded in its manifest"
    raise SchemaError(f"{out}: the samples it was scored from ({where}) are not there{hint}")


def data_frame_policy(mode: str, data: Path, samples: Path | None = None):
    """The frame settings the teachers' samples were generated with (their rmsd-gen manifest's
    ``frames``); None for ground truth (a prompts file records none) or an older manifest."""
    if mode == "gt":
        return None
    from ..schemas.config import FramesConfig

    def manifest(folder: Path) -> dict:
        return json.loads((folder / MANIFEST_FILE).read_text()) if (folder / MANIFEST_FILE).exists() else {}

    info = manifest(Path(data))
    if "samples_dir" in info:  # an rmsd-filter output: the samples it scored
        info = manifest(_recorded_samples(Path(data), info, MOVED_SAMPLES_HINT, samples))
    return FramesConfig.model_validate(info["frames"]) if info.get("frames") else None


def video_base(mode: str, data: Path, samples: Path | None = None) -> Path:
    """The folder the examples' relative video paths start from, found through the manifests
    (filter output -> its samples folder, or ``samples`` -> the prompts file rmsd-gen read); each
    recorded path is tried relative to its manifest's folder first, then absolute."""
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
            tried = [path.parent for path in recorded_paths("prompts_path", info, folder)]
            found = next((base for base in tried if base.is_dir()), None)
            if found is None:
                raise FileNotFoundError(
                    f"{folder}: the folder of the prompts file its samples were generated from "
                    f"({' nor '.join(map(str, tried))}), "
                    "where the videos' paths start, is not there; move it together with the samples, or pass "
                    "--video-base"
                )
            return found
        if "samples_dir" in info:
            folder = _recorded_samples(folder, info, MOVED_SAMPLES_HINT, samples)
            continue
        break
    raise FileNotFoundError(
        f"cannot tell where the videos of {data} are (no manifest chain to the prompts file); pass --video-base"
    )


def _pick_seed(seed: int) -> pl.Expr:
    key = pl.concat_str(
        [pl.lit(str(seed)), pl.col("prompt_id"), pl.col("teacher"), pl.col("sample_index").cast(pl.String)],
        separator="/",
    )
    return key.map_elements(
        lambda k: int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little") >> 1, return_dtype=pl.Int64
    )


def example_frame(
    mode: str, data: Path, seed: int = 0, split: str | None = "train", samples: Path | None = None
) -> pl.DataFrame:
    """The examples of ``mode`` as a Polars frame (columns EXAMPLE_COLUMNS); ``samples``: the
    samples folder an rmsd-filter output ``data`` scored, where it is not where the output records."""
    data = Path(data)
    if mode in ("best", "weighted"):
        frame = curated_frame(data, samples)
        if mode == "best":
            frame = frame.filter(pl.col("is_best")).with_columns(weight=pl.lit(1.0))
        frame = frame.rename({"text": "response"})
    elif mode == "filtered":
        frame = curated_frame(data, samples).rename({"text": "response"})
        frame = frame.with_columns(weight=1.0 / pl.len().over("prompt_id"))
    elif mode == "unfiltered":
        frame = pl.read_parquet(sample_shards(data, samples)).filter(
            pl.col("error").is_null() & pl.col("text").is_not_null()
        )
        frame = frame.rename({"text": "response"}).with_columns(weight=1.0 / pl.len().over("prompt_id"))
    elif mode == "single":
        frame = pl.read_parquet(sample_shards(data, samples)).filter(
            pl.col("error").is_null() & pl.col("text").is_not_null()
        )
        frame = (
            frame.with_columns(_pick=_pick_seed(seed))
            .sort("_pick")
            .unique("prompt_id", keep="first", maintain_order=True)
        )
        frame = frame.rename({"text": "response"}).with_columns(weight=pl.lit(1.0))
    elif mode == "gt":
        from ..gen.adapters import load_prompts

        rows, _ = load_prompts(data)
        frame = pl.DataFrame(rows, schema_overrides={"options": pl.List(pl.String)})
        if split and "split" in frame.columns and frame["split"].is_not_null().any():
            frame = frame.filter(pl.col("split") == split)
        frame = frame.filter(pl.col("answer").is_not_null())
        reasoning = pl.col("meta").map_elements(
            lambda m: (json.loads(m) if m else {}).get("reasoning", ""), return_dtype=pl.String
        )
        frame = frame.with_columns(
            response=pl.concat_str(
                [
                    pl.lit("<think>"),
                    reasoning.fill_null(""),
                    pl.lit("</think><answer>"),
                    pl.col("answer"),
                    pl.lit("</answer>"),
                ]
            ),
            frame_timestamps=pl.lit(None, pl.List(pl.Float64)),
            weight=pl.lit(1.0),
        )
    else:
        raise ValueError(f"unknown SFT mode {mode!r}; known: {list(MODES)}")
    if frame.is_empty():
        raise SchemaError(f"{data}: no {mode} examples")
    extra = ["meta"] if mode == "gt" and "meta" in frame.columns else []  # scene facts for the auxiliary visual loss
    return frame.select(EXAMPLE_COLUMNS + extra).sort("prompt_id", maintain_order=True)


def sft_dataset(
    mode: str,
    data: Path,
    seed: int = 0,
    split: str | None = "train",
    streaming: bool = False,
    samples: Path | None = None,
):
    """A Hugging Face dataset of the examples (``example_frame``); ``streaming`` reads curated
    shards lazily (best, weighted), one at a time with its samples, for corpora larger than memory."""
    if streaming and mode in ("best", "weighted"):
        parts = curated_parts(Path(data))
        sources = [None if s is None else [str(f) for f in s] for s in curated_sources(parts, samples)]
        kwargs = {
            "parts": [str(p) for p in parts],
            "sources": sources,
            "digests": curated_digests(parts),
            "best": mode == "best",
        }
        return datasets.IterableDataset.from_generator(
            _stream_examples, features=_example_features(), gen_kwargs=kwargs
        )
    return datasets.Dataset.from_polars(example_frame(mode, data, seed, split, samples))


def _example_features() -> datasets.Features:
    """The examples' types: the samples schema's, and a float weight (a stream is not typed from
    its first rows, where options may all be null)."""
    fields = {f.name: f for f in SAMPLES_SCHEMA}
    columns = [
        fields["text"].with_name("response") if c == "response" else fields[c] for c in EXAMPLE_COLUMNS if c != "weight"
    ]
    return datasets.Features.from_arrow_schema(pa.schema([*columns, pa.field("weight", pa.float64())]))


def _stream_examples(parts: list[str], sources: list[list[str] | None], digests: list[str | None], best: bool):
    """The examples of curated shards ``parts``, shard by shard, with their samples from
    ``sources``, each shard checked against its recorded hash in ``digests`` as it is read: an
    rmsd-filter rerun during training is refused, not mixed in (datasets splits the lists alike among its workers)."""
    for part, samples, digest in zip(parts, sources, digests):
        frame = read_curated(Path(part), None if samples is None else [Path(f) for f in samples], digest).rename(
            {"text": "response"}
        )
        if best:
            frame = frame.filter(pl.col("is_best")).with_columns(weight=pl.lit(1.0))
        yield from frame.select(EXAMPLE_COLUMNS).iter_rows(named=True)


__all__ = [
    "EXAMPLE_COLUMNS",
    "MODES",
    "curated_digests",
    "curated_frame",
    "curated_parts",
    "curated_sources",
    "example_frame",
    "read_curated",
    "sft_dataset",
    "video_base",
]
