"""A killed training resumes from exactly its checkpoint: every tensor of the model, of the optimizer
(and of the visual-aux probes, the discriminator and its optimizer) equals an uninterrupted run's
at the same step; a finished run is left as it is; a checkpoint that does not load whole is refused."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import BIN

pytestmark = pytest.mark.slow


def kill_after(command: list, checkpoint: Path, timeout: float = 300) -> None:
    """Start ``command``, SIGKILL it (its whole process group) once ``checkpoint`` is complete."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not (checkpoint / "trainer_state.json").exists():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (checkpoint.parent / "final").exists(), "the kill should land before the end"


def run(command: list) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {len(different)} of {len(a)} tensors differ, e.g. {different[0]}"


def optimizer_tensors(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    return {
        f"{i}.{name}": value for i, entry in state.items() for name, value in entry.items() if torch.is_tensor(value)
    }


def assert_same_checkpoint(a: Path, b: Path, extra: tuple[str, ...] = ()) -> None:
    assert_same_tensors(load_file(a / "model.safetensors"), load_file(b / "model.safetensors"), f"{b} model")
    assert_same_tensors(optimizer_tensors(a / "optimizer.pt"), optimizer_tensors(b / "optimizer.pt"), f"{b} optimizer")
    for name in extra:
        load = (
            load_file
            if name.endswith(".safetensors")
            else lambda p: torch.load(p, map_location="cpu", weights_only=True)
        )
        assert_same_tensors(load(a / name), load(b / name), f"{b / name}")


def digest(folder: Path) -> dict:
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_sft_with_visual_probes_resumes_exactly_and_a_finished_run_is_left_alone(bench_dir, tiny_model, tmp_path):
    def sft(out):
        return [
            str(BIN / "rmsd-train"),
            "sft",
            "--mode",
            "gt",
            "--data",
            str(bench_dir / "prompts.parquet"),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--max-steps",
            "40",
            "--save-steps",
            "4",
            "--visual-aux",
            "1.0",
        ]

    run(sft(tmp_path / "whole"))
    kill_after(sft(tmp_path / "killed"), tmp_path / "killed" / "checkpoint-8")
    run(sft(tmp_path / "killed"))
    assert_same_checkpoint(
        tmp_path / "whole" / "checkpoint-40", tmp_path / "killed" / "checkpoint-40", extra=("visual_probe.pt",)
    )
    assert_same_tensors(
        load_file(tmp_path / "whole" / "final" / "model.safetensors"),
        load_file(tmp_path / "killed" / "final" / "model.safetensors"),
        "final",
    )

    before = digest(tmp_path / "killed" / "final")
    done = run(sft(tmp_path / "killed"))
    assert "has finished" in done.stdout
    assert digest(tmp_path / "killed" / "final") == before


def test_a_checkpoint_whose_weights_do_not_load_whole_is_refused(bench_dir, tiny_model, tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "sft"
    command = [
        str(BIN / "rmsd-train"),
        "sft",
        "--mode",
        "gt",
        "--data",
        str(bench_dir / "prompts.parquet"),
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--max-steps",
        "8",
        "--save-steps",
        "4",
    ]
    kill_after(command, out / "checkpoint-4")
    weights = out / "checkpoint-4" / "model.safetensors"
    tensors = load_file(weights)
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, weights, metadata={"format": "pt"})
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "missing" in done.stderr and "checkpoint-4" in done.stderr
    assert not (out / "final").exists()


def test_rl_with_the_discriminator_resumes_exactly(distilled, tiny_model, tmp_path):
    def rl(out):
        return [
            str(BIN / "rmsd-train"),
            "rl",
            "--data",
            str(distilled),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--num-generations",
            "2",
            "--batch-size",
            "4",
            "--max-tokens",
            "12",
            "--disc-warmup-steps",
            "1",
            "--max-steps",
            "6",
            "--save-steps",
            "2",
            "--lr",
            "1e-3",
            "--disc-lr",
            "1e-3",
        ]

    run(rl(tmp_path / "whole"))
    kill_after(rl(tmp_path / "killed"), tmp_path / "killed" / "checkpoint-2")
    assert not (tmp_path / "killed" / "checkpoint-6").exists()
    warmed = (tmp_path / "killed" / "discriminator_warmup.json").read_text()
    run(rl(tmp_path / "killed"))
    assert (
        tmp_path / "killed" / "discriminator_warmup.json"
    ).read_text() == warmed  # a resumed run does not warm D up again
    # the summary covers the whole run, the steps before the kill too
    assert json.loads((tmp_path / "killed" / "discriminator_stats.json").read_text())["rl"]["logged"] == 6
    whole, killed = tmp_path / "whole" / "checkpoint-6", tmp_path / "killed" / "checkpoint-6"
    assert_same_checkpoint(whole, killed)
    disc = Path("discriminator")
    assert_same_tensors(
        load_file(whole / disc / "model.safetensors"), load_file(killed / disc / "model.safetensors"), "discriminator"
    )
    assert_same_tensors(
        load_file(whole / disc / "score_head.safetensors"),
        load_file(killed / disc / "score_head.safetensors"),
        "discriminator head",
    )
    states = [
        torch.load(c / disc / "trainer_state-0.pt", map_location="cpu", weights_only=True) for c in (whole, killed)
    ]
    flat = [{f"{i}.{k}": v for i, e in s["optimizer"]["state"].items() for k, v in e.items()} for s in states]
    assert_same_tensors(*flat, "discriminator optimizer")
    assert states[0]["draws"] == states[1]["draws"]
