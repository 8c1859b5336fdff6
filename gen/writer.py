"""The output folder of an rmsd-gen job: shards, the job identity, and the manifest.

The unit of work and of resume is a shard: the samples of one teacher for one slice of the
prompts (``samples-<teacher>-<slice>.parquet``). A shard is written to a temporary name and
renamed into place, so it is either absent or complete. A rerun lists the finished shards and
does only the rest: after any interruption, SIGKILL included, no sample is lost or duplicated.
``_job.json`` pins what the folder holds; a different job in the same folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from ..schemas.files import write_json
from ..schemas.tables import check_file

JOB_FILE = "_job.json"
MANIFEST_FILE = "_manifest.json"


class JobMismatchError(RuntimeError):
    """The output folder holds another job's shards."""


def shard_name(teacher: str, index: int) -> str:
    return f"samples-{teacher}-{index:06d}.parquet"


def prepare_output(out: Path, identity: dict) -> None:
    """Create ``out`` for this job, or check that it already belongs to it; clear stale temp files."""
    out.mkdir(parents=True, exist_ok=True)
    job = out / JOB_FILE
    if job.exists():
        existing = json.loads(job.read_text())
        if existing != identity:
            changed = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
            raise JobMismatchError(
                f"{out} holds another rmsd-gen job (differs in: {', '.join(changed)}); "
                "use a new --out folder, or delete this one to start over"
            )
    else:
        write_json(job, identity)
    for stale in out.glob(".tmp-*"):
        stale.unlink(missing_ok=True)


def finished_shards(out: Path) -> set[str]:
    return {p.name for p in out.glob("samples-*.parquet")}


def shard_stats(out: Path) -> dict:
    """Counts over every finished shard (rows, error rows by reason), read from the files themselves."""
    rows = errors = 0
    reasons: dict[str, int] = {}
    shards = sorted(out.glob("samples-*.parquet"))
    for path in shards:
        check_file(path, "samples")
        column = pq.read_table(path, columns=["error"]).column("error").to_pylist()
        rows += len(column)
        for err in column:
            if err is not None:
                errors += 1
                key = err.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
    return {"shards": len(shards), "samples": rows, "error_samples": errors, "errors_by_reason": reasons}
