"""Where rmsd-filter's batches run, apart from what scoring a batch does (``run.score_batch``).

An executor calls ``fn(*args)`` for each tuple of ``tasks`` and returns the results in the tasks'
order, calling ``done(i)`` as the i-th result arrives (in order too: what is combined from the
results does not depend on timing). ``fn`` writes its own files; every executor runs the same
calls, so each gives the same files:

- ``run_serial``: in this process, one after the other;
- ``run_local``: on worker processes of this machine, one per core, each running Polars on one
  thread (``WORKER_ENV``);
- ``run_ray``: as Ray tasks, on a cluster (``address``) or one started for the call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

# Read by a worker's libraries when they are imported: Polars on one thread per worker (processes,
# not Polars' threads, share the cores), running every query in memory (the streaming engine hands
# each query to threads of its own), and OpenBLAS (loaded with numpy) without threads of its own.
# All three are documented settings of these libraries.
WORKER_ENV = {"POLARS_MAX_THREADS": "1", "POLARS_ENGINE_AFFINITY": "in-memory", "OPENBLAS_NUM_THREADS": "1"}

Tasks = Sequence[tuple]
Done = Callable[[int], None] | None


def run_serial(fn: Callable[..., Any], tasks: Tasks, done: Done = None) -> list:
    """Every task in this process, in order."""
    results = []
    for i, args in enumerate(tasks):
        results.append(fn(*args))
        if done:
            done(i)
    return results


def worker_context(preload: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """How local workers start: forked from a server that has imported ``preload`` (the modules
    ``fn`` needs) once (forkserver; spawn where there is none). The server starts here, and imports
    while the caller goes on (``run_local`` waits for it only when it starts the workers)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        context.set_forkserver_preload(list(preload))
        with worker_env():  # the server takes the environment of this moment, and its workers with it
            forkserver.ensure_running()
    return context


@contextlib.contextmanager
def worker_env() -> Iterator[None]:
    """``WORKER_ENV`` set in this process's environment for the block (workers and the fork server
    take the environment of the moment they start)."""
    saved = {name: os.environ.get(name) for name in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_local(
    fn: Callable[..., Any],
    tasks: Tasks,
    workers: int,
    done: Done = None,
    context: multiprocessing.context.BaseContext | None = None,
) -> list:
    """Every task on ``workers`` processes (at most one per task), each running Polars on one
    thread: no GIL between the many short Polars calls of concurrent tasks and no oversubscribed
    Polars pool (1.22x the throughput of a thread pool on the bench's 10 M rows, measured in commit
    b0f73ca). ``context``: ``worker_context()``'s, made earlier so that its server
    imports meanwhile; made here otherwise."""
    if not tasks:
        return []
    context = context or worker_context([fn.__module__])
    results = []
    try:
        with contextlib.ExitStack() as env:
            env.enter_context(worker_env())  # spawned workers take the environment of the moment they start
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
                futures = [pool.submit(fn, *args) for args in tasks]  # the workers start here, in that environment
                env.close()
                for i, future in enumerate(futures):
                    results.append(future.result())
                    if done:
                        done(i)
    except BrokenProcessPool as exc:
        raise RuntimeError(
            "a worker process ended abruptly (killed, e.g. out of memory, or it could not start). A script that "
            'calls run_filter must do so under `if __name__ == "__main__":` (each worker imports the script); '
            "workers=1 (--workers 1) scores in this process"
        ) from exc
    return results


def run_ray(fn: Callable[..., Any], tasks: Tasks, done: Done = None, address: str | None = None) -> list:
    """Every task as a Ray task: on the cluster at ``address``, on the one this process is already
    connected to, or on a local one started (and stopped) for the call."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            **({"address": address} if address else {}),
            include_dashboard=False,
            logging_level="WARNING",
        )
    try:
        task = ray.remote(fn)
        refs = [task.remote(*args) for args in tasks]
        results = []
        for i, ref in enumerate(refs):
            results.append(ray.get(ref))
            if done:
                done(i)
        return results
    finally:
        if started:
            ray.shutdown()


__all__ = ["WORKER_ENV", "run_local", "run_ray", "run_serial", "worker_context", "worker_env"]
