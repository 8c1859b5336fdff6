"""Arrow schemas of every Parquet table rmsd reads or writes: the public contract between stages.

Each file carries its table name and schema version in the Parquet key-value metadata
(key ``rmsd.schema``). Readers refuse files of another table, or of a version newer than this
code knows, with an error that names the file. Bump a table's version on any change that an older
reader would misread (new required column, changed meaning); adding a nullable column a reader
may ignore is a minor change and keeps the version.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from enum import Enum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_file

METADATA_KEY = b"rmsd.schema"


class TaskType(str, Enum):
    MULTIPLE_CHOICE = "multiple_choice"
    NUMERICAL = "numerical"
    TEMPORAL_GROUNDING = "temporal_grounding"
    SPATIAL_GROUNDING = "spatial_grounding"
    OCR = "ocr"
    OPEN_ENDED = "open_ended"

    @property
    def closed_ended(self) -> bool:
        return self is not TaskType.OPEN_ENDED


TASK_TYPES: tuple[str, ...] = tuple(t.value for t in TaskType)


class SchemaError(ValueError):
    """A Parquet file or table does not match the rmsd contract."""


def _field(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"doc": doc.encode()})


# --- prompts: one row per (video, question); the input of rmsd-gen -------------------------------
PROMPTS_VERSION = 1
PROMPTS_SCHEMA = pa.schema(
    [
        _field("prompt_id", pa.string(), False, "unique id of the question"),
        _field("video", pa.string(), False, "video path (relative to the prompts file) or URI"),
        _field("question", pa.string(), False, "question text, without options"),
        _field("options", pa.list_(pa.string()), True, "option texts in letter order; multiple choice only"),
        _field("answer", pa.string(), True, "ground truth as text in the answer grammar; null if unknown"),
        _field("task_type", pa.string(), False, "one of " + ", ".join(TASK_TYPES)),
        _field("dataset", pa.string(), True, "source dataset name"),
        _field("split", pa.string(), True, "train / validation / test"),
        _field("meta", pa.string(), True, "free JSON object (string)"),
    ]
)

# --- samples: one row per teacher sample; the output of rmsd-gen ---------------------------------
TOP_LOGPROB = pa.struct(
    [
        pa.field("token_id", pa.int32()),  # null where the backend gives only text (API teachers)
        pa.field("token", pa.string()),
        pa.field("logprob", pa.float32()),
    ]
)
SAMPLES_VERSION = 1
SAMPLES_SCHEMA = pa.schema(
    [
        _field("prompt_id", pa.string(), False, "the prompt's id"),
        _field("task_type", pa.string(), False, "the prompt's task type"),
        _field("question", pa.string(), False, "the prompt's question"),
        _field("options", pa.list_(pa.string()), True, "the prompt's options"),
        _field("answer", pa.string(), True, "the prompt's ground truth"),
        _field("video", pa.string(), False, "the video as given in the prompts"),
        _field("teacher", pa.string(), False, "teacher id in the pipeline's pool"),
        _field("sample_index", pa.int32(), False, "0..K-1 within (prompt, teacher)"),
        _field("seed", pa.int64(), False, "sampling seed of this sample"),
        _field("text", pa.string(), True, "the teacher's response; null for error rows"),
        _field("finish_reason", pa.string(), True, "stop | length | null for error rows"),
        _field("num_tokens", pa.int32(), True, "generated tokens"),
        _field("cumulative_logprob", pa.float64(), True, "sum of the sampled tokens' logprobs"),
        _field("frame_timestamps", pa.list_(pa.float64()), True, "seconds of the frames used"),
        _field("fps", pa.float64(), True, "effective fps of the frames used"),
        _field("error", pa.string(), True, "null, or why this sample failed"),
        _field("run_id", pa.string(), False, "id of the rmsd-gen job"),
        _field(
            "logprobs",
            pa.list_(pa.list_(TOP_LOGPROB)),
            True,
            "per generated token: the sampled token then the top-k alternatives; null unless sampling.logprobs is set",
        ),
    ]
)

# --- scored / curated: rmsd-filter's output --------------------------------------------------------
SCORE_FIELDS = [
    _field("extracted", pa.string(), True, "normalised answer (grammar); null if none could be parsed"),
    _field("format_outer_ok", pa.bool_(), False, "wrapper is <think>..</think><answer>..</answer>"),
    _field("format_task_ok", pa.bool_(), False, "answer follows the task's strict syntax"),
    _field("truncated", pa.bool_(), False, "an <answer> or <think> was opened and never closed"),
    _field("label_source", pa.string(), True, "ground_truth | majority (pseudo-label) | null (no label)"),
    _field("correct", pa.float64(), True, "metric vs the label; null for open-ended or unlabelled"),
    _field("quality", pa.float64(), False, "q = valid x metric (validity alone where no metric)"),
    _field("agreement", pa.float64(), True, "share of the prompt's samples from this teacher with the same answer"),
    _field(
        "agreement_pool", pa.float64(), True, "share of the prompt's samples from all teachers with the same answer"
    ),
    _field("kept", pa.bool_(), False, "quality >= tau of the task type"),
    _field("weight", pa.float64(), False, "matching probability p_k over the prompt's kept samples (0 if not kept)"),
    _field("is_best", pa.bool_(), False, "T_best: the prompt's highest-quality kept sample"),
]
# scored (v2): the scores of every sample, keyed on (prompt_id, teacher, sample_index), beside the
# samples rather than a copy of them: a corpus is filtered under many settings, and each run adds
# only its scores (a sample's other columns are joined from the samples shards on the key). v1 was
# the samples columns plus the scores.
SAMPLE_KEY = ("prompt_id", "teacher", "sample_index")
_SAMPLE_FIELDS = {f.name: f for f in SAMPLES_SCHEMA}
SCORED_VERSION = 2
SCORED_SCHEMA = pa.schema([*(_SAMPLE_FIELDS[c] for c in (*SAMPLE_KEY, "task_type")), *SCORE_FIELDS])
# curated (v3): the training set as an index into the samples: the kept samples' keys and their
# weights, summing to 1 per prompt. What a student trains on (question, options, video, frames the
# teacher saw, response) stays in the samples shards, read on the key by rmsd-train
# (``train/data.py: curated_frame``), as the scored shards' other columns are: a run under other
# settings writes a few bytes per kept sample instead of a copy of its text (real teachers' think
# traces run to kilobytes). v2 carried those columns too (rmsd-train still reads v2 shards as they
# are); v1 carried every samples and score column.
CURATED_VERSION = 3
CURATED_CONTENT = (
    "question",
    "options",
    "video",
    "frame_timestamps",
    "text",
)  # in the samples; in curated v2 shards too
CURATED_SCHEMA = pa.schema(
    [
        *(_SAMPLE_FIELDS[c] for c in (*SAMPLE_KEY, "task_type")),
        *(f for f in SCORE_FIELDS if f.name in ("quality", "weight", "is_best")),
    ]
)

DROPPED_VERSION = 1
DROPPED_SCHEMA = pa.schema(
    [
        _field("prompt_id", pa.string(), False, "a prompt with no kept sample"),
        _field("task_type", pa.string(), False, "its task type"),
        _field("reason", pa.string(), False, "no_samples | all_errors | no_valid_format | below_tau"),
        _field("num_samples", pa.int32(), False, "samples it had"),
        _field("best_quality", pa.float64(), True, "its highest sample quality"),
    ]
)

TABLES: dict[str, tuple[pa.Schema, int]] = {
    "prompts": (PROMPTS_SCHEMA, PROMPTS_VERSION),
    "samples": (SAMPLES_SCHEMA, SAMPLES_VERSION),
    "scored": (SCORED_SCHEMA, SCORED_VERSION),
    "curated": (CURATED_SCHEMA, CURATED_VERSION),
    "dropped": (DROPPED_SCHEMA, DROPPED_VERSION),
}


def schema_for(table: str) -> pa.Schema:
    if table not in TABLES:
        raise SchemaError(f"unknown table {table!r}; known: {sorted(TABLES)}")
    schema, version = TABLES[table]
    meta = dict(schema.metadata or {})
    meta[METADATA_KEY] = json.dumps({"table": table, "version": version}).encode()
    return schema.with_metadata(meta)


def to_table(rows: list[dict] | dict[str, list], table: str) -> pa.Table:
    """Build a table of ``table``'s schema from rows (list of dicts) or columns (dict of lists)."""
    schema = schema_for(table)
    if isinstance(rows, dict):
        missing = [f.name for f in schema if not f.nullable and f.name not in rows]
        if missing:
            raise SchemaError(f"{table}: missing required columns {missing}")
        columns = {f.name: rows.get(f.name, [None] * len(next(iter(rows.values()), []))) for f in schema}
        return _check_nulls(pa.table(columns, schema=schema), table)
    return _check_nulls(pa.Table.from_pylist(rows, schema=schema), table)


def _check_nulls(data: pa.Table, table: str) -> pa.Table:
    """Arrow does not enforce non-nullable fields on construction; the contract does."""
    for f in schema_for(table):
        column = data.column(f.name)
        if not f.nullable and column.null_count:
            raise SchemaError(
                f"{table}: column {f.name!r} is required but null in row {column.to_pylist().index(None)}"
            )
    return data


def _writable(given: pa.Schema, schema: pa.Schema) -> bool:
    """Whether a table of schema ``given`` is written as it is for the contract ``schema``: its
    fields in order, each of the contract's type or, for a string, a string view or a dictionary
    of strings (all three written as the contract's strings)."""
    if given.names != schema.names:
        return False
    for have, want in zip(given, schema):
        if have.type == want.type and have.nullable == want.nullable:
            continue
        string = pa.types.is_string(want.type) and have.nullable == want.nullable
        if not (
            string
            and (
                pa.types.is_string_view(have.type)
                or (pa.types.is_dictionary(have.type) and pa.types.is_string(have.type.value_type))
            )
        ):
            return False
    return True


def with_string_views(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its string columns as Arrow string views, the form Polars hands its strings
    to Arrow in: ``write_table`` takes either form (views are not copied into strings)."""
    return pa.schema(
        [f.with_type(pa.string_view()) if pa.types.is_string(f.type) else f for f in schema], metadata=schema.metadata
    )


def _file_metadata(schema: pa.Schema) -> dict[str, str]:
    """The Parquet key-value metadata of a file of ``schema``: the table's name and version, and
    the contract's Arrow schema (with its field descriptions) as ``ARROW:schema``, from which
    Arrow readers take their types: ``string`` and ``list`` whatever form the writer was handed."""
    metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    metadata["ARROW:schema"] = base64.b64encode(schema.serialize().to_pybytes()).decode()
    return metadata


def write_table(table: pa.Table, path: str | os.PathLike, name: str) -> Path:
    """Write atomically: a reader sees either no file or the whole file, never half of one."""
    path = Path(path)
    schema, options, metadata = _written_form(name)
    if not _writable(table.schema, schema):
        table = table.select([f.name for f in schema]).cast(schema)
    with (
        atomic_file(path) as tmp,
        pq.ParquetWriter(tmp, table.schema.remove_metadata(), store_schema=False, **options) as writer,
    ):
        writer.write_table(table.replace_schema_metadata(None))
        writer.add_key_value_metadata(metadata)
    return path


@functools.cache
def _written_form(name: str) -> tuple[pa.Schema, dict, dict[str, str]]:
    """A table's contract schema, the writer's options and the files' metadata: the same for every
    file of the table, so built once per process (rmsd-filter writes two files per shard group)."""
    schema = schema_for(name)
    options = {
        "compression": "zstd",
        "use_dictionary": _dictionary_columns(schema),
        "write_statistics": _statistics_columns(schema),
    }
    if name in _NARROW_ROWS:  # the writer's per-batch work paid once per 65,536 rows, not per 1,024
        options["write_batch_size"] = 65_536
    return schema, options, _file_metadata(schema)


# Tables of a few bytes per row (rmsd-filter's outputs): a batch of 65,536 rows still fills less
# than a data page, so pages are as before, and writing takes 0.95x the time (the scored and curated
# shards of a 100,000-row group: 26.3 against 27.6 ms). Not for tables of texts, whose pages would
# grow with the batch.
_NARROW_ROWS = {"scored", "curated", "dropped"}


# Columns that repeat across rows (a prompt's K samples, a run's teachers, frame times on a fixed
# grid) compress well as dictionaries, and read and write faster (frame_timestamps: 0.04 against
# 0.05 us per row read, 20x smaller); unique texts only cost time there. So do the scores: a
# prompt's K samples share answers, and quality, agreement and weight take few values (scored
# shards: half the size and 0.02 us per row faster to write). Statistics serve the filters
# readers push down.
_DICTIONARY = {
    "task_type",
    "question",
    "options",
    "answer",
    "video",
    "teacher",
    "finish_reason",
    "run_id",
    "label_source",
    "dataset",
    "split",
    "reason",
    "frame_timestamps",
    "fps",
    "extracted",
    "correct",
    "quality",
    "agreement",
    "agreement_pool",
    "weight",
}
_STATISTICS = {"prompt_id", "task_type", "teacher", "sample_index", "quality", "kept", "is_best", "split", "error"}


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    # Parquet names a list's values by their path (options.list.element): the list's own name
    # would leave them plain
    return [f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name for f in schema if f.name in _DICTIONARY]


def _statistics_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if f.name in _STATISTICS]


def file_schema_version(path: str | os.PathLike) -> tuple[str, int] | None:
    return _schema_version(pq.read_schema(path).metadata)


def _schema_version(metadata: dict[bytes, bytes] | None) -> tuple[str, int] | None:
    """The rmsd table and version a file's schema metadata names (None: no rmsd metadata)."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    info = json.loads(metadata[METADATA_KEY])
    return info["table"], int(info["version"])


def check_file(path: str | os.PathLike, table: str) -> pq.FileMetaData:
    """Refuse a file that is not ``table`` or whose version this code does not know; returns the
    file's footer (its row count and sizes)."""
    try:
        footer = pq.read_metadata(path)
        found = _schema_version(footer.metadata)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    _, version = TABLES[table]
    if found is None:
        raise SchemaError(f"{path}: no rmsd schema metadata; was it written by rmsd? (expected {table} v{version})")
    found_table, found_version = found
    if found_table != table:
        raise SchemaError(f"{path}: holds table {found_table!r}, expected {table!r}")
    if found_version > version:
        raise SchemaError(
            f"{path}: {table} schema v{found_version} is newer than this rmsd understands (v{version}); "
            "upgrade rmsd to read it"
        )
    if found_version < 1:
        raise SchemaError(f"{path}: unknown {table} schema version {found_version}")
    return footer


def read_table(path: str | os.PathLike, table: str) -> pa.Table:
    check_file(path, table)
    return pq.read_table(path)


def shard_paths(directory: str | os.PathLike, table: str, check: bool = True) -> list[Path]:
    """The finished shards of ``table`` in ``directory`` (temporary files are never listed), each
    checked to hold ``table`` (``check_files``) unless ``check`` is false."""
    directory = Path(directory)
    paths = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    if check:
        check_files(paths, table)
    return paths


def check_files(paths: list[Path], table: str) -> list[pq.FileMetaData]:
    """``check_file`` on each of ``paths`` (each footer is read once); their footers."""
    return [check_file(p, table) for p in paths]
