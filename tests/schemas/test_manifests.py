"""The pieces every stage's output folder is kept whole with: its lock, the check that an output
stays apart from its input, and a checkpoint's fingerprint."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from rmsd.models import init_model
from rmsd.schemas.manifests import (
    LOCK_FILE,
    RunRefused,
    check_apart,
    check_recorded,
    file_record,
    folder_lock,
    model_fingerprint,
)

HOLD = (
    "import sys, time\nfrom rmsd.schemas.manifests import folder_lock\n"
    "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
)


def test_one_run_per_folder_and_a_killed_holder_blocks_nothing(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunRefused, match="in use by another rmsd-gen or rmsd-filter run"):
            with folder_lock(tmp_path):
                pass
        with pytest.raises(RunRefused, match="being written by another"):  # a reader of the folder waits for its writer
            with folder_lock(tmp_path, shared=True):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with folder_lock(tmp_path):  # the OS released the killed run's lock
        pass
    with folder_lock(tmp_path, shared=True) as held, folder_lock(tmp_path, shared=True):  # readers share it
        assert held
        with pytest.raises(RunRefused):
            with folder_lock(tmp_path):
                pass
    assert (tmp_path / LOCK_FILE).exists()
    with folder_lock(tmp_path / "none", shared=True) as held:  # nothing to read-lock where no run ever wrote
        assert not held


def test_an_output_that_is_holds_or_sits_inside_its_input_is_refused(tmp_path):
    samples = tmp_path / "samples"
    for out, relation in ((samples, "is"), (samples / "f", "sits inside"), (tmp_path, "holds")):
        with pytest.raises(RunRefused, match=f"{relation} the samples folder"):
            check_apart(out, {"samples folder": samples})
    check_apart(tmp_path / "filtered", {"samples folder": samples})
    check_apart(tmp_path / "samples-2", {"samples folder": samples})  # a prefix of the name is not a folder above


def test_recorded_files_are_checked_by_name_and_size(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_text(name)
    record = {name: file_record(tmp_path / name) for name in ("a", "b")}
    assert check_recorded(tmp_path, record, [tmp_path / "a", tmp_path / "b"]) is None
    assert "1 recorded files are missing (e.g. b)" in check_recorded(tmp_path, record, [tmp_path / "a"])
    (tmp_path / "c").write_text("c")
    assert "not in the record (e.g. c)" in check_recorded(tmp_path, record, [tmp_path / p for p in "abc"])
    (tmp_path / "b").write_text("bb")
    assert "b has 2 bytes, the record 1" in check_recorded(tmp_path, record, [tmp_path / "a", tmp_path / "b"])


def test_a_checkpoint_fingerprint_is_cheap_and_tells_swapped_weights_apart(tmp_path, tiny_model):
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    print_ = model_fingerprint(tiny_model)
    assert print_ == model_fingerprint(copy)  # copied elsewhere (new mtimes): the same model
    assert print_["files"] == len([p for p in tiny_model.iterdir() if p.is_file()])
    other = init_model(tmp_path / "other", "tiny", seed=1)  # same architecture and layout, other weights
    assert model_fingerprint(other)["bytes"] == print_["bytes"] and model_fingerprint(other) != print_
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the last byte: inside the last MiB, which is read
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy) != print_
    assert model_fingerprint(tmp_path / "not-here") is None
