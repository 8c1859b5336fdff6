"""The discriminator's health: a short report (``discriminator_health.md`` and ``.png``) that
``rmsd-train rl`` writes beside its checkpoints, so a user can tell whether D still discriminates.

It reads what the run logged (the Trainer's ``log_history``) and the warm-up's record:

- D's accuracy and margin on teacher-versus-student pairs it has not trained on: the warm-up's
  held-out checks, then over RL each step's new pairs, which D scores before it updates on them;
- each reward component's mean and spread (TRL's ``rewards/<name>/mean`` and ``/std``) and the KL;
- warnings when D is stuck, its smoothed accuracy near 0.5 (it cannot tell the answers apart: its
  reward is noise) or near 1.0 (it always can: the policy gets no signal it can follow) for a long
  stretch of training, or its accuracy near 0.5 on average over the run, and when the reward's
  spread collapses (GRPO's advantages vanish).
"""

from __future__ import annotations

from pathlib import Path

HEALTH_MD, HEALTH_PNG = "discriminator_health.md", "discriminator_health.png"
WINDOW = 5  # logged steps in the moving average that judges "stuck" (a step's pairs are few: its accuracy is noisy)
NEAR_CHANCE, NEAR_PERFECT = 0.1, 0.95  # stuck: smoothed accuracy within 0.5 +- 0.1, or at least 0.95
LONG_SHARE, LONG_MIN = 0.25, 10  # "for long": a run of at least this share of the logged steps, and this many
COLLAPSE_RATIO = 0.1  # the spread collapsed: the last quarter's mean under a tenth of the first quarter's
ZERO_STD_SHARE = 0.5  # GRPO learns nothing from a group whose rewards are all equal (TRL's frac_reward_zero_std)


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(e.get("step", i)), float(e[key])) for i, e in enumerate(history) if e.get(key) is not None]


def _smoothed(values: list[float], window: int = WINDOW) -> list[float]:
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def _longest(points: list[tuple[int, float]], inside) -> tuple[int, int, int]:
    """The longest run of consecutive points whose value is ``inside``: (length, first step, last step)."""
    best, run = (0, 0, 0), []
    for step, value in points:
        run = [*run, step] if inside(value) else []
        if len(run) > best[0]:
            best = (len(run), run[0], run[-1])
    return best


def health_warnings(history: list[dict]) -> list[str]:
    """Warnings on a run's logged history (see the module docstring for the rules); [] when healthy."""
    warnings = []
    accuracy = _series(history, "discriminator/accuracy")
    if accuracy:
        smooth = list(zip([s for s, _ in accuracy], _smoothed([v for _, v in accuracy])))
        long = max(LONG_MIN, int(LONG_SHARE * len(accuracy)))
        for inside, what in (
            (lambda v: abs(v - 0.5) <= NEAR_CHANCE, f"near chance (within 0.5 +- {NEAR_CHANCE})"),
            (lambda v: v >= NEAR_PERFECT, f"near 1.0 (at least {NEAR_PERFECT})"),
        ):
            length, first, last = _longest(smooth, inside)
            if length >= long:
                why = (
                    "its reward is noise to the policy"
                    if "chance" in what
                    else "it always tells the teacher's answer apart: the policy gets no signal it can follow"
                )
                warnings.append(
                    f"the discriminator is stuck: its accuracy (moving average of {WINDOW} logged steps) stays {what} "
                    f"from step {first} to {last} ({length} of {len(accuracy)} logged steps); {why}"
                )
        mean = sum(v for _, v in accuracy) / len(accuracy)
        if (
            len(accuracy) >= LONG_MIN
            and abs(mean - 0.5) <= NEAR_CHANCE
            and not any("near chance" in w for w in warnings)
        ):
            warnings.append(
                f"the discriminator barely tells the answers apart: its accuracy on new pairs averages {mean:.3f} over "
                f"{len(accuracy)} logged steps (within 0.5 +- {NEAR_CHANCE}); most of its reward is noise to the policy"
            )
    spread = [v for _, v in _series(history, "discriminator/reward_std")] or [
        v for _, v in _series(history, "reward_std")
    ]
    if len(spread) >= 8:
        quarter = len(spread) // 4
        early, late = sum(spread[:quarter]) / quarter, sum(spread[-quarter:]) / quarter
        if early > 0 and late < COLLAPSE_RATIO * early:
            warnings.append(
                f"the reward's spread collapsed: its std fell from {early:.3g} (first quarter of the logged steps) to "
                f"{late:.3g} "
                f"(last quarter), under {COLLAPSE_RATIO:g}x; GRPO's advantages vanish with it"
            )
    zero = [v for _, v in _series(history, "frac_reward_zero_std")]
    if len(zero) >= 8 and (share := sum(zero[-(len(zero) // 4) :]) / (len(zero) // 4)) >= ZERO_STD_SHARE:
        warnings.append(
            f"{100 * share:.0f}% of the question groups had rewards without any spread over the last quarter of the "
            "logged steps "
            f"(TRL's frac_reward_zero_std): those groups teach the policy nothing"
        )
    return warnings


def _stats(values: list[float]) -> str:
    if not values:
        return "- | - | - | -"
    return (
        f"{values[0]:.3g} | {values[-1]:.3g} | {sum(values) / len(values):.3g} | {min(values):.3g} .. {max(values):.3g}"
    )


def write_health_report(out: str | Path, history: list[dict], warmup: dict | None) -> tuple[Path, Path, list[str]]:
    """``discriminator_health.md`` and ``.png`` in ``out`` from the logged ``history`` and the warm-up's
    record (``discriminator_warmup.json``'s content, or None); returns both paths and the warnings."""
    out = Path(out)
    warnings = health_warnings(history)
    lines = [f"# Discriminator health: `{out.name}`", ""]
    if warmup and warmup.get("checks"):
        outcome = "reached" if warmup["target_reached"] else "not reached (the budget ended)"
        lines += [
            f"Warm-up: target held-out accuracy > {warmup['target']}, {outcome} after {warmup['steps_taken']} of at "
            f"most {warmup['max_steps']} steps "
            f"({warmup['heldout_questions']} held-out questions).",
            "",
            "| warm-up step | held-out accuracy | margin D(T) - D(S) | pairs |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {c['step']} | {c['accuracy']:.3f} | {c['margin']:.3f} | {c['pairs']} |" for c in warmup["checks"]]
    else:
        lines.append("Warm-up: none (a resumed run, or --disc-warmup-steps 0).")
    series = {
        "discriminator accuracy (new pairs, before D learns them)": "discriminator/accuracy",
        "discriminator margin D(T) - D(S)": "discriminator/margin",
        "discriminator reward spread (std of D(S))": "discriminator/reward_std",
        **{
            f"reward {k.split('/')[1]}: mean": k
            for k in sorted({k for e in history for k in e if k.startswith("rewards/") and k.endswith("/mean")})
        },
        **{
            f"reward {k.split('/')[1]}: spread (std)": k
            for k in sorted({k for e in history for k in e if k.startswith("rewards/") and k.endswith("/std")})
        },
        "total reward: spread (std)": "reward_std",
        "KL to the reference": "kl",
    }
    logged = len(_series(history, "loss")) or len(history)
    lines += [
        "",
        f"Over RL ({logged} logged steps):",
        "",
        "| series | first | last | mean | range |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {_stats([v for _, v in _series(history, key)])} |"
        for name, key in series.items()
        if _series(history, key)
    ]
    lines += ["", "## Warnings", ""] + (
        [f"- {w}" for w in warnings] or ["None: the discriminator was neither stuck nor its reward's spread collapsed."]
    )
    lines += ["", f"![discriminator health]({HEALTH_PNG})", ""]
    md = out / HEALTH_MD
    md.write_text("\n".join(lines))
    png = _plot(out / HEALTH_PNG, history, warmup)
    return md, png, warnings


def _plot(path: Path, history: list[dict], warmup: dict | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # the file backend: no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    acc, margin = axes[0]
    accuracy = _series(history, "discriminator/accuracy")
    if accuracy:
        acc.plot([s for s, _ in accuracy], [v for _, v in accuracy], ".", alpha=0.3, label="each step's new pairs")
        acc.plot([s for s, _ in accuracy], _smoothed([v for _, v in accuracy]), label=f"moving average ({WINDOW})")
    if warmup and warmup.get("checks"):
        acc.plot(
            [c["step"] - warmup["steps_taken"] for c in warmup["checks"]],
            [c["accuracy"] for c in warmup["checks"]],
            "s",
            label="warm-up, held out",
        )
    acc.axhspan(0.5 - NEAR_CHANCE, 0.5 + NEAR_CHANCE, color="red", alpha=0.08)
    acc.axhline(NEAR_PERFECT, color="red", alpha=0.3, linestyle="--")
    acc.set(title="discriminator accuracy (warm-up steps < 0)", xlabel="step", ylim=(-0.02, 1.02))
    acc.legend(fontsize=7)
    points = _series(history, "discriminator/margin")
    margin.plot([s for s, _ in points], [v for _, v in points])
    margin.set(title="margin D(T) - D(S)", xlabel="step")
    rewards, kl = axes[1]
    for key in sorted({k for e in history for k in e if k.startswith("rewards/") and k.endswith("/mean")}):
        points = _series(history, key)
        rewards.plot([s for s, _ in points], [v for _, v in points], label=key.split("/")[1])
    points = _series(history, "discriminator/reward_std")
    if points:
        rewards.plot([s for s, _ in points], [v for _, v in points], "--", label="D reward spread (std)")
    rewards.set(title="reward components (mean) and D's spread", xlabel="step")
    rewards.legend(fontsize=7)
    points = _series(history, "kl")
    kl.plot([s for s, _ in points], [v for _, v in points])
    kl.set(title="KL to the reference", xlabel="step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["HEALTH_MD", "HEALTH_PNG", "health_warnings", "write_health_report"]
