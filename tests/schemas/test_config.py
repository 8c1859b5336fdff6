import textwrap
from pathlib import Path

import pytest

from rmsd.schemas.config import ConfigError, load_pipeline, pipeline_names
from tests.conftest import write_pipelines

REPO = Path(__file__).resolve().parents[2]


def test_shipped_pipelines_validate():
    names = pipeline_names(REPO / "pipelines.yaml")
    assert "demo" in names
    for name in names:
        load_pipeline(name, REPO / "pipelines.yaml", check_models=False)


def test_demo_routes_every_task_type_to_its_teacher():
    cfg = load_pipeline("demo", REPO / "pipelines.yaml")
    assert cfg.route("multiple_choice").k == 4
    assert cfg.route("open_ended").max_tokens == 96 and cfg.route("open_ended").k == 4
    assert cfg.teachers_for("ocr") == ["demo-teacher"]


def _config(tmp_path, body):
    return write_pipelines(tmp_path / "pipelines.yaml", body)


def _p_and_q(tmp_path, model, q_extra: str):
    """Pipelines p and q: one teacher each; q adds ``q_extra`` (YAML keys of the pipeline)."""
    extra = textwrap.indent(textwrap.dedent(q_extra), " " * 10)
    path = _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {model}}}
        q:
          teachers:
            - id: a
              model: {{path: {model}}}
{extra}
    """,
    )
    return load_pipeline("p", path), load_pipeline("q", path)


def test_unknown_key_names_file_pipeline_and_field(tmp_path, tiny_model):
    path = _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          sampling: {{k: 4, temprature: 0.7}}
    """,
    )
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", path)
    message = str(err.value)
    assert str(path) in message and "pipeline 'p'" in message and "sampling.temprature" in message


def test_wrong_type_is_reported(tmp_path, tiny_model):
    path = _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          sampling: {{k: many}}
    """,
    )
    with pytest.raises(ConfigError, match=r"sampling\.k"):
        load_pipeline("p", path)


def test_missing_model_path_fails_before_work(tmp_path):
    path = _config(
        tmp_path,
        """
        p:
          teachers:
            - id: a
              model: {path: does/not/exist}
    """,
    )
    with pytest.raises(ConfigError, match=r"teachers\.0\.model\.path: .*does/not/exist does not exist"):
        load_pipeline("p", path)


def test_task_routes_must_name_known_teachers_and_templates(tmp_path, tiny_model):
    path = _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          tasks:
            ocr: {{teachers: [b]}}
        q:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          tasks:
            ocr: {{template: fancy}}
        r:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          tasks:
            counting: {{k: 2}}
    """,
    )
    with pytest.raises(ConfigError, match="unknown teachers"):
        load_pipeline("p", path)
    with pytest.raises(ConfigError, match="unknown template 'fancy'"):
        load_pipeline("q", path)
    with pytest.raises(ConfigError, match="unknown task types"):
        load_pipeline("r", path)


def test_unknown_pipeline_lists_the_defined_ones(tmp_path, tiny_model):
    path = _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
    """,
    )
    with pytest.raises(ConfigError, match=r"no pipeline 'nope'; defined: \['p'\]"):
        load_pipeline("nope", path)


def test_variables_and_relative_paths(tmp_path, monkeypatch, rmsd_home):
    (tmp_path / "m").mkdir()
    monkeypatch.setenv("MODEL_DIR", "m")
    path = _config(
        tmp_path,
        """
        p:
          teachers:
            - id: a
              model: {path: "${MODEL_DIR}"}
            - id: b
              model: {path: "${RMSD_HOME}/models/x", init: tiny}
    """,
    )
    cfg = load_pipeline("p", path)
    assert cfg.teachers[0].model.path == str(tmp_path / "m")
    assert cfg.teachers[1].model.path == str(rmsd_home / "models" / "x")


def test_config_hash_changes_with_any_knob(tmp_path, tiny_model):
    p, q = _p_and_q(tmp_path, tiny_model, "sampling: {k: 8}")
    assert p.config_hash() != q.config_hash()
    assert p.config_hash() == _p_and_q(tmp_path, tiny_model, "")[0].config_hash()


def test_each_backend_needs_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "k")
    path = _config(
        tmp_path,
        """
        a:
          teachers:
            - id: x
              backend: openai
        b:
          teachers:
            - id: x
              backend: vllm
        c:
          teachers:
            - id: x
              backend: openai
              api: {base_url: "http://127.0.0.1:8000/v1", model: m, api_key_env: MY_KEY}
    """,
    )
    with pytest.raises(ConfigError, match="backend openai needs `api`"):
        load_pipeline("a", path)
    with pytest.raises(ConfigError, match="backend vllm needs `model`"):
        load_pipeline("b", path)
    assert load_pipeline("c", path).teachers[0].api.api_key_env == "MY_KEY"


def test_pipelines_name_their_student_and_gen_ignores_later_stages(tmp_path, tiny_model):
    cfg = load_pipeline("cluster-video-pool", REPO / "pipelines.yaml", check_models=False)
    assert cfg.train.student.path.endswith("Qwen3-VL-4B-Instruct")
    p, q = _p_and_q(
        tmp_path,
        tiny_model,
        """
        filter: {tau: 0.5}
        train:
          student: {path: student, init: tiny}
    """,
    )
    assert q.train.student.path == str(tmp_path / "student")
    assert (
        p.gen_hash() == q.gen_hash() and p.config_hash() != q.config_hash()
    )  # tau or the student do not redo rmsd-gen


def _one_teacher(tmp_path, model, extra: str):
    extra = textwrap.indent(textwrap.dedent(extra), " " * 10)
    return _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: a
              model: {{path: {model}}}
{extra}
    """,
    )


@pytest.mark.parametrize(
    "value, given", [("2.5", "float 2.5"), ('"4"', "a string"), ("4.0", "float 4.0"), ("true", "bool True")]
)
def test_types_are_strict_a_non_integer_k_is_refused_not_coerced(tmp_path, tiny_model, value, given):
    path = _one_teacher(tmp_path, tiny_model, f"tasks: {{ocr: {{k: {value}}}}}")
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", path)
    assert f"pipeline 'p': tasks.ocr.k: Input should be a valid integer (got {given})" in str(err.value)


def test_numbers_are_still_read_as_written(tmp_path, tiny_model):
    cfg = load_pipeline(
        "p",
        _one_teacher(tmp_path, tiny_model, "sampling: {k: 2, temperature: 1, top_p: 5e-1}\nfilter: {tolerance: 1e-3}"),
    )
    assert (cfg.sampling.k, cfg.sampling.temperature, cfg.sampling.top_p, cfg.filter.tolerance) == (2, 1.0, 0.5, 0.001)


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "is a folder"),
        ("", "got an empty file"),
        ("- a\n- b\n", "got list"),
        (b"\xff\xfe\x00bin", "not a text (UTF-8) file"),
        ("version: 1\npipelines: [a: 1\n", "not valid YAML"),
    ],
)
def test_an_unreadable_pipelines_file_is_named_with_what_is_wrong(tmp_path, content, problem):
    path = tmp_path / "pipelines.yaml"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def _api_teacher(tmp_path, key_env: str):
    return _config(
        tmp_path,
        f"""
        p:
          teachers:
            - id: api
              backend: openai
              api: {{base_url: "http://127.0.0.1:9/v1", model: m, api_key_env: "{key_env}"}}
    """,
    )


SECRET = "sk-live-AbCdEf0123456789xyzSECRET"


@pytest.mark.parametrize("written", ["${TEACHER_KEY}", "$TEACHER_KEY", "${TEACHER_KEY:-x}"])
def test_api_key_env_is_a_variable_name_never_interpolated(tmp_path, monkeypatch, written):
    monkeypatch.setenv("TEACHER_KEY", SECRET)
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", _api_teacher(tmp_path, written), check_models=False)
    message = str(err.value)
    assert "teachers.0.api.api_key_env" in message and "write `api_key_env: TEACHER_KEY`" in message
    assert SECRET not in message


@pytest.mark.parametrize("key", [SECRET, "hf_AbCdEf0123456789abcdefGHIJ", "3f2a9c0b7d6e5f4a3b2c1d0e9f8a7b6c"])
def test_a_key_written_where_its_variable_name_belongs_is_refused_without_being_shown(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", _api_teacher(tmp_path, key), check_models=False)
    assert "teachers.0.api.api_key_env" in str(err.value) and "looks like a key" in str(err.value)
    assert key not in str(err.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "my_service_api_key_v2", "TEACHER_KEY_2024"])
def test_variable_names_are_accepted(tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, SECRET)
    cfg = load_pipeline("p", _api_teacher(tmp_path, name))
    assert cfg.teachers[0].api.api_key_env == name
    assert SECRET not in cfg.model_dump_json()  # what manifests record


def test_an_unset_or_empty_key_variable_fails_validation_for_generation_only(tmp_path, monkeypatch):
    path = _api_teacher(tmp_path, "RMSD_UNSET_TEST_KEY")
    monkeypatch.delenv("RMSD_UNSET_TEST_KEY", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"pipeline 'p': teachers\.0\.api\.api_key_env: the environment variable RMSD_UNSET_TEST_KEY is not set",
    ):
        load_pipeline("p", path)
    monkeypatch.setenv("RMSD_UNSET_TEST_KEY", "")
    with pytest.raises(ConfigError, match="RMSD_UNSET_TEST_KEY is empty"):
        load_pipeline("p", path)
    assert (
        load_pipeline("p", path, check_models=False).teachers[0].id == "api"
    )  # rmsd-filter and rmsd-train need no key
