"""backend: openai against a real OpenAI-compatible server (`vllm serve` of the tiny model, CPU build),
behind a local proxy that injects faults (429, 500, hangs) into a share of the requests, and with the
frames sent as one mp4 video (`api.media: video`). The message building alone is tested fast."""

import base64
import io
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest

from rmsd.gen.backends import create_backend
from rmsd.gen.backends.openai import openai_messages
from rmsd.schemas.config import TeacherConfig
from tests.conftest import gen, write_pipelines

pytestmark = pytest.mark.skipif(
    find_spec("openai") is None, reason="the OpenAI client is not installed: pip install 'rmsd[openai]'"
)
slow = pytest.mark.slow
SECRET = "sk-rmsd-test-secret-0123456789"
# the client's timeout: far above a real answer's latency on a loaded 2-core CI machine (a real request
# that times out is retried like a fault, and retries pile more load onto the server; 4 s was not, beside a
# vLLM engine and an RL run in the other test worker), below a hang
CLIENT_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    if find_spec("vllm") is None:
        pytest.skip(
            "vLLM is not installed (make setup installs its CPU build on x86-64 only): no `vllm serve` to test against"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_model),
            "--served-model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "4096",
            "--dtype",
            "float32",
            "--enforce-eager",
            "--limit-mm-per-prompt",
            '{"image": 8, "video": 1}',
            "--media-io-kwargs",
            '{"video": {"fps": 30}}',
        ],  # keep every frame of a video part (docs/backends.md)
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**__import__("os").environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("vllm serve exited:\n" + log.read_text()[-3000:])
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("vllm serve did not start:\n" + log.read_text()[-3000:])
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=60)


class FaultProxy:
    """Forwards chat requests to the real server, except a share it answers 429 / 500 or lets hang."""

    def __init__(self, upstream: str, failure_rate: float, seed: int = 0):
        """Faults in a fixed pattern: 3 requests in every 10 (a 30% failure rate), kinds in turn."""
        self.upstream, self.lock = upstream, threading.Lock()
        self.pattern = random.Random(seed).sample(range(10), round(failure_rate * 10))
        self.requests = 0
        self.faults = {"429": 0, "500": 0, "hang": 0}
        self.forwarded = 0
        self.auth: set[str] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.auth.add(self.headers.get("Authorization", ""))
                    n, proxy.requests = proxy.requests, proxy.requests + 1
                    fault = None
                    if n % 10 in proxy.pattern:
                        fault = ("429", "500", "hang")[sum(proxy.faults.values()) % 3]
                    if fault:
                        proxy.faults[fault] += 1
                if fault == "hang":
                    time.sleep(CLIENT_TIMEOUT_S + 1)  # past the client's timeout
                    return
                if fault:
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": {"message": f"injected {fault}"}}).encode())
                    return
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = response.read()
                with proxy.lock:
                    proxy.forwarded += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _pipeline(tmp_path: Path, url: str, retries: int, media: str) -> Path:
    return write_pipelines(
        tmp_path / "pipelines.yaml",
        f"""
        api:
          frames: {{num_frames: 4}}
          teachers:
            - id: api-teacher
              backend: openai
              api: {{base_url: "{url}", model: tiny, api_key_env: RMSD_TEST_API_KEY, max_concurrency: 4,
                     max_retries: {retries}, timeout_s: {CLIENT_TIMEOUT_S}, backoff_s: 0.05, media: {media}}}
          sampling: {{k: 2, max_tokens: 8}}
          gen: {{shard_size: 4}}
    """,
    )


def _run(tmp_path, bench_dir, url, retries, check, media="images"):
    done = gen(
        "run",
        "--pipeline",
        "api",
        "--config",
        _pipeline(tmp_path, url, retries, media),
        "--prompts",
        bench_dir / "prompts.parquet",
        "--limit",
        12,
        "--out",
        tmp_path / "out",
        "--no-progress",
        check=check,
        env={**__import__("os").environ, "RMSD_TEST_API_KEY": SECRET},
    )
    return done, pl.read_parquet(tmp_path / "out" / "*.parquet")


def _run_behind_proxy(server, tmp_path, bench_dir, seed, retries, check):
    """rmsd-gen through a FaultProxy failing 30% of requests; every sample must come back once."""
    proxy = FaultProxy(server, failure_rate=0.3, seed=seed)
    try:
        done, df = _run(tmp_path, bench_dir, proxy.url, retries=retries, check=check)
    finally:
        proxy.close()
    keys = df.select("prompt_id", "teacher", "sample_index")
    assert len(keys) == keys.unique().height == 12 * 2
    return done, df, proxy


@slow
def test_a_30_percent_failing_endpoint_still_gives_every_sample_once(server, tmp_path, bench_dir):
    done, df, proxy = _run_behind_proxy(server, tmp_path, bench_dir, seed=0, retries=8, check=0)
    assert df["error"].null_count() == len(df) and df["text"].null_count() == 0
    assert min(proxy.faults.values()) > 0, proxy.faults  # every kind of fault happened and was retried
    assert proxy.auth == {f"Bearer {SECRET}"}  # the key went to the endpoint ...
    for path in (tmp_path / "out").iterdir():  # ... and nowhere else
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in done.stdout + done.stderr


@slow
def test_out_of_retries_becomes_error_rows_and_the_run_goes_on(server, tmp_path, bench_dir):
    done, df, _ = _run_behind_proxy(server, tmp_path, bench_dir, seed=1, retries=0, check=3)
    errors = df.filter(pl.col("error").is_not_null())
    assert 0 < errors.height < len(df)
    assert errors["error"].str.starts_with("api:").all() and errors["text"].null_count() == errors.height
    assert f"{errors.height} error samples (api: {errors.height})" in done.stdout


CHAT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]


def test_video_media_sends_the_sampled_frames_as_one_mp4():
    # odd height and width (H.264 yuv420p needs even ones), smooth content that survives the encoding
    ramp = np.linspace(0, 200, 63, dtype=np.uint8)[None, :, None].repeat(47, 0).repeat(3, 2)
    frames = np.stack([ramp + 10 * i for i in range(5)])
    assert len(openai_messages(CHAT, frames)[0]["content"]) == 5 + 1  # images: one part per frame
    content = openai_messages(CHAT, frames, fps=2 / 3, media="video")[0]["content"]
    assert [p["type"] for p in content] == ["video_url", "text"] and content[1]["text"] == "What moves?"
    prefix, data = content[0]["video_url"]["url"].split(",", 1)
    assert prefix == "data:video/mp4;base64"
    with av.open(io.BytesIO(base64.b64decode(data))) as container:
        assert container.streams.video[0].average_rate == Fraction(2, 3)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == (5, 48, 64, 3)  # padded by one row and one column
    assert np.abs(decoded[:, :47, :63].astype(int) - frames).mean() < 3
    teacher = TeacherConfig(
        id="t", backend="openai", api={"base_url": "http://127.0.0.1:1/v1", "model": "m", "media": "video"}
    )
    assert create_backend(teacher, None).media == "video"


@slow
def test_video_media_against_vllm_serve_gives_every_sample(server, tmp_path, bench_dir):
    _, df = _run(tmp_path, bench_dir, server + "/v1", retries=2, check=0, media="video")
    keys = df.select("prompt_id", "teacher", "sample_index")
    assert len(keys) == keys.unique().height == 12 * 2
    assert df["error"].null_count() == len(df) and df["text"].null_count() == 0
