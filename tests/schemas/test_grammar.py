from unittest import mock

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsd.schemas import grammar
from rmsd.schemas.grammar import (
    ANSWER_CODE,
    TaskType,
    add_response_parts,
    extract,
    extract_answer,
    parse_answers,
    parse_responses,
    split_response,
    wrap_response,
)
from rmsd.schemas.tables import TASK_TYPES

COLOURS = ["red", "green", "blue", "yellow"]


def test_well_formed_response():
    e = extract(wrap_response("the circle is blue", "C"), "multiple_choice", COLOURS)
    assert (e.outer_ok, e.task_ok, e.value, e.normalised) == (True, True, "C", "C")


@pytest.mark.parametrize("answer", ["(B)", "B.", "**B**", "Answer: b", "green", "B. green"])
def test_multiple_choice_variants_extract_the_letter(answer):
    e = extract(wrap_response("...", answer), "multiple_choice", COLOURS)
    assert e.value == "B"
    assert e.task_ok is (answer == "B")  # only the bare letter is the strict form


def test_letter_outside_the_options_is_not_an_answer():
    assert extract(wrap_response("", "F"), "multiple_choice", COLOURS).value is None


@pytest.mark.parametrize(
    "task,answer,value,strict",
    [
        ("numerical", "12", 12.0, True),
        ("numerical", "1,200 m", 1200.0, False),
        ("numerical", "about -3.5", -3.5, False),
        ("temporal_grounding", "[1.5, 3]", (1.5, 3.0), True),
        ("temporal_grounding", "from 00:05 to 01:10", (5.0, 70.0), False),
        ("temporal_grounding", "[3, 1]", None, False),
        ("spatial_grounding", "[ 4,8 ,20,  30 ]", (4.0, 8.0, 20.0, 30.0), True),
        ("spatial_grounding", "x1=4 y1=8 x2=20 y2=30", (4.0, 8.0, 20.0, 30.0), False),
        ("ocr", '  "MOON" ', "moon", True),
    ],
)
def test_task_answers(task, answer, value, strict):
    e = extract(wrap_response("t", answer), task)
    assert e.value == value
    assert e.task_ok is strict


def test_outer_format_failures():
    assert not extract("<answer>B</answer>", "multiple_choice", COLOURS).outer_ok
    assert extract("<answer>B</answer>", "multiple_choice", COLOURS).value == "B"
    two = "<think>a</think><answer>A</answer><answer>C</answer>"
    e = extract(two, "multiple_choice", COLOURS)
    assert not e.outer_ok and e.value == "C"  # the last answer counts
    cut = split_response("<think>hmm</think><answer>[1.5, 2")
    assert cut == {"answer_text": "[1.5, 2", "outer_ok": False, "truncated": True}
    assert split_response("<think>still thinking")["answer_text"] is None
    assert extract("Text before <think>x</think><answer>B</answer>", "multiple_choice", COLOURS).outer_ok is False


def test_ground_truth_strings_parse_strictly():
    assert extract_answer("[0.375, 3.5]", "temporal_grounding").task_ok
    assert extract_answer("[71, 78, 84, 91]", "spatial_grounding").task_ok
    assert extract_answer("3", "numerical").normalised == "3"


RESPONSES = st.one_of(
    st.text(),
    st.builds(wrap_response, st.text(), st.text()),
    st.builds(lambda a, b: f"<think>{a}</think><answer>{b}", st.text(), st.text()),
    st.from_regex(r"\[?\s*-?\d{1,4}(\.\d+)?\s*(,\s*-?\d{1,4}(\.\d+)?\s*){0,5}\]?", fullmatch=True),
    st.from_regex(r"(\d+:)?\d{1,2}:\d{2}(\.\d+)? to (\d+:)?\d{1,2}:\d{2}", fullmatch=True),
)


@settings(max_examples=80, deadline=None)  # generated responses of every task type: test_grammar_properties.py
@given(
    rows=st.lists(
        st.tuples(RESPONSES, st.sampled_from(TASK_TYPES), st.none() | st.lists(st.text(), max_size=6)),
        min_size=1,
        max_size=30,
    )
)
def test_no_parser_raises(rows):
    frame = pl.DataFrame(
        {"text": [r[0] for r in rows], "task_type": [r[1] for r in rows], "options": [r[2] for r in rows]},
        schema={"text": pl.String, "task_type": pl.String, "options": pl.List(pl.String)},
    )
    parsed = parse_responses(frame)
    assert parsed.height == len(rows)
    assert parsed["text"].to_list() == frame["text"].to_list()  # row order kept
    assert parsed["task_ok"].null_count() == 0 and parsed["outer_ok"].null_count() == 0
    answers = parse_answers(frame, "text")
    assert answers.height == len(rows)


def test_wrapper_checked_by_the_fast_path_and_the_definition_alike():
    """Tightly wrapped responses are told by the fast path's exact bytes, the others by the
    definition: one batch mixing both gives the definition's outer_ok on each row (generated
    responses: test_grammar_properties.py)."""
    texts = [
        "<think>a</think><answer>B</answer>",
        "<think>a</think><answer>B</answer>\n",
        " <think>a</think><answer>B</answer>",
        "<think>a</think>\n<answer>B</answer>",
        "<think>a</think><answer>B</answer> \u00a0",
        "<think>a</think><answer>B</answer>x",
        "x<think>a</think><answer>B</answer>",
        "<think>a<think></think><answer>B</answer>",
        "<think>a</think><answer>B",
        "a</think><answer>B</answer>",
        "<think>a</think> b <answer>B</answer>",
        None,
    ]
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    defined = add_response_parts(frame, fast=False)
    assert add_response_parts(frame)["outer_ok"].to_list() == defined["outer_ok"].to_list()
    assert defined["outer_ok"].to_list() == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["(C)", "green", "12", None]),
            st.sampled_from(["multiple_choice", "numerical", "ocr"]),
            st.sampled_from([None, COLOURS, COLOURS[:2], ["green", "red"]]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_repeated_answers_parse_as_each_alone(rows):
    """parse_answers parses each distinct (answer, task type[, options]) once; every row still gets
    what parsing it alone gives (the same text is another letter under other options)."""
    frame = pl.DataFrame(
        {"answer": [r[0] for r in rows], "task_type": [r[1] for r in rows], "options": [r[2] for r in rows]},
        schema={"answer": pl.String, "task_type": pl.String, "options": pl.List(pl.String)},
    )
    alone = pl.concat([parse_answers(frame[i : i + 1], "answer") for i in range(frame.height)])
    assert parse_answers(frame, "answer").equals(alone)
    # the caller's numbering of the runs of equal options (rmsd-filter's) gives the same
    runs = frame.select(pl.col("options").ne_missing(pl.col("options").shift()).cum_sum().alias("runs"))
    assert parse_answers(frame.hstack(runs), "answer", option_runs="runs").drop("runs").equals(alone)
    # rows find their distinct answer in a table of the keys, or by a join where the keys are sparse
    with mock.patch.object(grammar, "ANSWERS_TABLE_PER_ROW", 0):
        assert parse_answers(frame, "answer").equals(alone)
    # the answer code, made once per distinct answer: equal exactly where the normalised answers are
    coded = parse_answers(frame, "answer", only=("normalised", ANSWER_CODE))
    pairs = coded.select("normalised", ANSWER_CODE).unique()
    assert pairs.height == pairs["normalised"].n_unique() == pairs[ANSWER_CODE].n_unique()
    assert coded.filter(pl.col(ANSWER_CODE) == 0)["normalised"].null_count() == (coded[ANSWER_CODE] == 0).sum()
    assert coded["normalised"].is_null().sum() == (coded[ANSWER_CODE] == 0).sum()
    # normalised as a categorical: the same answers, its codes the answer code's
    categorical = parse_answers(frame, "answer", only=("normalised", ANSWER_CODE), categorical=True)
    assert isinstance(categorical.schema["normalised"], pl.Categorical)
    assert categorical["normalised"].cast(pl.String).equals(coded["normalised"]) and categorical[ANSWER_CODE].equals(
        coded[ANSWER_CODE]
    )
    assert (
        (categorical["normalised"].to_physical().cast(pl.UInt64) + 1)
        .fill_null(0)
        .equals(categorical[ANSWER_CODE], check_names=False)
    )


def test_vectorised_parse_equals_one_at_a_time():
    texts = [wrap_response("x", a) for a in ["(B)", "12", "[1, 2]", "[1, 2, 3, 4]", "MOON", "A cat."]]
    tasks = ["multiple_choice", "numerical", "temporal_grounding", "spatial_grounding", "ocr", "open_ended"]
    options = [COLOURS, None, None, None, None, None]
    frame = pl.DataFrame({"text": texts, "task_type": tasks, "options": options})
    parsed = parse_responses(frame)
    for row, (text, task, opts) in zip(parsed.iter_rows(named=True), zip(texts, tasks, options)):
        assert row["normalised"] == extract(text, task, opts).normalised


def test_task_types_are_the_six_of_the_contract():
    assert (
        TASK_TYPES
        == tuple(t.value for t in TaskType)
        == (
            "multiple_choice",
            "numerical",
            "temporal_grounding",
            "spatial_grounding",
            "ocr",
            "open_ended",
        )
    )
