"""The answer grammar: the one place that says what a well-formed response is and what it answers.

A response is ``<think>...</think><answer>...</answer>``. Inside ``<answer>``:

==================  ==============================================  ======================
task type           strict form (format_task_ok)                    normalised answer
==================  ==============================================  ======================
multiple_choice     one option letter: ``B``                        ``"B"``
numerical           a number: ``12`` or ``-3.5``                    ``"12"`` / ``"-3.5"``
temporal_grounding  ``[start, end]`` in seconds, start <= end        ``"[1.5, 3.0]"``
spatial_grounding   ``[x1, y1, x2, y2]`` pixels, x1<=x2, y1<=y2      ``"[4, 8, 20, 30]"``
ocr                 the text                                        lower case, spaces collapsed
open_ended          free text                                       spaces collapsed
==================  ==============================================  ======================

Scoring is two-level (METHOD.md): ``outer_ok`` checks the wrapper, ``task_ok`` the strict syntax
inside it. Extraction is lenient on purpose (``(B)``, ``**B**``, ``Answer: b``, the option's text,
``1,200 m``, ``01:05``...) so that ``correct`` measures what the teacher meant while the format
flags measure whether it followed the format. The regular expressions avoid look-arounds and
back-references so Polars (Rust regex) can evaluate the same patterns column-wise.

No function here raises on any input text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .tables import TaskType

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# The whole response, strict: one think block then one answer block, nothing else but whitespace.
OUTER_PATTERN = r"^\s*<think>(?s:.*?)</think>\s*<answer>(?s:.*?)</answer>\s*$"
NUMBER_PATTERN = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
CLOCK_PATTERN = r"(?:\d+:)?\d{1,2}:\d{2}(?:\.\d+)?"
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

_OUTER_RE = re.compile(OUTER_PATTERN)
_STRICT_RE = {k: re.compile(v) for k, v in STRICT_PATTERNS.items()}
_NUMBER_RE = re.compile(NUMBER_PATTERN)
_CLOCK_RE = re.compile(CLOCK_PATTERN)
_BOX_LABEL_RE = re.compile(r"\b(?:[xy][12]|left|top|right|bottom|width|height|w|h)\s*[=:]", re.IGNORECASE)
_BOX_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_ANSWER_BLOCK_RE = re.compile(r"<answer>(?s:(.*?))</answer>", re.IGNORECASE)
_LETTER_RES = (
    re.compile(r"^\W*\(?([A-Za-z])\)?\W*$"),  # B  (B)  B.  **B**  [b]
    re.compile(r"(?i)(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Za-z])\b\)?"),  # Answer: b
    re.compile(r"^\W*\(?([A-Z])\)?[.:)]\s"),  # "B. red"  "(C) blue"
)


@dataclass(frozen=True)
class ParsedResponse:
    outer_ok: bool  # the wrapper is exactly <think>..</think><answer>..</answer>
    answer_text: str | None  # what the response answers, before task parsing (None: nothing)
    truncated: bool  # an <answer> was opened and never closed


def split_response(text: str | None) -> ParsedResponse:
    """Find the answer part of a response. With several answer blocks, the last one counts."""
    if not text:
        return ParsedResponse(False, None, False)
    outer_ok = bool(_OUTER_RE.match(text)) and text.count(ANSWER_OPEN) == 1 and text.count(THINK_OPEN) == 1
    blocks = _ANSWER_BLOCK_RE.findall(text)
    if blocks:
        return ParsedResponse(outer_ok, blocks[-1].strip(), False)
    lower = text.lower()
    if ANSWER_OPEN in lower:  # cut off by the token limit: take what was written
        tail = text[lower.rindex(ANSWER_OPEN) + len(ANSWER_OPEN) :].strip()
        return ParsedResponse(False, tail or None, True)
    body = text
    if THINK_CLOSE in lower:
        body = text[lower.rindex(THINK_CLOSE) + len(THINK_CLOSE) :]
    elif THINK_OPEN in lower:  # an unfinished thought answers nothing
        return ParsedResponse(False, None, True)
    body = body.strip()
    return ParsedResponse(False, body or None, False)


def option_letters(options: list[str] | None) -> str:
    n = len(options) if options else 26
    return "".join(chr(ord("A") + i) for i in range(min(n, 26)))


def _parse_number(text: str) -> float | None:
    match = _NUMBER_RE.search(text)
    if not match:
        return None
    try:
        value = float(match.group(0).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds(token: str) -> float | None:
    if ":" in token:
        parts = token.split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            return None
        total = 0.0
        for v in values:
            total = total * 60 + v
        return total
    return _parse_number(token)


def _format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


def _normalise_text(text: str) -> str:
    return " ".join(text.strip().strip("\"'`*").split())


def parse_choice(text: str, options: list[str] | None) -> str | None:
    letters = option_letters(options)
    for pattern in _LETTER_RES:
        match = pattern.search(text)
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    if options:  # the option's text instead of its letter
        said = _normalise_text(text).lower().rstrip(".")
        for letter, option in zip(letters, options):
            if said == _normalise_text(option).lower().rstrip("."):
                return letter
    return None


def parse_interval(text: str) -> tuple[float, float] | None:
    clocks = _CLOCK_RE.findall(text)
    if len(clocks) >= 2:
        values = [_seconds(c) for c in clocks[:2]]
    else:
        values = [float(m.replace(",", "")) for m in _NUMBER_RE.findall(text)[:2]]
    if len(values) < 2 or any(v is None for v in values):
        return None
    start, end = values
    return (start, end) if start <= end else None


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    unlabelled = _BOX_LABEL_RE.sub(" ", text)  # "x1=4 y1=8 ..." -> " 4  8 ..."
    numbers = [float(m) for m in _BOX_NUMBER_RE.findall(unlabelled)]
    if len(numbers) < 4:
        return None
    x1, y1, x2, y2 = numbers[:4]
    return (x1, y1, x2, y2) if x1 <= x2 and y1 <= y2 else None


@dataclass(frozen=True)
class Extracted:
    outer_ok: bool
    task_ok: bool  # the answer part follows the task's strict syntax
    value: object  # parsed answer: letter, float, (start, end), box, or text; None if none
    normalised: str | None  # canonical string, equal for answers that mean the same


def extract(text: str | None, task_type: str, options: list[str] | None = None) -> Extracted:
    """Parse a response (or a ground-truth answer) for ``task_type``."""
    parsed = split_response(text)
    return extract_answer(parsed.answer_text, task_type, options, outer_ok=parsed.outer_ok and not parsed.truncated)


def extract_answer(answer: str | None, task_type: str, options: list[str] | None = None, outer_ok: bool = True) -> Extracted:
    """Parse the content of an ``<answer>`` block (also used on ground-truth strings)."""
    if answer is None or not answer.strip():
        return Extracted(outer_ok, False, None, None)
    strict = _STRICT_RE.get(task_type)
    task_ok = bool(strict and strict.search(answer))
    value: object = None
    normalised: str | None = None
    if task_type == TaskType.MULTIPLE_CHOICE.value:
        value = parse_choice(answer, options)
        task_ok = task_ok and value is not None
        normalised = value
    elif task_type == TaskType.NUMERICAL.value:
        value = _parse_number(answer)
        normalised = None if value is None else _format_number(value)
    elif task_type == TaskType.TEMPORAL_GROUNDING.value:
        value = parse_interval(answer)
        task_ok = task_ok and value is not None
        if value is not None:
            normalised = "[" + ", ".join(_format_number(v) for v in value) + "]"
    elif task_type == TaskType.SPATIAL_GROUNDING.value:
        value = parse_box(answer)
        task_ok = task_ok and value is not None
        if value is not None:
            normalised = "[" + ", ".join(_format_number(v) for v in value) + "]"
    elif task_type == TaskType.OCR.value:
        value = _normalise_text(answer).lower()
        normalised = value or None
    else:
        value = _normalise_text(answer)
        normalised = value.lower() or None
    return Extracted(outer_ok, task_ok, value, normalised)


def format_answer(task_type: str, value: object) -> str:
    """The strict ground-truth form of a value, e.g. ``format_answer("temporal_grounding", (1, 2.5))``."""
    if task_type in (TaskType.TEMPORAL_GROUNDING.value, TaskType.SPATIAL_GROUNDING.value):
        return "[" + ", ".join(_format_number(float(v)) for v in value) + "]"  # type: ignore[union-attr]
    if task_type == TaskType.NUMERICAL.value:
        return _format_number(float(value))  # type: ignore[arg-type]
    return str(value)


def wrap_response(think: str, answer: str) -> str:
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
