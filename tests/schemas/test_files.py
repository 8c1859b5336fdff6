"""Files and folders rmsd writes get the process's umask, like any Unix tool's: 0644 under umask 022
(a team on a shared cluster reads them), 0600 under 077; and they still appear whole."""

import os
import stat

import pytest

from rmsd.gen.writer import prepare_output
from rmsd.models import init_model
from rmsd.schemas.files import atomic_file, write_json
from rmsd.schemas.tables import to_table, write_table


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_tables_and_json_files_get_the_umask_mode(tmp_path, umask):
    row = {"prompt_id": "p", "video": "v.mp4", "question": "q", "task_type": "ocr"}
    table = write_table(to_table([row], "prompts"), tmp_path / "prompts.parquet", "prompts")
    write_json(tmp_path / "a.json", {"a": 1})
    prepare_output(tmp_path / "samples", {"run_id": "x"})  # rmsd-gen's job file
    for path in (table, tmp_path / "a.json", tmp_path / "samples" / "_job.json"):
        assert mode(path) == 0o666 & ~umask, (path, oct(mode(path)))
    assert mode(tmp_path / "samples") == 0o777 & ~umask
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_built_model_folder_gets_the_umask_mode(tmp_path, umask):
    folder = init_model(tmp_path / "m", "tiny")
    assert mode(folder) == 0o777 & ~umask
    assert {mode(p) for p in folder.iterdir()} == {0o666 & ~umask}


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    (tmp_path / "x.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.json") as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("killed midway")
    assert (tmp_path / "x.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_trained_models_get_the_umask_mode_though_safetensors_writes_0600(tmp_path, umask):
    """rmsd-train's checkpoints and final model: the Trainer callback and save_final (faked trainer)."""
    from types import SimpleNamespace

    from rmsd.train.checkpoints import save_final, umask_modes

    def save_weights(folder):
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, "model.safetensors"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    save_weights(tmp_path / "checkpoint-3")
    umask_modes().on_save(
        SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=3, is_world_process_zero=True), None
    )
    trainer = SimpleNamespace(
        is_world_process_zero=lambda: True,
        save_model=save_weights,
        accelerator=SimpleNamespace(wait_for_everyone=lambda: None),
    )
    final = save_final(trainer, SimpleNamespace(save_pretrained=lambda folder: None), tmp_path)
    for folder in (tmp_path / "checkpoint-3", final):
        assert mode(folder) == 0o777 & ~umask
        assert mode(folder / "model.safetensors") == 0o666 & ~umask
