"""The distribution: console scripts, --help, and a wheel that maps the folders onto rmsd.*."""

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import BIN

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command,options",
    [
        (
            ["rmsd-gen", "run"],
            ["--pipeline", "--prompts", "--out", "--limit", "--config", "--address", "--media-root", "--progress"],
        ),
        (["rmsd-gen", "synth"], ["--out", "--num", "--seed", "--workers"]),
        (["rmsd-train", "init-model"], ["--out", "--preset", "--seed"]),
    ],
)
def test_help_documents_every_option(command, options):
    done = subprocess.run(
        [BIN / command[0], *command[1:], "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": str(BIN)},
    )
    assert done.returncode == 0, done.stderr
    for option in options:
        assert option in done.stdout


def test_every_console_script_starts():
    for script in ("rmsd-gen", "rmsd-filter", "rmsd-train"):
        done = subprocess.run([BIN / script, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)


def test_wheel_maps_top_level_folders_onto_rmsd(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("rmsd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "rmsd/__init__.py",
        "rmsd/models.py",
        "rmsd/pipelines.yaml",
        "rmsd/gen/cli.py",
        "rmsd/gen/backends/hf.py",
        "rmsd/filter/__init__.py",
        "rmsd/train/cli.py",
        "rmsd/schemas/tables.py",
    ):
        assert module in names, module
    assert not any(n.startswith(("rmsd/tests", "rmsd/bench", "tests/")) for n in names)
