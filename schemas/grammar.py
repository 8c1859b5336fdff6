"""The answer grammar: the one place that says what a well-formed response is and what it answers.

A response is ``<think>...</think><answer>...</answer>``. Inside ``<answer>``:

==================  ==============================================  ======================
task type           strict form (``task_ok``)                       normalised answer
==================  ==============================================  ======================
multiple_choice     one option letter: ``B``                        ``"B"``
numerical           a number: ``12`` or ``-3.5``                    ``"12"`` / ``"-3.5"``
temporal_grounding  ``[start, end]`` in seconds, start <= end        ``"[1.5, 3]"``
spatial_grounding   ``[x1, y1, x2, y2]`` pixels, x1<=x2, y1<=y2      ``"[4, 8, 20, 30]"``
ocr                 the text                                        lower case, spaces collapsed
open_ended          free text                                       lower case, spaces collapsed
==================  ==============================================  ======================

Scoring is two-level (METHOD.md): ``outer_ok`` checks the wrapper, ``task_ok`` the strict syntax
inside it. Extraction is lenient on purpose (``(B)``, ``**B**``, ``Answer: b``, the option's text,
``1,200 m``, ``01:05``, boxes with labels or odd spacing, text around the tags, several answer
tags, output cut off by the token limit) so that the metric measures what the teacher meant while
the format flags measure whether it followed the format.

The answer part is the text after the last ``<answer>`` up to the next ``</answer>`` (none:
the response was cut off; ``truncated``). Without any ``<answer>``, it is the text after the last
``</think>`` (or the whole text); an unclosed ``<think>`` answers nothing.

The grammar is written once, as Polars expressions (``parse_responses`` / ``parse_answers`` work
on whole columns: millions of rows in rmsd-filter, a batch of rollouts in rmsd-train). ``extract``
is the same code on one response. No function here raises on any text.

The answer part has one reference definition (``response_stages``) and one fast path
(``_single_answer_stages``) for the common case, which decides only the rows it is sure of and
leaves the others to the definition; ``tests/schemas/test_grammar_properties.py`` holds the two
equal on generated responses (``add_response_parts(..., fast=False)`` is the definition alone).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from .tables import TaskType

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Rust regex syntax (Polars): no look-arounds, no back-references.
OUTER_PATTERN = r"^\s*<think>(?s:.*?)</think>\s*<answer>(?s:.*?)</answer>\s*$"
NUMBER_PATTERN = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
CLOCK_PATTERN = r"(?:\d+:)?\d{1,2}:\d{2}(?:\.\d+)?"
BOX_LABEL_PATTERN = r"(?i)\b(?:[xy][12]|left|top|right|bottom|width|height|w|h)\s*[=:]"
BOX_NUMBER_PATTERN = r"-?\d+(?:\.\d+)?"
LETTER_PATTERNS = (
    r"^\W*\(?([A-Za-z])\)?\W*$",  # B  (B)  B.  **B**  [b]
    r"(?i)(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Za-z])\b\)?",  # Answer: b
    r"^\W*\(?([A-Z])\)?[.:)]\s",  # "B. red"  "(C) blue"
)
STRICT_PATTERNS: dict[str, str] = {
    "multiple_choice": r"^\s*[A-Za-z]\s*$",
    "numerical": r"^\s*[-+]?(?:\d+(?:\.\d+)?|\.\d+)\s*$",
    "temporal_grounding": r"^\s*\[\s*\d+(?:\.\d+)?\s*,\s*\d+(?:\.\d+)?\s*\]\s*$",
    "spatial_grounding": r"^\s*\[\s*-?\d+(?:\.\d+)?\s*(?:,\s*-?\d+(?:\.\d+)?\s*){3}\]\s*$",
    "ocr": r"\S",
    "open_ended": r"\S",
}

ANSWER_INSTRUCTIONS: dict[str, str] = {
    "multiple_choice": "Reply with only the letter of the correct option inside <answer>.",
    "numerical": "Reply with only a number inside <answer>.",
    "temporal_grounding": "Reply with [start, end] in seconds inside <answer>.",
    "spatial_grounding": "Reply with the box [x1, y1, x2, y2] in pixels inside <answer>.",
    "ocr": "Reply with only the text inside <answer>.",
    "open_ended": "Reply in one or two sentences inside <answer>.",
}
FORMAT_INSTRUCTION = "Think inside <think></think>, then answer inside <answer></answer>."

# Columns the parsers add. v0..v3 hold the numbers of numerical / interval / box answers.
PARSED_COLUMNS = ("task_ok", "normalised", "display", "v0", "v1", "v2", "v3")
RESPONSE_COLUMNS = ("answer_text", "outer_ok", "truncated")
# An optional parsed column (``parse_answers(..., only=...)``): an integer per distinct normalised
# answer (1, 2, ...; 0 for none), equal exactly where the normalised answers are equal.
ANSWER_CODE = "answer_code"


def option_letters(options: list[str] | None) -> str:
    return LETTERS[: len(options)] if options else LETTERS


# --- the answer part of a response ------------------------------------------------------------
def response_stages(text: pl.Expr) -> list[dict[str, pl.Expr]]:
    """Stages adding answer_text / outer_ok / truncated for a response column: the reference
    definition, valid for any text (``add_response_parts`` uses it on the rows the fast path below
    does not decide)."""
    return [
        {
            "_has_answer": text.str.contains(ANSWER_OPEN, literal=True),
            "_tail": text.str.split(ANSWER_OPEN).list.last(),
            "_think_open": text.str.contains(THINK_OPEN, literal=True) & ~text.str.contains(THINK_CLOSE, literal=True),
            "_after_think": text.str.split(THINK_CLOSE).list.last(),
            "_outer": text.str.contains(OUTER_PATTERN)
            & (text.str.count_matches(ANSWER_OPEN, literal=True) == 1)
            & (text.str.count_matches(THINK_OPEN, literal=True) == 1),
        },
        {
            "_raw": pl.when("_has_answer")
            .then(pl.col("_tail").str.split(ANSWER_CLOSE).list.first())
            .when("_think_open")
            .then(pl.lit(None, pl.String))
            .otherwise(pl.col("_after_think"))
            .str.strip_chars(),
            "truncated": (
                (pl.col("_has_answer") & ~pl.col("_tail").str.contains(ANSWER_CLOSE, literal=True))
                | (~pl.col("_has_answer") & pl.col("_think_open"))
            ).fill_null(False),
        },
        {
            "answer_text": pl.when(pl.col("_raw").str.len_chars() > 0).then(pl.col("_raw")),
            "outer_ok": pl.col("_outer").fill_null(False) & ~pl.col("truncated"),
        },
    ]


def _twice(tag: str) -> str:
    """A pattern found where ``tag`` occurs twice or more (a tag cannot overlap itself); a regular
    expression search stops at the second, cheaper than counting them all."""
    return f"{tag}(?s:.*){tag}"


def _single_answer_stages(text: pl.Expr) -> list[dict[str, pl.Expr]]:
    """The fast path: the same columns for the rows it decides (``_decided``; the others are left
    to ``response_stages``), from byte offsets instead of splits and exact bytes instead of
    OUTER_PATTERN.

    It decides a response with exactly one ``<answer>`` and no ``</answer>`` before it
    (``_single``), unless its wrapper is loose. The answer part is the bytes between ``<answer>``
    and the first ``</answer>`` (or the end: cut off). With one ``<answer>``, OUTER_PATTERN holds
    exactly when the text starts (after whitespace) with ``<think>``, ``</think>`` and whitespace
    lead to the ``<answer>``, and it ends with ``</answer>`` and whitespace; it asks for one
    ``<think>`` as well, and no cut-off. So ``outer_ok`` is false with a second ``<think>`` or cut
    off, and true for the tight wrapper (no whitespace around the tags but a final newline; with one
    ``<answer>``, ``</think><answer>`` can only occur at it). Any other wrapper (whitespace around
    its tags, text outside them) is loose: not decided here.

    What it buys, measured: 0.290 against 1.034 us of CPU per response for the definition alone
    (0.28x), on the first 1 M responses of the bench's corpus (97% tightly wrapped), one worker:
    ``bench/filter.py --rows 1000000 --grammar 1000000``. A worker's whole job is 1.9 us per row
    there (``--steps``): without the fast path, some 1.4x that."""
    opened, closed = pl.col("_opened"), pl.col("_closed")
    return [
        {
            # a tag is also its own regular expression; Polars finds it 2.5x faster that way than as
            # a literal (0.017 against 0.043 us per response): the same byte offset
            "_opened": text.str.find(re.escape(ANSWER_OPEN)),
            "_closed": text.str.find(re.escape(ANSWER_CLOSE)),
            "_several": text.str.contains(_twice(ANSWER_OPEN)),
        },
        {
            "_single": (opened.is_not_null() & ~pl.col("_several") & (closed.is_null() | (closed > opened))).fill_null(
                False
            )
        },
        {
            "_raw": text.cast(pl.Binary)
            .bin.slice(pl.when("_single").then(opened + len(ANSWER_OPEN)), closed - opened - len(ANSWER_OPEN))
            .cast(pl.String)
            .str.strip_chars(),
            "truncated": pl.col("_single") & closed.is_null(),
            "_one_think": pl.col("_single") & ~text.str.contains(_twice(THINK_OPEN)),
            "_tight": text.str.starts_with(THINK_OPEN)
            & text.str.contains(re.escape(THINK_CLOSE + ANSWER_OPEN))
            & (text.str.ends_with(ANSWER_CLOSE) | text.str.ends_with(ANSWER_CLOSE + "\n")),
        },
        {
            "outer_ok": pl.col("_one_think") & pl.col("_tight"),
            "_decided": (
                pl.col("_single") & (~pl.col("_one_think") | pl.col("_tight") | pl.col("truncated"))
            ).fill_null(False),
        },
        {"answer_text": pl.when(pl.col("_raw").str.len_bytes() > 0).then(pl.col("_raw"))},
    ]


def _apply(frame: pl.DataFrame, stages: list[dict[str, pl.Expr]], select: list[pl.Expr] | None = None) -> pl.DataFrame:
    """The stages one after the other (then ``select``), as one lazy query: one plan and one
    collect instead of an eager call (and its planning) per stage. Without the optimiser's passes:
    every stage's columns are used and no expression repeats, so they find nothing and cost about
    a millisecond a query (one worker: 1.014x and 1.008x). ``pl.QueryOptFlags`` is unstable in Polars:
    polars is pinned to the version tested (pyproject.toml)."""
    query = frame.lazy()
    for stage in stages:
        query = query.with_columns(**stage)
    return (query.select(select) if select is not None else query).collect(optimizations=pl.QueryOptFlags.none())


# Stages are built once per process and column name (expressions are immutable): building them is
# a fixed cost per call, about a tenth of the parsing of a 100 k-row shard group.
_cached_single_stages = functools.cache(lambda text: _single_answer_stages(pl.col(text)))
_cached_response_stages = functools.cache(lambda text: response_stages(pl.col(text)))


def add_response_parts(frame: pl.DataFrame, text: str = "text", fast: bool = True) -> pl.DataFrame:
    """Add answer_text / outer_ok / truncated of the responses in column ``text``: by the fast path
    where it decides, by the definition elsewhere (everywhere where ``fast`` is false)."""
    if not fast:
        parts = _apply(frame.select(text), _cached_response_stages(text))
        return frame.with_columns(parts.get_column(c) for c in ("truncated", "answer_text", "outer_ok"))
    parts = _apply(frame.select(text), _cached_single_stages(text))
    other = parts["_decided"].not_()
    if other.any():  # no <answer>, several, a </answer> before it, a loose wrapper, null: the definition
        rows = other.arg_true()
        general = _apply(frame.select(pl.col(text).gather(rows)), _cached_response_stages(text))
        parts = parts.with_columns(parts[c].scatter(rows, general[c]) for c in RESPONSE_COLUMNS)
    return frame.with_columns(parts.get_column(c) for c in ("truncated", "answer_text", "outer_ok"))


# --- helpers on string expressions --------------------------------------------------------------
def _to_float(e: pl.Expr) -> pl.Expr:
    value = e.str.replace_all(",", "", literal=True).cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value)


def format_number_expr(value: pl.Expr) -> pl.Expr:
    """Canonical text of a number: integers without a decimal point, others to 6 decimals."""
    integral = (value == value.round(0)) & (value.abs() < 1e15)
    return (
        pl.when(integral)
        .then(value.cast(pl.Int64, strict=False).cast(pl.String))
        .otherwise(value.round(6).cast(pl.String))
    )


def _collapse(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars().str.strip_chars("\"'`*").str.replace_all(r"\s+", " ").str.strip_chars()


def _clock_seconds(clock: pl.Expr) -> pl.Expr:
    parts = clock.str.split(":")
    part = lambda i: parts.list.get(i, null_on_oob=True).cast(pl.Float64, strict=False)  # noqa: E731
    return (
        pl.when(parts.list.len() == 3).then(part(0) * 3600 + part(1) * 60 + part(2)).otherwise(part(0) * 60 + part(1))
    )


def _bracketed(values: list[pl.Expr]) -> pl.Expr:
    return pl.concat_str(
        [pl.lit("["), pl.concat_str([format_number_expr(v) for v in values], separator=", "), pl.lit("]")]
    )


# --- per task type ------------------------------------------------------------------------------
# Each parser is a list of stages (column name -> expression), applied one ``with_columns`` after
# another: later stages read the columns earlier ones made, so no expression is evaluated twice.
Stages = list[dict[str, pl.Expr]]
_NO_NUMBERS = {f"v{i}": pl.lit(None, pl.Float64) for i in range(4)}


def _parse_choice(a: pl.Expr, options: pl.Expr) -> Stages:
    allowed = pl.lit(LETTERS).str.slice(0, options.list.len().fill_null(len(LETTERS)))
    candidates = {f"_c{i}": a.str.extract(p, 1).str.to_uppercase() for i, p in enumerate(LETTER_PATTERNS)}
    valid = [pl.when(allowed.str.contains(pl.col(c), literal=True)).then(pl.col(c)) for c in candidates]
    letter = pl.col("normalised")  # option-text answers are matched afterwards (_match_option_text)
    strict = a.str.contains(STRICT_PATTERNS["multiple_choice"]).fill_null(False)
    return [
        candidates,
        {"normalised": pl.coalesce(valid)},
        {"task_ok": strict & letter.is_not_null(), "display": letter, **_NO_NUMBERS},
    ]


def _parse_number(a: pl.Expr) -> Stages:
    value = pl.col("v0")
    strict = a.str.contains(STRICT_PATTERNS["numerical"]).fill_null(False)
    return [
        {"v0": _to_float(a.str.extract(f"({NUMBER_PATTERN})", 1))},
        {"normalised": format_number_expr(value), "task_ok": strict & value.is_not_null()},
        {"display": pl.col("normalised"), **{k: v for k, v in _NO_NUMBERS.items() if k != "v0"}},
    ]


def _parse_interval(a: pl.Expr) -> Stages:
    clocks, numbers = pl.col("_clocks"), pl.col("_numbers")
    use_clock = clocks.list.len() >= 2
    first = lambda lst, i: lst.list.get(i, null_on_oob=True)  # noqa: E731
    start, end = pl.col("_start"), pl.col("_end")
    ok = start.is_not_null() & end.is_not_null() & (start <= end)
    strict = a.str.contains(STRICT_PATTERNS["temporal_grounding"]).fill_null(False)
    return [
        {"_clocks": a.str.extract_all(CLOCK_PATTERN), "_numbers": a.str.extract_all(NUMBER_PATTERN)},
        {
            "_start": pl.when(use_clock).then(_clock_seconds(first(clocks, 0))).otherwise(_to_float(first(numbers, 0))),
            "_end": pl.when(use_clock).then(_clock_seconds(first(clocks, 1))).otherwise(_to_float(first(numbers, 1))),
        },
        {"_ok": ok.fill_null(False)},
        {
            "v0": pl.when("_ok").then(start),
            "v1": pl.when("_ok").then(end),
            "v2": pl.lit(None, pl.Float64),
            "v3": pl.lit(None, pl.Float64),
        },
        {
            "normalised": pl.when("_ok").then(_bracketed([pl.col("v0"), pl.col("v1")])),
            "task_ok": strict & pl.col("_ok"),
        },
        {"display": pl.col("normalised")},
    ]


def _parse_box(a: pl.Expr) -> Stages:
    numbers = pl.col("_numbers")
    v = [pl.col(f"_b{i}") for i in range(4)]
    strict = a.str.contains(STRICT_PATTERNS["spatial_grounding"]).fill_null(False)
    return [
        {"_numbers": a.str.replace_all(BOX_LABEL_PATTERN, " ").str.extract_all(BOX_NUMBER_PATTERN)},
        {f"_b{i}": numbers.list.get(i, null_on_oob=True).cast(pl.Float64, strict=False) for i in range(4)},
        {"_ok": ((numbers.list.len() >= 4) & (v[0] <= v[2]) & (v[1] <= v[3])).fill_null(False)},
        {f"v{i}": pl.when("_ok").then(v[i]) for i in range(4)},
        {
            "normalised": pl.when("_ok").then(_bracketed([pl.col(f"v{i}") for i in range(4)])),
            "task_ok": strict & pl.col("_ok"),
        },
        {"display": pl.col("normalised")},
    ]


def _parse_text(a: pl.Expr, task: str) -> Stages:
    collapsed = pl.col("_collapsed")
    return [
        {"_collapsed": _collapse(a)},
        {"display": pl.when(collapsed.str.len_chars() > 0).then(collapsed)},
        {
            "normalised": pl.col("display").str.to_lowercase(),
            "task_ok": a.str.contains(STRICT_PATTERNS[task]).fill_null(False),
            **_NO_NUMBERS,
        },
        *([{"display": pl.col("normalised")}] if task == TaskType.OCR.value else []),
    ]


def _task_stages(task: str, a: pl.Expr, options: pl.Expr) -> Stages:
    if task == TaskType.MULTIPLE_CHOICE.value:
        return _parse_choice(a, options)
    if task == TaskType.NUMERICAL.value:
        return _parse_number(a)
    if task == TaskType.TEMPORAL_GROUNDING.value:
        return _parse_interval(a)
    if task == TaskType.SPATIAL_GROUNDING.value:
        return _parse_box(a)
    return _parse_text(a, task)


@functools.cache
def _parser(task: str) -> Stages:
    return _task_stages(task, pl.col("_answer"), pl.col("_options"))


def _match_option_text(frame: pl.DataFrame, answer: str, options: str) -> pl.DataFrame:
    """Multiple choice answered with the option's text instead of its letter."""
    missing = frame.select(
        pl.col("normalised").is_null() & pl.col(answer).is_not_null() & pl.col(options).is_not_null()
    ).to_series()
    if not missing.any():
        return frame
    said = _collapse(pl.col(answer)).str.to_lowercase().str.strip_chars_end(".")
    matches = (
        frame.filter(missing)
        .select("_row", said.alias("_said"), pl.col(options).alias("_option"))
        .with_columns(pl.int_ranges(pl.col("_option").list.len()).alias("_index"))
        .explode("_option", "_index")
        .filter(_collapse(pl.col("_option")).str.to_lowercase().str.strip_chars_end(".") == pl.col("_said"))
        .group_by("_row")
        .agg(pl.col("_index").min())
        .with_columns(pl.lit(LETTERS).str.slice(pl.col("_index"), 1).alias("_letter"))
    )
    if matches.is_empty():
        return frame
    return (
        frame.join(matches.select("_row", "_letter"), on="_row", how="left")
        .with_columns(
            pl.coalesce("normalised", "_letter").alias("normalised"), pl.coalesce("display", "_letter").alias("display")
        )
        .drop("_letter")
    )


def integer_codes(column: str, dtype: pl.DataType | None = None) -> pl.Expr:
    """Integer codes of a string column: dense, 0..n-1 for its n distinct values in order of first
    appearance (null stays null). Grouping on one integer key is several times cheaper than on
    strings or on several columns. A categorical column (``dtype``) has its codes already: equal
    exactly where the strings are, and read, not hashed (dense as well where it was cast with
    ``as_categories``)."""
    coded = pl.col(column) if isinstance(dtype, pl.Categorical) else as_categories(column)
    return coded.to_physical().cast(pl.UInt64)


def as_categories(column: str) -> pl.Expr:
    """A string column as a categorical of its own (codes dense, in order of first appearance):
    hashed once, then compared, grouped and written as small integers. ``pl.Categories`` is unstable
    in Polars: polars is pinned to the version tested, and
    tests/schemas/test_grammar_properties.py fails if those codes change."""
    return pl.col(column).cast(pl.Categorical(pl.Categories.random()))


# _distinct_answers' table of keys: at most this many entries per row, else a join (a setting: public
# so that a test can send every row through the join)
ANSWERS_TABLE_PER_ROW = 16


def _distinct_answers(narrow: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series | None]:
    """One row per distinct (answer, task type), and options too for multiple choice (the only
    parser that reads them; compared run by run, exactly), and each row's index among them (None:
    all rows distinct). A prompt's K samples mostly give the same answer: each is parsed once."""
    if narrow.height < 2:
        return narrow, None
    runs = (
        pl.col("_runs")
        if "_runs" in narrow.columns
        else pl.col("_options").ne_missing(pl.col("_options").shift()).cum_sum()
    )
    keys = narrow.select(
        _answer=(integer_codes("_answer") + 1).fill_null(0),
        _task=(integer_codes("_task", narrow.schema["_task"]) + 1).fill_null(0),
        _runs=runs.cast(pl.UInt64),
        _choice=(pl.col("_task") == TaskType.MULTIPLE_CHOICE.value).fill_null(False),
    )
    tasks, runs = keys["_task"].max() + 1, keys["_runs"].max() + 1
    group = pl.when("_choice").then(tasks + pl.col("_runs")).otherwise(pl.col("_task"))
    keys = keys.select((pl.col("_answer") * (tasks + runs) + group).alias("_key"))
    first = keys.select(pl.col("_key").is_first_distinct()).to_series()
    if first.all():
        return narrow, None
    key = keys.get_column("_key").to_numpy()
    distinct = key[first.to_numpy()]
    size = int(key.max()) + 1
    if size > ANSWERS_TABLE_PER_ROW * len(key):  # keys too sparse for a table: a join finds each row's distinct answer
        index = keys.join(keys.filter(first).with_row_index("_index"), on="_key", how="left", maintain_order="left")[
            "_index"
        ]
    else:  # a table of the distinct keys' positions, read once per row: a tenth of the join's time
        table = np.empty(size, dtype=np.uint32)  # only the distinct keys' entries are ever read
        table[distinct] = np.arange(len(distinct), dtype=np.uint32)
        index = pl.Series("_index", table[key])
    return narrow.filter(first), index


def parse_answers(
    frame: pl.DataFrame,
    answer: str,
    task_type: str = "task_type",
    options: str = "options",
    prefix: str = "",
    option_runs: str | None = None,
    only: tuple[str, ...] = PARSED_COLUMNS,
    categorical: bool = False,
) -> pl.DataFrame:
    """Add the parsed columns (``PARSED_COLUMNS``, or those of them in ``only``, which may also ask
    for ``ANSWER_CODE``; named with ``prefix``) of the texts in column ``answer``. ``option_runs``:
    a column numbering the runs of equal options (rows with the same number have the same
    options), where the caller has one; compared row by row here otherwise. ``categorical``:
    ``normalised`` as a categorical of its own, made once per distinct answer (its codes are
    ``ANSWER_CODE`` - 1): copied to every row and compared as integers, and written as a
    dictionary without hashing a string again."""
    narrow = frame.select(
        pl.col(answer).alias("_answer"),
        pl.col(task_type).alias("_task"),
        (pl.col(options) if options in frame.columns else pl.lit(None, pl.List(pl.String))).alias("_options"),
        *([pl.col(option_runs).alias("_runs")] if option_runs else []),
    )
    narrow, index = _distinct_answers(narrow)
    narrow = narrow.with_row_index("_row")
    schema = {
        "task_ok": pl.Boolean,
        "normalised": pl.String,
        "display": pl.String,
        **{f"v{i}": pl.Float64 for i in range(4)},
    }
    columns = [pl.col("_row"), *(pl.col(c).cast(t) for c, t in schema.items())]
    parts = []
    for (task,), part in narrow.partition_by("_task", as_dict=True, maintain_order=True).items():
        stages = _parser(str(task))
        if task == TaskType.MULTIPLE_CHOICE.value:
            parts.append(_match_option_text(_apply(part, stages), "_answer", "_options").select(columns))
        else:
            parts.append(_apply(part, stages, columns))
    if parts:
        parsed = pl.concat(parts, how="vertical")
        parsed = parsed.sort("_row") if len(parts) > 1 else parsed
    else:
        parsed = narrow.select("_row", *(pl.lit(None, t).alias(c) for c, t in schema.items()))
    # one chunk (a row per distinct answer): Polars codes the chunks of a categorical cast in parallel, and
    # the codes followed first appearance in 2,996 of 3,000 calls on two concatenated parts, not always
    parsed = parsed.rechunk()
    if categorical:
        parsed = parsed.with_columns(as_categories("normalised"))
    keep = [pl.col(c).fill_null(False) if c == "task_ok" else pl.col(c) for c in PARSED_COLUMNS if c in only]
    if ANSWER_CODE in only:  # coded once per distinct answer, not once per row
        keep.append((integer_codes("normalised", parsed.schema["normalised"]) + 1).fill_null(0).alias(ANSWER_CODE))
    parsed = parsed.select(keep)
    if index is not None:  # back to every row: only the columns asked for
        parsed = parsed[index]
    parsed = parsed.rename({c: prefix + c for c in parsed.columns})
    return frame.drop([c for c in parsed.columns if c in frame.columns]).hstack(parsed)


def parse_responses(
    frame: pl.DataFrame, text: str = "text", task_type: str = "task_type", options: str = "options", fast: bool = True
) -> pl.DataFrame:
    """Add ``RESPONSE_COLUMNS`` and ``PARSED_COLUMNS`` for the responses in column ``text``
    (``fast``: ``add_response_parts``')."""
    return parse_answers(add_response_parts(frame, text, fast), "answer_text", task_type, options)


# --- one response -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extracted:
    outer_ok: bool
    task_ok: bool  # the answer part follows the task's strict syntax
    value: object  # letter, float, (start, end), (x1, y1, x2, y2), or text; None if nothing parsed
    normalised: str | None  # canonical string, equal for answers that mean the same


def _extracted(row: dict, task_type: str, outer_ok: bool) -> Extracted:
    numbers = tuple(row[f"v{i}"] for i in range(4))
    if task_type == TaskType.NUMERICAL.value:
        value: object = numbers[0]
    elif task_type == TaskType.TEMPORAL_GROUNDING.value:
        value = numbers[:2] if numbers[0] is not None else None
    elif task_type == TaskType.SPATIAL_GROUNDING.value:
        value = numbers if numbers[0] is not None else None
    else:
        value = row["display"]
    return Extracted(outer_ok, bool(row["task_ok"]), value, row["normalised"])


def _one(column: str, text: str | None, task_type: str, options: list[str] | None) -> pl.DataFrame:
    return pl.DataFrame(
        {column: [text], "task_type": [task_type], "options": [options]},
        schema={column: pl.String, "task_type": pl.String, "options": pl.List(pl.String)},
    )


def extract(text: str | None, task_type: str, options: list[str] | None = None) -> Extracted:
    """Parse one response for ``task_type`` (the column-wise grammar on a single row)."""
    row = parse_responses(_one("text", text, task_type, options)).row(0, named=True)
    return _extracted(row, task_type, bool(row["outer_ok"]))


def extract_answer(answer: str | None, task_type: str, options: list[str] | None = None) -> Extracted:
    """Parse the content of an ``<answer>`` block or a ground-truth string."""
    row = parse_answers(_one("answer", answer, task_type, options), "answer").row(0, named=True)
    return _extracted(row, task_type, True)


def split_response(text: str | None) -> dict:
    """answer_text / outer_ok / truncated of one response."""
    parts = add_response_parts(pl.DataFrame({"t": [text]}, schema={"t": pl.String}), "t")
    return parts.select(*RESPONSE_COLUMNS).row(0, named=True)


def format_answer(task_type: str, value: object) -> str:
    """The strict ground-truth form of a value, e.g. ``format_answer("temporal_grounding", (1, 2.5))``."""
    if task_type in (TaskType.TEMPORAL_GROUNDING.value, TaskType.SPATIAL_GROUNDING.value):
        values = [float(v) for v in value]  # type: ignore[union-attr]
        return pl.select(_bracketed([pl.lit(v, pl.Float64) for v in values])).item()
    if task_type == TaskType.NUMERICAL.value:
        return pl.select(format_number_expr(pl.lit(float(value), pl.Float64))).item()  # type: ignore[arg-type]
    return str(value)


def wrap_response(think: str, answer: str) -> str:
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
