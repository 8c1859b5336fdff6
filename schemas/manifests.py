"""Paths between stages' outputs, as their manifests (``_manifest.json``) record them.

A stage's manifest names the input it read twice: relative to the manifest's own folder
(``<key>_relative``) and absolute (``<key>``, also what manifests written before the relative
path existed hold). A reader tries the relative path first, so outputs moved together (a run's
benchmark, samples and filter output, say) still find each other; then the absolute one, so an
output moved alone still finds inputs that stayed where they were.
"""

from __future__ import annotations

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
