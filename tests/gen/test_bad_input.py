"""Bad input fails early and clearly, in every command that reads it: a malformed prompts file, a
prompts column of the wrong type, a selection of no prompt, an unreadable pipelines file or a
value of the wrong type in it exits 2 with one line naming the file (row, field), before anything
is written or any engine starts. Exit 1 ("rerun to retry") is kept for what a rerun can fix."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rmsd.schemas.tables import to_table, write_table
from tests.conftest import write_pipelines

ROW = {
    "prompt_id": "p0",
    "video": "v.mp4",
    "question": "How many?",
    "task_type": "numerical",
    "answer": "2",
    "split": "train",
}


def _prompts(tmp_path):
    rows = [ROW, {**ROW, "prompt_id": "p1", "split": "test"}]
    return write_table(to_table(rows, "prompts"), tmp_path / "prompts.parquet", "prompts")


def _pipelines(tmp_path, extra: str = ""):
    # the teacher's folder is built on first use: validation passes without a model, and a test
    # that got past it would build one and start Ray (and fail on its missing videos)
    return write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {tmp_path / "teacher"}, init: tiny}}
          {extra}
    """,
    )


def _file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, pa.Table):
        pq.write_table(content, path)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _table(**columns):
    base = {name: [value] for name, value in ROW.items()}
    return pa.table({**base, **columns})


# (name, prompts file or None for the valid one, extra pipeline YAML, extra arguments, what the one line says)
GEN_CASES = {
    "zero-byte parquet": (lambda t: _file(t, "p.parquet", b""), "", [], "the prompts file is empty (0 bytes)"),
    "zero-byte jsonl": (lambda t: _file(t, "p.jsonl", ""), "", [], "the prompts file is empty (0 bytes)"),
    "not parquet": (
        lambda t: _file(t, "p.parquet", b"PAR1 this is not parquet"),
        "",
        [],
        "not a readable Parquet file",
    ),
    "not UTF-8 JSON": (lambda t: _file(t, "p.json", b"\xff\xfe[]"), "", [], "not a text (UTF-8) file"),
    "integer prompt_id, parquet": (
        lambda t: _file(t, "p.parquet", _table(prompt_id=[7])),
        "",
        [],
        "row 0: field 'prompt_id' must be a string, got int 7",
    ),
    "integer prompt_id, JSON": (
        lambda t: _file(t, "p.json", [{**ROW, "prompt_id": 7}]),
        "",
        [],
        "row 0: field 'prompt_id' must be a string, got int 7",
    ),
    "options as a string": (
        lambda t: _file(
            t, "p.json", [ROW, {**ROW, "prompt_id": "q", "task_type": "multiple_choice", "options": "red, blue"}]
        ),
        "",
        [],
        "row 1: field 'options' must be a list of strings, got str",
    ),
    "numeric answer": (
        lambda t: _file(t, "p.jsonl", json.dumps({**ROW, "answer": 2})),
        "",
        [],
        "row 0: field 'answer' must be a string, got int 2",
    ),
    "empty prompt set, JSON": (lambda t: _file(t, "p.json", []), "", [], "no prompts in the file"),
    "empty prompt set, parquet": (
        lambda t: write_table(to_table([], "prompts"), t / "p.parquet", "prompts"),
        "",
        [],
        "no prompts in the file",
    ),
    "every record refused": (
        lambda t: _file(t, "p.json", [{"problem": "?", "problem_type": "math", "path": "v.mp4"}]),
        "",
        [],
        "no prompts in the file: all 1 records were refused (first, ",
    ),
    "mistyped --split": (None, "", ["--split", "trian"], "no prompts of split 'trian' (its splits are test, train)"),
    "prompts folder": (lambda t: (t / "clips").mkdir() or t / "clips", "", [], "is a folder; give a prompts file"),
    "non-integer k": (
        None,
        "sampling: {k: 2.5}",
        [],
        "pipeline 'p': sampling.k: Input should be a valid integer (got float 2.5)",
    ),
    "k as a string": (
        None,
        'tasks: {ocr: {k: "4"}}',
        [],
        "pipeline 'p': tasks.ocr.k: Input should be a valid integer (got a string)",
    ),
    "unknown template field": (
        None,
        'templates: {default: {user: "{question} {hint}"}}',
        [],
        "templates.default.user: unknown fields ['hint']",
    ),
    "config folder": (None, "", ["--config", "{tmp}"], "is a folder; give the pipelines YAML file"),
    "out is a file": (None, "", ["--out", "{tmp}/prompts.parquet"], "is a file; give the output folder"),
}


def _one_line_exit_2(result, program: str, expected: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "rerun" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", GEN_CASES)
def test_rmsd_gen_run_refuses_bad_input_with_one_line_before_any_work(tmp_path, case):
    import ray

    from rmsd.gen.cli import app

    make, extra, args, expected = GEN_CASES[case]
    prompts = make(tmp_path) if make else _prompts(tmp_path)
    _prompts(tmp_path)
    config = _pipelines(tmp_path, extra)
    args = [a.format(tmp=tmp_path) for a in args]
    command = [
        "run",
        "--pipeline",
        "p",
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(config),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, command + args)
    line = _one_line_exit_2(result, "rmsd-gen", expected)
    named = str(tmp_path) if case in ("config folder", "out is a file") else str(config) if extra else str(prompts)
    assert named in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "teacher").exists() and not ray.is_initialized()


@pytest.mark.parametrize(
    "extra, args, expected",
    [
        ("", ["--config", "{tmp}"], "is a folder; give the pipelines YAML file"),
        ("filter: {seed: 1.5}", [], "filter.seed: Input should be a valid integer (got float 1.5)"),
        ("", ["--samples", "{tmp}/empty"], "no samples shards"),
    ],
)
def test_rmsd_filter_run_refuses_bad_input_with_one_line(tmp_path, extra, args, expected):
    from rmsd.filter.cli import app

    (tmp_path / "empty").mkdir()
    command = [
        "run",
        "--pipeline",
        "p",
        "--samples",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(_pipelines(tmp_path, extra)),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, command + [a.format(tmp=tmp_path) for a in args])
    _one_line_exit_2(result, "rmsd-filter", expected)
    assert not [p.name for p in (tmp_path / "out").glob("[!.]*")], (
        "an output was written"
    )  # the folder may hold its lock


@pytest.mark.parametrize(
    "command, expected",
    [
        (
            ["eval", "--model", "{tmp}", "--prompts", "{prompts}", "--out", "{tmp}/out", "--config", "{tmp}"],
            "is a folder; give the pipelines YAML file",
        ),
        (
            ["prior", "--prompts", "{prompts}", "--out", "{tmp}/out", "--config", "{tmp}"],
            "is a folder; give the pipelines YAML file",
        ),
        (
            [
                "prior",
                "--prompts",
                "{prompts}",
                "--out",
                "{tmp}/out",
                "--config",
                "{config}",
                "--pipeline",
                "p",
                "--split",
                "tset",
            ],
            "no prompts of split 'tset' (its splits are test, train)",
        ),
        (
            [
                "eval",
                "--model",
                "{tmp}",
                "--prompts",
                "{prompts}",
                "--out",
                "{tmp}/out",
                "--config",
                "{config}",
                "--pipeline",
                "p",
                "--split",
                "tset",
            ],
            "no prompts of split 'tset'",
        ),
    ],
)
def test_rmsd_train_eval_and_prior_refuse_bad_input_with_one_line(tmp_path, command, expected):
    from rmsd.train.cli import app

    names = {"tmp": tmp_path, "prompts": _prompts(tmp_path), "config": _pipelines(tmp_path)}
    result = CliRunner().invoke(app, [a.format(**names) for a in command])
    _one_line_exit_2(result, "rmsd-train", expected)
    assert not (tmp_path / "out").exists()
