"""rmsd-train's settings, declared once each, the way TRL declares its own.

``rmsd-train sft`` and ``rmsd-train rl`` parse two dataclasses with TRL's ``TrlParser``:

- ``Inputs``: what to train on (the data, the student, the pipeline whose frames and prompt
  templates it sees);
- the trainer's config, a subclass of TRL's (``DistillSFTConfig`` of ``trl.SFTConfig``,
  ``AdversarialConfig`` of ``trl.GRPOConfig``) with rmsd's own fields, each documented on its field.

Every field of TRL's configs (and of transformers' ``TrainingArguments`` beneath them) is therefore
an option of the command line (``--gradient_checkpointing``, ``--bf16``, ``--deepspeed``,
``--report_to``, ...) and a key of a YAML recipe (``--config recipe.yaml``; command-line options
override the recipe). ``rmsd-train sft --help`` lists them all.

Where rmsd's defaults differ from TRL's they are redeclared here with the reason (the paper's
values, TensorBoard logs, two checkpoints kept), with the short aliases rmsd's commands have always
had (``--out``, ``--lr``, ``--batch-size``, ``--grad-accum``, ``--epochs``).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers.trainer_utils import SchedulerType
from trl import GRPOConfig, SFTConfig, TrlParser

SFTMode = Literal["best", "weighted", "filtered", "unfiltered", "single", "gt"]
PAPER_WEIGHTS = [0.4, 0.1, 0.1, 0.4]  # alpha (discriminator), beta (outer format), eta (task format), delta (content)


@dataclass
class Inputs:
    """What a training run reads."""

    _argument_group_name = "rmsd inputs"

    data: str | None = field(
        default=None,
        metadata={
            "help": "sft best/weighted/filtered/unfiltered and rl: an rmsd-filter output; "
            "sft single: an rmsd-gen samples folder; sft gt: a prompts file (required)"
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "student checkpoint folder (Hugging Face format); default: the pipeline's "
            "train.student. rl starts from the SFT-warmed student"
        },
    )
    init: str | None = field(
        default=None, metadata={"help": "sft: build the student from this preset (tiny|demo) if --model does not exist"}
    )
    pipeline: str = field(
        default="demo",
        metadata={"help": "pipeline whose frames, prompt templates and scoring settings the student sees"},
    )
    pipelines_file: str | None = field(
        default=None, metadata={"help": "pipelines file (default: ./pipelines.yaml, else the packaged one)"}
    )
    samples: str | None = field(
        default=None,
        metadata={
            "help": "the rmsd-gen samples folder an rmsd-filter output scored, where it is not "
            "found through the output's manifest (moved or copied elsewhere)"
        },
    )
    video_base: str | None = field(
        default=None, metadata={"help": "folder relative video paths start from (default: found through the manifests)"}
    )
    resume: bool = field(
        default=True,
        metadata={"help": "continue from the newest checkpoint in --out (a finished run is left as it is)"},
    )


@dataclass
class _RmsdTraining:
    """TrainingArguments fields whose defaults rmsd sets for both trainers (mixed in ahead of TRL's config)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "output folder: checkpoints, TensorBoard logs, final/ (required)", "aliases": ["--out"]},
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "passes over the examples (paper: 1)", "aliases": ["--epochs"]}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "examples (rl: rollouts) per device per micro-batch", "aliases": ["--batch-size"]}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per optimizer step", "aliases": ["--grad-accum"]}
    )
    save_steps: float = field(
        default=200, metadata={"help": "checkpoint every N steps (a killed run resumes from the last)"}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept (with their optimizer state)"})
    seed: int = field(default=0, metadata={"help": "data order, initialisation, teacher draws and rollouts"})
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "where logs go (TensorBoard under --out/runs by default)"}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "rmsd's collators read the dataset's own columns: keep them"}
    )

    def _rmsd_post_init(self) -> None:
        if not self.output_dir:
            raise ValueError("--out (--output-dir) is required")
        if self.bf16 is None:  # bf16 where the GPU has it; fp32 on the CPU (TRL would turn bf16 on everywhere)
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if not torch.accelerator.is_available():
            self.use_cpu = True


@dataclass
class DistillSFTConfig(_RmsdTraining, SFTConfig):
    """TRL's SFTConfig with rmsd's SFT modes (METHOD.md, stage 3, step 1)."""

    mode: SFTMode | None = field(
        default=None,
        metadata={
            "help": "best: T_best (the paper's warm-up) | weighted: kept samples, loss weighted "
            "by p_k | filtered: kept samples, uniform | unfiltered: every answered sample, uniform | "
            "single: one random teacher sample, no filtering | gt: the ground truth (required)"
        },
    )
    visual_aux: float = field(
        default=0.0,
        metadata={
            "help": "gt mode on the synthetic benchmark: weight of the auxiliary visual loss (probes "
            "on the vision tower predict the scene; the demo teacher's bootstrap uses 1.0)"
        },
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "stream curated shards (best, weighted) instead of loading them (needs --max-steps)"},
    )
    learning_rate: float = field(
        default=2e-6, metadata={"help": "AdamW learning rate (paper: 2e-6)", "aliases": ["--lr"]}
    )
    lr_scheduler_type: SchedulerType | str = field(
        default="cosine", metadata={"help": "learning-rate schedule after the warm-up"}
    )
    warmup_steps: float = field(
        default=0.05, metadata={"help": "warm-up steps; a float in [0, 1) is a share of the total steps"}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "examples are not truncated: a cut video prompt would not match its frames"}
    )
    dataset_kwargs: dict[str, Any] | str | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True},
        metadata={"help": "rmsd's collator builds the batches from the raw examples"},
    )

    def __post_init__(self):
        self._rmsd_post_init()
        if self.mode is None:
            raise ValueError("--mode is required (best, weighted, filtered, unfiltered, single or gt)")
        if self.visual_aux < 0:
            raise ValueError("--visual-aux must be >= 0")
        if self.visual_aux > 0 and self.mode != "gt":
            raise ValueError(
                "--visual-aux needs --mode gt (the scene facts come with the synthetic benchmark's prompts)"
            )
        if self.streaming and self.max_steps < 0:
            raise ValueError("--streaming needs --max-steps (a stream has no length)")
        super().__post_init__()


@dataclass
class AdversarialConfig(_RmsdTraining, GRPOConfig):
    """TRL's GRPOConfig with the adversarial stage's discriminator and rewards (METHOD.md, stage 3,
    step 2). Defaults: the paper, and GAD's public script where the paper is silent."""

    discriminator: bool = field(
        default=True,
        metadata={
            "help": "the adversarial reward D (--no-discriminator: the SFT+RL baseline, verifiable rewards only)"
        },
    )
    weights: list[float] = field(
        default_factory=lambda: list(PAPER_WEIGHTS),
        metadata={
            "help": "alpha beta eta delta: weights of the rewards D, outer format, task format and content "
            "(paper: .4 .1 .1 .4); they become TRL's reward_weights"
        },
    )
    disc_learning_rate: float = field(
        default=1e-6, metadata={"help": "discriminator learning rate (AdamW)", "aliases": ["--disc-lr"]}
    )
    disc_warmup_steps: int = field(
        default=8,
        metadata={
            "help": "most discriminator-only steps on the SFT student's rollouts before RL "
            "(GAD: ~800); fewer once D passes --disc-warmup-target; 0: no warm-up"
        },
    )
    disc_warmup_target: float = field(
        default=0.6,
        metadata={
            "help": "the warm-up stops once D ranks the teacher's answer above the student's on more than this share "
            "of held-out pairs (questions set aside from its updates: 64 pairs, at most a quarter of the questions); "
            "1.0: the whole budget"
        },
    )
    disc_warmup_check_steps: int = field(
        default=10,
        metadata={
            "help": "warm-up steps between two held-out checks, and one at the budget's last step (a check: one "
            "forward pass of D over the held-out pairs' answers, no rollouts)"
        },
    )
    learning_rate: float = field(
        default=1e-6, metadata={"help": "policy learning rate (paper: 1e-6)", "aliases": ["--lr"]}
    )
    temperature: float = field(default=0.8, metadata={"help": "rollout sampling temperature (GAD: 0.8)"})
    max_completion_length: int | None = field(
        default=96, metadata={"help": "rollout length cap", "aliases": ["--max-tokens"]}
    )
    beta: float = field(default=0.001, metadata={"help": "KL coefficient to the reference policy (GAD: 0.001)"})
    max_grad_norm: float = field(
        default=0.2, metadata={"help": "gradient clip of the policy and the discriminator (GAD: 0.2)"}
    )
    logging_steps: float = field(default=1, metadata={"help": "log every N steps"})
    rollouts: str = field(
        default="hf",
        metadata={
            "help": "rollout engine: hf (transformers' generate, in the trainer), vllm (a vLLM engine colocated in "
            "each training process) or vllm-server (a vLLM engine in its own process, a Ray actor: started by the "
            "run, or by `rmsd-train rollout-server`, see --rollout-server); vLLM serves the policy's weights after "
            "every update, and builds video prompts as rmsd-gen's vllm backend does",
            "choices": ["hf", "vllm", "vllm-server"],
        },
    )
    rollout_sleep: bool = field(
        default=False,
        metadata={
            "help": "--rollouts vllm: the engine sleeps between rollouts (weights in host memory, KV cache freed) "
            "so the update has the GPU; vLLM's CUDA, ROCm and XPU builds only"
        },
    )
    rollout_server: str | None = field(
        default=None,
        metadata={
            "help": "--rollouts vllm-server: the name of a server started beforehand with `rmsd-train rollout-server` "
            "(default: the run starts its own and ends it)"
        },
    )
    rollout_address: str | None = field(
        default=None,
        metadata={"help": "--rollouts vllm-server: the Ray cluster's address (default: a local Ray instance)"},
    )
    rollout_gpus: float = field(
        default=-1,
        metadata={
            "help": "--rollouts vllm-server started by the run: its GPUs (default -1: one where this process sees "
            "CUDA, else none)"
        },
    )
    rollout_memory: float = field(
        default=0.3, metadata={"help": "--rollouts vllm on a GPU: the share of its memory the engine takes"}
    )
    rollout_enforce_eager: bool = field(
        default=False,
        metadata={
            "help": "--rollouts vllm: no torch.compile (the engine starts sooner, about 30 s on the CPU build, "
            "and generates slower)"
        },
    )

    def __post_init__(self):
        self._rmsd_post_init()
        if self.use_vllm:
            raise ValueError("TRL's --use_vllm routes images only; for video rollouts on vLLM use --rollouts vllm")
        if self.rollout_sleep and self.rollouts != "vllm":
            raise ValueError("--rollout-sleep puts a colocated engine to sleep: it needs --rollouts vllm")
        if (self.rollout_server or self.rollout_address) and self.rollouts != "vllm-server":
            raise ValueError("--rollout-server and --rollout-address are for --rollouts vllm-server")
        if not 0.0 < self.rollout_memory < 1.0:
            raise ValueError(f"--rollout-memory is a share of the GPU's memory, in (0, 1); got {self.rollout_memory}")
        if self.disc_warmup_steps < 0 or self.disc_warmup_check_steps < 1:
            raise ValueError("--disc-warmup-steps must be >= 0 and --disc-warmup-check-steps >= 1")
        if not 0.0 <= self.disc_warmup_target <= 1.0:
            raise ValueError(
                f"--disc-warmup-target is a share of held-out pairs, in [0, 1]; got {self.disc_warmup_target}"
            )
        if len(self.weights) != 4:
            raise ValueError(f"--weights takes four numbers alpha beta eta delta; got {self.weights}")
        if self.reward_weights is not None:
            raise ValueError(
                "set the rewards' weights with --weights alpha beta eta delta "
                "(rmsd derives TRL's reward_weights from them)"
            )
        self.reward_weights = list(self.weights if self.discriminator else self.weights[1:])
        if (self.per_device_train_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"--batch-size x --grad-accum ({self.per_device_train_batch_size * self.gradient_accumulation_steps}) "
                f"must be a multiple of --num-generations ({self.num_generations})"
            )
        super().__post_init__()

    @property
    def reward_weight_names(self) -> list[str]:
        return (["discriminator"] if self.discriminator else []) + ["outer", "task", "content"]


RECIPE_HELP = (
    "--config RECIPE.yaml: a training recipe (TRL's): any option above as a key (mode: weighted, "
    "learning_rate: 2.0e-6, ...); options on the command line override it. rmsd-gen's and rmsd-filter's "
    "--config, a pipelines file, is --pipelines-file here."
)


def parse(config_class: type, args: list[str], prog: str) -> tuple["Inputs", SFTConfig | GRPOConfig]:
    """``Inputs`` and ``config_class`` from a command line, with TRL's recipe files (``--config``)."""
    parser = TrlParser(
        (Inputs, config_class), prog=prog, description=(config_class.__doc__ or "").split("\n")[0], epilog=RECIPE_HELP
    )
    if "--config" in args:
        _check_recipe(
            Path(args[args.index("--config") + 1]) if args.index("--config") + 1 < len(args) else None, parser
        )
    inputs, config = parser.parse_args_and_config(args)
    return inputs, config


def _check_recipe(path: Path | None, parser) -> None:
    """``--config`` is TRL's recipe; rmsd-gen's and rmsd-filter's ``--config`` (a pipelines file) is
    ``--pipelines-file`` here."""
    import yaml

    if path is None or not path.is_file():
        parser.error(f"--config: recipe file not found: {path}")
    recipe = yaml.safe_load(path.read_text())
    if isinstance(recipe, dict) and "pipelines" in recipe:
        parser.error(
            f"--config {path} is a pipelines file; rmsd-train reads it with --pipelines-file "
            "(its --config is a training recipe)"
        )


def main_parse(config_class: type, args: list[str], prog: str):
    """``parse`` with a value error (a field's own check) shown as a usage error, exit status 2."""
    try:
        return parse(config_class, args, prog)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["AdversarialConfig", "DistillSFTConfig", "Inputs", "PAPER_WEIGHTS", "main_parse", "parse"]
