"""A run's outputs moved together (benchmark, rmsd-gen samples, rmsd-filter output) still train:
each manifest records its input relative to itself; when the samples are gone, the error names
the folders it tried and says what to do."""

import json
import shutil
import subprocess

import pytest

from rmsd.schemas.tables import SchemaError
from rmsd.train.data import example_frame, sft_dataset, video_base
from tests.conftest import BIN
from tests.train.conftest import distil


def _run_outputs(root, bench_dir):
    """root/benchmark (the synthetic benchmark), root/samples (per train question a right answer and
    an unwrapped one, with the manifest paths rmsd-gen records) and root/filtered (rmsd-filter's output)."""
    bench = shutil.copytree(bench_dir, root / "benchmark")
    return distil(root, bench / "prompts.parquet")


@pytest.fixture()
def moved(bench_dir, tmp_path):
    """The three folders built in one place, then moved together to another; the originals are gone."""
    tmp_path = tmp_path.resolve()
    filtered = _run_outputs(tmp_path / "before", bench_dir)
    examples = example_frame("weighted", filtered)
    shutil.move(tmp_path / "before", tmp_path / "after")
    assert not filtered.exists()
    return tmp_path / "after", examples


def test_the_filter_output_records_its_samples_relative_to_itself(moved):
    root, _ = moved
    manifest = json.loads((root / "filtered" / "_manifest.json").read_text())
    assert manifest["samples_dir_relative"] == "../samples"


def test_a_moved_run_finds_its_samples_and_videos_through_the_relative_paths(moved):
    root, examples = moved
    assert example_frame("weighted", root / "filtered").equals(examples)
    assert (
        example_frame("unfiltered", root / "filtered").height == 2 * examples.height
    )  # scored from the moved samples too
    assert next(iter(sft_dataset("best", root / "filtered", streaming=True)))["response"].startswith("<think>")
    assert video_base("weighted", root / "filtered") == root / "benchmark"
    assert video_base("single", root / "samples") == root / "benchmark"


def test_samples_not_found_are_named_with_what_to_do_and_can_be_given_explicitly(moved, tmp_path):
    root, examples = moved
    tmp_path = tmp_path.resolve()
    elsewhere = shutil.move(root / "samples", tmp_path / "elsewhere")
    with pytest.raises(SchemaError) as error:
        example_frame("weighted", root / "filtered")
    message = str(error.value)
    assert (
        str(root / "samples") in message and str(tmp_path / "before" / "samples") in message
    )  # relative first, then absolute
    assert "move the samples folder and the filter output together" in message and "--samples" in message
    with pytest.raises(SchemaError, match="--samples"):
        video_base("weighted", root / "filtered")
    assert example_frame("weighted", root / "filtered", samples=elsewhere).equals(examples)
    with pytest.raises(FileNotFoundError) as error:  # the samples moved away from the benchmark, which moved too
        video_base("weighted", root / "filtered", samples=elsewhere)
    assert str(tmp_path / "benchmark") in str(error.value) and str(tmp_path / "before" / "benchmark") in str(
        error.value
    )
    assert "--video-base" in str(error.value)
    with pytest.raises(SchemaError, match=f"{tmp_path / 'gone'}.* are not there"):
        example_frame("weighted", root / "filtered", samples=tmp_path / "gone")


def test_a_manifest_with_only_the_absolute_path_still_reads(bench_dir, tmp_path):
    """Outputs written before the relative paths were recorded: the absolute one is used."""
    tmp_path = tmp_path.resolve()
    filtered = _run_outputs(tmp_path, bench_dir)
    for manifest, key in (
        (filtered / "_manifest.json", "samples_dir"),
        (tmp_path / "samples" / "_manifest.json", "prompts_path"),
    ):
        info = json.loads(manifest.read_text())
        del info[f"{key}_relative"]
        manifest.write_text(json.dumps(info))
    info = json.loads((filtered / "_manifest.json").read_text())
    info["input_manifest_sha256"] = None  # the samples' manifest was rewritten above
    (filtered / "_manifest.json").write_text(json.dumps(info))
    shutil.move(filtered, tmp_path / "filtered-alone")  # the filter output moved alone: its samples stayed
    assert example_frame("weighted", tmp_path / "filtered-alone").height > 0
    assert video_base("weighted", tmp_path / "filtered-alone") == tmp_path / "benchmark"


@pytest.mark.slow
def test_rmsd_train_sft_trains_from_the_moved_copy(moved, tiny_model):
    root, _ = moved
    out = root / "student"
    done = subprocess.run(
        [
            str(BIN / "rmsd-train"),
            "sft",
            "--mode",
            "weighted",
            "--data",
            str(root / "filtered"),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--save-steps",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "final" / "model.safetensors").exists()
