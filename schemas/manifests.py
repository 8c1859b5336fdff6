"""What stages' manifests (``_manifest.json``) record: the paths between their outputs, the
completion record of each output folder, and the identity of their inputs; and the lock that keeps
one run per folder.

A stage's manifest names the input it read twice: relative to the manifest's own folder
(``<key>_relative``) and absolute (``<key>``, also what manifests written before the relative
path existed hold). A reader tries the relative path first, so outputs moved together (a run's
benchmark, samples and filter output, say) still find each other; then the absolute one, so an
output moved alone still finds inputs that stayed where they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path


def record_path(key: str, path: Path, folder: Path) -> dict[str, str | None]:
    """``{key: path absolute, key_relative: path relative to folder}`` for a manifest in ``folder``."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    try:
        relative: str | None = Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        relative = None
    return {key: str(path), f"{key}_relative": relative}


def recorded_paths(key: str, info: dict, folder: Path) -> list[Path]:
    """Where the manifest ``info`` in ``folder`` says ``key`` is, in the order to try: relative to
    ``folder``, then absolute."""
    tried: list[Path] = []
    if info.get(f"{key}_relative"):
        tried.append((Path(folder).resolve() / info[f"{key}_relative"]).resolve())
    if info.get(key) and Path(info[key]) not in tried:
        tried.append(Path(info[key]))
    return tried


# --- Completion records, locks and input identities ---------------------------------------------
#
# A stage's output folder is complete when its manifest says so, and only then: the manifest is
# written last, after every file it lists (``files``: each file's bytes and sha256, by its path in
# the folder), and withdrawn (deleted) first, before a run changes anything else in the folder. A
# reader checks the files it reads against that record, so it reads one complete result or refuses
# the folder; never a mix of two runs, or a fraction of one.

MANIFEST_FILE = "_manifest.json"
LOCK_FILE = ".rmsd.lock"  # one job per folder at a time: fcntl.flock, which the OS releases when the holder dies
_WHOLE = 2**20  # model files up to this size are hashed whole; larger ones (weights) by samples of them
_SAMPLES, _SAMPLE = 8, 2**16


class RunRefused(RuntimeError):
    """A run refused before it changed anything: its output folder is busy or overlaps its input,
    or its input is unfinished or changed (the command line's exit status 2)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """What a completion record holds of one file: its size and sha256."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def check_recorded(folder: Path, recorded: dict, present: list[Path], prefix: str = "") -> str | None:
    """Why the files ``present`` (those of ``folder`` whose path starts with ``prefix``) are not
    the ones the completion record ``recorded`` lists there (by name and size), or None."""
    folder = Path(folder)
    names = {Path(p).relative_to(folder).as_posix(): Path(p) for p in present}
    listed = {name: info for name, info in recorded.items() if name.startswith(prefix)}
    if missing := sorted(set(listed) - set(names)):
        return f"{len(missing)} recorded files are missing (e.g. {missing[0]})"
    if extra := sorted(set(names) - set(listed)):
        return f"{len(extra)} files are not in the record (e.g. {extra[0]})"
    for name, path in names.items():
        if path.stat().st_size != listed[name]["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the record {listed[name]['bytes']}"
    return None


def withdraw_completion(folder: Path) -> None:
    """Delete ``folder``'s manifest, durably, before a run changes anything else there."""
    Path(folder, MANIFEST_FILE).unlink(missing_ok=True)
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path, shared: bool = False):
    """Hold ``folder``'s lock while the block runs: exclusive for the job writing the folder, shared
    for one reading it (exclusive: the folder and its lock file are created if need be; ``shared``:
    where there is no lock file, or it cannot be opened, nothing is held; yields whether a lock is
    held). A folder locked otherwise is refused
    at once (``RunRefused``). The OS releases the lock when its process ends, killed or not: a
    killed run never blocks the next one."""
    path = Path(folder) / LOCK_FILE
    if not shared:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY) if shared else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if not shared:
            raise
        yield False
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunRefused(
                f"{folder} is being written by another rmsd-gen or rmsd-filter run (it holds {path}): wait for that "
                "run to end"
                if shared
                else f"{folder} is in use by another rmsd-gen or rmsd-filter run (it holds {path}): "
                "wait for that run to end, "
                "or use another --out folder"
            ) from None
        yield True
    finally:
        os.close(fd)  # releases the lock


def check_apart(out: Path, inputs: dict[str, Path]) -> None:
    """Refuse an output folder that is, holds or sits inside one of its ``inputs`` (by what they are)."""
    out = Path(out).resolve()
    for what, path in inputs.items():
        path = Path(path).resolve()
        relation = (
            "is"
            if out == path
            else "holds"
            if path.is_relative_to(out)
            else "sits inside"
            if out.is_relative_to(path)
            else None
        )
        if relation:
            raise RunRefused(
                f"the output folder {out} {relation} the {what} ({path}): a run would overwrite or mix with what it "
                "reads; choose an --out apart from it"
            )


def model_fingerprint(path: str | os.PathLike) -> dict | None:
    """A checkpoint folder's identity, cheap for a 100 GB one: each file's path and size, and the
    sha256 of files up to 1 MiB (config, safetensors index, tokenizer files) whole, of larger ones
    (weights) their first and last MiB and 8 blocks of 64 KiB evenly between, so that a checkpoint
    swapped for another of the same architecture (whose weight headers are the same) differs. None
    for a folder that cannot be read here (a cluster node's local disk)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest, count, total = hashlib.sha256(), 0, 0
    for file in sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(file, "rb") as handle:
            if size <= _WHOLE:
                digest.update(handle.read())
            else:
                step = (size - 2 * _WHOLE) // (_SAMPLES + 1)
                for offset, length in [
                    (0, _WHOLE),
                    *(((i + 1) * step + _WHOLE, _SAMPLE) for i in range(_SAMPLES)),
                    (size - _WHOLE, _WHOLE),
                ]:
                    handle.seek(offset)
                    digest.update(handle.read(length))
        count, total = count + 1, total + size
    return {"sha256": digest.hexdigest(), "files": count, "bytes": total}


def samples_unfinished(folder: Path, shards: list[Path]) -> str | None:
    """Why the samples folder ``folder`` (its shards: ``shards``) is not a finished rmsd-gen job's
    complete result, or None if it is, or if rmsd-gen did not write it (no ``_job.json``, and no
    manifest of rmsd-gen's: a folder of shards made otherwise is taken as it is)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    info = json.loads(manifest.read_text()) if manifest.exists() else None
    if not (folder / "_job.json").exists() and (info is None or "run_id" not in info):
        return None
    if info is None:
        return "its rmsd-gen job is unfinished (no manifest: running now, or interrupted)"
    if not info.get("complete"):
        counts = info.get("counts", {})
        return (
            f"its rmsd-gen job is unfinished (its manifest says incomplete: {counts.get('samples')} of "
            f"{counts.get('expected_samples')} samples, {counts.get('failed_shards', 0)} failed shards)"
        )
    if "files" in info and (why := check_recorded(folder, info["files"], shards)):
        return f"it changed since its rmsd-gen job finished: {why}"
    return None
