"""RL rollouts on vLLM for video prompts (``rmsd-train rl --rollouts vllm`` or ``vllm-server``).

TRL 1.16's own vLLM rollouts (``use_vllm``) route images only, and its weight sync fails on vLLM's
CPU build. Here the rollouts go through rmsd-gen's vLLM backend (``rmsd.gen.backends``): the
frames, timestamps and per-model metadata of a request are built by the same code that builds a
teacher's, and the completions come back as token ids for TRL to score and train on. Two modes,
as TRL's:

- colocated (``--rollouts vllm``, ``VLLMRollouts``): the engine lives in the training process (on
  a GPU it takes ``--rollout-memory`` of the device's memory). With ``--rollout-sleep`` it sleeps
  between rollouts (its weights offloaded to host memory, its KV cache freed) so the policy's
  update has the device; vLLM supports sleep mode on CUDA, ROCm and XPU builds only.
- server (``--rollouts vllm-server``, ``ServedRollouts``): the engine runs in its own process, a
  Ray actor (``RolloutServer``) on any node of the Ray cluster (``--rollout-address``), started by
  the run, or started beforehand with ``rmsd-train rollout-server`` and found by its name
  (``--rollout-server``). Every training process sends it its own requests; the main process
  sends the weights after each update, through Ray's object store (host memory, not NCCL).

After every policy update the engine serves the new weights: the policy's state dict (checkpoint
naming, tied embeddings included) is reloaded in place through vLLM's ``reload_weights``
(``VLLMBackend.load_weights``).
"""

from __future__ import annotations

from pathlib import Path

from ..gen.backends import Completion, GenerationRequest


class VLLMRollouts:
    """A colocated vLLM engine that follows the policy's weights."""

    def __init__(
        self,
        model_path: str | Path,
        memory: float = 0.3,
        use_gpu: bool = False,
        dtype: str = "float32",
        enforce_eager: bool = False,
        sleep: bool = False,
    ):
        from ..gen.backends import VLLMBackend

        self.backend = VLLMBackend(
            str(model_path),
            dtype=dtype,
            max_model_len=None,
            gpu_memory_utilization=memory,
            use_gpu=use_gpu,
            enforce_eager=enforce_eager,
            in_process=True,
            sleep_mode=sleep,
        )
        self.sleep = sleep
        self.synced_step: int | None = 0  # the engine starts with the checkpoint's weights: the policy's at step 0

    def sync(self, model, step: int) -> None:
        """Serve ``model``'s weights, unless they are already those of ``step``."""
        if step == self.synced_step:
            return
        self.load(model.state_dict().items(), step)

    def load(self, named_tensors, step: int) -> None:
        if self.sleep:
            self.backend.wake_up()
        self.backend.load_weights(named_tensors)
        self.synced_step = step

    def completions(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Every request's completions; with sleep mode the engine sleeps again afterwards."""
        if self.sleep:
            self.backend.wake_up()
        try:
            return self.backend.generate(requests)
        finally:
            if self.sleep:
                self.backend.sleep()


class RolloutServer:
    """The server's side (run as a Ray actor): a vLLM engine in its own process.

    Its methods are coroutines run one at a time on the actor's event loop, so a process asking
    for rollouts of a step can wait, without blocking the loop, until the main process has sent
    that step's weights: weights are tagged ``(run, step)``, where ``run`` names the training run
    (a server started beforehand may have served another run's weights)."""

    def __init__(self, model_path: str, memory: float, use_gpu: bool, dtype: str, enforce_eager: bool):
        self.engine = VLLMRollouts(model_path, memory, use_gpu, dtype, enforce_eager)
        self.serving: tuple[str, int] | None = None

    async def load(self, state_dict: dict, run: str, step: int) -> None:
        self.engine.load(state_dict.items(), step)
        self.serving = (run, step)

    async def completions(
        self, requests: list[GenerationRequest], run: str, step: int, timeout: float = 600.0
    ) -> list[list[Completion]]:
        import asyncio

        waited = 0.0
        while self.serving != (run, step):
            if waited > timeout:
                raise TimeoutError(
                    f"no weights of run {run} step {step} after {timeout:.0f} s (serving {self.serving})"
                )
            await asyncio.sleep(0.05)
            waited += 0.05
        return self.engine.completions(requests)

    async def ready(self) -> bool:
        return True


SERVER_NAMESPACE = "rmsd"


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (start a local one when None), in the servers' namespace,
    unless this process has joined one already."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", namespace=SERVER_NAMESPACE)


def start_server(
    model_path: str | Path,
    name: str | None = None,
    address: str | None = None,
    num_gpus: float = 0,
    num_cpus: float = 1,
    memory: float = 0.9,
    dtype: str = "float32",
    enforce_eager: bool = False,
    detached: bool = False,
):
    """Start a ``RolloutServer`` actor in the Ray cluster at ``address`` (a local one when None) and
    wait until its engine is up. Processes of the cluster find it by ``name``. A ``detached`` one
    outlives this process (``rmsd-train rollout-server``) until ``ray.kill`` ends it; otherwise it
    ends with this process."""
    import ray

    connect_ray(address)
    options = dict(num_gpus=num_gpus, num_cpus=num_cpus)
    if name is not None:
        options.update(name=name, namespace=SERVER_NAMESPACE)
    if detached:
        options["lifetime"] = "detached"
    server = ray.remote(RolloutServer).options(**options)
    actor = server.remote(str(model_path), memory, num_gpus > 0, dtype, enforce_eager)
    ray.get(actor.ready.remote())  # raises here if the engine could not start
    return actor


class ServedRollouts:
    """The trainer's side of server mode: requests go to a ``RolloutServer``; the main training
    process (``sends_weights``) sends it the policy's weights after each update."""

    def __init__(self, actor, run: str, sends_weights: bool = True, owned: bool = False):
        self.actor, self.run, self.sends_weights, self.owned = actor, run, sends_weights, owned
        self.synced_step: int | None = None  # the server may serve another run's weights: always sync first

    @classmethod
    def connect(cls, name: str, run: str, address: str | None = None, sends_weights: bool = True) -> ServedRollouts:
        """The server started by ``rmsd-train rollout-server --name NAME``."""
        import ray

        connect_ray(address)
        try:
            actor = ray.get_actor(name, namespace=SERVER_NAMESPACE)
        except ValueError as exc:
            raise ValueError(
                f"no rollout server named {name!r} in the Ray cluster at {address or 'this machine'} ({exc}): "
                "start one with `rmsd-train rollout-server --name NAME --model PATH --address ADDRESS`"
            ) from exc
        return cls(actor, run, sends_weights)

    def sync(self, model, step: int) -> None:
        if step == self.synced_step:
            return
        if self.sends_weights:
            import ray

            state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
            ray.get(self.actor.load.remote(state, self.run, step))
        self.synced_step = step

    def completions(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        import ray

        return ray.get(self.actor.completions.remote(requests, self.run, self.synced_step))

    def close(self) -> None:
        """End the server if this run started it."""
        if self.owned:
            import ray

            ray.kill(self.actor)


Rollouts = VLLMRollouts | ServedRollouts

__all__ = [
    "Rollouts",
    "RolloutServer",
    "SERVER_NAMESPACE",
    "ServedRollouts",
    "VLLMRollouts",
    "connect_ray",
    "start_server",
]
