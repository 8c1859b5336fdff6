"""The discriminator's health report: its warnings on constructed histories, and what it writes."""

import random

from rmsd.train.health import HEALTH_PNG, health_warnings, write_health_report


def history(accuracy, reward_std=None, zero_std=None, seed=0):
    """A logged history of len(accuracy) steps, with noisy but steady rewards unless given."""
    rng = random.Random(seed)
    steps = []
    for i, acc in enumerate(accuracy):
        entry = {
            "step": i + 1,
            "loss": 0.1,
            "kl": 0.01 * i,
            "discriminator/accuracy": acc,
            "discriminator/margin": 2 * acc - 1,
            "discriminator/reward_std": reward_std[i] if reward_std else 0.5 + 0.1 * rng.random(),
            "rewards/discriminator_reward/mean": rng.random(),
            "rewards/discriminator_reward/std": 0.5,
            "rewards/outer_format_reward/mean": 1.0,
            "rewards/outer_format_reward/std": 0.0,
            "frac_reward_zero_std": zero_std[i] if zero_std else 0.0,
        }
        steps.append(entry)
    return steps


def healthy(n=60, seed=0):
    rng = random.Random(seed)
    return [0.8 + 0.1 * rng.random() for _ in range(n)]  # discriminates, not perfectly


def test_a_discriminating_run_gets_no_warning():
    assert health_warnings(history(healthy())) == []


def test_accuracy_near_chance_for_long_is_stuck():
    acc = healthy(30) + [0.5, 0.45, 0.55, 0.5] * 5 + healthy(10, seed=1)  # 20 of 60 steps at chance
    (warning,) = health_warnings(history(acc))
    assert "stuck" in warning and "near chance" in warning and "from step 34 to 51 (18 of 60 logged steps)" in warning


def test_accuracy_near_chance_on_average_is_reported_even_when_it_swings():
    acc = [0.2, 0.9, 0.4, 0.8, 0.3, 0.7] * 10  # never long near 0.5 in its moving average, 0.55 on average
    (warning,) = health_warnings(history(acc))
    assert "barely tells the answers apart: its accuracy on new pairs averages 0.550 over 60 logged steps" in warning


def test_a_short_dip_to_chance_is_not_stuck():
    acc = healthy(30) + [0.5] * 6 + healthy(24, seed=1)
    assert health_warnings(history(acc)) == []


def test_accuracy_near_one_for_long_is_stuck():
    acc = healthy(20) + [1.0] * 40
    (warning,) = health_warnings(history(acc))
    assert "near 1.0" in warning and "no signal" in warning


def test_a_collapsing_reward_spread_is_reported():
    spread = [0.6] * 15 + [0.6 * 0.8**i for i in range(45)]
    (warning,) = health_warnings(history(healthy(), reward_std=spread))
    assert "spread collapsed" in warning


def test_groups_without_reward_spread_are_reported():
    zero = [0.0] * 40 + [0.75] * 20
    (warning,) = health_warnings(history(healthy(), zero_std=zero))
    assert "75% of the question groups had rewards without any spread" in warning


def test_the_report_shows_the_warmup_the_series_and_the_warnings(tmp_path):
    warmup = {
        "target": 0.6,
        "target_reached": True,
        "steps_taken": 16,
        "max_steps": 64,
        "heldout_questions": 16,
        "checks": [
            {"step": 8, "accuracy": 0.5, "margin": 0.01, "pairs": 64},
            {"step": 16, "accuracy": 0.7, "margin": 0.3, "pairs": 64},
        ],
    }
    md, png, warnings = write_health_report(tmp_path, history(healthy(20) + [1.0] * 40), warmup)
    text = md.read_text()
    assert "reached after 16 of at most 64 steps" in text and "| 16 | 0.700 | 0.300 | 64 |" in text
    assert "| discriminator accuracy (new pairs, before D learns them) | 0.8" in text
    assert "| reward outer_format_reward: mean | 1 | 1 | 1 | 1 .. 1 |" in text
    assert "| KL to the reference | 0 | 0.59 |" in text
    assert len(warnings) == 1 and f"- {warnings[0]}" in text
    assert png.name == HEALTH_PNG and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({HEALTH_PNG})" in text
