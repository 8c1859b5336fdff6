"""Stage boundaries, as the README states them: gen, filter and train meet in Parquet files.

What does cross a stage is a documented public module that both sides import (``PUBLIC`` below,
each with its reason). The checker reads every module's source (AST, nothing is imported) and
reports:

- a private name (``_name``, not ``__dunder__``) of another rmsd module, imported
  (``from rmsd.x import _name``), read off an imported module (``x._name``), or patched or read
  by name (``setattr(x, "_name", ...)``, ``monkeypatch.setattr("rmsd.x._name", ...)``);
- a module of one stage (gen, filter, train) importing another stage's module that is not in
  ``PUBLIC``;
- a stage-neutral module (``models.py``, ``synth.py``, ``schemas/``, the package's
  ``__init__``) importing any stage;
- an import from an rmsd module that does not exist (a lazy import left behind by a move).

The private-name rule covers the package, ``tests/``, ``bench/`` and ``experiments/``; the stage
rules cover the package only (a test or a benchmark may drive several stages).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package ``rmsd``
SKIP = {".venv", "build", "runs", "docs", "__pycache__", ".git", "rmsd.egg-info"}
STAGES = ("gen", "filter", "train")
OUTSIDE_PACKAGE = ("tests", "bench", "experiments")  # scanned for the private-name rule only

# Modules of one stage that another stage may import: the documented public contracts.
PUBLIC = {
    "rmsd.gen.backends": "generation backends: train's RL rollouts and evaluation generate with rmsd-gen's engines",
    "rmsd.gen.frames": "frame decoding: filter's page and train's batches decode the frames a sample was made from",
    "rmsd.gen.adapters": "load_prompts, the one reader of prompts files: train's evaluation and ground-truth SFT",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def _is_module(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] != "rmsd":
        return False
    path = ROOT.joinpath(*parts[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a file under ROOT, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[-1] == "__init__"
    if package:
        parts = parts[:-1]
    return ".".join(["rmsd", *parts]), package


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def check_source(
    source: str, module: str, package: bool = False, stage_rules: bool = True
) -> list[tuple[int, str, str]]:
    """Violations in one module's source, ``(line, target, message)``: ``target`` is the private name
    or the module of another stage reached. ``module`` is the source's dotted name (``package``: it
    is a package's ``__init__``); ``stage_rules=False`` checks private names only."""
    tree = ast.parse(source)
    here = module if package else module.rpartition(".")[0]
    bound: dict[str, str] = {}  # local name -> the rmsd module it names
    found: list[tuple[int, str, str]] = []

    def imported(line: int, target: str) -> None:
        """``target``: a module, or a module's attribute, that this module imports."""
        parts = target.split(".")
        if any(_private(p) for p in parts):
            found.append((line, target, f"private name {target}"))
        owner = target if _is_module(target) else target.rpartition(".")[0]
        if not stage_rules or owner.split(".")[:2] == module.split(".")[:2]:
            return
        importer, reached = _stage(module), _stage(owner)
        if reached is None:
            return
        if importer is None:
            found.append((line, owner, f"stage-neutral {module} imports the {reached} stage ({owner})"))
        elif owner not in PUBLIC:
            found.append((line, owner, f"{importer} imports {owner}, not a public module of {reached}"))

    def chain(node: ast.AST) -> list[str] | None:
        """``a.b.c`` as ["a", "b", "c"], for a chain of attributes on a name."""
        if isinstance(node, ast.Name):
            return [node.id]
        if isinstance(node, ast.Attribute) and (base := chain(node.value)) is not None:
            return [*base, node.attr]
        return None

    def reached(line: int, names: list[str]) -> None:
        """Attribute access ``names[0].names[1]...`` on a bound module: private attributes reported."""
        if names[0] not in bound:
            return
        current = bound[names[0]]
        for name in names[1:]:
            if _is_module(f"{current}.{name}"):
                current = f"{current}.{name}"
                continue
            if _private(name):
                found.append((line, f"{current}.{name}", f"private name {current}.{name}"))
            return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "rmsd":
                    imported(node.lineno, alias.name)
                    bound[alias.asname or "rmsd"] = alias.name if alias.asname else "rmsd"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                if node.level > len(parts):
                    continue  # beyond the package: not an rmsd module
                base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != "rmsd":
                continue
            if not _is_module(base):  # a lazy import of a moved module fails only on the path that runs it
                found.append((node.lineno, base, f"no module {base}"))
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                imported(node.lineno, target)
                if _is_module(target):
                    bound[alias.asname or alias.name] = target

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (names := chain(node)):
            reached(node.lineno, names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name not in ("getattr", "setattr", "delattr", "hasattr"):
                continue
            first, second = node.args[0], node.args[1] if len(node.args) > 1 else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("rmsd."):
                owner, _, attr = first.value.rpartition(".")  # monkeypatch.setattr("rmsd.x.y._name", value)
                if _private(attr) or any(_private(p) for p in owner.split(".")):
                    found.append((node.lineno, first.value, f"private name {first.value}"))
            elif (names := chain(first)) and isinstance(second, ast.Constant) and isinstance(second.value, str):
                reached(node.lineno, [*names, second.value])
    return sorted(set(found))


def scanned_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not any(p in SKIP or p.startswith(".") for p in parts):
            files.append(path)
    return files


@functools.cache
def violations() -> list[tuple[str, int, str, str]]:
    """Every violation in the repository: ``(file, line, target, message)``."""
    out = []
    for path in scanned_files():
        rel = path.relative_to(ROOT)
        module, package = module_name(path)
        in_package = rel.parts[0] not in OUTSIDE_PACKAGE
        for line, target, message in check_source(path.read_text(), module, package, stage_rules=in_package):
            out.append((rel.as_posix(), line, target, message))
    return out


def test_no_module_crosses_a_boundary():
    found = violations()
    assert not found, "stage boundaries crossed (tests/test_boundaries.py says what may cross):\n" + "\n".join(
        f"{rel}:{line}: {message}" for rel, line, _, message in found
    )


def test_public_modules_exist_and_say_so():
    for module in PUBLIC:
        path = ROOT.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert path.is_file(), module
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "public" in doc.lower(), f"{module}'s docstring does not say it is a public cross-stage contract"


OFFENDING = """
from ..filter.run import _input_manifest_hash
from ..filter import run
import rmsd.filter.report as report
from rmsd.gen import frames
from ..gen.backends.hf import HFBackend
from ..synth import COLOURS
from ..models import load_model
from ..nowhere import thing


def f(monkeypatch):
    run._WORKER_ENV
    report.partial_stats
    frames.sample_frames
    setattr(run, "_on_polars_thread", None)
    monkeypatch.setattr("rmsd.filter.score._COUNTS_PER_ROW", 0)
"""


def test_the_checker_catches_offences():
    found = [message for _, _, message in check_source(OFFENDING, "rmsd.train.data")]
    assert found == [
        "train imports rmsd.filter.run, not a public module of filter",
        "private name rmsd.filter.run._input_manifest_hash",
        "train imports rmsd.filter.run, not a public module of filter",
        "train imports rmsd.filter.report, not a public module of filter",
        "train imports rmsd.gen.backends.hf, not a public module of gen",
        "no module rmsd.nowhere",
        "private name rmsd.filter.run._WORKER_ENV",
        "private name rmsd.filter.run._on_polars_thread",
        "private name rmsd.filter.score._COUNTS_PER_ROW",
    ]
    # the same source in a stage-neutral module: every stage import is refused, public or not
    neutral = [message for _, _, message in check_source(OFFENDING, "rmsd.schemas.example")]
    assert "stage-neutral rmsd.schemas.example imports the gen stage (rmsd.gen.frames)" in neutral
    assert "stage-neutral rmsd.schemas.example imports the gen stage (rmsd.gen.backends.hf)" in neutral
    # outside the package (tests, benchmarks) only private names and missing modules count
    outside = [message for _, _, message in check_source(OFFENDING, "rmsd.tests.x", stage_rules=False)]
    assert outside and all(message.startswith(("private name", "no module")) for message in outside)
