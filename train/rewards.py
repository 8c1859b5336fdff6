"""Verifiable rewards of the adversarial stage, as TRL reward callables.

R(S) = alpha*D(S) + beta*R_outer(S) + eta*R_task(S) + delta*R_content(S)   (paper: .4/.1/.1/.4)

R_outer, R_task and R_content come from the one grammar and metrics (``schemas/``): the wrapper
check, the task syntax check and the metric against the ground truth. D(S) is the discriminator's
score (``rmsd.train.discriminator.DiscriminatorReward``). Each callable has TRL's signature
``f(prompts, completions, completion_ids=None, **columns) -> list[float | None]``; ``None``
abstains (R_content for open-ended questions or questions without ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ..schemas.config import FilterConfig
from ..schemas.metrics import score_as_filter


def completion_text(completion) -> str:
    """TRL passes a string, or for conversational prompts a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def score_completions(
    completions, task_type, options=None, answer=None, settings: FilterConfig | None = None
) -> pl.DataFrame:
    """Rollouts scored as rmsd-filter scores teacher samples (``settings``: the pipeline's filter settings)."""
    n = len(completions)
    frame = pl.DataFrame(
        {
            "text": [completion_text(c) for c in completions],
            "task_type": list(task_type),
            "options": list(options) if options is not None else [None] * n,
            "answer": list(answer) if answer is not None else [None] * n,
        },
        schema={"text": pl.String, "task_type": pl.String, "options": pl.List(pl.String), "answer": pl.String},
    )
    return score_as_filter(frame, settings or FilterConfig())


def outer_format_reward(
    prompts, completions, completion_ids=None, task_type=None, options=None, answer=None, **_
) -> list[float]:
    """1 if the response is exactly <think>..</think><answer>..</answer>, else 0."""
    return score_completions(completions, task_type, options, answer)["outer_ok"].cast(pl.Float64).to_list()


def task_format_reward(
    prompts, completions, completion_ids=None, task_type=None, options=None, answer=None, **_
) -> list[float]:
    """1 if the answer follows the task's strict syntax (one letter, a number, [start, end], a box...)."""
    return score_completions(completions, task_type, options, answer)["task_ok"].cast(pl.Float64).to_list()


@dataclass
class ContentReward:
    """The task metric against the ground truth, with the pipeline's filter settings (numerical
    tolerance, ANLS threshold); abstains (None) where there is none."""

    settings: FilterConfig = field(default_factory=FilterConfig)
    __name__: str = "content_reward"

    def __call__(
        self, prompts, completions, completion_ids=None, task_type=None, options=None, answer=None, **_
    ) -> list[float | None]:
        return score_completions(completions, task_type, options, answer, self.settings)["correct"].to_list()


content_reward = ContentReward()
