"""Shared fixtures: a tiny model and a small synthetic benchmark, built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Keep Ray, HF and rmsd caches inside the test session; nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def rmsd_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("rmsd-home")
    os.environ["RMSD_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from rmsd.models import init_model

    return init_model(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    """8 videos x 6 questions of the synthetic benchmark."""
    from rmsd.synth import synthesise

    out = tmp_path_factory.mktemp("bench")
    synthesise(out, 8, seed=7, workers=1, progress=False)
    return out


def write_pipelines(path: Path, body: str) -> Path:
    path.write_text("version: 1\npipelines:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return path


def torchrun(port: int, *args) -> list[str]:
    """The command of two processes on this machine, as torchrun launches them (DDP over gloo on
    CPU), their rendezvous on ``port`` (each test its own: xdist runs tests side by side)."""
    return [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(port), *map(str, args)]


def gen(*args, cwd=None, check=None, **popen):
    """Run rmsd-gen as a user does; assert its exit status when ``check`` is given."""
    done = subprocess.run([str(BIN / "rmsd-gen"), *map(str, args)], capture_output=True, text=True, cwd=cwd, **popen)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`rmsd-gen synth` then `rmsd-gen run --pipeline demo`, nothing in between (the README's path)."""
    work = tmp_path_factory.mktemp("demo")
    gen("synth", "--out", work / "bench", "--num", 3, "--seed", 1, cwd=work, check=0)
    done = gen(
        "run",
        "--pipeline",
        "demo",
        "--prompts",
        work / "bench" / "prompts.parquet",
        "--out",
        work / "out",
        cwd=work,
        check=0,
    )
    return work, done
