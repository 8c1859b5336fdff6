"""The output folder of an rmsd-gen job: shards, the job identity, and the manifest.

The unit of work and of resume is a shard: the samples of one teacher for one slice of the
prompts (``samples-<teacher>-<slice>.parquet``). A shard is written to a temporary name and
renamed into place, so it is either absent or complete. A rerun lists the finished shards and
does only the rest: after any interruption, SIGKILL included, no sample is lost or duplicated.
``_job.json`` pins what the folder holds (the job and its teachers' checkpoints); a different job
in the same folder is refused. The manifest is the completion record (``schemas.manifests``):
withdrawn before a run writes a shard, written after the last one with every shard's size and
hash. Retried error samples replace their rows in a copy of the shard renamed over it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from ..schemas.files import write_json
from ..schemas.manifests import RunRefused, file_record
from ..schemas.tables import check_file, to_table, write_table

JOB_FILE = "_job.json"


class JobMismatchError(RunRefused):
    """The output folder holds another job's shards."""


def shard_name(teacher: str, index: int) -> str:
    return f"samples-{teacher}-{index:06d}.parquet"


def prepare_output(out: Path, identity: dict) -> None:
    """Create ``out`` for this job, or check that it already belongs to it; clear stale temp files."""
    out.mkdir(parents=True, exist_ok=True)
    job = out / JOB_FILE
    if job.exists():
        existing = json.loads(job.read_text())
        changed = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
        if changed == ["model_fingerprints"]:
            before, now = existing.get("model_fingerprints"), identity["model_fingerprints"]
            # a teacher without a shard yet (its checkpoint fixed after it failed to load) may change; a job
            # begun before fingerprints were recorded (None) takes them now
            swapped = [t for t in sorted(now) if before is not None and before.get(t) != now[t] and _has_shards(out, t)]
            if swapped:
                raise JobMismatchError(
                    f"{out}: the checkpoint of teacher {', '.join(swapped)} is not the one this job began with (its "
                    "fingerprint differs): resuming would mix two models' samples under one run_id; restore that "
                    "checkpoint, or use a new --out folder"
                )
            write_json(job, identity)
        elif changed:
            raise JobMismatchError(
                f"{out} holds another rmsd-gen job (differs in: {', '.join(changed)}); "
                "use a new --out folder, or delete this one to start over"
            )
    else:
        write_json(job, identity)
    for stale in out.glob(".tmp-*"):
        stale.unlink(missing_ok=True)


def _has_shards(out: Path, teacher: str) -> bool:
    return any(
        re.fullmatch(rf"samples-{re.escape(teacher)}-\d+\.parquet", p.name) for p in out.glob("samples-*.parquet")
    )


def finished_shards(out: Path) -> set[str]:
    return {p.name for p in out.glob("samples-*.parquet")}


def shard_stats(out: Path) -> dict:
    """Counts over every finished shard (rows, error rows by reason), read from the files themselves,
    and the completion record of the shards (``files``: each one's bytes, sha256 and rows)."""
    rows = errors = 0
    reasons: dict[str, int] = {}
    files: dict[str, dict] = {}
    shards = sorted(out.glob("samples-*.parquet"))
    for path in shards:
        check_file(path, "samples")
        column = pq.read_table(path, columns=["error"]).column("error").to_pylist()
        files[path.name] = {**file_record(path), "rows": len(column)}
        rows += len(column)
        for err in column:
            if err is not None:
                errors += 1
                key = err.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
    return {
        "shards": len(shards),
        "samples": rows,
        "error_samples": errors,
        "errors_by_reason": reasons,
        "files": files,
    }


def error_samples(path: Path, matching: re.Pattern) -> dict[str, list[int]]:
    """The sample indices of a shard's error rows whose error ``matching`` finds, by prompt."""
    table = pq.read_table(path, columns=["prompt_id", "sample_index", "error"])
    found: dict[str, list[int]] = {}
    for prompt_id, index, error in zip(*(table.column(c).to_pylist() for c in ("prompt_id", "sample_index", "error"))):
        if error is not None and matching.search(error):
            found.setdefault(prompt_id, []).append(index)
    return found


def replace_samples(path: Path, rows: list[dict]) -> None:
    """Rewrite a shard with ``rows`` in place of the rows of the same prompt and sample index, in
    their order; written to a temporary name and renamed over the shard (all or nothing)."""
    new = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    old = pq.read_table(path).to_pylist()
    merged = [new.pop((r["prompt_id"], r["sample_index"]), r) for r in old]
    if new:
        raise RuntimeError(f"{path.name}: regenerated samples that the shard does not hold: {sorted(new)[:3]}")
    write_table(to_table(merged, "samples"), path, "samples")
