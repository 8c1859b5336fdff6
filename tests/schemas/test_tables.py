import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmsd.schemas.tables import (
    METADATA_KEY,
    SAMPLES_SCHEMA,
    SchemaError,
    check_file,
    read_table,
    schema_for,
    to_table,
    with_string_views,
    write_table,
)

PROMPT = {
    "prompt_id": "p1",
    "video": "videos/a.mp4",
    "question": "What colour?",
    "options": ["red", "green"],
    "answer": "A",
    "task_type": "multiple_choice",
}


def test_written_file_carries_table_and_version(tmp_path):
    path = write_table(to_table([PROMPT], "prompts"), tmp_path / "p.parquet", "prompts")
    info = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert info == {"table": "prompts", "version": 1}
    assert read_table(path, "prompts").to_pylist()[0]["options"] == ["red", "green"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_newer_version_is_refused_with_the_file_named(tmp_path):
    table = to_table([PROMPT], "prompts")
    meta = {METADATA_KEY: json.dumps({"table": "prompts", "version": 99}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "new.parquet")
    with pytest.raises(SchemaError, match=r"new\.parquet.*v99 is newer"):
        check_file(tmp_path / "new.parquet", "prompts")


def test_other_table_and_foreign_files_are_refused(tmp_path):
    path = write_table(to_table([PROMPT], "prompts"), tmp_path / "p.parquet", "prompts")
    with pytest.raises(SchemaError, match="holds table 'prompts', expected 'samples'"):
        check_file(path, "samples")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaError, match="no rmsd schema metadata"):
        check_file(tmp_path / "foreign.parquet", "prompts")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        check_file(tmp_path / "junk.parquet", "prompts")


def test_required_columns_cannot_be_null():
    with pytest.raises(SchemaError, match="column .prompt_id. is required but null in row 0"):
        to_table([{**PROMPT, "prompt_id": None}], "prompts")


def test_samples_schema_has_the_contract_columns():
    names = [f.name for f in SAMPLES_SCHEMA]
    assert names == [
        "prompt_id",
        "task_type",
        "question",
        "options",
        "answer",
        "video",
        "teacher",
        "sample_index",
        "seed",
        "text",
        "finish_reason",
        "num_tokens",
        "cumulative_logprob",
        "frame_timestamps",
        "fps",
        "error",
        "run_id",
        "logprobs",
    ]
    assert schema_for("samples").field("frame_timestamps").type == pa.list_(pa.float64())


def test_repeating_columns_are_dictionary_encoded_lists_included(tmp_path):
    # a list column's values are named by their path in Parquet; naming the list alone left them plain
    rows = [{**PROMPT, "prompt_id": f"p{i}", "meta": None, "dataset": "d", "split": "test"} for i in range(50)]
    path = write_table(to_table(rows, "prompts"), tmp_path / "p.parquet", "prompts")
    chunks = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    assert "RLE_DICTIONARY" in encodings["options.list.element"] and "RLE_DICTIONARY" in encodings["task_type"]
    assert "RLE_DICTIONARY" not in encodings["prompt_id"]  # unique per row: plain


def test_scored_and_curated_are_keyed_on_the_sample():
    key = ["prompt_id", "teacher", "sample_index"]
    scored, curated = schema_for("scored"), schema_for("curated")
    assert (
        scored.names[:3] == key
        and "text" not in scored.names
        and {"quality", "kept", "weight", "is_best"} <= set(scored.names)
    )
    # curated v3: the kept samples' keys and weights; their content stays in the samples shards
    assert curated.names == [*key, "task_type", "quality", "weight", "is_best"]
    assert (
        json.loads(scored.metadata[METADATA_KEY])["version"] == 2
        and json.loads(curated.metadata[METADATA_KEY])["version"] == 3
    )


def test_strings_handed_as_views_are_written_as_the_contracts_strings(tmp_path):
    table = to_table([{**PROMPT, "prompt_id": f"p{i}"} for i in range(4)], "prompts")
    views = pa.Table.from_arrays(
        [c.cast(f.type) for c, f in zip(table.columns, with_string_views(table.schema))],
        schema=with_string_views(table.schema),
    )
    strings = write_table(table, tmp_path / "strings.parquet", "prompts")
    written = write_table(views, tmp_path / "views.parquet", "prompts")
    assert written.read_bytes() == strings.read_bytes()
    schema = pq.read_schema(written)  # the contract's types (Arrow names a list's values "element" on reading)
    assert [str(f.type).replace("element", "item") for f in schema] == [str(f.type) for f in schema_for("prompts")]
    assert (
        schema.metadata == schema_for("prompts").metadata
        and schema.field("video").metadata == schema_for("prompts").field("video").metadata
    )
    assert read_table(written, "prompts").to_pylist() == table.to_pylist()
