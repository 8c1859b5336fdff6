"""Reading prompts: rmsd's own Parquet, Video-R1-style JSON/JSONL, and LLaVA-Video conversations.

Every adapter returns rows of the prompts schema. Rows that cannot be mapped are refused with a
reason (``Refusal``), never dropped silently. ``load_prompts`` is the one way in for every command
that reads prompts: a file that cannot be read, a row with a field missing or of the wrong type, or a
selection (``split``, ``limit``) of no prompt raises ``SchemaError`` naming the file (row, field)
before any work starts.

``load_prompts`` is public beyond rmsd-gen: rmsd-train's evaluation and ground-truth SFT read prompts
files through it (tests/test_boundaries.py lists this module).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..schemas.grammar import split_response
from ..schemas.tables import METADATA_KEY, PROMPTS_SCHEMA, TASK_TYPES, SchemaError, check_file


@dataclass(frozen=True)
class Refusal:
    source: str  # file and row
    reason: str


# Video-R1 problem types -> rmsd task types
VIDEO_R1_TASKS = {
    "multiple choice": "multiple_choice",
    "numerical": "numerical",
    "regression": "numerical",
    "ocr": "ocr",
    "free-form": "open_ended",
}
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Za-z])[.):]\s*")
_MEDIA_TAG = re.compile(r"<(?:image|video)>\s*")


def _expected_type(field: pa.Field) -> tuple[str, object]:
    """What a row's value of ``field`` must be: its description and a check."""
    if pa.types.is_list(field.type):
        return "a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
    return "a string", lambda v: isinstance(v, str)


_EXPECTED = {f.name: _expected_type(f) for f in PROMPTS_SCHEMA}


def _check_rows(rows: list[dict], source: str) -> list[dict]:
    seen: set[str] = set()
    required = [f.name for f in PROMPTS_SCHEMA if not f.nullable]
    for i, row in enumerate(rows):
        where = f"{source}: row {i}"
        for name, (expected, check) in _EXPECTED.items():
            value = row.get(name)
            if value is not None and not check(value):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise SchemaError(f"{where}: field {name!r} must be {expected}, got {type(value).__name__} {shown}")
        for name in required:
            if row.get(name) in (None, ""):
                raise SchemaError(f"{where}: field {name!r} is missing or empty")
        if row["task_type"] not in TASK_TYPES:
            raise SchemaError(f"{where}: task_type {row['task_type']!r} is not one of {list(TASK_TYPES)}")
        if row["task_type"] == "multiple_choice" and not row.get("options"):
            raise SchemaError(f"{where}: multiple_choice needs options")
        if row["prompt_id"] in seen:
            raise SchemaError(f"{where}: duplicate prompt_id {row['prompt_id']!r}")
        seen.add(row["prompt_id"])
    return rows


def _complete(row: dict) -> dict:
    return {f.name: row.get(f.name) for f in PROMPTS_SCHEMA}


def read_parquet_prompts(path: Path) -> list[dict]:
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY in meta:
        check_file(path, "prompts")
    table = pq.read_table(path)
    missing = [f.name for f in PROMPTS_SCHEMA if not f.nullable and f.name not in table.column_names]
    if missing:
        raise SchemaError(f"{path}: missing required prompts columns {missing}")
    return [_complete(r) for r in table.to_pylist()]


def _json_records(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SchemaError(f"{path}: line {n}: not JSON ({exc.msg})") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict):
        data = data.get("data", [data])
    if not isinstance(data, list):
        raise SchemaError(f"{path}: expected a list of records")
    return data


def from_video_r1(record: dict, index: int, source: str) -> dict | Refusal:
    where = f"{source}: record {index}"
    if record.get("data_type", "video") != "video":
        return Refusal(where, f"data_type {record.get('data_type')!r}: rmsd distils video questions only")
    problem_type = str(record.get("problem_type", "")).strip().lower()
    task = VIDEO_R1_TASKS.get(problem_type)
    if task is None:
        return Refusal(
            where,
            f"problem_type {record.get('problem_type')!r} has no rmsd task type (known: {sorted(VIDEO_R1_TASKS)})",
        )
    if not record.get("path") or not record.get("problem"):
        return Refusal(where, "missing 'path' or 'problem'")
    options = None
    if task == "multiple_choice":
        raw = record.get("options") or []
        if not raw:
            return Refusal(where, "multiple choice without options")
        options = [_OPTION_PREFIX.sub("", str(o)).strip() for o in raw]
    answer = split_response(str(record["solution"]))["answer_text"] if record.get("solution") else None
    return {
        "prompt_id": str(record.get("problem_id", record.get("id", index))),
        "video": str(record["path"]),
        "question": _MEDIA_TAG.sub("", str(record["problem"])).strip(),
        "options": options,
        "answer": answer,
        "task_type": task,
        "dataset": record.get("data_source"),
        "split": record.get("split"),
        "meta": json.dumps({"problem_type": record.get("problem_type")}),
    }


def _split_options(question: str) -> tuple[str, list[str] | None]:
    """Separate 'A. x' lines from the question text (LLaVA-Video multiple choice)."""
    lines = question.splitlines()
    options = [line for line in lines if _OPTION_PREFIX.match(line)]
    letters = [_OPTION_PREFIX.match(o).group(1).upper() for o in options]  # type: ignore[union-attr]
    if len(options) < 2 or letters != [chr(ord("A") + i) for i in range(len(options))]:
        return question, None
    stem = "\n".join(line for line in lines if line not in options).strip()
    return stem, [_OPTION_PREFIX.sub("", o).strip() for o in options]


def from_llava_video(record: dict, index: int, source: str) -> list[dict | Refusal]:
    where = f"{source}: record {index}"
    turns = record.get("conversations") or []
    if not record.get("video"):
        return [Refusal(where, "no 'video' field (image-only conversation)")]
    out: list[dict | Refusal] = []
    base_id = str(record.get("id", index))
    for t in range(0, len(turns) - 1, 2):
        human, gpt = turns[t], turns[t + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            out.append(Refusal(f"{where} turn {t}", "expected a human turn followed by a gpt turn"))
            continue
        question, options = _split_options(_MEDIA_TAG.sub("", str(human.get("value", ""))).strip())
        answer = str(gpt.get("value", "")).strip()
        task = "open_ended"
        if options:
            letter = re.match(r"^\(?([A-Za-z])\)?[.)]?(?:\s|$)", answer)
            if not letter:
                out.append(Refusal(f"{where} turn {t}", "options given but the answer is not an option letter"))
                continue
            task, answer = "multiple_choice", letter.group(1).upper()
        out.append(
            {
                "prompt_id": f"{base_id}-{t // 2}",
                "video": str(record["video"]),
                "question": question,
                "options": options,
                "answer": answer,
                "task_type": task,
                "dataset": record.get("data_source"),
                "split": None,
                "meta": None,
            }
        )
    if not turns:
        out.append(Refusal(where, "no conversations"))
    return out


def read_json_prompts(path: Path) -> tuple[list[dict], list[Refusal]]:
    rows: list[dict] = []
    refused: list[Refusal] = []
    for i, record in enumerate(_json_records(path)):
        if not isinstance(record, dict):
            refused.append(Refusal(f"{path}: record {i}", "not a JSON object"))
            continue
        if "conversations" in record:
            results = from_llava_video(record, i, str(path))
        elif "problem_type" in record or "problem" in record:
            results = [from_video_r1(record, i, str(path))]
        elif "prompt_id" in record:
            results = [_complete(record)]
        else:
            results = [
                Refusal(f"{path}: record {i}", "unknown format (expected rmsd prompts, Video-R1 or LLaVA-Video fields)")
            ]
        for r in results:
            (refused if isinstance(r, Refusal) else rows).append(r)
    return [_complete(r) for r in rows], refused


def _read(path: Path) -> tuple[list[dict], list[Refusal]]:
    if path.suffix not in (".parquet", ".json", ".jsonl"):
        raise SchemaError(f"{path}: unsupported prompts format {path.suffix!r} (use .parquet, .json or .jsonl)")
    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: the prompts file is empty (0 bytes)")
    try:
        if path.suffix == ".parquet":
            return read_parquet_prompts(path), []
        return read_json_prompts(path)
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: not a text (UTF-8) file") from None
    except pa.ArrowException as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read the prompts file: {exc.strerror or exc}") from None


def _select(rows: list[dict], refused: list[Refusal], path: Path, split: str | None, limit: int | None) -> list[dict]:
    """The rows of ``split`` (None: all), the first ``limit``; an error naming the file if none is left."""
    if not rows:
        why = (
            f": all {len(refused)} records were refused (first, {refused[0].source}: {refused[0].reason})"
            if refused
            else ""
        )
        raise SchemaError(f"{path}: no prompts in the file{why}")
    if split is not None:
        chosen = [r for r in rows if r.get("split") == split]
        if not chosen:
            splits = sorted({r["split"] for r in rows if r.get("split") is not None})
            there = f"its splits are {', '.join(splits)}" if splits else "no row names a split"
            raise SchemaError(f"{path}: no prompts of split {split!r} ({there})")
        rows = chosen
    if limit is not None:
        if limit < 1:
            raise SchemaError(f"{path}: a limit of {limit} selects no prompt")
        rows = rows[:limit]
    return rows


def load_prompts(
    path: str | Path, split: str | None = None, limit: int | None = None
) -> tuple[list[dict], list[Refusal]]:
    """Rows of the prompts schema from any supported file (those of ``split``, the first ``limit``
    of them), and the rows refused with reasons. Everything that makes the file unusable raises
    ``SchemaError`` (``FileNotFoundError`` for a missing file) naming the file, and the row and field."""
    path = Path(path)
    if path.is_dir():
        raise SchemaError(f"{path}: is a folder; give a prompts file (.parquet, .json or .jsonl)")
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    rows, refused = _read(path)
    rows = _check_rows(rows, str(path))
    return _select(rows, refused, path, split, limit), refused
