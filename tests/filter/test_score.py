import math

import polars as pl
import pytest

from rmsd.filter.score import dropped_prompts, score_samples
from rmsd.schemas.config import FilterConfig
from rmsd.schemas.metrics import anls
from tests.filter.helpers import COLOURS, frame, sample_rows


def scored(rows, **cfg):
    return score_samples(frame(rows), FilterConfig(**cfg))


def by_index(df, prompt_id=None):
    if prompt_id:
        df = df.filter(pl.col("prompt_id") == prompt_id)
    return df.sort("teacher", "sample_index")


def test_multiple_choice_exact_match_and_weights_proportional_to_quality():
    df = scored(sample_rows("p", "multiple_choice", "B", ["B", "(B)", "C", "B"], options=COLOURS))
    assert df["extracted"].to_list() == ["B", "B", "C", "B"]
    assert df["format_task_ok"].to_list() == [True, False, True, True]
    assert df["correct"].to_list() == [1.0, 1.0, 0.0, 1.0]
    assert df["quality"].to_list() == [1.0, 0.0, 0.0, 1.0]  # (B) is right but not in the strict format
    assert df["kept"].to_list() == [True, False, False, True]
    assert df["weight"].to_list() == [0.5, 0.0, 0.0, 0.5]
    assert df["is_best"].sum() == 1 and df.filter("is_best")["quality"].item() == 1.0
    assert df["agreement"].to_list() == [0.75, 0.75, 0.25, 0.75]


def test_numerical_epsilon_accuracy_with_configurable_tolerance():
    rows = sample_rows("n", "numerical", "20", ["20", "21", "23", "0"]) + sample_rows(
        "z", "numerical", "0", ["0.01", "0.2"]
    )
    df = by_index(scored(rows, tolerance=0.1))
    assert by_index(df, "n")["correct"].to_list() == [1.0, 1.0, 0.0, 0.0]
    assert by_index(df, "z")["correct"].to_list() == [1.0, 0.0]  # |pred| <= tolerance when gt = 0
    assert by_index(scored(rows, tolerance=0.2), "n")["correct"].to_list() == [1.0, 1.0, 1.0, 0.0]


def test_temporal_iou_and_weights():
    df = by_index(scored(sample_rows("t", "temporal_grounding", "[2, 4]", ["[2, 4]", "[3, 5]", "[0, 1]", "[1, 5]"])))
    assert df["correct"].to_list() == pytest.approx([1.0, 1 / 3, 0.0, 0.5])
    assert df["kept"].to_list() == [True, True, False, True]
    total = 1 + 1 / 3 + 0.5
    assert df["weight"].to_list() == pytest.approx([1 / total, (1 / 3) / total, 0.0, 0.5 / total])


def test_box_iou():
    df = by_index(
        scored(
            sample_rows(
                "s",
                "spatial_grounding",
                "[0, 0, 10, 10]",
                ["[0, 0, 10, 10]", "[5, 0, 15, 10]", "[20, 20, 30, 30]", "[0,0,10]"],
            )
        )
    )
    assert df["correct"].to_list() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert df["format_task_ok"].to_list() == [True, True, True, False]


def test_ocr_anls():
    df = by_index(scored(sample_rows("o", "ocr", "MOON", ["MOON", "moan", "SUN", "  moon "])))
    assert df["correct"].to_list() == pytest.approx([1.0, 0.75, 0.0, 1.0])
    assert anls(["abcdef", None], ["abcxyz", "a"]).tolist() == [0.5, 0.0]
    assert anls(["abcdefgh"], ["abcwxyzq"]).tolist() == [0.0]  # below the 0.5 threshold


def test_open_ended_uniform_over_valid_samples():
    df = by_index(
        scored(
            sample_rows(
                "e",
                "open_ended",
                "A red circle moves left.",
                ["A red circle.", "<answer>x</answer>", "It moves.", "Red thing left."],
            )
        )
    )
    assert df["correct"].null_count() == 4
    assert df["quality"].to_list() == [1.0, 0.0, 1.0, 1.0]
    assert df["weight"].to_list() == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3])


def test_tau_per_task_type():
    rows = sample_rows("t", "temporal_grounding", "[2, 4]", ["[2, 4]", "[3, 5]"])
    assert scored(rows)["kept"].to_list() == [True, True]
    assert scored(rows, tau_by_task={"temporal_grounding": 0.5})["kept"].to_list() == [True, False]
    # several task types, each with its own tau, one of them set to the default (rows in input order)
    rows += sample_rows("n", "numerical", "10", ["10", "11", "20"])  # epsilon 0.05: 1, 0, 0
    taus = {"temporal_grounding": 0.2, "numerical": 0.3, "ocr": 0.9}
    assert scored(rows, tau=0.5, tau_by_task=taus)["kept"].to_list() == [True, True, True, False, False]
    assert scored(rows, tau=0.1, tau_by_task={"temporal_grounding": 0.5})["kept"].to_list() == [
        True,
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError):
        FilterConfig(tau_by_task={"counting": 0.5})


def test_weights_sum_to_one_across_the_pool_and_one_best_per_prompt():
    rows = sample_rows("p", "multiple_choice", "A", ["A", "A", "B", "A"], teacher="a", options=COLOURS) + sample_rows(
        "p", "multiple_choice", "A", ["A", "C", "C", "C"], teacher="b", options=COLOURS
    )
    df = scored(rows)
    assert math.isclose(df["weight"].sum(), 1.0)
    assert df.filter(pl.col("kept")).height == 4 and df["is_best"].sum() == 1
    a, b = by_index(df.filter(pl.col("teacher") == "a")), by_index(df.filter(pl.col("teacher") == "b"))
    assert a["agreement"].to_list() == [0.75, 0.75, 0.25, 0.75]
    assert b["agreement"].to_list() == [0.25, 0.75, 0.75, 0.75]
    assert a["agreement_pool"].to_list() == [0.5, 0.5, 0.125, 0.5]


def test_error_rows_are_scored_zero_and_never_kept():
    df = by_index(scored(sample_rows("p", "multiple_choice", "A", ["A", None], options=COLOURS)))
    assert df["kept"].to_list() == [True, False] and df["quality"].to_list() == [1.0, 0.0]
    assert df["agreement"].to_list()[1] is None


def test_prompts_without_kept_samples_are_reported_with_the_reason():
    rows = (
        sample_rows("errors", "numerical", "3", [None, None])
        + sample_rows("format", "numerical", "3", ["<answer>3", "three"])
        + sample_rows("wrong", "numerical", "3", ["5", "7"])
        + sample_rows("fine", "numerical", "3", ["3", "7"])
    )
    dropped = dropped_prompts(scored(rows)).sort("prompt_id")
    assert dict(zip(dropped["prompt_id"], dropped["reason"])) == {
        "errors": "all_errors",
        "format": "no_valid_format",
        "wrong": "below_tau",
    }
    assert dropped.filter(pl.col("prompt_id") == "wrong")["num_samples"].item() == 2


def test_majority_vote_pseudo_label_is_opt_in():
    rows = sample_rows("u", "multiple_choice", None, ["B", "B", "C", "B"], options=COLOURS)
    plain = by_index(scored(rows))
    assert plain["correct"].null_count() == 4 and plain["label_source"].null_count() == 4
    assert plain["weight"].to_list() == [0.25] * 4  # no label: uniform over valid samples
    voted = by_index(scored(rows, pseudo_label="majority"))
    assert voted["label_source"].to_list() == ["majority"] * 4
    assert voted["correct"].to_list() == [1.0, 1.0, 0.0, 1.0]
    assert voted["weight"].to_list() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])


def test_agreement_weighting_of_open_ended_is_opt_in():
    texts = [
        "A red circle moves left.",
        "The red circle goes left.",
        "A red circle moving to the left.",
        "Bananas are a yellow fruit.",
    ]
    rows = sample_rows("e", "open_ended", None, texts)
    uniform = by_index(scored(rows))
    assert uniform["weight"].to_list() == pytest.approx([0.25] * 4)
    weighted = by_index(scored(rows, open_ended_weighting="agreement"))
    w = weighted["weight"].to_list()
    assert sum(w) == pytest.approx(1.0)
    assert w[3] < min(w[:3]) / 2  # the outlier weighs least


def test_tau_zero_keeps_every_answered_sample():
    rows = sample_rows("w", "multiple_choice", "A", ["B", "C", None], options=COLOURS)
    df = by_index(scored(rows, tau=0.0))
    assert df["kept"].to_list() == [True, True, False]
    assert df["weight"].to_list() == [0.5, 0.5, 0.0]


def test_scores_do_not_depend_on_row_order():
    """Ground truth is parsed per run of equal rows and answers once per distinct text: interleaved
    prompts, and the same answer text under other options, still score as when sorted."""
    rows = (
        sample_rows("p", "multiple_choice", "C", ["C", "(C)", "blue", "B"], teacher="a", options=COLOURS)
        + sample_rows("q", "multiple_choice", "B", ["C", "(C)", "green", "B"], teacher="a", options=COLOURS[:2])
        + sample_rows("p", "multiple_choice", "C", ["C", "A", "blue", "B"], teacher="b", options=COLOURS)
        + sample_rows("t", "temporal_grounding", "[2, 4]", ["[2, 4]", "[3, 5]", "00:02 to 00:04", "x"])
        + sample_rows("o", "ocr", "MOON", ["MOON", "moan", "SUN", None])
    )
    key = ["prompt_id", "teacher", "sample_index"]
    ordered = scored(rows).sort(key)
    interleaved = scored([rows[i] for i in sorted(range(len(rows)), key=lambda i: (i % 3, i))]).sort(key)
    assert interleaved.equals(ordered)
    assert by_index(ordered, "q")["extracted"].to_list()[:3] == [None, None, "B"]  # C is not an option of q


def test_report_sums_are_the_same_bits_on_every_call():
    """The report's sums add floats: in an order that does not depend on hashing (Polars' group
    order differs from call to call), or report.json could differ in its last digit between runs."""
    from rmsd.filter.report import partial_stats

    rows = []
    for p in range(300):
        answers = [str(p % 7 + k) for k in range(3)] + [str((p * 13) % 11)]  # epsilon-accuracy: qualities 0 and 1
        rows += sample_rows(
            f"n{p}", "numerical" if p % 2 else "temporal_grounding", str(p % 7 + 1), answers, teacher="ab"[p % 2]
        )
        rows += sample_rows(
            f"t{p}",
            "temporal_grounding",
            f"[{p % 5}, {p % 5 + 3}]",
            [f"[{p % 3}, {p % 4 + 2 + k / 3}]" for k in range(3)],
            teacher="ab"[p % 3 % 2],
        )
    scored = score_samples(frame(rows), FilterConfig(), keys=True)  # IoUs: fractions whose sums depend on their order
    first = partial_stats(scored).sort("task_type", "teacher")
    for _ in range(5):
        assert partial_stats(scored).sort("task_type", "teacher").equals(first)


def test_the_public_form_has_strings_and_the_jobs_form_the_same_values_as_categoricals():
    rows = sample_rows("p", "multiple_choice", "B", ["B", "C"], options=COLOURS) + sample_rows(
        "o", "open_ended", None, ["a cat"], teacher="b"
    )
    public, own = (score_samples(frame(rows), FilterConfig(), keys=keys) for keys in (False, True))
    for column in ("task_type", "teacher", "extracted", "label_source"):
        assert public.schema[column] == pl.String
        assert isinstance(own.schema[column], (pl.Categorical, pl.Enum))
        assert own[column].cast(pl.String).equals(public[column])
    assert public.columns == own.columns[: len(public.columns)]


def test_agreement_counts_the_same_answers_by_table_and_by_grouping(monkeypatch):
    """Agreement: the share of the prompt's answered samples (of its teacher; of the pool) whose
    normalised answer is this one's; no answer agrees with nothing, an error row has none."""
    from rmsd.filter import score

    rows = []
    for p in range(12):
        for teacher in "ab":
            answers = [str((p + k * (teacher == "b")) % 3) for k in range(3)] + ["no tag here" if p % 4 else None]
            rows += sample_rows(
                f"q{p}", "numerical", "1", answers, teacher=teacher, errors={3: "timeout"} if p % 4 == 0 else None
            )
    by_table = score_samples(frame(rows), FilterConfig())
    monkeypatch.setattr(
        score, "COUNTS_TABLE_PER_ROW", 0
    )  # every key space too sparse for a table: Polars groups the rows
    assert score_samples(frame(rows), FilterConfig()).equals(by_table)
    answered = [r for r in by_table.iter_rows(named=True) if r["error"] is None]
    for r in by_table.iter_rows(named=True):
        pool = [o for o in answered if o["prompt_id"] == r["prompt_id"]]
        own = [o for o in pool if o["teacher"] == r["teacher"]]
        shares = [
            sum(o["extracted"] == r["extracted"] for o in group) / len(group) if r["extracted"] is not None else 0.0
            for group in (own, pool)
        ]
        assert (r["agreement"], r["agreement_pool"]) == ((None, None) if r["error"] else tuple(shares))


def test_t_best_is_the_top_kept_sample_with_the_smallest_seed_hash():
    rows = []
    for p in range(20):
        for teacher in "ab":
            answers = [["1", "1", "2", "x"], ["2", "2", "2", "2"], ["1", "9", "1", "1"]][(p + (teacher == "b")) % 3]
            rows += sample_rows(f"q{p}", "numerical", "1" if p % 5 else "7", answers, teacher=teacher)
    cfg = FilterConfig(seed=11)
    df = score_samples(frame(rows), cfg)
    for prompt in df.partition_by("prompt_id"):
        kept = [r for r in prompt.iter_rows(named=True) if r["kept"]]
        best = [r for r in prompt.iter_rows(named=True) if r["is_best"]]
        if not kept:
            assert not best
            continue
        top = max(r["quality"] for r in kept)
        expected = min(
            (r for r in kept if r["quality"] == top), key=lambda r: (r["seed"] * 2654435761 + cfg.seed) % 2**32
        )
        assert [(r["teacher"], r["sample_index"]) for r in best] == [(expected["teacher"], expected["sample_index"])]
        assert sum(r["weight"] for r in kept) == pytest.approx(1.0)
