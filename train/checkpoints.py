"""Checkpoints that resume exactly, and a final model written once.

transformers saves a checkpoint in the model's original (Hub) layout: a Qwen2-VL's weights are
named ``model.layers.*`` and ``visual.*`` on disk, ``model.language_model.*`` and ``model.visual.*``
in memory. ``from_pretrained`` maps one to the other; the Trainer's own resume
(``Trainer._load_from_checkpoint``) reads the file into ``load_state_dict(strict=False)`` and only
logs the keys it missed, so a resumed run used to continue from its initial weights.
``StrictResume`` loads the checkpoint through ``from_pretrained`` and refuses any key missed, left
over or of another shape.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..schemas.files import match_umask

FINAL = "final"


class StrictResume:
    """Mixin for a transformers ``Trainer`` (ahead of it in the bases): a resume restores the
    checkpoint's weights exactly, or fails naming the keys that did not load; and every checkpoint
    gets the umask's file modes (safetensors writes weights 0600, unreadable to the rest of a team)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(umask_modes())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from transformers import PreTrainedModel

        model = self.model if model is None else model
        if self.is_fsdp_enabled or not isinstance(model, PreTrainedModel) or getattr(model, "peft_config", None):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # their own loaders; checked below
        saved, info = type(model).from_pretrained(
            resume_from_checkpoint, output_loading_info=True, dtype=model.dtype, local_files_only=True
        )
        _refuse_partial_load(
            resume_from_checkpoint, info.get("missing_keys"), info.get("unexpected_keys"), info.get("mismatched_keys")
        )
        model.load_state_dict(saved.state_dict(), strict=True)

    def _issue_warnings_after_load(self, load_result) -> None:
        """Upstream logs a warning; a resume from a partial load is refused (tied weights aside)."""
        ignored = set(self.model._keys_to_ignore_on_save or ())
        if load_result.missing_keys and set(load_result.missing_keys) == ignored:
            self.model.tie_weights()
            return
        _refuse_partial_load("checkpoint", load_result.missing_keys, load_result.unexpected_keys)


def umask_modes():
    """A Trainer callback giving each saved checkpoint folder the umask's modes (``match_umask``)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class UmaskModes(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                match_umask(folder)

    return UmaskModes()


def _refuse_partial_load(where, missing=None, unexpected=None, mismatched=None) -> None:
    problems = {"missing": missing, "unexpected": unexpected, "of another shape": mismatched}
    found = {name: sorted(map(str, keys)) for name, keys in problems.items() if keys}
    if found:
        details = "; ".join(f"{len(keys)} {name} (e.g. {keys[0]})" for name, keys in found.items())
        raise RuntimeError(
            f"{where}: its weights do not match the model: {details}. Refusing to resume from a partial load."
        )


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one was cut
    short (a kill while saving) and cannot be resumed from."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in ``out``."""
    checkpoints = sorted(Path(out).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in checkpoints if _complete(c)]
    return str(complete[-1]) if complete else None


def finished(out: Path) -> Path | None:
    """``out/final`` of a run that finished (it is renamed into place whole, last)."""
    final = Path(out) / FINAL
    return final if final.is_dir() else None


def save_final(trainer, processor, out: Path, extra=None) -> Path:
    """The trained model and processor to ``out/final``: written beside it, then renamed into place,
    so ``final/`` is either absent or whole. ``extra(folder)`` adds files (the main process runs it)."""
    out = Path(out)
    final, partial = out / FINAL, out / f".{FINAL}.partial"
    main = trainer.is_world_process_zero()
    if main and partial.exists():
        shutil.rmtree(partial)
    trainer.save_model(str(partial))  # every process takes part (sharded models gather here)
    if main:
        processor.save_pretrained(str(partial))
        if extra is not None:
            extra(partial)
        match_umask(partial)  # safetensors writes weights 0600
        if final.exists():  # --no-resume over a finished run: the new model replaces the old
            shutil.rmtree(final)
        os.replace(partial, final)
    trainer.accelerator.wait_for_everyone()
    return final


__all__ = ["FINAL", "StrictResume", "finished", "last_checkpoint", "save_final"]
