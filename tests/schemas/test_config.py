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
    path = _config(tmp_path, f"""
        p:
          teachers:
            - id: a
              model: {{path: {model}}}
        q:
          teachers:
            - id: a
              model: {{path: {model}}}
{extra}
    """)
    return load_pipeline("p", path), load_pipeline("q", path)


def test_unknown_key_names_file_pipeline_and_field(tmp_path, tiny_model):
    path = _config(tmp_path, f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          sampling: {{k: 4, temprature: 0.7}}
    """)
    with pytest.raises(ConfigError) as err:
        load_pipeline("p", path)
    message = str(err.value)
    assert str(path) in message and "pipeline 'p'" in message and "sampling.temprature" in message


def test_wrong_type_is_reported(tmp_path, tiny_model):
    path = _config(tmp_path, f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
          sampling: {{k: many}}
    """)
    with pytest.raises(ConfigError, match=r"sampling\.k"):
        load_pipeline("p", path)


def test_missing_model_path_fails_before_work(tmp_path):
    path = _config(tmp_path, """
        p:
          teachers:
            - id: a
              model: {path: does/not/exist}
    """)
    with pytest.raises(ConfigError, match=r"teachers\.0\.model\.path: .*does/not/exist does not exist"):
        load_pipeline("p", path)


def test_task_routes_must_name_known_teachers_and_templates(tmp_path, tiny_model):
    path = _config(tmp_path, f"""
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
    """)
    with pytest.raises(ConfigError, match="unknown teachers"):
        load_pipeline("p", path)
    with pytest.raises(ConfigError, match="unknown template 'fancy'"):
        load_pipeline("q", path)
    with pytest.raises(ConfigError, match="unknown task types"):
        load_pipeline("r", path)


def test_unknown_pipeline_lists_the_defined_ones(tmp_path, tiny_model):
    path = _config(tmp_path, f"""
        p:
          teachers:
            - id: a
              model: {{path: {tiny_model}}}
    """)
    with pytest.raises(ConfigError, match=r"no pipeline 'nope'; defined: \['p'\]"):
        load_pipeline("nope", path)


def test_variables_and_relative_paths(tmp_path, monkeypatch, rmsd_home):
    (tmp_path / "m").mkdir()
    monkeypatch.setenv("MODEL_DIR", "m")
    path = _config(tmp_path, """
        p:
          teachers:
            - id: a
              model: {path: "${MODEL_DIR}"}
            - id: b
              model: {path: "${RMSD_HOME}/models/x", init: tiny}
    """)
    cfg = load_pipeline("p", path)
    assert cfg.teachers[0].model.path == str(tmp_path / "m")
    assert cfg.teachers[1].model.path == str(rmsd_home / "models" / "x")


def test_config_hash_changes_with_any_knob(tmp_path, tiny_model):
    p, q = _p_and_q(tmp_path, tiny_model, "sampling: {k: 8}")
    assert p.config_hash() != q.config_hash()
    assert p.config_hash() == _p_and_q(tmp_path, tiny_model, "")[0].config_hash()


def test_each_backend_needs_its_source(tmp_path):
    path = _config(tmp_path, """
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
    """)
    with pytest.raises(ConfigError, match="backend openai needs `api`"):
        load_pipeline("a", path)
    with pytest.raises(ConfigError, match="backend vllm needs `model`"):
        load_pipeline("b", path)
    assert load_pipeline("c", path).teachers[0].api.api_key_env == "MY_KEY"


def test_pipelines_name_their_student_and_gen_ignores_later_stages(tmp_path, tiny_model):
    cfg = load_pipeline("cluster-video-pool", REPO / "pipelines.yaml", check_models=False)
    assert cfg.train.student.path.endswith("Qwen3-VL-4B-Instruct")
    p, q = _p_and_q(tmp_path, tiny_model, """
        filter: {tau: 0.5}
        train:
          student: {path: student, init: tiny}
    """)
    assert q.train.student.path == str(tmp_path / "student")
    assert p.gen_hash() == q.gen_hash() and p.config_hash() != q.config_hash()  # tau or the student do not redo rmsd-gen
