"""Reading prompts: rmsd's own Parquet, Video-R1-style JSON/JSONL, and LLaVA-Video conversations.

Every adapter returns rows of the prompts schema. Rows that cannot be mapped are refused with a
reason (``Refusal``), never dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

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


def _check_rows(rows: list[dict], source: str) -> list[dict]:
    seen: set[str] = set()
    required = [f.name for f in PROMPTS_SCHEMA if not f.nullable]
    for i, row in enumerate(rows):
        where = f"{source}: row {i}"
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
        return Refusal(where, f"problem_type {record.get('problem_type')!r} has no rmsd task type (known: {sorted(VIDEO_R1_TASKS)})")
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
            results = [Refusal(f"{path}: record {i}", "unknown format (expected rmsd prompts, Video-R1 or LLaVA-Video fields)")]
        for r in results:
            (refused if isinstance(r, Refusal) else rows).append(r)
    return [_complete(r) for r in rows], refused


def load_prompts(path: str | Path) -> tuple[list[dict], list[Refusal]]:
    """Rows of the prompts schema from any supported file, and the rows refused with reasons."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix == ".parquet":
        rows, refused = read_parquet_prompts(path), []
    elif path.suffix in (".json", ".jsonl"):
        rows, refused = read_json_prompts(path)
    else:
        raise SchemaError(f"{path}: unsupported prompts format {path.suffix!r} (use .parquet, .json or .jsonl)")
    return _check_rows(rows, str(path)), refused
