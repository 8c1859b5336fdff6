"""An API teacher's key stays secret: it is read only from the variable `api_key_env` names, never
stored or printed, even when a hostile server echoes it back (its 401 body, an error, a response);
a key where its variable's name belongs, or an unset variable, stops rmsd-gen at validation
(exit 2, one line, before Ray or any engine starts)."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec

import numpy as np
import polars as pl
import pytest

from rmsd.gen.backends import GenerationRequest, create_backend
from rmsd.schemas.config import TeacherConfig
from tests.conftest import gen, write_pipelines

pytestmark = pytest.mark.skipif(
    find_spec("openai") is None, reason="the OpenAI client is not installed: pip install 'rmsd[openai]'"
)
SECRET = "sk-rmsd-echo-Zq8vN3kP0wXy7Lm2Tb5R"
KEY_ENV = "RMSD_TEST_ECHO_KEY"


class EchoServer:
    """An OpenAI-compatible endpoint that puts the request's Authorization header in everything it
    answers: ``status`` 401 / 500 with it in the error body, or 200 with it in the response text."""

    def __init__(self, status: int):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                auth = self.headers.get("Authorization", "")
                if status == 200:
                    body = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"you sent {auth}"},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                    }
                else:
                    body = {
                        "error": {
                            "message": f"invalid credentials: {auth}",
                            "type": "invalid_request_error",
                            "code": status,
                        }
                    }
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo_401():
    server = EchoServer(401)
    yield server
    server.close()


@pytest.mark.parametrize("status", [401, 500, 200])
def test_what_the_server_echoes_is_masked_in_error_rows_and_responses(monkeypatch, status):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = EchoServer(status)
    try:
        teacher = TeacherConfig(
            id="t",
            backend="openai",
            api={
                "base_url": server.url,
                "model": "m",
                "api_key_env": KEY_ENV,
                "max_retries": 1,
                "backoff_s": 0.0,
                "timeout_s": 5.0,
            },
        )
        request = GenerationRequest(
            "p",
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}],
            np.zeros((1, 8, 8, 3), np.uint8),
            1.0,
            [0.0],
            seeds=[1, 2],
        )
        samples = create_backend(teacher, None).generate([request])[0]
    finally:
        server.close()
    stored = [c.error if status != 200 else c.text for c in samples]
    assert len(stored) == 2 and all("Bearer ***" in s for s in stored), stored  # the echo arrived, masked
    assert not any(SECRET in s for s in stored)
    if status == 401:
        assert all(s.startswith("api: AuthenticationError: Error code: 401") for s in stored)


def _api_pipeline(tmp_path, url: str, key_env: str):
    return write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        api:
          frames: {{num_frames: 2}}
          teachers:
            - id: api-teacher
              backend: openai
              api: {{base_url: "{url}", model: m, api_key_env: "{key_env}", max_retries: 0, timeout_s: 5.0}}
          sampling: {{k: 1, max_tokens: 4}}
    """,
    )


def test_a_server_echoing_the_key_in_its_401_gets_it_stored_nowhere(tmp_path, bench_dir, echo_401):
    """rmsd-gen end to end: the 401s become error rows (exit 3), and no file, row or line holds the key."""
    env = {**os.environ, KEY_ENV: SECRET}
    done = gen(
        "run",
        "--pipeline",
        "api",
        "--config",
        _api_pipeline(tmp_path, echo_401.url, KEY_ENV),
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        2,
        "--out",
        tmp_path / "out",
        "--no-progress",
        env=env,
        check=3,
    )
    errors = pl.read_parquet(tmp_path / "out" / "samples-*.parquet")["error"].to_list()
    assert len(errors) == 2 and all("401" in e and "Bearer ***" in e for e in errors), errors
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in done.stdout + done.stderr
    assert KEY_ENV in (tmp_path / "out" / "_manifest.json").read_text()  # the variable's name is what is recorded


@pytest.mark.parametrize("written", [f"${{{KEY_ENV}}}", SECRET])
def test_an_interpolated_or_literal_key_is_refused_at_validation_and_never_shown(tmp_path, bench_dir, written):
    env = {**os.environ, KEY_ENV: SECRET}
    done = gen(
        "run",
        "--pipeline",
        "api",
        "--config",
        _api_pipeline(tmp_path, "http://127.0.0.1:9/v1", written),
        "--prompts",
        bench_dir / "prompts.parquet",
        "--out",
        tmp_path / "out",
        "--no-progress",
        env=env,
        check=2,
    )
    assert SECRET not in done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "teachers.0.api.api_key_env" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written (no manifest to hold the key)


def test_an_unset_key_variable_fails_at_validation_with_one_line(tmp_path, bench_dir):
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    done = gen(
        "run",
        "--pipeline",
        "api",
        "--config",
        _api_pipeline(tmp_path, "http://127.0.0.1:9/v1", KEY_ENV),
        "--prompts",
        bench_dir / "prompts.parquet",
        "--out",
        tmp_path / "out",
        "--no-progress",
        env=env,
        check=2,
    )
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"teachers.0.api.api_key_env: the environment variable {KEY_ENV} is not set" in done.stderr
    assert "rerun" not in done.stderr and not (tmp_path / "out").exists()
