"""The adversarial plug-in: a discriminator trained online to tell teacher answers from student ones.

"Critic as discriminator" (GAD, arXiv 2511.10643; METHOD.md stage 3): a copy of the student's
backbone with a scalar head reading the last token of (video, question, response). It is trained
with the quality-weighted Bradley-Terry loss

    L_D = E[ q_m(i) * -log sigmoid( D(T_m(i)) - D(S_i) ) ]

where each student rollout S_i is paired with a teacher response T_m(i) drawn from the matching
distribution p of its prompt. As a reward, D(S) scores the student's rollouts; the reward call
then updates D on those rollouts, so D keeps up with the student (online), and the rewards of a
step always come from the discriminator before that step's update.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .collate import VideoSFTCollator
from .rewards import completion_text

HEAD_FILE = "score_head.safetensors"


class Discriminator(nn.Module):
    """A causal VLM's backbone with a linear scalar head on the last non-padding token."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm  # the full model is kept so it saves and loads as any Hugging Face checkpoint
        hidden = lm.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1.0 / hidden**0.5)

    @classmethod
    def from_student(cls, path: str | Path) -> Discriminator:
        """Initialise from the student's checkpoint (GAD's practice); a saved discriminator folder
        (with its head) loads back whole."""
        from ..models import load_model

        lm, _ = load_model(path)
        disc = cls(lm)
        head = Path(path) / HEAD_FILE
        if head.exists():
            disc.head.load_state_dict(load_file(str(head)))
        return disc

    def forward(self, labels=None, weights=None, **inputs) -> torch.Tensor:
        backbone = self.lm.model if hasattr(self.lm, "model") else self.lm.base_model
        hidden = backbone(**inputs, use_cache=False).last_hidden_state  # (B, T, H), right padding
        last = inputs["attention_mask"].sum(dim=1) - 1
        with torch.autocast(hidden.device.type, enabled=False):  # the score in float32, under bf16 autocast too
            return self.head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()).squeeze(-1)

    def save(self, out: str | Path, processor=None) -> Path:
        out = Path(out)
        self.lm.save_pretrained(str(out))
        if processor is not None:
            processor.save_pretrained(str(out))
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(out / HEAD_FILE))
        return out


def bradley_terry_loss(
    teacher: torch.Tensor, student: torch.Tensor, quality: torch.Tensor, total: int | None = None
) -> torch.Tensor:
    """Quality-weighted Bradley-Terry loss: E[q * -log sigmoid(D(T) - D(S))], the mean over ``total``
    pairs (default: these; under DDP, every rank's, of which these are one rank's share)."""
    return (quality * -F.logsigmoid(teacher - student)).sum() / (len(quality) if total is None else total)


def distinct(keys: list, examples: list[dict]) -> tuple[list[dict], list[int]]:
    """Each key's first example, once, and the index among those of every example: a teacher answer
    drawn for several rollouts of a question goes through D once."""
    first: dict = {}
    for key, example in zip(keys, examples):
        first.setdefault(key, (len(first), example))
    return [example for _, example in first.values()], [first[key][0] for key in keys]


@dataclass
class TeacherPool:
    """The curated teacher responses of every prompt, with their matching probabilities p_k and
    T_best: rmsd-filter's ``is_best``, or, in a pool built without it, the highest-quality response
    (the filter's T_best up to its tie-break)."""

    responses: dict[str, list[tuple[str, float, float]]]  # prompt_id -> [(text, weight, quality)]
    best: dict[str, str] = field(default_factory=dict)  # prompt_id -> T_best's text

    def __post_init__(self):
        for prompt_id, choices in self.responses.items():
            if choices and prompt_id not in self.best:
                self.best[prompt_id] = max(choices, key=lambda c: c[2])[0]

    @classmethod
    def from_curated(cls, frame: pl.DataFrame) -> TeacherPool:
        pool: dict[str, list[tuple[str, float, float]]] = {}
        for row in frame.select("prompt_id", "text", "weight", "quality").iter_rows():
            pool.setdefault(row[0], []).append((row[1], float(row[2]), float(row[3])))
        best = (
            {}
            if "is_best" not in frame.columns
            else dict(frame.filter(pl.col("is_best")).select("prompt_id", "text").iter_rows())
        )
        return cls(pool, best)

    def draw(self, prompt_id: str, rng: random.Random) -> tuple[str, float] | None:
        """T_m ~ p for one rollout: (text, quality), or None if the prompt has no kept sample."""
        choices = self.responses.get(prompt_id)
        if not choices:
            return None
        text, _, quality = rng.choices(choices, weights=[w for _, w, _ in choices])[0]
        return text, quality


class DiscriminatorTrainer:
    """Owns the discriminator, its optimizer, and one Bradley-Terry update per call."""

    def __init__(
        self,
        disc: Discriminator,
        collator: VideoSFTCollator,
        lr: float = 1e-6,
        max_grad_norm: float = 0.2,
        device: str | None = None,
        bf16: bool = False,
    ):
        """``bf16``: D's forward passes under bfloat16 autocast, as the policy's under the Trainer's
        ``bf16`` (mixed precision: D's weights, gradients and optimizer stay float32)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.disc, self.collator, self.max_grad_norm, self.device = disc.to(device), collator, max_grad_norm, device
        self.bf16 = bf16
        self.disc.eval()  # also while it learns: no dropout, so no reward is random (the Qwen-VL backbones have none)
        self.optimizer = torch.optim.AdamW(disc.parameters(), lr=lr)
        # several processes (DDP): one discriminator, not one per rank; rank 0's initial head, and
        # every update from the gradients of all ranks' pairs
        self.world = (
            torch.distributed.get_world_size()
            if torch.distributed.is_available() and torch.distributed.is_initialized()
            else 1
        )
        if self.world > 1:
            for p in self.disc.parameters():
                torch.distributed.broadcast(p.data, src=0)

    def _batch(self, examples: list[dict]) -> dict:
        batch = self.collator(examples)
        return {k: v.to(self.device) for k, v in batch.items() if k not in ("labels", "weights")}

    def _scores(self, examples: list[dict]) -> torch.Tensor:
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.disc(**self._batch(examples)).float()

    @torch.no_grad()
    def score(self, examples: list[dict]) -> torch.Tensor:
        return self._scores(examples)

    def _all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def step(
        self,
        teacher_examples: list[dict],
        student_examples: list[dict],
        quality: list[float],
        pairs: list[tuple[int, int]] | None = None,
    ) -> dict[str, float] | None:
        """One update on the pairs (teacher_examples[i], student_examples[i]) of every rank (or
        ``pairs``: (student index, teacher index), for answers in several pairs): the mean loss over
        all of them, whatever each rank holds. Under DDP every rank calls it at every step (its
        collectives wait for all ranks), with pairs or without (a rank whose prompts have no kept
        teacher sample): then it contributes no gradient and takes the others' update. Returns the
        statistics over all ranks' pairs, or None (and D is unchanged) when no rank has any."""
        pairs = [(i, i) for i in range(len(quality))] if pairs is None else pairs
        return self.score_and_step(student_examples, teacher_examples, pairs, quality)[1]

    def score_and_step(
        self, students: list[dict], teachers: list[dict], pairs: list[tuple[int, int]], quality: list[float]
    ) -> tuple[torch.Tensor, dict[str, float] | None]:
        """D(S) of every student answer, then ``step`` on the pairs (students[s], teachers[t]) of
        ``pairs``, pair j with quality[j], in one forward pass over each answer once (a teacher
        answer drawn for several rollouts is scored once, its gradient the sum of its pairs'): the
        scores are those ``score(students)`` gives before the update (D runs without dropout), and
        the update's forward pass is not repeated for them. Collective as ``step``."""
        n = len(quality)
        total = int(self._all_sum(torch.tensor([n], device=self.device)).item())
        with torch.set_grad_enabled(n > 0):
            scores = self._scores(students + teachers) if students or teachers else None
        student_scores = scores[: len(students)] if scores is not None else torch.zeros(0, device=self.device)
        if total == 0:
            return student_scores.detach(), None
        self.optimizer.zero_grad()
        sums = torch.zeros(3, device=self.device)  # loss, teacher-ahead count, margin: summed over this rank's pairs
        if n:
            index = torch.tensor(pairs, device=scores.device)
            teacher, student = scores[len(students) :][index[:, 1]], student_scores[index[:, 0]]
            loss = bradley_terry_loss(
                teacher, student, torch.tensor(quality, dtype=torch.float32, device=scores.device), total
            )
            loss.backward()
            sums = torch.stack(
                [loss.detach() * total, (teacher > student).float().sum(), (teacher - student).detach().sum()]
            )
        if self.world > 1:
            # which parameters got a gradient is known only to ranks with pairs; every rank learns it,
            # then all-reduces the same parameters' gradients (zeros where it had none)
            params = [p for p in self.disc.parameters() if p.requires_grad]
            has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
            reduced = self._all_sum(torch.cat([sums, has_grad]))
            sums = reduced[:3]
            for p, used in zip(params, reduced[3:].tolist()):
                if used:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    torch.distributed.all_reduce(p.grad)  # each rank's share of the mean: their sum is its gradient
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.max_grad_norm)
        self.optimizer.step()
        loss, ahead, margin = (sums / total).tolist()
        return student_scores.detach(), {"loss": loss, "accuracy": ahead, "margin": margin, "pairs": total}

    def compare(
        self,
        teacher_examples: list[dict],
        student_examples: list[dict],
        batch_size: int,
        pairs: list[tuple[int, int]] | None = None,
    ) -> dict[str, float] | None:
        """D on fixed pairs (teacher_examples[i], student_examples[i]) of every rank (or ``pairs``,
        as ``step``'s), no update: accuracy, the share of pairs where D(T) > D(S), and margin, the
        mean D(T) - D(S), over all ranks' pairs (each answer scored once, ``batch_size`` at a time).
        Collective, as ``step``: every rank calls it, with pairs or without. None when no rank has any."""
        pairs = [(i, i) for i in range(len(student_examples))] if pairs is None else pairs
        n = len(pairs)
        sums = torch.zeros(3, device=self.device)  # pairs, teacher-ahead count, margin
        if n:
            examples = student_examples + teacher_examples
            scores = torch.cat([self.score(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)])
            index = torch.tensor(pairs, device=scores.device)
            student, teacher = scores[index[:, 0]], scores[len(student_examples) :][index[:, 1]]
            sums = torch.stack(
                [
                    torch.tensor(float(n), device=self.device),
                    (teacher > student).float().sum(),
                    (teacher - student).sum(),
                ]
            )
        total, ahead, margin = self._all_sum(sums).tolist()
        if total == 0:
            return None
        return {"accuracy": ahead / total, "margin": margin / total, "pairs": int(total)}

    def spread(self, scores: torch.Tensor) -> dict[str, float]:
        """Standard deviation (with Bessel's correction, as TRL's reward std), min and max of
        ``scores`` over every rank's (collective: every rank calls it with its own, at least one)."""
        scores = scores.detach().double()
        sums = self._all_sum(
            torch.stack(
                [
                    torch.tensor(float(len(scores)), dtype=torch.float64, device=scores.device),
                    scores.sum(),
                    (scores**2).sum(),
                ]
            )
        )
        low_high = torch.stack([scores.min(), -scores.max()])
        if self.world > 1:
            torch.distributed.all_reduce(low_high, op=torch.distributed.ReduceOp.MIN)
        n, total, squares = sums.tolist()
        variance = (squares - total * total / n) / (n - 1) if n > 1 else float("nan")
        return {
            "reward_std": max(variance, 0.0) ** 0.5,
            "reward_min": low_high[0].item(),
            "reward_max": -low_high[1].item(),
        }


class DiscriminatorReward:
    """TRL reward callable: D(S) for each rollout, then an online update of D on these rollouts
    against teacher responses drawn from p. Logs (TRL's ``log_metric``) ``discriminator/reward_std``,
    ``reward_min``, ``reward_max`` (D(S) over every rank's rollouts of the step) and the update's
    ``loss``, ``accuracy``, ``margin`` and ``pairs``."""

    __name__ = "discriminator_reward"

    def __init__(self, trainer: DiscriminatorTrainer, pool: TeacherPool, seed: int = 0):
        self.trainer, self.pool, self.rng = trainer, pool, random.Random(seed)
        self.history: list[dict[str, float]] = []

    def _state_file(self, folder: Path) -> Path:
        rank = torch.distributed.get_rank() if self.trainer.world > 1 else 0
        return Path(folder) / f"trainer_state-{rank}.pt"

    def save_state(self, folder: str | Path, processor=None, weights: bool = True) -> None:
        """What a resumed run needs to continue exactly: D's weights (``weights``: one process writes
        them, they are the same on every rank), its optimizer and this rank's teacher draws."""
        if weights:
            self.trainer.disc.save(folder, processor)
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(
            {"optimizer": self.trainer.optimizer.state_dict(), "draws": self.rng.getstate()}, self._state_file(folder)
        )

    def load_state(self, folder: str | Path) -> None:
        """The optimizer and teacher draws ``save_state`` wrote (D's weights load with
        ``Discriminator.from_student``)."""
        path = self._state_file(folder)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: the discriminator's optimizer state is not there (a checkpoint of another number of "
                "processes?)"
            )
        state = torch.load(path, map_location=self.trainer.device, weights_only=True)
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(state["draws"])

    def __call__(
        self,
        prompts,
        completions,
        completion_ids=None,
        prompt_id=None,
        question=None,
        task_type=None,
        options=None,
        video=None,
        frame_timestamps=None,
        log_metric=None,
        **_,
    ) -> list[float]:
        n = len(completions)
        frame_timestamps = frame_timestamps or [None] * n
        options = options or [None] * n
        base = [
            dict(
                question=question[i],
                task_type=task_type[i],
                options=options[i],
                video=video[i],
                frame_timestamps=frame_timestamps[i],
            )
            for i in range(n)
        ]
        students = [dict(b, response=completion_text(c)) for b, c in zip(base, completions)]
        drawn = [(i, self.pool.draw(prompt_id[i], self.rng)) for i in range(n)]
        drawn = [(i, d) for i, d in drawn if d is not None]
        teachers, which = distinct(
            [(prompt_id[i], text) for i, (text, _) in drawn], [dict(base[i], response=text) for i, (text, _) in drawn]
        )
        # on every rank, pairs or none: the update's collectives wait for all ranks
        scores, stats = self.trainer.score_and_step(
            students, teachers, [(i, t) for (i, _), t in zip(drawn, which)], [q for _, (_, q) in drawn]
        )
        spread = self.trainer.spread(scores)  # of the whole batch: every rank's rollouts
        rewards = scores.tolist()
        stats = {**spread, **(stats or {})}
        self.history.append(stats)
        if log_metric is not None:  # TRL's GRPOTrainer: averaged per logging step, sent to TensorBoard and log_history
            for name, value in stats.items():
                log_metric(f"discriminator/{name}", value)
        return rewards
