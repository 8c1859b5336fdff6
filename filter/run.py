"""The rmsd-filter job: score every group of sample shards, write scored and curated shards, the
list of prompts left without a kept sample, the reliability report and a manifest.

rmsd-gen writes one shard per teacher and slice of prompts (``samples-<teacher>-<slice>``); all
teachers' shards of one slice (a shard group) hold every sample of those prompts, so a group is
scored without the others. Consecutive groups are scored together in batches (``plan_batches``)
that bound a worker's memory. Scoring a batch is one function, ``score_batch``, that knows nothing
of processes; the executors of ``executors`` run the batches in this process, on local worker
processes or on a Ray cluster (``use_ray``), and every one of them writes the same files. Outputs
are deterministic: the same input gives identical bytes. What an output holds, and how rmsd-train
finds the samples behind it, is ``schemas.filtered``'s contract.

A run holds ``--out``'s lock (one run per folder) and a shared lock on the samples (rmsd-gen cannot
change them meanwhile), writes its whole result beside the previous one and swaps it in at the end
(``_swap_in``); its manifest records every output file (``files``) and the identity of the samples
it read (their manifest's hash, each shard's size), which rmsd-train checks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..schemas.config import PipelineConfig
from ..schemas.files import temp_dir_beside, write_json
from ..schemas.filtered import OTHER, RESULT, batch_name, input_manifest_hash, shard_groups
from ..schemas.manifests import (
    MANIFEST_FILE,
    RunRefused,
    check_apart,
    file_record,
    folder_lock,
    record_path,
    samples_unfinished,
    withdraw_completion,
)
from ..schemas.tables import SchemaError, check_files, schema_for, with_string_views, write_table
from .executors import run_local, run_ray, run_serial, worker_context
from .page import batch_questions, page_data, write_page
from .report import finish_stats, load_plotting, partial_stats, write_report
from .score import SCORING_COLUMNS, dropped_prompts, score_samples


@dataclass
class FilterSummary:
    out: Path
    samples: int
    kept: int
    prompts: int
    dropped: int
    groups: int
    wall_seconds: float
    report: dict


# A batch: consecutive shard groups scored together, up to BATCH_ROWS rows and BATCH_BYTES of
# uncompressed shards (a group larger than that alone). Each Polars query costs the same whatever
# its rows: a group pays some 24 ms of it (measured in commit 5481aeb), the whole time of a small one
# (rmsd-gen writes 64 prompts a shard by default: 512 rows for two teachers at K = 4; batches
# score such a corpus 5.5x as fast). On the bench's 100,000-row groups they gave 1.03-1.06x, and
# 300,000 rows were slower (a batch's columns leave the caches). A corpus gives at least
# MIN_BATCHES batches where its groups allow, so that the workers share it evenly. Batching depends
# on the input alone: every way of running (local, Ray, any number of workers) writes the same files.
BATCH_ROWS, BATCH_BYTES, MIN_BATCHES = 200_000, 256 * 2**20, 16


@dataclass(frozen=True)
class Batch:
    name: str  # the output shards' part-<name>.parquet (``batch_name``)
    files: list[str]
    groups: int


def plan_batches(
    groups: list[tuple[str, list[Path]]], footers: dict[Path, pq.FileMetaData], batch_rows: int = BATCH_ROWS
) -> list[Batch]:
    """Consecutive groups merged into batches (``groups`` in ``shard_groups``' order; ``footers``:
    each file's, for its rows and uncompressed bytes). Files of another naming than rmsd-gen's form
    a batch of their own."""

    def size(files: list[Path]) -> tuple[int, int]:
        meta = [footers[f] for f in files]
        return sum(m.num_rows for m in meta), sum(
            m.row_group(i).total_byte_size for m in meta for i in range(m.num_row_groups)
        )

    sizes = {key: size(files) for key, files in groups}
    rows_cap = max(1, min(batch_rows, -(-sum(r for r, _ in sizes.values()) // MIN_BATCHES)))
    batches: list[list[tuple[str, list[Path]]]] = []
    rows = size_bytes = 0
    for key, files in groups:
        group_rows, group_bytes = sizes[key]
        fits = (
            batches
            and OTHER not in (key, batches[-1][-1][0])
            and rows + group_rows <= rows_cap
            and size_bytes + group_bytes <= BATCH_BYTES
        )
        if not fits:
            batches.append([])
            rows = size_bytes = 0
        batches[-1].append((key, files))
        rows, size_bytes = rows + group_rows, size_bytes + group_bytes
    return [
        Batch(batch_name([key for key, _ in members]), [str(f) for _, fs in members for f in fs], len(members))
        for members in batches
    ]


def _arrow(frame: pl.DataFrame, table: str) -> pa.Table:
    """``frame``'s columns of ``table`` as Arrow, in the forms ``write_table`` writes as they are:
    Polars' string views (no copy); categoricals as dictionaries built from their codes, which the
    writer dictionary-encodes without hashing a string (Polars' own conversion would first compact
    the categories: 0.7 ms a column of 100,000 rows); other columns cast to the contract's type,
    column by column (half the time of Table.cast). String views need ``pl.CompatLevel.newest()``,
    unstable in Polars: polars is pinned to the version tested (pyproject.toml)."""
    schema, types = _arrow_schema(table), frame.schema
    categorical = {f.name for f in schema if isinstance(types[f.name], (pl.Categorical, pl.Enum))}
    data = frame.select(n for n in schema.names if n not in categorical).to_arrow(compat_level=pl.CompatLevel.newest())
    columns = [
        _dictionary(frame[f.name]) if f.name in categorical else data.column(f.name).cast(f.type) for f in schema
    ]
    fields = [f.with_type(c.type) for f, c in zip(schema, columns)]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))


@functools.cache
def _arrow_schema(table: str) -> pa.Schema:
    return with_string_views(schema_for(table))


def _dictionary(series: pl.Series) -> pa.DictionaryArray:
    """A categorical (or enumeration) column as an Arrow dictionary of strings: its codes index its
    categories."""
    categories = series.dtype.categories  # ordered by code
    categories = (
        (categories if isinstance(categories, pl.Series) else categories.to_series()).to_arrow().cast(pa.string())
    )
    return pa.DictionaryArray.from_arrays(series.to_physical().to_arrow(), categories)


def read_group(files: list[str]) -> pl.DataFrame:
    """The columns scoring reads (only those), of one group's shards: the outputs carry the samples'
    key, not their content."""
    try:
        return pl.read_parquet(files, columns=list(SCORING_COLUMNS)).rechunk()
    except (pl.exceptions.PolarsError, OSError) as exc:  # a footer that reads, pages that do not
        raise SchemaError(f"cannot read the samples shards {[Path(f).name for f in files]}: {exc}") from exc


def write_scored(scored: pl.DataFrame, path: Path) -> None:
    write_table(_arrow(scored, "scored"), path, "scored")


def write_curated(scored: pl.DataFrame, path: Path) -> int:
    """Write the kept samples' keys and weights (curated v3), by PyArrow's writer as the scored
    shards are (0.121 against 0.135 us per row by Polars' own, and two-thirds the size: PyArrow
    dictionary-encodes the teacher, task type and weights); returns their number."""
    curated = (
        scored.lazy().filter("kept").select(schema_for("curated").names).collect()
    )  # lazy: filters only these columns
    write_table(_arrow(curated, "curated"), path, "curated")
    return curated.height


def score_batch(name: str, files: list[str], pipeline: PipelineConfig, out: str) -> dict:
    """Score one batch (its shards: ``files``) and write its scored and curated shards
    (``out/{scored,curated}/part-<name>.parquet``); returns its statistics. What every executor
    runs: it knows nothing of where it runs."""
    scored = score_samples(read_group(files), pipeline.filter, keys=True)
    write_scored(scored, Path(out) / "scored" / f"part-{name}.parquet")
    kept = write_curated(scored, Path(out) / "curated" / f"part-{name}.parquet")
    return {
        "stats": partial_stats(scored),
        "dropped": dropped_prompts(scored),
        "questions": batch_questions(scored),
        "samples": scored.height,
        "kept": kept,
        "prompts": scored["_prompt"].max() + 1 if scored.height else 0,  # codes are dense (0..n-1): nothing hashed
    }


def run_filter(
    pipeline: PipelineConfig,
    pipeline_name: str,
    samples_dir: str | Path,
    out: str | Path,
    use_ray: bool = False,
    address: str | None = None,
    progress: bool = True,
    workers: int | None = None,
    batch_rows: int = BATCH_ROWS,
    allow_incomplete: bool = False,
) -> FilterSummary:
    """Score every shard group, in batches of consecutive groups (``plan_batches``; at most
    ``batch_rows`` rows unless one group has more). Locally, ``workers`` processes (default: one per
    core) share the batches; with ``use_ray`` they are Ray tasks. Every way gives the same bytes.

    The samples must be a finished rmsd-gen job's, as its manifest records them, unless
    ``allow_incomplete``. The new result is written beside the previous one (``out/.tmp-*``) and
    swapped in at the end: the manifest, the completion record, is withdrawn first and written last,
    so a reader finds the previous result, the new one, or (killed in the swap) none; never a mix."""
    started = time.time()
    workers = workers or os.cpu_count() or 1
    samples_dir, out = Path(samples_dir).resolve(), Path(out).resolve()
    check_apart(out, {"samples folder": samples_dir})
    with contextlib.ExitStack() as held:
        try:  # rmsd-gen cannot start on the samples while they are scored
            held.enter_context(folder_lock(samples_dir, shared=True))
        except RunRefused:
            if not allow_incomplete:
                raise RunRefused(
                    f"{samples_dir}: rmsd-gen is writing these samples now; wait for it to end, "
                    "or pass --allow-incomplete to score what is there"
                ) from None
        groups = shard_groups(samples_dir, check=False)
        files = [f for _, group in groups for f in group]
        unfinished = samples_unfinished(samples_dir, files)
        if unfinished and not allow_incomplete:
            raise RunRefused(
                f"{samples_dir}: {unfinished}; finish it (rerun the same rmsd-gen command), "
                "or pass --allow-incomplete to score what is there"
            )
        source = _samples_identity(samples_dir, files)
        held.enter_context(folder_lock(out))  # the input checked: the output folder is made, and is this run's
        for stale in out.glob(".tmp-*"):  # what a killed run left
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        staging = temp_dir_beside(out / "result")
        held.callback(shutil.rmtree, staging, ignore_errors=True)  # on failure; gone already on success
        executor, options = "serial", {}
        if use_ray:
            executor, options = "ray", {"address": address}
        elif workers > 1 and len(groups) > 1:  # the fork server first: it imports while the shards are checked
            executor, options = "local", {"workers": workers, "context": worker_context([__name__])}
        batches = plan_batches(groups, dict(zip(files, check_files(files, "samples"))), batch_rows)
        if executor == "local":
            load_plotting()  # for the report, while the fork server may still import
        results = _score_batches(batches, len(groups), pipeline, staging, executor, progress=progress, **options)

        dropped = pl.concat([r["dropped"] for r in results]).sort("prompt_id")
        write_table(dropped.to_arrow().cast(schema_for("dropped")), staging / "dropped_prompts.parquet", "dropped")
        stats = finish_stats([r["stats"] for r in results])
        counts = {
            "samples": sum(r["samples"] for r in results),
            "kept": sum(r["kept"] for r in results),
            "prompts": sum(r["prompts"] for r in results),
            "dropped_prompts": dropped.height,
            "shard_groups": len(groups),
            "batches": len(batches),
        }
        header = {
            "pipeline": pipeline_name,
            **record_path(
                "samples_dir", samples_dir, out
            ),  # relative first: moved together, they still find each other
            "tau": pipeline.filter.tau,
            "tau_by_task": pipeline.filter.tau_by_task,
            "counts": counts,
        }
        # the page's questions are read (Polars, without the GIL) while the report draws its plots
        with ThreadPoolExecutor(1) as beside:
            page = beside.submit(
                page_data,
                pl.concat([r["questions"] for r in results]),
                sorted((staging / "scored").glob("*.parquet")),
                files,
                dropped,
                samples_dir,
                [Path(p) for p in pipeline.media_roots],
                pipeline.frames.mode,
            )
            report_paths = write_report(stats, dropped, staging / "report", header)
            report_paths["page"] = write_page(
                staging / "report", json.loads(report_paths["json"].read_text()), page.result()
            )
        if _samples_identity(samples_dir, files) != source:
            raise RunRefused(f"{samples_dir}: the samples changed while they were scored; run rmsd-filter again")
        manifest = {
            **header,
            "filter_config": pipeline.filter.model_dump(mode="json"),
            "config_hash": pipeline.config_hash(),
            "input_manifest_sha256": source["manifest_sha256"],
            "input_complete": unfinished is None,
            **({"input_unfinished": unfinished} if unfinished else {}),
            "input_shards": source["shards"],
            "outputs": {
                "scored": "scored/",
                "curated": "curated/",
                "dropped": "dropped_prompts.parquet",
                **{k: str(v.relative_to(staging)) for k, v in report_paths.items()},
            },
            "files": {
                p.relative_to(staging).as_posix(): file_record(p) for p in sorted(staging.rglob("*")) if p.is_file()
            },
            "complete": True,
        }
        _swap_in(staging, out, manifest)
    report = json.loads((out / "report" / "report.json").read_text())
    return FilterSummary(
        out,
        counts["samples"],
        counts["kept"],
        counts["prompts"],
        dropped.height,
        len(groups),
        time.time() - started,
        report,
    )


def _swap_in(staging: Path, out: Path, manifest: dict) -> None:
    """Replace the result in ``out`` with the one in ``staging``: the manifest withdrawn first,
    the previous result moved aside, the new one renamed into place, the manifest written last."""
    withdraw_completion(out)
    previous = temp_dir_beside(out / "previous")
    for name in RESULT:
        if (out / name).exists():
            os.rename(out / name, previous / name)
        os.rename(staging / name, out / name)
    write_json(out / MANIFEST_FILE, manifest)
    shutil.rmtree(previous)
    shutil.rmtree(staging)


def _samples_identity(samples_dir: Path, files: list[Path]) -> dict:
    """What the filter records of its input: the hash of its manifest and every shard's size."""
    return {"manifest_sha256": input_manifest_hash(samples_dir), "shards": {f.name: f.stat().st_size for f in files}}


def _score_batches(
    batches: list[Batch], groups: int, pipeline: PipelineConfig, out: Path, executor: str, **options
) -> list[dict]:
    """Every batch's statistics, in order, from ``score_batch`` run by the executor named
    (``serial``, ``local``, ``ray``; ``options``: its own); each batch's shards written in ``out``."""
    from tqdm import tqdm

    with tqdm(total=groups, unit="shard", desc="rmsd-filter", disable=not options.pop("progress", True)) as bar:
        run = {"serial": run_serial, "local": run_local, "ray": run_ray}[executor]
        return run(
            score_batch,
            [(b.name, b.files, pipeline, str(out)) for b in batches],
            done=lambda i: bar.update(batches[i].groups),
            **options,
        )
