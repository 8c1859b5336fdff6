"""rmsd's classes that override private methods of TRL and transformers: every such override is
recorded here with the upstream signature it was written against, and those versions are pinned.

A private method is a contract nobody promised: when an upgrade changes one, this test names the
method, so the override is read against the new upstream code before the pin moves. A new override
must be recorded here too (the failure says what to add).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from importlib.metadata import version
from pathlib import Path

import rmsd

UPSTREAM = ("trl", "transformers")
# The versions the overrides below were written and tested against: pinned in pyproject.toml and constraints.txt.
TESTED = {"trl": "1.16.0", "transformers": "5.19.0"}
# rmsd class . private method -> the signature of the upstream method it overrides, in TESTED.
SEAMS = {
    "WeightedSFTTrainer._save_checkpoint": "(self, model, trial)",
    "WeightedSFTTrainer._get_num_items_in_batch": (
        "(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None"
    ),
    "StrictResume._load_from_checkpoint": (
        "(self, resume_from_checkpoint: str, model: torch.nn.modules.module.Module | None = None) -> None"
    ),
    "StrictResume._issue_warnings_after_load": "(self, load_result: Any) -> None",
    "VideoGRPOTrainer._save_checkpoint": "(self, model, trial)",
    "VideoGRPOTrainer._generate_and_score_completions": (
        "(self, inputs: list[dict[str, torch.Tensor | typing.Any]]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "VideoGRPOTrainer._tokenize_prompts": "(self, prompts: list)",
    "VideoGRPOTrainer._generate_single_turn": (
        "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)"
    ),
    "VideoGRPOTrainer._compute_loss": "(self, model, inputs)",
    "VideoGRPOTrainer._get_per_token_logps_and_entropies": (
        "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
        "compute_aux_loss=False, "
        "pixel_values=None, image_grid_thw=None, num_images=None, pixel_attention_mask=None, spatial_shapes=None, "
        "num_tiles=None, "
        "image_sizes=None, token_type_ids=None, mm_token_type_ids=None, image_position_ids=None) "
        "-> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]"
    ),
}
OPTIONAL = {"vllm", "openai"}  # a module that needs one of these at import is skipped where it is not installed
REPO = Path(__file__).resolve().parents[1]


def _reraise(name: str):
    raise  # a package that does not import is an error here, not a package to skip (pkgutil's default)


def _rmsd_classes() -> list[type]:
    """Every class defined in rmsd's shipped modules (the tests are not shipped)."""
    classes = []
    for info in pkgutil.walk_packages(rmsd.__path__, "rmsd.", onerror=_reraise):
        if info.name.startswith("rmsd.tests"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                continue
            raise
        classes += [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]
    return classes


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{package} {v}" for package, v in versions.items())


def _is_upstream(cls: type) -> bool:
    return cls.__module__.split(".")[0] in UPSTREAM


def _callable(member):
    """The function behind a class member (method, static/class method, property), or None."""
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member if inspect.isfunction(member) else None


def _private_overrides() -> dict[str, tuple[str, str]]:
    """``Class.method`` -> (upstream ``module.Class.method`` it overrides, that method's signature),
    for every non-dunder ``_`` method an rmsd class defines that an upstream base also defines."""
    found = {}
    for cls in _rmsd_classes():
        bases = [b for b in cls.__mro__[1:] if _is_upstream(b)]
        # the class and the rmsd mixins ahead of upstream in its bases (a mixin overrides through the class it is
        # mixed into)
        for own in [c for c in cls.__mro__ if c.__module__.startswith("rmsd.")]:
            for name, member in vars(own).items():
                if (
                    not name.startswith("_")
                    or (name.startswith("__") and name.endswith("__"))
                    or _callable(member) is None
                ):
                    continue
                owner = next((b for b in bases if name in vars(b)), None)
                if owner is not None:
                    upstream = _callable(vars(owner)[name])
                    found[f"{own.__name__}.{name}"] = (
                        f"{owner.__module__}.{owner.__qualname__}.{name}",
                        str(inspect.signature(upstream)),
                    )
    return found


def test_every_private_upstream_method_rmsd_overrides_has_the_signature_it_was_written_against():
    found = _private_overrides()
    assert found, "no override found: the class discovery is broken (rmsd's trainers override TRL's private methods)"
    problems = []
    for key, (upstream, signature) in sorted(found.items()):
        if key not in SEAMS:
            problems.append(
                f"{key} overrides the private {upstream}, which is not recorded: read it against the upstream code, "
                f"then add to SEAMS in {Path(__file__).name}:\n    {key!r}: {signature!r},"
            )
        elif SEAMS[key] != signature:
            problems.append(
                f"{key}: the signature of {upstream} changed since rmsd was written against it "
                f"({_versions(TESTED)}; installed: {_versions({p: version(p) for p in TESTED})}):\n"
                f"    recorded: {SEAMS[key]}\n    now:      {signature}\n"
                "  check the override against the new upstream code, then update SEAMS and the pins"
            )
    for key in sorted(set(SEAMS) - set(found)):
        problems.append(
            f"{key} is recorded in SEAMS but overrides no private upstream method any more (removed here or upstream): "
            "check that nothing relied on it, then remove the entry"
        )
    assert not problems, "\n".join(problems)


def test_pyproject_and_constraints_pin_the_versions_the_seams_were_recorded_against():
    pyproject = (REPO / "pyproject.toml").read_text()
    constraints = (REPO / "constraints.txt").read_text()
    for package, tested in TESTED.items():
        pin = f"{package}=={tested}"
        assert re.search(rf'^\s*"{re.escape(pin)}",', pyproject, re.M), (
            f"pyproject.toml must depend on {pin}: the version SEAMS was recorded against"
        )
        assert re.search(rf"^{re.escape(pin)}$", constraints, re.M), (
            f"constraints.txt must pin {pin}, as pyproject.toml does"
        )
