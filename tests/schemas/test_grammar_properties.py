"""The grammar's fast path against its reference definition, on generated responses.

``add_response_parts`` decides most responses by the fast path (``_single_answer_stages``) and the
rest by the definition (``response_stages``); ``fast=False`` runs the definition alone. Whatever
the mix of rows, both give the same columns, and parsing a column gives each row what parsing it
alone gives (``parse_answers`` parses each distinct answer once). Fixed example counts: a few
seconds in all.
"""

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsd.schemas.grammar import (
    RESPONSE_COLUMNS,
    add_response_parts,
    as_categories,
    integer_codes,
    parse_responses,
)
from rmsd.schemas.tables import TASK_TYPES

COLOURS = ["red", "green", "blue", "yellow"]
NUMBER = st.from_regex(r"-?\d{1,4}(\.\d{1,3})?", fullmatch=True)
# per task type: its strict form, and near misses (lenient forms, wrong order, stray text)
ANSWERS = {
    "multiple_choice": st.one_of(
        st.sampled_from("ABCDEFGZ"),
        st.sampled_from(["(B)", "b", "**C**", "Answer: b", "option d", "green", "B. green", "B C", "", " "]),
    ),
    "numerical": st.one_of(
        NUMBER, st.sampled_from(["1,200 m", "about -3.5", ".5", "+7", "1e5", "twelve", "12 or 13", "", "-"])
    ),
    "temporal_grounding": st.one_of(
        st.builds("[{}, {}]".format, NUMBER, NUMBER),
        st.from_regex(r"(\d+:)?\d{1,2}:\d{2}(\.\d+)? to (\d+:)?\d{1,2}:\d{2}", fullmatch=True),
        st.sampled_from(["[3, 1]", "[1.5,", "from 2 to", "[1, 2, 3]", "[]"]),
    ),
    "spatial_grounding": st.one_of(
        st.builds("[{}, {}, {}, {}]".format, NUMBER, NUMBER, NUMBER, NUMBER),
        st.sampled_from(["x1=4 y1=8 x2=20 y2=30", "[ 4,8 ,20,  30 ]", "[20, 8, 4, 30]", "[1, 2, 3]", "box"]),
    ),
    "ocr": st.one_of(st.text(max_size=8), st.sampled_from(['  "MOON" ', "`x`", "a  b\n c", ""])),
    "open_ended": st.one_of(st.text(max_size=12), st.sampled_from(["A red circle.", "  ", "A\u00a0cat"])),
}
SPACE = st.sampled_from(["", "", " ", "\n", " \n\t", "\u00a0", "\u2003"])
THINK = st.sampled_from(["", "hmm", "a < b", "</answer>", "<answer>", "<think>", "é 日本"])
TAG_PIECES = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "B", "[1, 2]", "<", "/", "answer"]


@st.composite
def responses(draw, task: str) -> str | None:
    """A response for ``task``: tightly or loosely wrapped, cut off, with tags missing, repeated or
    out of order, free text, or null."""
    answer, think, spaces = draw(ANSWERS[task]), draw(THINK), [draw(SPACE) for _ in range(4)]
    form = draw(st.integers(0, 9))
    if form <= 2:  # well formed (the common case), now and then loose
        return f"{spaces[0] if form == 2 else ''}<think>{think}</think>{spaces[1] if form == 2 else ''}<answer>{answer}</answer>{spaces[2] if form else ''}"  # noqa: E501
    if form == 3:  # cut off by the token limit
        return f"<think>{think}</think><answer>{answer}"
    if form == 4:  # text around the tags
        return f"{draw(st.text(max_size=3))}<think>{think}</think>{draw(st.text(max_size=3))}<answer>{answer}</answer>{draw(st.text(max_size=3))}"  # noqa: E501
    if form == 5:  # tags repeated
        return f"<think>{think}</think><answer>{answer}</answer><answer>{draw(ANSWERS[task])}</answer>"
    if form == 6:  # no answer tags, or an unclosed think
        return draw(st.sampled_from([f"<think>{think}</think> {answer}", f"<think>{think} {answer}", answer]))
    if form == 7:  # any mix of tags and text
        return "".join(draw(st.lists(st.sampled_from(TAG_PIECES), max_size=10)))
    if form == 8:
        return None
    return draw(st.text(max_size=20))


@st.composite
def rows(draw) -> list[tuple]:
    out = []
    for _ in range(draw(st.integers(1, 25))):
        task = draw(st.sampled_from(TASK_TYPES))
        options = draw(st.sampled_from([COLOURS, COLOURS[:2], ["green", "red"]])) if task == "multiple_choice" else None
        out.append((draw(responses(task)), task, options))
    return out


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        {"text": [r[0] for r in rows], "task_type": [r[1] for r in rows], "options": [r[2] for r in rows]},
        schema={"text": pl.String, "task_type": pl.String, "options": pl.List(pl.String)},
    )


@settings(max_examples=80, deadline=None, derandomize=True)
@given(rows=rows())
def test_the_fast_path_equals_the_definition(rows):
    frame = _frame(rows)
    fast, defined = add_response_parts(frame), add_response_parts(frame, fast=False)
    assert fast.select(RESPONSE_COLUMNS).equals(defined.select(RESPONSE_COLUMNS))
    assert fast["outer_ok"].null_count() == 0 and fast["truncated"].null_count() == 0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(rows=rows())
def test_parsing_a_column_equals_the_definition_row_by_row(rows):
    """The whole grammar, fast (the fast path, each distinct answer parsed once) against the
    definition on each row alone."""
    frame = _frame(rows)
    alone = pl.concat([parse_responses(frame[i : i + 1], fast=False) for i in range(frame.height)])
    assert parse_responses(frame).equals(alone)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    texts=st.lists(
        st.none()
        | st.lists(st.sampled_from([*TAG_PIECES, "\u00a0", "\u2003", "é", "日本", ">"]), max_size=12).map("".join),
        min_size=1,
        max_size=40,
    )
)
def test_the_fast_path_equals_the_definition_on_any_mix_of_tags(texts):
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    assert (
        add_response_parts(frame)
        .select(RESPONSE_COLUMNS)
        .equals(add_response_parts(frame, fast=False).select(RESPONSE_COLUMNS))
    )


@settings(max_examples=50, deadline=None, derandomize=True)
@given(values=st.lists(st.none() | st.sampled_from(["b", "a", "c", "dd", "é"]), max_size=30))
def test_categories_of_their_own_are_coded_densely_in_order_of_first_appearance(values):
    """``as_categories`` (``pl.Categories.random()``, an unstable Polars API: polars is pinned to
    the version tested) gives codes 0..n-1 in order of first appearance, with the categories listed
    by code: the scoring's per-prompt tables are sized by the largest code, and the written
    dictionaries list the categories in that order. Fails if Polars changes either."""
    series = pl.DataFrame({"v": values}, schema={"v": pl.String}).select(as_categories("v")).to_series()
    seen = list(dict.fromkeys(v for v in values if v is not None))
    codes = pl.DataFrame({"v": series}).select(integer_codes("v", series.dtype)).to_series()
    assert codes.to_list() == [None if v is None else seen.index(v) for v in values]
    categories = series.dtype.categories
    listed = categories if isinstance(categories, pl.Series) else categories.to_series()
    assert listed.to_list() == seen
