"""An rmsd-filter output and the samples it scored: the contract rmsd-filter writes to and rmsd-train
reads from (``filter/run.py`` and ``train/data.py`` both use this module, and nothing private of
each other's).

An output folder (``--out``) holds, once a run completes:

- ``scored/part-<batch>.parquet``: every sample's scores (table ``scored``), one shard per batch;
- ``curated/part-<batch>.parquet``: the kept samples' keys and weights (``curated``), same names;
- ``dropped_prompts.parquet``: the prompts left without a kept sample (``dropped``);
- ``report/``: the reliability report and its page;
- ``_manifest.json`` (``MANIFEST_FILE``), written last: the completion record. It lists every
  file above (``files``: name, size, sha256), the samples folder (``samples_dir``), the sha256 of
  the samples' own manifest (``input_manifest_sha256``, ``input_manifest_hash``) and every samples
  shard's size (``input_shards``).

The samples are rmsd-gen's shards, one per teacher and slice of prompts
(``samples-<teacher>-<slice>.parquet``). All teachers' shards of one slice form a shard group
(``shard_groups``), which holds every sample of its prompts. A batch is a run of consecutive groups
scored together; its output shards are named after its groups' keys (``batch_name``), so the
samples shards behind a curated shard are found again from its name (``batch_files``). Shards named
otherwise than rmsd-gen's form one group of their own, ``OTHER``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .manifests import MANIFEST_FILE
from .tables import SchemaError, shard_paths

OTHER = "other"  # the group of the shards named otherwise than rmsd-gen's
RESULT = ("scored", "curated", "report", "dropped_prompts.parquet")  # what a run writes in --out, beside its manifest
_SLICE = re.compile(r"^samples-.+-(\d+)\.parquet$")


def shard_groups(samples_dir: Path, check: bool = True) -> list[tuple[str, list[Path]]]:
    """The samples shards grouped by rmsd-gen slice, in the order of their keys (the slice number
    as written; ``OTHER`` for files of another naming). Each file is checked to be a samples shard
    (``shard_paths``) unless ``check`` is false."""
    groups: dict[str, list[Path]] = {}
    for path in shard_paths(samples_dir, "samples", check=check):
        match = _SLICE.match(path.name)
        groups.setdefault(match.group(1) if match else OTHER, []).append(path)
    if not groups:
        raise SchemaError(f"{samples_dir}: no samples shards (*.parquet) found")
    return sorted(groups.items())


def batch_name(keys: list[str]) -> str:
    """The name of a batch of consecutive groups (its output shards are ``part-<name>.parquet``):
    its only group's key, or ``<first>-<last>``."""
    return keys[0] if len(keys) == 1 else f"{keys[0]}-{keys[-1]}"


def batch_files(groups: dict[str, list[Path]], name: str) -> list[Path] | None:
    """The samples shards a batch's output shard (``part-<name>``) was scored from, given the
    samples' ``shard_groups``; None for a name that is not a batch's."""
    first, _, last = name.partition("-")
    if not last:
        return groups.get(first)
    keys = [key for key in groups if first <= key <= last]
    return [f for key in keys for f in groups[key]] if first in groups and last in groups else None


def input_manifest_hash(samples_dir: Path) -> str | None:
    """The sha256 of the samples' manifest (None without one): what an output records as
    ``input_manifest_sha256``, and what a reader compares with it."""
    manifest = Path(samples_dir) / MANIFEST_FILE
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None


__all__ = ["OTHER", "RESULT", "batch_files", "batch_name", "input_manifest_hash", "shard_groups"]
