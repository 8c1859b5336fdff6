"""Writing output files whole, with the permissions any Unix tool gives them.

Every file rmsd writes appears at once: it is written to a temporary name beside its place, synced,
and renamed over it. The temporary file (and folder) is created as ``open()`` and ``mkdir()``
create one, mode 0666 (0777) less the process's umask, because the rename keeps its mode:
``tempfile.mkstemp``'s 0600 (``mkdtemp``'s 0700) would make every output unreadable to the rest of a
team on a shared cluster whatever their umask says. Folders written by libraries that do the same
(safetensors writes weights 0600) get the umask's modes back with ``match_umask``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path


def _beside(path: Path, make) -> Path:
    """``make(candidate)`` on a fresh hidden name beside ``path``: ``.tmp-<name>-<random>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = path.parent / f".tmp-{path.name}-{secrets.token_hex(6)}"
        try:
            make(candidate)
            return candidate
        except FileExistsError:  # another writer drew the same name: draw again
            continue


def temp_file_beside(path: Path) -> Path:
    """An empty file beside ``path``, mode 0666 less the umask."""
    return _beside(Path(path), lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def temp_dir_beside(path: Path) -> Path:
    """An empty folder beside ``path``, mode 0777 less the umask."""
    return _beside(Path(path), lambda p: os.mkdir(p, 0o777))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """A temporary path beside ``path`` to write; on success it is synced to disk and renamed to
    ``path``, on failure removed: a reader sees either no file or the whole file."""
    path = Path(path)
    tmp = temp_file_beside(path)
    try:
        yield str(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: dict) -> None:
    """``data`` as indented JSON with sorted keys, written whole (``atomic_file``)."""
    with atomic_file(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def match_umask(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything below it the read and write bits the umask allows (execute
    bits of folders too), as if created by ``open()``/``mkdir()``: for files a library wrote 0600."""
    mask = current_umask()
    for root, _dirs, files in os.walk(folder):
        for path, allowed in [(root, 0o777)] + [(os.path.join(root, f), 0o666) for f in files]:
            mode = os.stat(path).st_mode & 0o7777
            if (mode | allowed) & ~mask != mode:
                os.chmod(path, (mode | allowed) & ~mask)
