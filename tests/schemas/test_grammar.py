import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsd.schemas.grammar import TaskType, extract, extract_answer, split_response, wrap_response
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
        ("ocr", "  \"MOON\" ", "moon", True),
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
    assert cut.truncated and not cut.outer_ok and cut.answer_text == "[1.5, 2"
    assert split_response("<think>still thinking").answer_text is None
    assert extract("Text before <think>x</think><answer>B</answer>", "multiple_choice", COLOURS).outer_ok is False


def test_ground_truth_strings_parse_strictly():
    assert extract_answer("[0.375, 3.5]", "temporal_grounding").task_ok
    assert extract_answer("[71, 78, 84, 91]", "spatial_grounding").task_ok
    assert extract_answer("3", "numerical").normalised == "3"


@settings(max_examples=300, deadline=None)
@given(text=st.text(), task=st.sampled_from(TASK_TYPES), options=st.none() | st.lists(st.text(), max_size=6))
def test_no_parser_raises(text, task, options):
    extract(text, task, options)
    extract(wrap_response(text, text), task, options)
    extract_answer(text, task, options)


def test_task_types_are_the_six_of_the_contract():
    assert TASK_TYPES == tuple(t.value for t in TaskType) == (
        "multiple_choice", "numerical", "temporal_grounding", "spatial_grounding", "ocr", "open_ended",
    )
